//! The core behind the PAM module: one call per hook turns what PAM knows
//! about an attempt into a logged entry, updated account state and a
//! verdict. The PAM glue only gathers the items and maps the verdict.
#![forbid(unsafe_code)]

use crate::config::{Config, ConfigError, Mode, ModuleArgs, OnError, PasswordSource};
use crate::files::FileError;
use crate::hosts::{self, Host, HostState, Hosts};
use crate::notify::{self, Event, Notice};
use crate::policy::{self, Account, LogReason, LoginCheck, PasswordChange, Reason};
use crate::spool::{self, NewEntry};
use crate::state::{Accounts, Written};
use crate::sys::{self, Lookup, Priority, ShadowChange, UserInfo};
use crate::text::escape;
use std::rc::Rc;

/// Which PAM entry point was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `pam_sm_authenticate`, with the mode word of the line.
    Auth(Option<Mode>),
    /// `pam_sm_acct_mgmt`.
    Account,
    /// `pam_sm_chauthtok`; `update` is true in the PAM_UPDATE_AUTHTOK pass.
    Password { update: bool },
}

impl Hook {
    fn type_name(self) -> &'static str {
        match self {
            Hook::Auth(_) => "auth",
            Hook::Account => "account",
            Hook::Password { .. } => "password",
        }
    }
}

/// What PAM told us about the attempt (raw bytes, as typed).
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    pub user: Option<Vec<u8>>,
    pub service: Option<Vec<u8>>,
    pub rhost: Option<Vec<u8>>,
    pub ruser: Option<Vec<u8>>,
    pub tty: Option<Vec<u8>>,
    /// sshd's `SSH_AUTH_INFO_0` from the PAM environment.
    pub ssh_auth_info: Option<Vec<u8>>,
    /// PAM_AUTHTOK is set: a password was typed in this handle (for the
    /// password hook: the new one).
    pub authtok: bool,
    /// A set-user-ID caller (su) set a hard file-size or open-file limit
    /// that could not be lifted: a storage error may be its doing, so it is
    /// answered as `on_error = "deny"` whatever the configuration says.
    pub caller_limited: bool,
    /// The real uid of the process the module runs in (the application's
    /// caller for `su`), when known.
    pub ruid: Option<u32>,
}

/// The answer, before mapping to a PAM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Ignore,
    AuthErr,
    PermDenied,
    AcctExpired,
    NewAuthtokReqd,
}

/// A message for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Error(String),
    Info(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    pub messages: Vec<Message>,
}

impl Outcome {
    fn plain(verdict: Verdict) -> Outcome {
        Outcome { verdict, messages: Vec::new() }
    }
}

/// Left by a successful `authsucc` for the account hook of the same PAM
/// handle, so one login is logged once.
#[derive(Debug, Clone)]
struct LoginMark {
    user: Vec<u8>,
    /// The logged entry: its time and the name as typed.
    time: i64,
    typed: Vec<u8>,
    method: Vec<u8>,
    check: LoginCheck,
}

/// Left when a login was asked for a new password (PAM_NEW_AUTHTOK_REQD),
/// for the password hook of the same PAM handle: when it sees the change,
/// the login is complete and is logged as a success.
#[derive(Debug, Clone)]
struct PendingChange {
    user: Vec<u8>,
    typed: Vec<u8>,
    method: Vec<u8>,
}

/// State kept for the life of one PAM handle: the parsed configuration and
/// the checked state directory, reused by every hook of the same login.
pub struct Session {
    pid: u32,
    key: Vec<String>,
    cfg: Option<Result<Rc<Config>, ConfigError>>,
    /// The account state directory, checked, for this database path.
    accounts: Option<(std::path::PathBuf, Accounts)>,
    /// The host state directory, the same way (opened only when hosts
    /// are counted).
    hosts: Option<(std::path::PathBuf, Hosts)>,
    mark: Option<LoginMark>,
    pending_change: Option<PendingChange>,
    /// The NSS answer for the name last looked up, so the hooks of one
    /// login ask NSS once (an NSS error is not kept).
    user: Option<(Vec<u8>, Option<UserInfo>)>,
    /// How a name is looked up: NSS (the unit tests put in a fake).
    lookup: fn(&[u8]) -> Lookup,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            pid: std::process::id(),
            key: Vec::new(),
            cfg: None,
            accounts: None,
            hosts: None,
            mark: None,
            user: None,
            lookup: sys::lookup_user,
            pending_change: None,
        }
    }
}

/// `pam_useraudit(SERVICE:TYPE): `, the start of every syslog line.
pub fn syslog_prefix(service: Option<&[u8]>, hook: Hook) -> String {
    let svc = escape(crate::text::cap(service.unwrap_or(b"?")));
    format!("pam_useraudit({svc}:{}): ", hook.type_name())
}

/// Syslog with the `pam_useraudit(SERVICE:TYPE):` prefix.
/// The prefix is made only when a line is logged (most hooks log none).
struct Log<'a> {
    service: Option<&'a [u8]>,
    hook: Hook,
    debug: bool,
}

