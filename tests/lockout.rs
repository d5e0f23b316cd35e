//! The failed-login limit (issue 3) through real libpam: lock at exactly N,
//! refusal by preauth and by the account hook, what the user is told,
//! `failure_window` and `unlock_after` with time moved by faketime,
//! re-activation and locking by hand, exemptions, unknown names, exactness
//! under concurrency (the in-process driver with many processes), and
//! `notify_command`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const LOCKED3: &str = "The account is locked due to 3 failed logins.";
const RHOST: &str = "203.0.113.9";

// ------------------------------------------------------------------ helpers

/// Whether pamtester can run in a private mount namespace (bubblewrap, as
/// root) with the sandbox's pam.d bound over /etc/pam.d.
fn use_bwrap() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        root && Command::new("bwrap").args(["--dev-bind", "/", "/", "true"]).output().is_ok_and(|o| o.status.success())
    })
}

/// pamtester in the sandbox, like `Sandbox::pamtester`, with two
/// differences:
/// - As root with bubblewrap, the sandbox's pam.d is bound over /etc/pam.d
///   in a private mount namespace instead of going through pam_wrapper.
///   pam_wrapper copies the service files of every process to
///   `/tmp/pam.X`, a name chosen from the pid without an atomic claim, so
///   when many PAM tests run at once on a machine, two processes can
///   share one copy and run each other's stack (and database). Otherwise
///   pam_wrapper is used, as in `common`.
/// - A password that is never read (preauth refuses before the prompt, and
///   pamtester may have exited before it is written) is not an error.
fn pamt(sb: &Sandbox, service: &str, user: &str, input: &str, items: &[(&str, &str)], ops: &[&str]) -> Pam {
    use std::io::Write;
    use std::process::Stdio;
    let mut cmd = Command::new("timeout");
    cmd.arg("30");
    let mut preload = String::from("libnss_wrapper.so");
    if use_bwrap() {
        cmd.args(["bwrap", "--dev-bind", "/", "/", "--bind"]).arg(sb.path().join("pam.d")).arg("/etc/pam.d");
        cmd.env_remove("PAM_WRAPPER");
    } else {
        preload.insert_str(0, "libpam_wrapper.so ");
        cmd.env("PAM_WRAPPER", "1").env("PAM_WRAPPER_SERVICE_DIR", sb.path().join("pam.d"));
    }
    cmd.arg("pamtester");
    for (k, v) in items {
        cmd.arg("-I").arg(format!("{k}={v}"));
    }
    cmd.arg(service).arg(user).args(ops);
    if let Some(ft) = &sb.faketime {
        preload.push(' ');
        preload.push_str(FAKETIME_LIB);
        cmd.env("FAKETIME", ft).env("FAKETIME_DONT_RESET", "1").env("FAKETIME_NO_CACHE", "1");
    }
    cmd.env("LD_PRELOAD", preload)
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .env_remove("PAM_WRAPPER_DEBUGLEVEL");
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    match child.stdin.take().unwrap().write_all(input.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("writing to pamtester: {e}"),
        _ => {}
    }
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(124), "pamtester timed out");
    let p = Pam {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    };
    assert!(!p.stderr.contains("Initialization failure"), "pamtester could not start PAM: {p:?}");
    p
}

/// A whole login (authenticate, then account) on `login` from `rhost`.
fn login(sb: &Sandbox, user: &str, password: &str, rhost: &str) -> Pam {
    pamt(sb, "login", user, &format!("{password}\n"), &[("rhost", rhost)], &["authenticate", "acct_mgmt"])
}

fn wrong(sb: &Sandbox, user: &str) {
    let r = login(sb, user, "wrong", RHOST);
    assert!(!r.ok, "a wrong password for {user} was accepted: {r:?}");
}

fn fail_n(sb: &Sandbox, user: &str, n: usize) {
    for _ in 0..n {
        wrong(sb, user);
    }
}

/// `status USER` exit code (0 may log in, 3 may not, 1 error).
fn status_code(sb: &Sandbox, user: &str) -> Option<i32> {
    sb.admin(&["status", user]).status.code()
}

fn reasons(log: &[Value]) -> Vec<String> {
    log.iter().map(|e| e["reason"].as_str().unwrap_or("-").to_string()).collect()
}

