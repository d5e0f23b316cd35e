//! The core issue through real libpam: every attempt logged with its
//! items, unknown names without state, ignored services, on_error, the
//! exported symbols, and what useraudit-admin then reports.

mod common;

use common::*;
use serde_json::Value;

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn success_and_failure_are_logged_with_items() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    let items = [("rhost", "203.0.113.9"), ("ruser", "remoteal"), ("tty", "pts/7")];
    let ok = sb.pamtester("login", "alice", "secret\n", &items, &["authenticate", "acct_mgmt"]);
    assert!(ok.ok, "{ok:?}");
    let bad = sb.pamtester("sshd", "alice", "wrong\n", &[("rhost", "198.51.100.7")], &["authenticate"]);
    assert!(!bad.ok);

    let log = sb.log(&[]);
    assert_eq!(log.len(), 2, "one entry per attempt: {log:?}");
    // newest first
    let (f, s) = (&log[0], &log[1]);
    assert_eq!(keys(s), ["auth_method", "id", "outcome", "reason", "rhost", "ruser", "service", "time", "tty", "user"]);
    assert_eq!(s["outcome"], "success");
    assert_eq!(s["user"], "alice");
    assert_eq!(s["service"], "login");
    assert_eq!(s["rhost"], "203.0.113.9");
    assert_eq!(s["ruser"], "remoteal");
    assert_eq!(s["tty"], "pts/7");
    assert_eq!(s["auth_method"], "pam");
    assert_eq!(s["reason"], Value::Null);
    assert!(s["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(f["outcome"], "failure");
    assert_eq!(f["service"], "sshd");
    assert_eq!(f["rhost"], "198.51.100.7");
    assert_eq!(f["reason"], "auth");
    assert_eq!(f["ruser"], Value::Null);
    assert_eq!(f["tty"], Value::Null);

    let st = sb.status("alice");
    assert_eq!(st["state"], "active");
    assert_eq!(st["failures"], 1);
    assert!(st["last_login"].is_string() && st["last_failure"].is_string());
    assert_eq!(
        keys(&st),
        [
            "failures",
            "last_failure",
            "last_login",
            "lock_scope",
            "locked_at",
            "note",
            "password_changed",
            "password_expires",
            "reason",
            "state",
            "unlocks_at",
            "user"
        ]
    );
}

#[test]
fn account_hook_alone_logs_a_login_and_authsucc_is_not_counted_twice() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    // auth skipped (as with an SSH key): the account hook logs the login
    let r = sb.pamtester("sshd", "bob", "", &[("rhost", "192.0.2.1")], &["acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    let log = sb.log(&[]);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["outcome"], "success");
    assert_eq!(log[0]["user"], "bob");
    // authenticate alone (an application without an account stack): authsucc logs it
    let r = sb.pamtester("login", "bob", "secret\n", &[], &["authenticate"]);
    assert!(r.ok);
    assert_eq!(sb.log(&[]).len(), 2);
}

#[test]
fn unknown_names_are_failures_without_state() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2");
    for _ in 0..3 {
        assert!(!sb.login("mallory", "secret", "203.0.113.50").ok);
    }
    let log = sb.log(&["--user", "mallory"]);
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|e| e["outcome"] == "failure" && e["reason"] == "auth"));
    // no account state: not listed, and status names the unknown account
    let all: Value = serde_json::from_str(&sb.admin_ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 0);
    let o = sb.admin(&["status", "mallory"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no such account: mallory"));
}

#[test]
fn ignored_services_are_not_logins() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    assert!(!sb.login("carol", "wrong", "203.0.113.1").ok);
    let r = sb.pamtester("cron", "carol", "", &[], &["acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    let log = sb.log(&[]);
    assert_eq!(log.len(), 1, "the cron account check is not logged: {log:?}");
    assert_eq!(sb.status("carol")["failures"], 1, "and does not reset the count");
}

#[test]
fn log_filters() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", "203.0.113.9").ok);
    assert!(!sb.login("alice", "nope", "198.51.100.7").ok);
    assert!(sb.pamtester("sshd", "bob", "secret\n", &[("rhost", "203.0.113.9")], &["authenticate", "acct_mgmt"]).ok);
    assert_eq!(sb.log(&["--failed"]).len(), 1);
    assert_eq!(sb.log(&["--succeeded"]).len(), 2);
    assert_eq!(sb.log(&["--user", "alice"]).len(), 2);
    assert_eq!(sb.log(&["--rhost", "203.0.113.9"]).len(), 2);
    assert_eq!(sb.log(&["--service", "sshd"]).len(), 1);
    assert_eq!(sb.log(&["--since", "1h"]).len(), 3);
    assert_eq!(sb.log(&["--until", "1h"]).len(), 0);
    assert_eq!(sb.log(&["--since", "2000-01-01", "--until", "2999-01-01T00:00:00Z"]).len(), 3);
    let one = sb.log(&["--limit", "1"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["user"], "bob", "newest first");
    // a value an option cannot take is a usage error
    let o = sb.admin(&["log", "--since", "yesterday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--since"));
    assert_eq!(sb.admin(&["log", "--format", "xml"]).status.code(), Some(2));
    assert_eq!(sb.admin(&["log", "--failed", "--succeeded"]).status.code(), Some(2));
}

#[test]
fn table_and_csv_escape_and_line_up() {
    if missing_tools() {
        return;
    }
    use std::os::unix::ffi::OsStrExt;
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", "203.0.113.9").ok);
    // a name with an escape sequence, a newline and a byte that is not UTF-8
    let evil = std::ffi::OsStr::from_bytes(b"ev\x1b[31mil\n\xff");
    let mut cmd = std::process::Command::new("pamtester");
    cmd.arg("-I").arg("rhost=host\twith\ttabs").arg("login").arg(evil).arg("authenticate");
    cmd.env("LD_PRELOAD", "libpam_wrapper.so libnss_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", sb.path().join("pam.d"))
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .stdin(std::process::Stdio::null());
    let out = {
        let _one_at_a_time = pam_wrapper_lock();
        cmd.output().unwrap()
    };
    assert!(!out.status.success());

    let table = sb.admin_ok(&["log"]);
    assert!(!table.contains('\x1b') && !table.contains('\t'), "{table:?}");
    assert!(table.contains("ev\\x1b[31mil\\n\\xff"), "{table}");
    assert!(table.contains("host\\twith\\ttabs"), "{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3);
    // columns line up: OUTCOME starts at the same column on every line
    let col = lines[0].find("OUTCOME").unwrap();
    for l in &lines[1..] {
        assert!(l[col..].starts_with("success") || l[col..].starts_with("failure"), "{l}");
    }
    let csv = sb.admin_ok(&["log", "--format", "csv"]);
    assert!(csv.starts_with("id,time,outcome,user,service,rhost,ruser,tty,auth_method,reason\n"));
    assert!(csv.contains("ev\\x1b[31mil\\n\\xff"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
    let json = sb.log(&[]);
    assert_eq!(json[0]["user"], "ev\\x1b[31mil\\n\\xff");
    assert_eq!(json[0]["rhost"], "host\twith\ttabs");
}

#[test]
fn on_error_allow_and_deny() {
    if missing_tools() {
        return;
    }
    // The database cannot be created: its directory's parent is a file.
    let sb = Sandbox::new("");
    let blocker = sb.path().join("blocker");
    std::fs::write(&blocker, "").unwrap();
    let bad_db = format!("db={}/sub/ua.db", blocker.display());
    sb.write_service("login", &sb.stack(&bad_db));
    assert!(sb.login("alice", "secret", "203.0.113.9").ok, "allow: the right password gets in");
    assert!(!sb.login("alice", "wrong", "203.0.113.9").ok, "allow: a wrong password still fails");
    sb.write_service("login", &sb.stack(&format!("{bad_db} on_error=deny")));
    assert!(!sb.login("alice", "secret", "203.0.113.9").ok, "deny: refused");
    let r = sb.pamtester("login", "alice", "", &[], &["acct_mgmt"]);
    assert!(!r.ok, "deny: the account hook refuses too");

    // An explicit configuration file that is missing, and one that is bad.
    let missing = format!("conf={}/nope.toml", sb.path().display());
    sb.write_service("login", &sb.stack(&missing));
    assert!(sb.login("alice", "secret", "203.0.113.9").ok);
    std::fs::write(&sb.conf, "login_failure_limit = \"lots\"\n").unwrap();
    sb.write_service("login", &sb.stack(""));
    assert!(sb.login("alice", "secret", "203.0.113.9").ok, "bad config, allow");
    sb.write_service("login", &sb.stack("on_error=deny"));
    assert!(!sb.login("alice", "secret", "203.0.113.9").ok, "bad config, deny");
    // the CLI names file, line and key
    let o = sb.admin(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("useraudit.toml, line 1, key login_failure_limit"), "{err}");
}

#[test]
fn non_root_caller_is_allowed_when_the_database_is_root_only() {
    if missing_tools() {
        return;
    }
    if unsafe_euid() != 0 || !std::path::Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIP: needs root and setpriv to run a caller as nobody");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("on_error=deny");
    // create the root-only database first
    assert!(sb.login("alice", "secret", "203.0.113.9").ok);
    // let nobody read the sandbox, but not the database directory (0700)
    for p in [sb.path().to_path_buf(), sb.path().join("pam.d")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["passwd", "group", "passdb-login", "useraudit.toml", "pam.d/login"] {
        std::fs::set_permissions(sb.path().join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let _one_at_a_time = pam_wrapper_lock();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "pamtester", "login", "alice", "authenticate"])
        .env("LD_PRELOAD", "libpam_wrapper.so libnss_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", sb.path().join("pam.d"))
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"secret\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "a non-root caller is treated as allow: {}", String::from_utf8_lossy(&out.stderr));
}

fn unsafe_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

#[test]
fn the_module_exports_the_pam_entry_points() {
    let so = module_path();
    let c = std::ffi::CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: dlopen/dlsym/dlclose on a valid path and symbol names; the
    // handle is checked before use and not used after dlclose.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        assert!(!h.is_null(), "dlopen failed: {:?}", std::ffi::CStr::from_ptr(libc::dlerror()));
        for sym in [
            c"pam_sm_authenticate",
            c"pam_sm_setcred",
            c"pam_sm_acct_mgmt",
            c"pam_sm_chauthtok",
            c"pam_sm_open_session",
            c"pam_sm_close_session",
        ] {
            assert!(!libc::dlsym(h, sym.as_ptr()).is_null(), "{sym:?} is not exported");
        }
        libc::dlclose(h);
    }
}

#[test]
fn check_prints_effective_settings() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::with_config("", "login_failure_limit = 5\nunlock_after = \"15m\"\n");
    sb.create_db_dir();
    let out = sb.admin_ok(&["check"]);
    assert!(out.contains("login_failure_limit = 5\n"), "{out}");
    assert!(out.contains("unlock_after = \"15m\"\n"), "{out}");
    assert!(out.contains("on_error = \"allow\"\n"), "{out}");
    assert!(out.contains("integrity ok"), "{out}");
}