impl<'a> Log<'a> {
    fn new(service: Option<&'a [u8]>, hook: Hook, debug: bool) -> Log<'a> {
        Log { service, hook, debug }
    }
    /// Log; debug lines only with the `debug` argument.
    fn at(&self, p: Priority, msg: &str) {
        if p == Priority::Debug && !self.debug {
            return;
        }
        self.always(p, msg);
    }
    /// Log at this priority whatever `debug` says (syslog's own
    /// configuration decides whether a debug line is kept).
    fn always(&self, p: Priority, msg: &str) {
        sys::syslog(p, &format!("{}{msg}", syslog_prefix(self.service, self.hook)));
    }
}

/// The method names of sshd's `SSH_AUTH_INFO_0` (one per line, e.g.
/// `publickey ssh-ed25519 ...`), else `pam`.
pub fn auth_method(info: Option<&[u8]>) -> Vec<u8> {
    let names: Vec<&[u8]> = info
        .unwrap_or_default()
        .split(|&b| b == b'\n')
        .filter_map(|l| l.split(|&b| b == b' ').next())
        .filter(|w| !w.is_empty())
        .collect();
    if names.is_empty() { b"pam".to_vec() } else { names.join(&b","[..]) }
}

/// The auth method of an attempt. sshd fills `SSH_AUTH_INFO_0` only for the
/// session stack, so it is read when present and otherwise inferred from
/// what sshd does show: in the auth stack the variable is set but empty
/// for keyboard-interactive and unset for password; an account check with
/// no authentication in the same handle (no PAM_AUTHTOK) is a login by a
/// method outside PAM, for sshd a public key. Other programs: `pam`.
pub fn method_for(a: &Attempt, hook: Hook) -> Vec<u8> {
    let info = a.ssh_auth_info.as_deref();
    if info.is_some_and(|i| i.iter().any(|b| !b.is_ascii_whitespace())) {
        return auth_method(info);
    }
    let sshd = a.service.as_deref().is_some_and(|s| s.starts_with(b"sshd"));
    let m: &[u8] = match hook {
        Hook::Auth(_) if info.is_some() => b"keyboard-interactive/pam",
        Hook::Auth(_) if sshd => b"password",
        Hook::Account if sshd && !a.authtok => b"publickey",
        _ => b"pam",
    };
    m.to_vec()
}

/// Whether the account is exempt from locking and expiry; an NSS error
/// looking up an exempt group counts as not exempt.
pub fn exempt(cfg: &Config, u: &UserInfo) -> bool {
    exemption(cfg, u).unwrap_or(false)
}

/// Whether the account is exempt: named in `exempt_users`, or a member of
/// a group in `exempt_groups` by its primary group or by any group NSS
/// lists for it (`getgrouplist`, not only the groups' member lists). Err:
/// the error number of an NSS failure looking up a group.
pub fn exemption(cfg: &Config, u: &UserInfo) -> Result<bool, i32> {
    if cfg.exempt_users.iter().any(|n| n.as_bytes() == u.name.as_slice()) {
        return Ok(true);
    }
    let mut gids = Vec::new();
    for g in &cfg.exempt_groups {
        if let Some(id) = sys::group_id(g)? {
            gids.push(id);
        }
    }
    if gids.is_empty() {
        return Ok(false);
    }
    if gids.contains(&u.gid) {
        return Ok(true);
    }
    Ok(sys::group_list(&u.name, u.gid).iter().any(|g| gids.contains(g)))
}

/// An NSS failure: neither "known" nor "no such account", so it is
/// answered like storage that cannot be used (`on_error`). The name is
/// not given: it may not be an account (often a password typed as one).
fn nss_error(what: &str, e: i32) -> FileError {
    FileError::new(std::path::Path::new("NSS"), format!("{what}: {}", std::io::Error::from_raw_os_error(e)))
}

/// The last password change day for an account, from the configured source.
pub fn password_change(cfg: &Config, a: &Account) -> (PasswordChange, Option<String>) {
    if cfg.password_expiry_days == 0 {
        return (PasswordChange::Unknown, None);
    }
    match cfg.password_change_source {
        PasswordSource::Useraudit => (policy::recorded_change(a), None),
        PasswordSource::Shadow => match sys::shadow_change(&a.user) {
            ShadowChange::Day(0) => (PasswordChange::MustChange, None),
            ShadowChange::Day(d) => (PasswordChange::Day(d), None),
            ShadowChange::NoAging | ShadowChange::NotFound => (PasswordChange::Unknown, None),
            ShadowChange::Unreadable(e) => (
                PasswordChange::Unknown,
                Some(format!(
                    "cannot read the shadow database ({}); password expiry is not checked (password_change_source = \"shadow\" needs root)",
                    std::io::Error::from_raw_os_error(e)
                )),
            ),
        },
    }
}

/// Run `notify_command` for an event, logging refusals.
fn notify(cfg: &Config, log: &dyn Fn(Priority, &str), n: &Notice<'_>) {
    if let Some(cmd) = &cfg.notify_command {
        if let Err(e) = notify::run(cmd, n) {
            log(Priority::Err, &e);
        }
    }
}

/// Announce a lock or disable: syslog at warning, and the notify command.
pub fn announce(cfg: &Config, log: &dyn Fn(Priority, &str), n: &Notice<'_>, why: &str) {
    log(
        Priority::Warning,
        &format!("account {} {why} (event {}, {} failures)", escape(n.user), n.event.as_str(), n.failures),
    );
    notify(cfg, log, n);
}

fn event_of(r: Reason) -> Event {
    match r {
        Reason::AccountExpired => Event::AccountExpired,
        Reason::PasswordExpired => Event::PasswordExpired,
        Reason::LoginFailureLimit | Reason::Admin | Reason::FleetFailureLimit => Event::Locked,
    }
}

fn refused_verdict(hook: Hook, r: LogReason) -> Verdict {
    match (hook, r) {
        (Hook::Auth(_), _) => Verdict::AuthErr,
        (_, LogReason::AccountExpired | LogReason::PasswordExpired) => Verdict::AcctExpired,
        _ => Verdict::PermDenied,
    }
}

/// Handle one call of a PAM entry point.
pub fn handle(
    session: &mut Session,
    args: &[String],
    hook: Hook,
    attempt: &Attempt,
    silent_flag: bool,
    now: i64,
) -> Outcome {
    let margs = ModuleArgs::parse(args.iter().map(String::as_str));
    let log = Log::new(attempt.service.as_deref(), hook, margs.debug);
    for a in &margs.unknown {
        log.at(Priority::Err, &format!("unknown module argument ignored: {}", escape(a.as_bytes())));
    }
    if session.pid != std::process::id() {
        // Inherited across fork: start afresh.
        *session = Session::default();
    }
    let root = sys::euid() == 0;
    // The configuration depends on the arguments but not on the mode word,
    // so the hooks of one login (preauth, authfail/authsucc, account) share
    // one parse and one check of the state directory.
    let key = || args.iter().filter(|a| !matches!(a.as_str(), "preauth" | "authfail" | "authsucc"));
    if session.cfg.is_none() || !session.key.iter().eq(key()) {
        session.key = key().cloned().collect();
        session.cfg = Some(margs.config(root).map(Rc::new));
    }
    let on_error_hint = || margs.on_error_hint();
    let cfg = match session.cfg.as_ref() {
        Some(Ok(c)) => Rc::clone(c),
        Some(Err(e)) => {
            if !root && e.permission_denied() {
                log.always(Priority::Debug, &format!("not root and cannot read the configuration; allowing: {e}"));
                return on_error(hook, OnError::Allow);
            }
            log.at(Priority::Err, &format!("configuration error: {e}"));
            return on_error(hook, on_error_hint());
        }
        None => return on_error(hook, on_error_hint()),
    };
    let silent = silent_flag || margs.silent;
    // "allow" is for storage the administrator's system broke, never for
    // errors a caller can cause.
    let on_error_policy = if attempt.caller_limited { OnError::Deny } else { cfg.on_error };
    // Only when hosts are counted or trusted: otherwise a login never
    // looks at its remote host (nor at DATABASE.hosts/).
    let host = (cfg.host_failure_limit > 0 || !cfg.trusted_hosts.is_empty())
        .then(|| hosts::host_of(attempt.rhost.as_deref(), &cfg.trusted_hosts, cfg.host_ipv6_prefix))
        .flatten();
    let ctx = Ctx { cfg: &cfg, attempt, hook, now, log: &log, on_error: on_error_policy, host };
    let result = run(session, &ctx, root);
    let mut out = match result {
        Ok(o) => o,
        Err(e) => {
            session.accounts = None;
            session.hosts = None;
            if !root && e.denied() {
                log.always(
                    Priority::Debug,
                    &format!("not root and cannot use the state files or spool; allowing: {e}"),
                );
                return on_error(hook, OnError::Allow);
            }
            if attempt.caller_limited {
                log.at(
                    Priority::Err,
                    &format!("{e} (the set-user-ID caller's resource limits could not be lifted; answering as on_error = deny)"),
                );
            } else {
                log.at(Priority::Err, &format!("{e}"));
            }
            on_error(hook, on_error_policy)
        }
    };
    if silent {
        out.messages.clear();
    }
    out
}

/// The verdict when the storage (state files, spool) or configuration
/// cannot be used.
pub fn on_error(hook: Hook, policy: OnError) -> Outcome {
    let v = match (hook, policy) {
        (Hook::Auth(Some(Mode::Authfail)), _) => Verdict::AuthErr,
        (Hook::Password { .. }, _) => Verdict::Ignore,
        (_, OnError::Allow) => Verdict::Success,
        (Hook::Auth(_), OnError::Deny) => Verdict::AuthErr,
        (_, OnError::Deny) => Verdict::PermDenied,
    };
    Outcome::plain(v)
}

struct Ctx<'a> {
    cfg: &'a Config,
    attempt: &'a Attempt,
    hook: Hook,
    now: i64,
    log: &'a Log<'a>,
    /// `on_error` for this attempt (see [`Attempt::caller_limited`]).
    on_error: OnError,
    /// The remote host, when hosts are counted or trusted.
    host: Option<Host>,
}