fn count_reason(log: &[Value], reason: &str) -> usize {
    log.iter().filter(|e| e["reason"] == reason).count()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn secs(t: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap_or_else(|| panic!("not a time: {t}"))).unwrap().timestamp()
}

/// The number in "(N minutes left to unlock)".
fn minutes_left(shown: &str) -> i64 {
    let end = shown.find(" minutes left to unlock)").unwrap_or_else(|| panic!("no time left shown: {shown:?}"));
    let start = shown[..end].rfind('(').unwrap() + 1;
    shown[start..end].parse().unwrap()
}

/// Poll (bounded) until `f` returns Some.
fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A script owned by root (the tests run as root; else by the caller) with `mode`.
fn script(path: &Path, body: &str, mode: u32) {
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A notify command appending its USERAUDIT_* environment, one block per
/// run ended by `--`, to `out`.
fn recorder(sb: &Sandbox, out: &Path, mode: u32) -> PathBuf {
    let p = sb.path().join("notify.sh");
    script(&p, &format!("{{ env | grep '^USERAUDIT_' | sort; echo --; }} >> '{}'\n", out.display()), mode);
    p
}

fn blocks(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out).unwrap_or_default().split("--\n").filter(|b| !b.is_empty()).map(String::from).collect()
}

fn set_notify(sb: &Sandbox, cmd: &Path) {
    let mut conf = std::fs::read_to_string(&sb.conf).unwrap();
    conf.push_str(&format!("notify_command = \"{}\"\n", cmd.display()));
    std::fs::write(&sb.conf, conf).unwrap();
}

/// Run pam_drive against the sandbox's pam.d (pam_start_confdir; only
/// nss_wrapper is preloaded). Returns its JSON summary.
fn drive(sb: &Sandbox, args: &[&str]) -> Value {
    let o = drive_cmd(sb, args).output().unwrap();
    assert!(o.status.success(), "pam_drive {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("pam_drive output {e}: {}", text(&o)))
}

fn drive_cmd(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("50")
        .arg(pam_drive())
        .arg("--confdir")
        .arg(sb.path().join("pam.d"))
        .args(["--service", "login", "--rhost", RHOST, "--json"])
        .args(args)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .env_remove("PAM_WRAPPER");
    cmd
}

fn codes(summary: &Value, which: &str, code: &str) -> u64 {
    summary[which][code].as_u64().unwrap_or(0)
}

// -------------------------------------------------------------- the limit

#[test]
fn locks_at_exactly_the_nth_failure() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "alice", 2);
    let st = sb.status("alice");
    assert_eq!(st["state"], "active", "{st}");
    assert_eq!(st["failures"], 2);
    assert_eq!(st["reason"], Value::Null);
    assert_eq!(st["locked_at"], Value::Null);
    assert_eq!(status_code(&sb, "alice"), Some(0), "N-1 failures: may still log in");

    wrong(&sb, "alice");
    let st = sb.status("alice");
    assert_eq!(st["state"], "locked", "{st}");
    assert_eq!(st["reason"], "login_failure_limit");
    assert_eq!(st["failures"], 3);
    assert!(st["locked_at"].is_string(), "{st}");
    assert_eq!(st["unlocks_at"], Value::Null, "no unlock_after: locked until activated");
    assert_eq!(status_code(&sb, "alice"), Some(3));
    let log = sb.log(&["--user", "alice"]);
    assert_eq!(reasons(&log), ["auth", "auth", "auth"]);
    // the lock was set by the third failure, at its time
    assert_eq!(st["locked_at"], log[0]["time"]);
    // nobody else is touched
    assert_eq!(sb.status("bob")["failures"], 0);
    assert_eq!(status_code(&sb, "bob"), Some(0));
}

#[test]
fn n_minus_one_failures_then_the_right_password_works_and_resets() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "alice", 2);
    let ok = login(&sb, "alice", PASSWORD, RHOST);
    assert!(ok.ok, "{ok:?}");
    let st = sb.status("alice");
    assert_eq!(st["failures"], 0, "a success resets the count: {st}");
    assert!(st["last_login"].is_string());
    // the count starts again from zero: two more are not enough
    fail_n(&sb, "alice", 2);
    assert_eq!(sb.status("alice")["state"], "active");
    assert_eq!(sb.status("alice")["failures"], 2);
    assert!(login(&sb, "alice", PASSWORD, RHOST).ok);
    // authenticate alone (authsucc, no account stack) resets too
    fail_n(&sb, "alice", 2);
    let r = pamt(&sb, "login", "alice", "secret\n", &[], &["authenticate"]);
    assert!(r.ok, "{r:?}");
    assert_eq!(sb.status("alice")["failures"], 0);
    fail_n(&sb, "alice", 2);
    assert_eq!(sb.status("alice")["state"], "active");
    wrong(&sb, "alice");
    assert_eq!(sb.status("alice")["state"], "locked");
    let log = sb.log(&["--user", "alice"]);
    assert_eq!(log.iter().filter(|e| e["outcome"] == "success").count(), 3);
    assert_eq!(count_reason(&log, "auth"), 9);
}

