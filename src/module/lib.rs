//! The PAM edge: read the items and arguments, call the core once, map the
//! verdict to a PAM code. Panics are caught here and answered like a
//! storage error (`on_error`). This and `sys` are the only modules that
//! use `unsafe`.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

use pam::constants::{PAM_ERROR_MSG, PAM_SILENT, PAM_TEXT_INFO, PamFlag, PamResultCode};
use pam::conv::Conv;
use pam::items::{AuthTok, RHost, RUser, Service, Tty, User};
use pam::module::{PamHandle, PamHooks};
use pam::pam_hooks;

use useraudit_core::audit::{self, Attempt, Hook, Message, Session, Verdict};
use useraudit_core::config::{Mode, ModuleArgs};
use useraudit_core::sys::{self, Priority};
use useraudit_core::text::now_micros;

const PAM_UPDATE_AUTHTOK: PamFlag = 0x2000;
const DATA_KEY: &str = "pam_useraudit_session";

#[link(name = "pam")]
unsafe extern "C" {
    fn pam_get_user(pamh: *mut PamHandle, user: *mut *const c_char, prompt: *const c_char) -> c_int;
    fn pam_getenv(pamh: *mut PamHandle, name: *const c_char) -> *const c_char;
}

struct UserAudit;
pam_hooks!(UserAudit);

impl PamHooks for UserAudit {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        let mode = ModuleArgs::parse(args.iter().filter_map(|a| a.to_str().ok())).mode;
        entry(pamh, &args, flags, Hook::Auth(mode))
    }

    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        entry(pamh, &args, flags, Hook::Account)
    }

    fn sm_chauthtok(pamh: &mut PamHandle, args: Vec<&CStr>, flags: PamFlag) -> PamResultCode {
        entry(pamh, &args, flags, Hook::Password { update: flags & PAM_UPDATE_AUTHTOK != 0 })
    }

    fn sm_setcred(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    fn sm_open_session(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }

    fn sm_close_session(_: &mut PamHandle, _: Vec<&CStr>, _: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}

/// Every hook: shield the work from a set-user-ID caller's limits, catch
/// panics and answer them like a storage error.
fn entry(pamh: &mut PamHandle, args: &[&CStr], flags: PamFlag, hook: Hook) -> PamResultCode {
    // Called from a set-user-ID program (su), the module's writes must not
    // fail by the caller's resource limits, ignored signals or umask; they
    // are put back when this returns, also after a caught panic.
    let shield = sys::CallerShield::engage();
    let limited = shield.caller_limited();
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
    // Read here, outside the guard, so a caught panic's syslog line can name it.
    let service = catch_unwind(AssertUnwindSafe(|| bytes(pamh.get_item::<Service>()))).ok().flatten();
    guarded(&args, service.as_deref(), hook, || {
        debug_panic(&args);
        call(pamh, &args, flags, hook, service.clone(), limited)
    })
}

/// Debug builds only: the module argument `debug_panic` panics inside
/// [`guarded`], so the tests can show that a panic unwinds and is caught
/// in the module as loaded by libpam. A release build has no such argument:
/// the word is an unknown argument there, logged and ignored.
#[cfg(debug_assertions)]
fn debug_panic(args: &[String]) {
    if args.iter().any(|a| a == "debug_panic") {
        panic!("debug_panic module argument");
    }
}

#[cfg(not(debug_assertions))]
fn debug_panic(_: &[String]) {}

/// Run `f`; a panic becomes the `on_error` answer of the module line.
fn guarded(args: &[String], service: Option<&[u8]>, hook: Hook, f: impl FnOnce() -> PamResultCode) -> PamResultCode {
    // The panic goes to syslog below, not to the application's stderr
    // (a user's terminal under login or su). The hook belongs to the
    // module's own copy of the Rust runtime, not to the application.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(payload) => {
            let margs = ModuleArgs::parse(args.iter().map(String::as_str));
            let prefix = audit::syslog_prefix(service, hook);
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            let what = useraudit_core::text::escape(useraudit_core::text::cap(what.as_bytes()));
            sys::syslog(
                Priority::Err,
                &format!("{prefix}internal error (panic: {what}) caught; answering as on_error says"),
            );
            map(audit::on_error(hook, margs.on_error_hint()).verdict)
        }
    }
}

fn bytes<'a, T: std::ops::Deref<Target = &'a CStr>>(item: Result<Option<T>, PamResultCode>) -> Option<Vec<u8>> {
    item.ok().flatten().map(|c| c.to_bytes().to_vec())
}