impl Ctx<'_> {
    fn entry<'e>(&'e self, user: &'e [u8], success: bool, reason: Option<LogReason>, method: &'e [u8]) -> NewEntry<'e> {
        let a = self.attempt;
        NewEntry {
            time: self.now,
            success,
            user,
            service: a.service.as_deref(),
            rhost: a.rhost.as_deref(),
            ruser: a.ruser.as_deref(),
            tty: a.tty.as_deref(),
            auth_method: Some(method),
            reason,
        }
    }
    fn notice<'n>(&'n self, user: &'n [u8], event: Event, failures: u32) -> Notice<'n> {
        Notice { event, user, rhost: self.attempt.rhost.as_deref(), service: self.attempt.service.as_deref(), failures }
    }
    /// Root on this machine asks (see [`policy::root_caller`]).
    fn root_caller(&self) -> bool {
        let a = self.attempt;
        policy::root_caller(a.ruid, a.ruser.as_deref(), a.rhost.as_deref())
    }
    fn logf(&self) -> impl Fn(Priority, &str) + '_ {
        |p, m| self.log.at(p, m)
    }
    /// The attempt comes from a host in `trusted_hosts`.
    fn trusted(&self) -> bool {
        self.host.as_ref().is_some_and(|h| h.trusted)
    }
    /// The host whose failures count and which may be blocked.
    fn counted_host(&self) -> Option<&Host> {
        self.host.as_ref().filter(|h| !h.trusted && self.cfg.host_failure_limit > 0)
    }
    /// A lock from `login_failure_limit` does not refuse this attempt: root
    /// on this machine, or a trusted host while the lock came from
    /// untrusted ones.
    fn spared(&self, acc: &Account) -> bool {
        self.root_caller() || policy::lock_spares(acc, self.trusted())
    }
}

/// An attempt by a user NSS knows, as the hooks that decide and record
/// it (`preauth`, `authfail`, a login) see it. Borrowed from `run`, so
/// passing it allocates nothing.
#[derive(Clone, Copy)]
struct Known<'a> {
    /// The name as typed (PAM_USER), which the log keeps.
    typed: &'a [u8],
    /// The account's name as NSS gives it, which keys its state file.
    name: &'a [u8],
    /// Exempt from locking and expiry (see [`exemption`]).
    is_exempt: bool,
    /// The auth method as logged (see [`method_for`]).
    method: &'a [u8],
}