#[test]
fn locked_account_is_refused_by_preauth_with_the_reason_and_not_extended() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "alice", 3);
    let before = sb.status("alice");
    assert_eq!(before["state"], "locked");
    // Later, so that a refused attempt moving the lock would show.
    sb.faketime = Some("+5m".into());

    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok, "the right password must be refused while locked: {r:?}");
    assert!(r.shown().contains(LOCKED3), "the user is told why: {r:?}");
    assert!(!r.shown().contains("Password"), "refused by preauth, before a password is asked: {r:?}");
    let r = login(&sb, "alice", "wrong", RHOST);
    assert!(!r.ok);
    assert!(r.shown().contains(LOCKED3), "{r:?}");

    let log = sb.log(&["--user", "alice"]);
    assert_eq!(reasons(&log), ["locked", "locked", "auth", "auth", "auth"]);
    for e in &log[..2] {
        assert_eq!(e["outcome"], "failure");
        assert_eq!(e["rhost"], RHOST);
        assert_eq!(e["service"], "login");
    }
    assert!(secs(&log[0]["time"]) >= secs(&log[2]["time"]) + 290, "the refusals were made 5 minutes later: {log:?}");
    let after = sb.status("alice");
    assert_eq!(after["state"], "locked");
    assert_eq!(after["failures"], 3, "refused attempts are not counted");
    assert_eq!(after["locked_at"], before["locked_at"], "refused attempts do not extend the lock");
    assert_eq!(after["last_failure"], before["last_failure"], "not counted as failures either");
}

#[test]
fn silent_suppresses_the_message_but_not_the_refusal() {
    if missing_tools() {
        return;
    }
    // the module argument
    let sb = Sandbox::new("login_failure_limit=3 silent");
    fail_n(&sb, "alice", 3);
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok);
    assert!(!r.shown().contains("locked"), "silent: no message: {r:?}");
    let r = pamt(&sb, "sshd", "alice", "", &[], &["acct_mgmt"]);
    assert!(!r.ok);
    assert!(!r.shown().contains("locked"), "{r:?}");
    assert_eq!(reasons(&sb.log(&["--user", "alice", "--limit", "2"])), ["locked", "locked"]);

    // PAM_SILENT from the application does the same
    let sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "alice", 3);
    let r = pamt(&sb, "login", "alice", "secret\n", &[("rhost", RHOST)], &["authenticate(PAM_SILENT)"]);
    assert!(!r.ok);
    assert!(!r.shown().contains("locked"), "PAM_SILENT: no message: {r:?}");
    let r = pamt(&sb, "login", "alice", "secret\n", &[("rhost", RHOST)], &["authenticate"]);
    assert!(!r.ok);
    assert!(r.shown().contains(LOCKED3), "without the flag the message is shown: {r:?}");
}

#[test]
fn the_account_hook_alone_refuses_a_locked_account() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("login_failure_limit=3");
    // before the lock, the account hook alone (an SSH key) lets in
    let r = pamt(&sb, "sshd", "alice", "", &[("rhost", RHOST)], &["acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    fail_n(&sb, "alice", 3);
    let before = sb.status("alice");
    sb.faketime = Some("+5m".into());
    let r = pamt(&sb, "sshd", "alice", "", &[("rhost", "198.51.100.4")], &["acct_mgmt"]);
    assert!(!r.ok, "auth skipped, the account hook must refuse: {r:?}");
    assert!(r.shown().contains(LOCKED3), "{r:?}");
    let log = sb.log(&["--user", "alice"]);
    let e = &log[0];
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["reason"], "locked");
    assert_eq!(e["service"], "sshd");
    assert_eq!(e["rhost"], "198.51.100.4");
    assert_eq!(e["auth_method"], "publickey");
    assert_eq!(log.len(), 5, "one success, three failures, one refusal: {log:?}");
    let after = sb.status("alice");
    assert_eq!(after["state"], "locked");
    assert_eq!(after["failures"], 3);
    assert_eq!(after["locked_at"], before["locked_at"]);
    assert_eq!(after["last_login"], before["last_login"], "a refused login is not a login");
}