fn call(
    pamh: &mut PamHandle,
    args: &[String],
    flags: PamFlag,
    hook: Hook,
    service: Option<Vec<u8>>,
    caller_limited: bool,
) -> PamResultCode {
    let user = if hook == Hook::Auth(Some(Mode::Preauth)) {
        // preauth may run first in the stack: ask for the name if needed.
        let mut p: *const c_char = std::ptr::null();
        // SAFETY: pamh is the live handle PAM passed in; p is a valid out-pointer.
        let rc = unsafe { pam_get_user(pamh, &mut p, std::ptr::null()) };
        if rc != 0 || p.is_null() {
            None
        } else {
            // SAFETY: on success p points to PAM's NUL-terminated copy of the name,
            // valid while the handle lives; it is copied at once.
            Some(unsafe { CStr::from_ptr(p) }.to_bytes().to_vec())
        }
    } else {
        bytes(pamh.get_item::<User>())
    };
    let info_name = c"SSH_AUTH_INFO_0";
    // SAFETY: pamh is the live handle; the name is a valid C string.
    let info = unsafe { pam_getenv(pamh, info_name.as_ptr()) };
    let ssh_auth_info = if info.is_null() {
        None
    } else {
        // SAFETY: a non-NULL result is a NUL-terminated string owned by PAM; copied at once.
        Some(unsafe { CStr::from_ptr(info) }.to_bytes().to_vec())
    };
    let attempt = Attempt {
        user,
        service,
        rhost: bytes(pamh.get_item::<RHost>()),
        ruser: bytes(pamh.get_item::<RUser>()),
        tty: bytes(pamh.get_item::<Tty>()),
        ssh_auth_info,
        authtok: matches!(pamh.get_item::<AuthTok>(), Ok(Some(_))),
        caller_limited,
        ruid: Some(sys::uid()),
    };

    // The session lives in the handle's data, so the hooks of one login
    // share one configuration and one check of the state directory.
    // SAFETY: DATA_KEY is only ever set by this module, to a RefCell<Session>.
    if unsafe { pamh.get_data::<RefCell<Session>>(DATA_KEY) }.is_err() {
        let _ = pamh.set_data(DATA_KEY, Box::new(RefCell::new(Session::default())));
    }
    let now = now_micros();
    let silent = flags & PAM_SILENT != 0;
    // SAFETY: as above, the data under DATA_KEY is a RefCell<Session>.
    let outcome = match unsafe { pamh.get_data::<RefCell<Session>>(DATA_KEY) } {
        Ok(cell) => match cell.try_borrow_mut() {
            Ok(mut s) => audit::handle(&mut s, args, hook, &attempt, silent, now),
            Err(_) => audit::handle(&mut Session::default(), args, hook, &attempt, silent, now),
        },
        Err(_) => audit::handle(&mut Session::default(), args, hook, &attempt, silent, now),
    };
    if !outcome.messages.is_empty() {
        if let Ok(Some(conv)) = pamh.get_item::<Conv>() {
            for m in &outcome.messages {
                let (style, text) = match m {
                    Message::Error(t) => (PAM_ERROR_MSG, t),
                    Message::Info(t) => (PAM_TEXT_INFO, t),
                };
                if let Ok(c) = CString::new(text.as_str()) {
                    let _ = conv.send(style, &c.to_string_lossy());
                }
            }
        }
    }
    map(outcome.verdict)
}

fn map(v: Verdict) -> PamResultCode {
    match v {
        Verdict::Success => PamResultCode::PAM_SUCCESS,
        Verdict::Ignore => PamResultCode::PAM_IGNORE,
        Verdict::AuthErr => PamResultCode::PAM_AUTH_ERR,
        Verdict::PermDenied => PamResultCode::PAM_PERM_DENIED,
        Verdict::AcctExpired => PamResultCode::PAM_ACCT_EXPIRED,
        Verdict::NewAuthtokReqd => PamResultCode::PAM_NEW_AUTHTOK_REQD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panics_become_the_on_error_answer() {
        let allow: Vec<String> = vec!["preauth".into()];
        let deny: Vec<String> = vec!["preauth".into(), "on_error=deny".into()];
        let boom = || -> PamResultCode { panic!("boom") };
        assert_eq!(guarded(&allow, None, Hook::Auth(Some(Mode::Preauth)), boom), PamResultCode::PAM_SUCCESS);
        assert_eq!(guarded(&deny, None, Hook::Auth(Some(Mode::Preauth)), boom), PamResultCode::PAM_AUTH_ERR);
        assert_eq!(guarded(&deny, None, Hook::Account, boom), PamResultCode::PAM_PERM_DENIED);
        assert_eq!(guarded(&allow, None, Hook::Auth(Some(Mode::Authfail)), boom), PamResultCode::PAM_AUTH_ERR);
        assert_eq!(guarded(&allow, None, Hook::Account, || PamResultCode::PAM_IGNORE), PamResultCode::PAM_IGNORE);
    }
}