/// The checked account state directory (the database's directory is
/// checked, and created if missing, on the way; the spool lives there).
fn accounts<'s>(session: &'s mut Session, cfg: &Config, root: bool) -> Result<&'s Accounts, FileError> {
    if session.accounts.as_ref().is_some_and(|(p, _)| *p != cfg.database) {
        session.accounts = None;
    }
    if session.accounts.is_none() {
        session.accounts = Some((cfg.database.clone(), Accounts::open(&cfg.database, true, root)?));
    }
    Ok(&session.accounts.as_ref().expect("just opened").1)
}

/// The checked host state directory (as [`accounts`]).
fn hosts_dir<'s>(session: &'s mut Session, cfg: &Config, root: bool) -> Result<&'s Hosts, FileError> {
    if session.hosts.as_ref().is_some_and(|(p, _)| *p != cfg.database) {
        session.hosts = None;
    }
    if session.hosts.is_none() {
        session.hosts = Some((cfg.database.clone(), Hosts::open(&cfg.database, true, root)?));
    }
    Ok(&session.hosts.as_ref().expect("just opened").1)
}

/// The refusal of an attempt from a blocked host (preauth, authsucc and
/// the account stack), logged as `host_blocked`; None when the host is not
/// blocked. Such attempts are not counted: they do not extend the block.
fn host_refusal(
    session: &mut Session,
    ctx: &Ctx<'_>,
    root: bool,
    typed: &[u8],
    method: &[u8],
) -> Result<Option<Outcome>, FileError> {
    let Some(h) = ctx.counted_host() else { return Ok(None) };
    let Some(state) = hosts_dir(session, ctx.cfg, root)?.get(&h.key)? else { return Ok(None) };
    if hosts::block_at(&state, ctx.now).is_none() {
        return Ok(None);
    }
    // Decided from readable state: a refusal whatever the spool says.
    log_attempt(ctx, &ctx.entry(typed, false, Some(LogReason::HostBlocked), method), false);
    ctx.log.at(Priority::Debug, &format!("refused: host {} is blocked", escape(&h.key)));
    Ok(Some(Outcome::plain(refused_verdict(ctx.hook, LogReason::HostBlocked))))
}

/// Count a failed attempt against its remote host, and block the host at
/// `host_failure_limit` (announced once, by the failure that blocks it).
fn count_host_failure(session: &mut Session, ctx: &Ctx<'_>, root: bool, user: &[u8]) -> Result<(), FileError> {
    let Some(h) = ctx.counted_host() else { return Ok(()) };
    let cfg = ctx.cfg;
    let blocked_now = hosts_dir(session, cfg, root)?.update(&h.key, false, |cur| {
        let mut s = cur.unwrap_or_else(|| HostState::new(&h.key));
        let limit = cfg.host_failure_limit;
        let b = hosts::record_failure(&mut s, limit, cfg.host_failure_window, cfg.host_block_time, ctx.now);
        Ok((Some(s), b))
    })?;
    if blocked_now {
        ctx.log.at(
            Priority::Warning,
            &format!("host {} blocked after {} failed attempts", escape(&h.key), cfg.host_failure_limit),
        );
        notify(cfg, &ctx.logf(), &ctx.notice(user, Event::HostBlocked, cfg.host_failure_limit));
    }
    Ok(())
}

/// As [`count_host_failure`] for an attempt that is refused anyway: an
/// error is logged and changes nothing in the answer.
fn count_refused(session: &mut Session, ctx: &Ctx<'_>, root: bool, user: &[u8]) {
    if let Err(e) = count_host_failure(session, ctx, root, user) {
        ctx.log.at(Priority::Err, &format!("{e}"));
    }
}

/// Append an attempt to the log spool (of an account, or of a name that is
/// not one: those are the first dropped at the spool's bound). Whether it
/// was written or deliberately dropped; an error is logged here, and the
/// caller decides what it means for the answer: never a refusal turned
/// into a success.
fn log_attempt(ctx: &Ctx<'_>, e: &NewEntry<'_>, account: bool) -> bool {
    let bound = spool::Bound { max_bytes: ctx.cfg.spool_max_bytes, account };
    match spool::append_bounded(&ctx.cfg.database, e, bound) {
        Ok(a) => {
            if let Some(aside) = &a.damaged_aside {
                ctx.log.at(
                    Priority::Err,
                    &format!(
                        "{}: damaged header; set aside as {} (useraudit-admin recovers its intact records) and a new spool started",
                        spool::path_for(&ctx.cfg.database).display(),
                        aside.display()
                    ),
                );
            }
            if let Some(n) = a.dropped {
                // Logged at 1, 2, 4, 8 ... drops per spool: a flood cannot
                // flood syslog in turn.
                if n.is_power_of_two() {
                    let (p, what) = if account {
                        (Priority::Err, "entries for accounts too")
                    } else {
                        (Priority::Warning, "entries for names that are not accounts")
                    };
                    ctx.log.at(
                        p,
                        &format!(
                            "{}: at its bound (spool_max_bytes = {}): {what} are dropped; {n} dropped so far (counted in the log at the next merge)",
                            spool::path_for(&ctx.cfg.database).display(),
                            ctx.cfg.spool_max_bytes
                        ),
                    );
                }
            }
            true
        }
        Err(err) => {
            ctx.log.at(Priority::Err, &format!("cannot log the attempt: {err}"));
            false
        }
    }
}