// ------------------------------------------------- window and timed unlock

#[test]
fn failure_window_counts_only_failures_close_together() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("login_failure_limit=3 failure_window=1h");
    fail_n(&sb, "alice", 2);
    fail_n(&sb, "bob", 2);
    // within the window: the third locks
    sb.faketime = Some("+30m".into());
    wrong(&sb, "bob");
    assert_eq!(sb.status("bob")["state"], "locked");
    assert_eq!(sb.status("bob")["failures"], 3);
    // outside it: the old two no longer count
    sb.faketime = Some("+2h".into());
    wrong(&sb, "alice");
    let st = sb.status("alice");
    assert_eq!(st["state"], "active", "{st}");
    assert_eq!(st["failures"], 1);
    assert!(login(&sb, "alice", PASSWORD, RHOST).ok);
    // bob's lock does not lift by itself (no unlock_after)
    assert!(!login(&sb, "bob", PASSWORD, RHOST).ok);
    // and two more within the window lock alice again
    sb.faketime = Some("+3h".into());
    fail_n(&sb, "alice", 3);
    assert_eq!(sb.status("alice")["state"], "locked");
}

#[test]
fn unlock_after_lifts_the_lock_and_restarts_the_count() {
    if missing_tools() {
        return;
    }
    // In the file, so that `useraudit-admin status` knows it too.
    let mut sb = Sandbox::with_config("login_failure_limit=3", "unlock_after = \"15m\"\n");
    fail_n(&sb, "alice", 3);
    let st = sb.status("alice");
    assert_eq!(st["state"], "locked", "{st}");
    assert_eq!(st["reason"], "login_failure_limit");
    assert_eq!(secs(&st["unlocks_at"]) - secs(&st["locked_at"]), 15 * 60, "{st}");
    assert_eq!(status_code(&sb, "alice"), Some(3));

    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok);
    assert!(r.shown().contains(LOCKED3), "{r:?}");
    let m = minutes_left(&r.shown());
    assert!((14..=15).contains(&m), "{m} minutes left, right after the lock: {r:?}");

    sb.faketime = Some("+10m".into());
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok, "still locked after 10 minutes");
    assert_eq!(minutes_left(&r.shown()), 5, "{r:?}");
    let st2 = sb.status("alice");
    assert_eq!(st2["unlocks_at"], st["unlocks_at"], "refused attempts do not extend the lock");
    assert_eq!(st2["locked_at"], st["locked_at"]);
    assert_eq!(st2["failures"], 3);

    sb.faketime = Some("+16m".into());
    assert_eq!(status_code(&sb, "alice"), Some(0), "the lock has lifted");
    let st3 = sb.status("alice");
    assert_eq!(st3["state"], "active", "{st3}");
    assert_eq!(st3["locked_at"], Value::Null);
    assert_eq!(st3["unlocks_at"], Value::Null);
    // a failure now starts a new count rather than re-locking at once
    wrong(&sb, "alice");
    let st4 = sb.status("alice");
    assert_eq!(st4["state"], "active", "{st4}");
    assert_eq!(st4["failures"], 1);
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(r.ok, "the right password works once the lock lifted: {r:?}");
    assert_eq!(sb.status("alice")["failures"], 0);
    let log = sb.log(&["--user", "alice"]);
    assert_eq!(reasons(&log), ["-", "auth", "locked", "locked", "auth", "auth", "auth"]);
}

// --------------------------------------------------- activate and lock

#[test]
fn activate_reenables_a_locked_account() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "alice", 3);
    assert!(!login(&sb, "alice", PASSWORD, RHOST).ok);

    let o = sb.admin(&["activate", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("alice") && out.contains("activated") && out.contains("locked"), "says what it did: {out}");
    let st = sb.status("alice");
    assert_eq!(st["state"], "active", "{st}");
    assert_eq!(st["failures"], 0);
    assert_eq!(st["reason"], Value::Null);
    assert_eq!(st["locked_at"], Value::Null);
    assert_eq!(status_code(&sb, "alice"), Some(0));
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(r.ok, "{r:?}");
    // the count restarted: it takes N failures again
    fail_n(&sb, "alice", 2);
    assert_eq!(sb.status("alice")["state"], "active");
    wrong(&sb, "alice");
    assert_eq!(sb.status("alice")["state"], "locked");
}