/// One call of a hook: what it applies to, then the hook's own function.
fn run(session: &mut Session, ctx: &Ctx<'_>, root: bool) -> Result<Outcome, FileError> {
    let typed = match applies(ctx) {
        Ok(typed) => typed,
        Err(answer) => return Ok(answer),
    };
    let method = method_for(ctx.attempt, ctx.hook);
    let checks_host = match ctx.hook {
        Hook::Auth(Some(Mode::Preauth | Mode::Authsucc)) => true,
        // Not again for a login authsucc has just let in.
        Hook::Account => session.mark.is_none(),
        _ => false,
    };
    if checks_host {
        if let Some(refused) = host_refusal(session, ctx, root, &typed, &method)? {
            return Ok(refused);
        }
    }
    let Some(info) = look_up(session, &typed)? else {
        return unknown_user(session, ctx, root, &typed, &method);
    };
    let is_exempt = exemption(ctx.cfg, &info).map_err(|e| nss_error("cannot look up the exempt groups", e))?;
    let name = info.name;
    let who = Known { typed: &typed, name: &name, is_exempt, method: &method };
    match ctx.hook {
        Hook::Auth(Some(Mode::Preauth)) => preauth(session, ctx, root, &who),
        Hook::Auth(Some(Mode::Authfail)) => authfail(session, ctx, root, &who),
        Hook::Auth(Some(Mode::Authsucc)) | Hook::Account => {
            if ctx.hook == Hook::Account {
                if let Some(mark) = session.mark.take() {
                    if mark.user == name {
                        return Ok(finish_marked(ctx, mark, &method));
                    }
                }
            }
            login(session, ctx, root, &who)
        }
        Hook::Password { .. } => password(session, ctx, root, &name),
        Hook::Auth(None) => Ok(Outcome::plain(Verdict::Ignore)),
    }
}

/// The name as typed when the hook has something to do for this attempt;
/// otherwise the answer without doing anything.
fn applies(ctx: &Ctx<'_>) -> Result<Vec<u8>, Outcome> {
    let a = ctx.attempt;
    match ctx.hook {
        Hook::Auth(None) => {
            ctx.log.at(Priority::Err, "auth line without a mode word (preauth, authfail or authsucc); ignored");
            return Err(Outcome::plain(Verdict::Ignore));
        }
        Hook::Password { update: false } => return Err(Outcome::plain(Verdict::Ignore)),
        Hook::Account if a.service.as_ref().is_some_and(|svc| ignored_service(ctx.cfg, svc)) => {
            return Err(Outcome::plain(Verdict::Ignore));
        }
        _ => {}
    }
    a.user.clone().ok_or_else(|| {
        ctx.log.at(Priority::Err, "no user name (PAM_USER is not set); ignored");
        Outcome::plain(match ctx.hook {
            Hook::Auth(Some(Mode::Authfail)) => Verdict::AuthErr,
            _ => Verdict::Ignore,
        })
    })
}

/// A service whose account checks are not logins (`ignore_services`).
fn ignored_service(cfg: &Config, svc: &[u8]) -> bool {
    cfg.ignore_services.iter().any(|s| s.as_bytes() == svc)
}

/// The account NSS knows by this name (None: no such account), asked once
/// per login.
fn look_up(session: &mut Session, typed: &[u8]) -> Result<Option<UserInfo>, FileError> {
    if let Some((n, info)) = &session.user {
        if n == typed {
            return Ok(info.clone());
        }
    }
    session.user = None;
    let info = match (session.lookup)(typed) {
        Lookup::Found(u) => Some(u),
        Lookup::NotFound => None,
        // Not "no such account": nothing would be counted and
        // preauth would pass a locked account.
        Lookup::Error(e) => return Err(nss_error("cannot look the user up", e)),
    };
    session.user = Some((typed.to_vec(), info.clone()));
    Ok(info)
}

/// `preauth`: refuse a locked or disabled account before any password.
fn preauth(session: &mut Session, ctx: &Ctx<'_>, root: bool, who: &Known<'_>) -> Result<Outcome, FileError> {
    let Known { typed, name, is_exempt, method } = *who;
    if is_exempt {
        return Ok(Outcome::plain(Verdict::Success));
    }
    let accts = accounts(session, ctx.cfg, root)?;
    let Some(mut acc) = accts.get(name)? else {
        return Ok(Outcome::plain(Verdict::Success));
    };
    if policy::has_future_times(&acc, ctx.now) {
        // Recorded while the clock was ahead: from now on they
        // count as now (a refused attempt writes nothing else, so
        // a lock would otherwise last until that future time).
        // Decided from the corrected copy even if it cannot be written.
        policy::clamp_future_times(&mut acc, ctx.now);
        let written = accts.update(name, false, |cur| {
            let mut a = cur.unwrap_or_else(|| acc.clone());
            policy::clamp_future_times(&mut a, ctx.now);
            Ok((Some(a.clone()), a))
        });
        match written {
            Ok(a) => acc = a,
            Err(e) => ctx.log.at(Priority::Err, &format!("{e}; decided from the last written state")),
        }
    }
    let standing = policy::standing(&acc, ctx.cfg, ctx.now);
    let Some(reason) = policy::refusal_for(standing, ctx.spared(&acc)) else {
        return Ok(Outcome::plain(Verdict::Success));
    };
    // Decided from readable state: a refusal whatever the spool says.
    log_attempt(ctx, &ctx.entry(typed, false, Some(reason), method), true);
    count_refused(session, ctx, root, typed);
    ctx.log.at(Priority::Notice, &format!("refused {} before authentication: {}", escape(name), reason.as_str()));
    let texts = policy::refusal_text(&acc, standing, ctx.now);
    Ok(Outcome { verdict: Verdict::AuthErr, messages: texts.into_iter().map(Message::Error).collect() })
}

/// `authfail`: the password module failed; count the failure and log it.
fn authfail(session: &mut Session, ctx: &Ctx<'_>, root: bool, who: &Known<'_>) -> Result<Outcome, FileError> {
    let Known { typed, name, is_exempt, method } = *who;
    let cfg = ctx.cfg;
    let accts = accounts(session, cfg, root)?;
    // Counted first: the count is what locks, and it is rewritten
    // in place (no new disk space), while the log entry needs room
    // that a full disk or an attacker's flood may have taken. An
    // entry that cannot be logged is reported; the answer is a
    // refusal either way.
    let counted = accts.update(name, false, |cur| {
        let mut acc = cur.unwrap_or_else(|| Account::new(name, ctx.now));
        let o = policy::record_failure(&mut acc, cfg, ctx.now, is_exempt, ctx.trusted());
        let failures = acc.failures;
        // Not counted: the account was already locked or disabled,
        // a lock that landed after preauth let this attempt on.
        // The right password gets the refusal text then (see
        // `login`); a wrong one gets the same, so that the answer
        // does not tell them apart.
        let texts = if !o.counted && !is_exempt {
            policy::refusal_text(&acc, policy::standing(&acc, cfg, ctx.now), ctx.now)
        } else {
            Vec::new()
        };
        Ok((Some(acc), (o, failures, texts)))
    });
    log_attempt(ctx, &ctx.entry(typed, false, Some(LogReason::Auth), method), true);
    let host_counted = count_host_failure(session, ctx, root, typed);
    let (outcome, failures, texts) = counted?;
    host_counted?;
    ctx.log.at(Priority::Debug, &format!("failure {} for {}", failures, escape(name)));
    if outcome.locked_now {
        announce(cfg, &ctx.logf(), &ctx.notice(name, Event::Locked, failures), "locked after failed logins");
    }
    Ok(Outcome { verdict: Verdict::AuthErr, messages: texts.into_iter().map(Message::Error).collect() })
}

/// The password hook's update pass: record a successful change, and
/// complete a login that was asked for it.
fn password(session: &mut Session, ctx: &Ctx<'_>, root: bool, name: &[u8]) -> Result<Outcome, FileError> {
    let cfg = ctx.cfg;
    if !ctx.attempt.authtok {
        return Ok(Outcome::plain(Verdict::Ignore));
    }
    if cfg.password_change_source == PasswordSource::Shadow {
        // pam_unix stamps today's day in shadow on success; if it did
        // not, the change failed and nothing is recorded.
        if let ShadowChange::Day(d) = sys::shadow_change(name) {
            if d != policy::day_of(ctx.now) {
                ctx.log.at(Priority::Debug, "shadow not updated today; password change not recorded");
                return Ok(Outcome::plain(Verdict::Ignore));
            }
        }
    }
    // A login of this handle that was asked for the change is
    // complete now.
    let pending = session.pending_change.take_if(|p| p.user == name);
    accounts(session, cfg, root)?.update(name, false, |cur| {
        let mut acc = cur.unwrap_or_else(|| Account::new(name, ctx.now));
        policy::password_changed(&mut acc, ctx.now);
        if pending.is_some() {
            policy::complete_change(&mut acc, cfg, ctx.now);
        }
        Ok((Some(acc), ()))
    })?;
    ctx.log.at(Priority::Info, &format!("password change recorded for {}", escape(name)));
    if let Some(p) = pending {
        log_attempt(ctx, &ctx.entry(&p.typed, true, None, &p.method), true);
        ctx.log.at(Priority::Info, &format!("{} changed the expired password and logged in", escape(name)));
    }
    Ok(Outcome::plain(Verdict::Success))
}

/// A name NSS does not know: logged, no state, not named in syslog.
fn unknown_user(
    session: &mut Session,
    ctx: &Ctx<'_>,
    root: bool,
    typed: &[u8],
    method: &[u8],
) -> Result<Outcome, FileError> {
    let (success, verdict) = match ctx.hook {
        Hook::Auth(Some(Mode::Preauth)) => return Ok(Outcome::plain(Verdict::Success)),
        Hook::Password { .. } => return Ok(Outcome::plain(Verdict::Ignore)),
        Hook::Auth(Some(Mode::Authfail)) => (false, Verdict::AuthErr),
        Hook::Auth(Some(Mode::Authsucc)) => (true, Verdict::Success),
        Hook::Account | Hook::Auth(None) => (false, Verdict::Ignore),
    };
    // The directories are checked (as for a known account) before the spool is used.
    accounts(session, ctx.cfg, root)?;
    let logged = log_attempt(ctx, &ctx.entry(typed, success, (!success).then_some(LogReason::Auth), method), false);
    if verdict == Verdict::AuthErr {
        // A guessed name counts against its host like a wrong password.
        count_host_failure(session, ctx, root, typed)?;
    }
    if !logged && success {
        // A success that cannot be logged: the administrator's storage
        // broke (the error is in syslog); on_error decides.
        return Err(FileError::new(&spool::path_for(&ctx.cfg.database), "the entry above could not be logged"));
    }
    ctx.log.at(Priority::Debug, "attempt for a name that is not an account");
    Ok(Outcome::plain(verdict))
}

/// A login whose credentials were right (authsucc, or the account hook
/// without a preceding authsucc, e.g. an SSH key): decide, record, answer.
fn login(session: &mut Session, ctx: &Ctx<'_>, root: bool, who: &Known<'_>) -> Result<Outcome, FileError> {
    let Known { typed, name, method, .. } = *who;
    let cfg = ctx.cfg;
    let decided = decide_login(session, ctx, root, who)?;
    let check = decided.0;
    let (success, reason) = match check {
        LoginCheck::Allow { .. } => (true, None),
        // Not a login yet: the password must be changed first. The
        // password hook logs the success when it sees the change.
        LoginCheck::ChangePassword => (false, Some(LogReason::PasswordExpired)),
        LoginCheck::Refuse(r) => (false, Some(r)),
        LoginCheck::Disable(r) => (false, Some(r.refusal())),
    };
    let logged = log_attempt(ctx, &ctx.entry(typed, success, reason, method), true);
    let now = ctx.now;
    let out = answer_login(session, ctx, who, decided);
    if matches!(check, LoginCheck::Refuse(_) | LoginCheck::Disable(_)) {
        // Refused for a locked or disabled account: counts against the host.
        count_refused(session, ctx, root, typed);
    }
    // The state has changed either way (and a disable was announced). A
    // refusal stays a refusal whether or not its entry could be logged; a
    // success that could not be logged is answered by on_error (the error
    // is in syslog already).
    if !logged && out.verdict == Verdict::Success {
        return Err(FileError::new(&spool::path_for(&cfg.database), "the login above could not be logged"));
    }
    if ctx.hook != Hook::Account && out.verdict == Verdict::Success {
        session.mark =
            Some(LoginMark { user: name.to_vec(), time: now, typed: typed.to_vec(), method: method.to_vec(), check });
    }
    Ok(out)
}