#[test]
fn activate_unknown_already_active_and_several() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    sb.create_db_dir();
    let o = sb.admin(&["activate", "nosuchuser"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchuser"), "names it: {}", text(&o));

    let o = sb.admin(&["activate", "bob"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bob") && out.contains("already active"), "{out}");

    fail_n(&sb, "alice", 3);
    fail_n(&sb, "carol", 3);
    assert_eq!(sb.status("alice")["state"], "locked");
    assert_eq!(sb.status("carol")["state"], "locked");
    // a typo in the list: an error naming it
    let o = sb.admin(&["activate", "alice", "nosuchuser"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchuser"));

    let o = sb.admin(&["activate", "alice", "carol", "bob"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "one line per user: {out}");
    assert!(lines[0].contains("alice") && lines[0].contains("activated"), "{out}");
    assert!(lines[1].contains("carol") && lines[1].contains("activated"), "{out}");
    assert!(lines[2].contains("bob") && lines[2].contains("already active"), "{out}");
    for u in ["alice", "carol", "bob"] {
        assert_eq!(sb.status(u)["state"], "active", "{u}");
        assert!(login(&sb, u, PASSWORD, RHOST).ok, "{u} logs in after activate");
    }
}

#[test]
fn lock_by_hand_disables() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    sb.create_db_dir();
    let o = sb.admin(&["lock", "bob", "--reason", "left"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("bob"), "{}", text(&o));

    let r = login(&sb, "bob", PASSWORD, RHOST);
    assert!(!r.ok, "a disabled account is refused: {r:?}");
    assert!(!r.shown().contains("Password"), "by preauth: {r:?}");
    let r = pamt(&sb, "sshd", "bob", "", &[("rhost", RHOST)], &["acct_mgmt"]);
    assert!(!r.ok, "and by the account hook: {r:?}");
    let log = sb.log(&["--user", "bob"]);
    assert_eq!(reasons(&log), ["disabled", "disabled"]);

    let o = sb.admin(&["status", "bob", "--format", "json"]);
    assert_eq!(o.status.code(), Some(3));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["state"], "disabled", "{v}");
    assert_eq!(v[0]["reason"], "admin");
    assert!(v[0]["locked_at"].is_string());
    let table = String::from_utf8(sb.admin(&["status", "bob"]).stdout).unwrap();
    assert!(table.contains("left"), "the administrator's reason is shown: {table}");
    assert_eq!(status_code(&sb, "alice"), Some(0), "alice is active");

    // a disabled account is not counted or re-locked by failures
    fail_n(&sb, "bob", 4);
    assert_eq!(sb.status("bob")["reason"], "admin");
    // and activate brings it back
    sb.admin_ok(&["activate", "bob"]);
    assert!(login(&sb, "bob", PASSWORD, RHOST).ok);
    assert_eq!(status_code(&sb, "bob"), Some(0));
}

// ----------------------------------------------------------- exemptions

#[test]
fn exempt_users_and_groups_are_logged_but_never_locked() {
    if missing_tools() {
        return;
    }
    // In the file, so that `useraudit-admin lock` knows the exemption too.
    let sb = Sandbox::with_config("login_failure_limit=3", "exempt_groups = [\"wheel\"]\n");
    for u in ["root", "dave"] {
        fail_n(&sb, u, 6);
        let st = sb.status(u);
        assert_eq!(st["state"], "active", "{u} is exempt: {st}");
        assert_eq!(st["failures"], 6, "{u}'s failures are still counted");
        assert_eq!(status_code(&sb, u), Some(0));
        let log = sb.log(&["--user", u]);
        assert_eq!(reasons(&log), vec!["auth"; 6], "{u}: every failure is logged");
        let r = login(&sb, u, PASSWORD, RHOST);
        assert!(r.ok, "{u} still gets in: {r:?}");
        assert!(pamt(&sb, "sshd", u, "", &[], &["acct_mgmt"]).ok);
        assert_eq!(sb.status(u)["failures"], 0);
    }
    // exemptions cannot be locked by hand either
    for u in ["root", "dave"] {
        let o = sb.admin(&["lock", u]);
        assert_eq!(o.status.code(), Some(1), "lock {u}: {}", text(&o));
        assert!(String::from_utf8_lossy(&o.stderr).contains(u), "{}", text(&o));
        assert_eq!(sb.status(u)["state"], "active");
    }
    // the same sandbox does lock others
    fail_n(&sb, "erin", 3);
    assert_eq!(sb.status("erin")["state"], "locked");
    // without exempt_groups, dave locks; root stays exempt by default
    let sb = Sandbox::new("login_failure_limit=3");
    fail_n(&sb, "dave", 3);
    assert_eq!(sb.status("dave")["state"], "locked");
    fail_n(&sb, "root", 4);
    assert_eq!(sb.status("root")["state"], "active");
    assert!(login(&sb, "root", PASSWORD, RHOST).ok);
    assert_eq!(sb.admin(&["lock", "root"]).status.code(), Some(1));
}

#[test]
fn unknown_names_never_get_lock_state() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2");
    for u in ["mallory", "alice "] {
        fail_n(&sb, u, 5);
        let log = sb.log(&["--user", u]);
        assert_eq!(reasons(&log), vec!["auth"; 5], "{u:?}: logged, never refused as locked");
        // the right password of a lookalike gets nowhere, and is logged
        assert!(!login(&sb, u, PASSWORD, RHOST).ok);
    }
    let all: Value = serde_json::from_str(&sb.admin_ok(&["status", "--format", "json"])).unwrap();
    assert_eq!(all.as_array().unwrap().len(), 0, "no account state: {all}");
    assert_eq!(status_code(&sb, "mallory"), Some(1));
    assert_eq!(sb.admin(&["activate", "mallory"]).status.code(), Some(1));
    // the real alice is untouched by "alice "
    assert_eq!(sb.status("alice")["failures"], 0);
    assert!(login(&sb, "alice", PASSWORD, RHOST).ok);
}

// ---------------------------------------------------------- concurrency

#[test]
fn concurrent_failures_on_one_account_lock_exactly_at_n() {
    if missing_tools() {
        return;
    }
    const N: u64 = 5;
    const PROCS: u64 = 8;
    const COUNT: u64 = 4;
    let sb = Sandbox::new(&format!("login_failure_limit={N}"));
    let out = sb.path().join("notified");
    set_notify(&sb, &recorder(&sb, &out, 0o755));
    let (p, c) = (PROCS.to_string(), COUNT.to_string());
    let s = drive(&sb, &["--user", "alice", "--password", "wrong", "--procs", &p, "--count", &c]);
    let attempts = PROCS * COUNT;
    assert_eq!(s["attempts"], attempts, "{s}");
    assert_eq!(codes(&s, "authenticate", "PAM_AUTH_ERR"), attempts, "every attempt refused: {s}");

    let st = sb.status("alice");
    assert_eq!(st["state"], "locked", "{st}");
    assert_eq!(st["failures"], N, "locked at exactly the Nth counted failure: {st}");
    let log = sb.log(&["--user", "alice"]);
    assert_eq!(log.len() as u64, attempts, "one row per attempt, none lost");
    assert_eq!(sb.log(&[]).len() as u64, attempts);
    let (auth, locked) = (count_reason(&log, "auth") as u64, count_reason(&log, "locked") as u64);
    assert_eq!(auth + locked, attempts, "{:?}", reasons(&log));
    assert!(auth >= N, "at least N failures reached the password check: {auth}");
    assert!(log.iter().all(|e| e["outcome"] == "failure"));
    // the lock is stamped by the Nth failure in commit order (ids)
    let mut by_id: Vec<&Value> = log.iter().filter(|e| e["reason"] == "auth").collect();
    by_id.sort_by_key(|e| e["id"].as_i64().unwrap());
    assert_eq!(st["locked_at"], by_id[N as usize - 1]["time"]);
    // ids are unique
    let mut ids: Vec<i64> = log.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as u64, attempts);
    // and the right password is refused now
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok);
    assert!(r.shown().contains(&format!("The account is locked due to {N} failed logins.")), "{r:?}");
    // One lock, one notification, however many attempts raced past preauth.
    // The runs would have been started before pam_drive returned; a short
    // grace lets a second one finish writing.
    wait_for("the notification", Duration::from_secs(10), || (!blocks(&out).is_empty()).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    let got = blocks(&out);
    assert_eq!(got.len(), 1, "exactly one notification for one lock: {got:?}");
    assert!(
        got[0].contains(&format!("USERAUDIT_FAILURES={N}\n")) && got[0].contains("USERAUDIT_USER=alice\n"),
        "{got:?}"
    );
}

#[test]
fn concurrent_failures_are_each_counted_once() {
    if missing_tools() {
        return;
    }
    // With the limit equal to the number of attempts, a lost update (two
    // processes reading the same count) would leave the account unlocked.
    const PROCS: u64 = 8;
    const COUNT: u64 = 6;
    let attempts = PROCS * COUNT;
    let (p, c) = (PROCS.to_string(), COUNT.to_string());
    for (limit, locked) in [(attempts, true), (attempts + 1, false)] {
        let sb = Sandbox::new(&format!("login_failure_limit={limit}"));
        let s = drive(&sb, &["--user", "carol", "--password", "wrong", "--procs", &p, "--count", &c]);
        assert_eq!(codes(&s, "authenticate", "PAM_AUTH_ERR"), attempts, "{s}");
        let st = sb.status("carol");
        assert_eq!(st["failures"], attempts, "limit {limit}: every failure counted once: {st}");
        assert_eq!(st["state"], if locked { "locked" } else { "active" }, "limit {limit}: {st}");
        let log = sb.log(&["--user", "carol"]);
        assert_eq!(reasons(&log), vec!["auth"; attempts as usize], "limit {limit}");
    }
}

#[test]
fn concurrent_attempts_on_many_accounts_lose_nothing() {
    if missing_tools() {
        return;
    }
    const N: u64 = 5;
    const USERS: u64 = 12;
    const PROCS: u64 = 8;
    const COUNT: u64 = 30;
    let sb = Sandbox::new(&format!("login_failure_limit={N}"));
    // more accounts for this sandbox
    let mut passwd = std::fs::read_to_string(sb.path().join("passwd")).unwrap();
    for i in 0..USERS {
        passwd.push_str(&format!("u{i}:x:{}:100::/home/u{i}:/bin/sh\n", 2000 + i));
    }
    std::fs::write(sb.path().join("passwd"), passwd).unwrap();

    // successes for bob run at the same time as the failures
    let ok_run = drive_cmd(&sb, &["--user", "bob", "--password", PASSWORD, "--acct", "--procs", "2", "--count", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (us, p, c) = (USERS.to_string(), PROCS.to_string(), COUNT.to_string());
    let s = drive(&sb, &["--user", "u%d", "--users", &us, "--password", "wrong", "--procs", &p, "--count", &c]);
    let ok = ok_run.wait_with_output().unwrap();
    assert!(ok.status.success(), "{}", text(&ok));
    let ok: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(codes(&ok, "authenticate", "PAM_SUCCESS"), 40, "{ok}");
    assert_eq!(codes(&ok, "acct_mgmt", "PAM_SUCCESS"), 40, "{ok}");

    let attempts = PROCS * COUNT;
    assert_eq!(codes(&s, "authenticate", "PAM_AUTH_ERR"), attempts, "{s}");
    let all = sb.log(&[]);
    assert_eq!(all.len() as u64, attempts + 40, "one row per attempt, none lost");
    let bob = sb.log(&["--user", "bob"]);
    assert_eq!(bob.len(), 40);
    assert!(bob.iter().all(|e| e["outcome"] == "success"));
    let st = sb.status("bob");
    assert_eq!((st["state"].as_str(), st["failures"].as_u64()), (Some("active"), Some(0)));
    for i in 0..USERS {
        let u = format!("u{i}");
        let log = sb.log(&["--user", &u]);
        assert_eq!(log.len() as u64, attempts / USERS, "{u}");
        assert_eq!((count_reason(&log, "auth") + count_reason(&log, "locked")) as u64, attempts / USERS, "{u}");
        let st = sb.status(&u);
        assert_eq!(st["state"], "locked", "{u}: {st}");
        assert_eq!(st["failures"], N, "{u}: {st}");
    }
    let o = Command::new("sqlite3").arg(&sb.db).arg("PRAGMA integrity_check;").output();
    if let Ok(o) = o {
        if o.status.success() {
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "ok");
        }
    }
}

// ------------------------------------------------------------- notify

#[test]
fn notify_command_runs_once_per_lock_with_the_event() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    let out = sb.path().join("notified");
    let cmd = recorder(&sb, &out, 0o755);
    set_notify(&sb, &cmd);

    fail_n(&sb, "alice", 2);
    assert!(!out.exists(), "no notification before the lock");
    wrong(&sb, "alice");
    let got = wait_for("the notify command", Duration::from_secs(10), || {
        let b = blocks(&out);
        (!b.is_empty()).then_some(b)
    });
    assert_eq!(
        got[0],
        "USERAUDIT_EVENT=locked\nUSERAUDIT_FAILURES=3\nUSERAUDIT_RHOST=203.0.113.9\nUSERAUDIT_SERVICE=login\nUSERAUDIT_USER=alice\n"
    );
    // refused attempts do not notify again
    assert!(!login(&sb, "alice", PASSWORD, RHOST).ok);
    assert!(!login(&sb, "alice", "wrong", RHOST).ok);
    assert!(!pamt(&sb, "sshd", "alice", "", &[], &["acct_mgmt"]).ok);
    // A later lock of bob, from sshd, marks the end: anything the refused
    // attempts had started would have been started before it.
    fail_n(&sb, "bob", 2);
    let r = pamt(&sb, "sshd", "bob", "wrong\n", &[("rhost", "198.51.100.7")], &["authenticate"]);
    assert!(!r.ok);
    wait_for("bob's notification", Duration::from_secs(10), || {
        blocks(&out).iter().any(|b| b.contains("USER=bob")).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = blocks(&out);
    assert_eq!(got.len(), 2, "one notification per lock: {got:?}");
    let bob = got.iter().find(|b| b.contains("USER=bob")).unwrap();
    assert_eq!(
        bob,
        "USERAUDIT_EVENT=locked\nUSERAUDIT_FAILURES=3\nUSERAUDIT_RHOST=198.51.100.7\nUSERAUDIT_SERVICE=sshd\nUSERAUDIT_USER=bob\n"
    );
    // a new lock after activation is a new notification
    sb.admin_ok(&["activate", "alice"]);
    fail_n(&sb, "alice", 3);
    wait_for("the second lock's notification", Duration::from_secs(10), || (blocks(&out).len() == 3).then_some(()));
    assert_eq!(blocks(&out).iter().filter(|b| b.contains("USER=alice")).count(), 2);
}

#[test]
fn notify_command_writable_by_group_is_refused() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    let out = sb.path().join("notified");
    let cmd = recorder(&sb, &out, 0o775);
    set_notify(&sb, &cmd);
    fail_n(&sb, "alice", 3);
    // the login still behaves correctly
    assert_eq!(sb.status("alice")["state"], "locked");
    let r = login(&sb, "alice", PASSWORD, RHOST);
    assert!(!r.ok);
    assert!(r.shown().contains(LOCKED3), "{r:?}");
    // make it safe, lock again: only that lock notifies
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o755)).unwrap();
    sb.admin_ok(&["activate", "alice"]);
    fail_n(&sb, "alice", 3);
    wait_for("the notification of the second lock", Duration::from_secs(10), || {
        (!blocks(&out).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(blocks(&out).len(), 1, "the group-writable command never ran: {:?}", blocks(&out));
    // check names the problem
    std::fs::set_permissions(&cmd, std::fs::Permissions::from_mode(0o775)).unwrap();
    let o = sb.admin(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("notify_command"), "{}", text(&o));
}

#[test]
fn a_slow_notify_command_does_not_hold_up_the_login() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    let pidfile = sb.path().join("slow.pid");
    let cmd = sb.path().join("slow.sh");
    script(&cmd, &format!("echo $$ > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexec sleep 20\n", pidfile.display()), 0o755);
    set_notify(&sb, &cmd);
    fail_n(&sb, "alice", 2);
    let t0 = Instant::now();
    let r = login(&sb, "alice", "wrong", RHOST);
    let took = t0.elapsed();
    assert!(!r.ok);
    // it did run
    let pid: i32 = wait_for("the slow command to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok())
    });
    // SAFETY: kill(2) on the pid of the sleep this test started.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    assert!(took < Duration::from_secs(10), "the login waited for the notify command: {took:?}");
    assert_eq!(sb.status("alice")["state"], "locked");
    let t0 = Instant::now();
    assert!(!login(&sb, "alice", PASSWORD, RHOST).ok);
    assert!(t0.elapsed() < Duration::from_secs(10));
}