/// Decide a login whose credentials were right from the account's state
/// and record its effect: the verdict, the account as decided, and whether
/// that was written.
fn decide_login(
    session: &mut Session,
    ctx: &Ctx<'_>,
    root: bool,
    who: &Known<'_>,
) -> Result<(LoginCheck, Account, bool), FileError> {
    let Known { typed, name, is_exempt, method } = *who;
    let cfg = ctx.cfg;
    let root_caller = ctx.root_caller();
    let trusted = ctx.trusted();
    // The shadow lookup is done before the transaction to keep it short.
    let shadow = (cfg.password_expiry_days > 0 && cfg.password_change_source == PasswordSource::Shadow)
        .then(|| password_change(cfg, &Account::new(name, ctx.now)));
    if let Some((_, Some(warn))) = &shadow {
        ctx.log.at(Priority::Debug, warn);
    }
    // A directory that cannot be used (or trusted) gets nothing written.
    let accts = accounts(session, cfg, root)?;
    // Decided from the last committed state even while another process
    // holds the file's lock: a refusal writes nothing and needs no lock; a
    // login the lock keeps from being recorded is answered as decided.
    // What was decided is kept even when writing it fails.
    let mut decided = None;
    let updated = accts.update_or_decide(name, |cur| {
        let mut acc = cur.unwrap_or_else(|| Account::new(name, ctx.now));
        // Times recorded while the clock was ahead count as now (written
        // down even when the attempt is refused).
        let clamped = policy::clamp_future_times(&mut acc, ctx.now);
        let change = match &shadow {
            Some((c, _)) => *c,
            None => password_change(cfg, &acc).0,
        };
        let spared = root_caller || policy::lock_spares(&acc, trusted);
        let check = policy::check_login(&acc, cfg, ctx.now, change, is_exempt, spared);
        policy::apply_login(&mut acc, check, cfg, ctx.now);
        // A refused attempt changes nothing; the others record their effect.
        let keep = clamped || !matches!(check, LoginCheck::Refuse(_));
        decided = Some((check, acc.clone()));
        Ok((keep.then(|| acc.clone()), (check, acc)))
    });
    let decided = match (updated, decided) {
        (Ok(Written::Done((check, acc))), _) => (check, acc, true),
        (Ok(Written::Unwritten((check, acc), e)), _) => {
            ctx.log.at(Priority::Err, &format!("{e}; decided from the last written state, which was not changed"));
            (check, acc, false)
        }
        // A refusal (or a disable) decided from readable state stays one
        // when its state cannot be written; the error goes to syslog.
        (Err(e), Some((check @ (LoginCheck::Refuse(_) | LoginCheck::Disable(_)), acc))) => {
            ctx.log.at(Priority::Err, &format!("{e}"));
            (check, acc, false)
        }
        (Err(e), _) => {
            // The state cannot be used, but the attempt can still be logged:
            // on_error = "allow" lets it in, so it is a login (and the
            // account hook of the same login must not log it again).
            // Refused by "deny", it is not; the syslog error tells.
            if ctx.on_error == OnError::Allow
                && log_attempt(ctx, &ctx.entry(typed, true, None, method), true)
                && ctx.hook != Hook::Account
            {
                session.mark = Some(LoginMark {
                    user: name.to_vec(),
                    time: ctx.now,
                    typed: typed.to_vec(),
                    method: method.to_vec(),
                    check: LoginCheck::Allow { warn_days: None },
                });
            }
            return Err(e);
        }
    };
    Ok(decided)
}

/// The answer to a decided login: the verdict and the user's messages (a
/// disable is announced here, once, by the login that wrote it).
fn answer_login(
    session: &mut Session,
    ctx: &Ctx<'_>,
    who: &Known<'_>,
    (check, acc, written): (LoginCheck, Account, bool),
) -> Outcome {
    let Known { typed, name, is_exempt, method } = *who;
    let cfg = ctx.cfg;
    let now = ctx.now;
    let root_caller = ctx.root_caller();
    let trusted = ctx.trusted();
    match check {
        LoginCheck::Allow { warn_days } => {
            if root_caller && !is_exempt && acc.state == policy::State::Locked {
                ctx.log.at(
                    Priority::Notice,
                    &format!(
                        "{} is locked; let in for root on this machine (real uid 0, PAM_RUSER root, no PAM_RHOST)",
                        escape(name)
                    ),
                );
            } else if trusted && !is_exempt && acc.state == policy::State::Locked {
                ctx.log.at(
                    Priority::Notice,
                    &format!(
                        "{} is locked by failures from untrusted hosts; let in from a trusted host, the lock stays",
                        escape(name)
                    ),
                );
            }
            let messages = match (ctx.hook, warn_days) {
                (Hook::Account, Some(d)) => vec![Message::Info(policy::warning_text(d))],
                _ => vec![],
            };
            Outcome { verdict: Verdict::Success, messages }
        }
        LoginCheck::ChangePassword => {
            ctx.log.at(Priority::Notice, &format!("password of {} has expired; a new one is required", escape(name)));
            session.pending_change =
                Some(PendingChange { user: name.to_vec(), typed: typed.to_vec(), method: method.to_vec() });
            match ctx.hook {
                Hook::Account => Outcome {
                    verdict: Verdict::NewAuthtokReqd,
                    messages: vec![Message::Error(
                        "You are required to change your password immediately (password expired).".into(),
                    )],
                },
                _ => Outcome::plain(Verdict::Success),
            }
        }
        LoginCheck::Refuse(r) => {
            ctx.log.at(Priority::Notice, &format!("refused {}: {}", escape(name), r.as_str()));
            let texts = policy::refusal_text(&acc, policy::standing(&acc, cfg, now), now);
            Outcome { verdict: refused_verdict(ctx.hook, r), messages: texts.into_iter().map(Message::Error).collect() }
        }
        LoginCheck::Disable(r) => {
            let why = match r {
                Reason::AccountExpired => format!("disabled: not used for more than {} days", cfg.account_expiry_days),
                _ => "disabled: password expired".to_string(),
            };
            // Announced once, by the login that records the disable.
            if written {
                announce(cfg, &ctx.logf(), &ctx.notice(name, event_of(r), acc.failures), &why);
            }
            let texts = policy::refusal_text(&acc, policy::standing(&acc, cfg, now), now);
            Outcome {
                verdict: refused_verdict(ctx.hook, r.refusal()),
                messages: texts.into_iter().map(Message::Error).collect(),
            }
        }
    }
}

/// The account hook after `authsucc` let the same login in: the login is
/// already logged and checked; deliver the verdict's messages, and fill in
/// the auth method if it became known only now (sshd sets
/// `SSH_AUTH_INFO_0` after authentication).
fn finish_marked(ctx: &Ctx<'_>, mark: LoginMark, method: &[u8]) -> Outcome {
    let known = ctx.attempt.ssh_auth_info.as_deref().is_some_and(|i| i.iter().any(|b| !b.is_ascii_whitespace()));
    if known && method != mark.method.as_slice() {
        if let Err(e) = spool::append_set_method(&ctx.cfg.database, mark.time, &mark.typed, method) {
            ctx.log.at(Priority::Err, &format!("{e}"));
        }
    }
    match mark.check {
        LoginCheck::Allow { warn_days: Some(d) } => {
            Outcome { verdict: Verdict::Success, messages: vec![Message::Info(policy::warning_text(d))] }
        }
        LoginCheck::ChangePassword => Outcome {
            verdict: Verdict::NewAuthtokReqd,
            messages: vec![Message::Error(
                "You are required to change your password immediately (password expired).".into(),
            )],
        },
        _ => Outcome::plain(Verdict::Success),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_method_from_ssh_info() {
        assert_eq!(auth_method(None), b"pam");
        assert_eq!(auth_method(Some(b"")), b"pam");
        assert_eq!(auth_method(Some(b"publickey ssh-ed25519 AAAAC3Nza")), b"publickey");
        assert_eq!(auth_method(Some(b"password\n")), b"password");
        assert_eq!(auth_method(Some(b"keyboard-interactive/pam\n")), b"keyboard-interactive/pam");
        assert_eq!(auth_method(Some(b"publickey ssh-rsa AAA\npassword\n")), b"publickey,password");
    }

    #[test]
    fn method_inferred_for_sshd() {
        let at = |svc: &[u8], info: Option<&[u8]>, authtok: bool| Attempt {
            service: Some(svc.to_vec()),
            ssh_auth_info: info.map(<[u8]>::to_vec),
            authtok,
            ..Default::default()
        };
        let auth = Hook::Auth(Some(Mode::Authfail));
        assert_eq!(method_for(&at(b"sshd", None, true), auth), b"password");
        assert_eq!(method_for(&at(b"sshd", Some(b""), true), auth), b"keyboard-interactive/pam");
        assert_eq!(method_for(&at(b"sshd", Some(b""), false), Hook::Account), b"publickey");
        assert_eq!(method_for(&at(b"sshd", Some(b"publickey ssh-ed25519 AAAA"), false), Hook::Account), b"publickey");
        assert_eq!(method_for(&at(b"login", None, true), auth), b"pam");
        assert_eq!(method_for(&at(b"login", None, false), Hook::Account), b"pam");
    }

    /// An NSS failure looking the user up is answered as `on_error`, like
    /// storage that cannot be used, never as "no such account" (which
    /// counts nothing and lets preauth pass).
    #[test]
    fn nss_error_is_answered_as_on_error() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("useraudit.toml");
        std::fs::write(&conf, "login_failure_limit = 1\n").unwrap();
        let db = d.path().join("state/ua.db");
        let attempt = Attempt { user: Some(b"alice".to_vec()), service: Some(b"login".to_vec()), ..Default::default() };
        let run = |hook: Hook, mode: &str, on_error: &str| {
            let args: Vec<String> =
                [mode, &format!("conf={}", conf.display()), &format!("db={}", db.display()), on_error]
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(|a| a.to_string())
                    .collect();
            let mut s = Session { lookup: |_| Lookup::Error(libc::EIO), ..Session::default() };
            handle(&mut s, &args, hook, &attempt, false, 1_800_000_000_000_000).verdict
        };
        let pre = Hook::Auth(Some(Mode::Preauth));
        assert_eq!(run(pre, "preauth", "on_error=deny"), Verdict::AuthErr);
        assert_eq!(run(Hook::Account, "", "on_error=deny"), Verdict::PermDenied);
        assert_eq!(run(Hook::Auth(Some(Mode::Authsucc)), "authsucc", "on_error=deny"), Verdict::AuthErr);
        assert_eq!(run(Hook::Auth(Some(Mode::Authfail)), "authfail", ""), Verdict::AuthErr);
        assert_eq!(run(pre, "preauth", ""), Verdict::Success);
        assert_eq!(run(Hook::Account, "", ""), Verdict::Success);
        // nothing was made of the name: no state, no log entry
        assert!(!d.path().join("state").exists());
    }

    #[test]
    fn on_error_policy() {
        assert_eq!(on_error(Hook::Auth(Some(Mode::Preauth)), OnError::Allow).verdict, Verdict::Success);
        assert_eq!(on_error(Hook::Auth(Some(Mode::Authsucc)), OnError::Allow).verdict, Verdict::Success);
        assert_eq!(on_error(Hook::Account, OnError::Allow).verdict, Verdict::Success);
        assert_eq!(on_error(Hook::Auth(Some(Mode::Authfail)), OnError::Allow).verdict, Verdict::AuthErr);
        assert_eq!(on_error(Hook::Auth(Some(Mode::Preauth)), OnError::Deny).verdict, Verdict::AuthErr);
        assert_eq!(on_error(Hook::Account, OnError::Deny).verdict, Verdict::PermDenied);
        assert_eq!(on_error(Hook::Password { update: true }, OnError::Deny).verdict, Verdict::Ignore);
    }
}
