//! Issue 4 through real libpam: account inactivity (`account_expiry_days`),
//! `useraudit-admin sweep` and `retention_days`, re-activation, password
//! expiry from both sources (`useraudit` and `shadow`), the warning, both
//! expired actions, a change through the password stack, and what
//! `status` then reports. Time is moved with libfaketime.
//!
//! Every test's clock starts at noon UTC of the real day (`Clock`), so
//! whole-day arithmetic (pam_unix's `time / 86400`) never straddles a
//! midnight while a test runs.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::policy::*;
use common::*;
use serde_json::Value;

/// A sandbox whose configuration file (read by the module and by
/// useraudit-admin alike) holds `toml`; `@DIR@` in it becomes the sandbox
/// directory. The clock starts at day 0.
fn sandbox(toml: &str) -> (Sandbox, Clock) {
    let mut sb = Sandbox::new("");
    std::fs::write(&sb.conf, toml.replace("@DIR@", &sb.path().display().to_string())).unwrap();
    let clock = Clock::new();
    sb.faketime = Some(clock.at(0));
    (sb, clock)
}

fn at(sb: &mut Sandbox, c: &Clock, days: i64) {
    sb.faketime = Some(c.at(days));
}

/// pamtester from `RHOST`, run again when pam_wrapper raced.
fn pamtester(sb: &Sandbox, service: &str, user: &str, input: &str, ops: &[&str]) -> Pam {
    pt(sb, service, user, input, &[("rhost", RHOST)], ops)
}

fn status_code(sb: &Sandbox, user: &str) -> Option<i32> {
    sb.admin(&["status", user]).status.code()
}

fn status_table(sb: &Sandbox, user: &str) -> String {
    String::from_utf8(sb.admin(&["status", user]).stdout).unwrap()
}

/// Change `user`'s password through the password stack.
fn chauthtok(sb: &Sandbox, user: &str, old: &str, new: &str) -> Pam {
    pamtester(sb, "login", user, &format!("{old}\n{new}\n{new}\n"), &["chauthtok"])
}

/// A notify command that writes each event's USERAUDIT_* variables to
/// `notify.EVENT.USER` in the sandbox.
fn write_notify_script(sb: &Sandbox) -> PathBuf {
    let p = sb.path().join("notify.sh");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nf=\"{}/notify.$USERAUDIT_EVENT.$USERAUDIT_USER\"\nenv | grep '^USERAUDIT_' | sort > \"$f.tmp\" && mv \"$f.tmp\" \"$f\"\n",
            sb.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The notify command runs detached: wait (bounded) for its output file.
fn wait_notify(sb: &Sandbox, event: &str, user: &str) -> String {
    let f = sb.path().join(format!("notify.{event}.{user}"));
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(t) = std::fs::read_to_string(&f) {
            return t;
        }
        assert!(Instant::now() < end, "notify_command never reported {event} for {user}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn notify_files(sb: &Sandbox) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(sb.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("notify.") && !n.ends_with(".sh") && !n.ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

fn time_of(v: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}"))).unwrap()
}

// ---------------------------------------------------------------- inactivity

#[test]
fn inactive_account_is_disabled_after_the_right_password_only() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox("account_expiry_days = 30\nnotify_command = \"@DIR@/notify.sh\"\n");
    write_notify_script(&sb);
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert!(login(&sb, "bob", PASSWORD).ok);

    // 29 days later: still fine
    at(&mut sb, &c, 29);
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok, "29 days is within the limit: {r:?}");
    assert_eq!(sb.status("alice")["state"], "active");

    // 31 days after bob's last login: a stranger with a wrong password
    // does not disable the account
    at(&mut sb, &c, 31);
    let r = login(&sb, "bob", "wrong");
    assert!(!r.ok);
    assert_eq!(last(&sb, "bob")["reason"], "auth");
    let st = sb.status("bob");
    assert_eq!(st["state"], "active", "a wrong password must not disable: {st}");
    assert_eq!(st["reason"], Value::Null);
    assert_eq!(status_code(&sb, "bob"), Some(0));
    assert!(notify_files(&sb).is_empty());

    // the right password: disabled, refused, told why
    let r = login(&sb, "bob", PASSWORD);
    assert!(!r.ok, "inactive for 31 days must be refused: {r:?}");
    assert!(r.shown().contains("not used for too long"), "the user is told: {r:?}");
    let e = last(&sb, "bob");
    assert_eq!(e["outcome"], "failure");
    assert_eq!(e["reason"], "account_expired");
    let st = sb.status("bob");
    assert_eq!(st["state"], "disabled");
    assert_eq!(st["reason"], "account_expired");
    assert!(st["locked_at"].is_string(), "{st}");
    assert_eq!(status_code(&sb, "bob"), Some(3));
    let n = wait_notify(&sb, "account_expired", "bob");
    assert!(n.contains("USERAUDIT_EVENT=account_expired\n"), "{n}");
    assert!(n.contains("USERAUDIT_USER=bob\n"), "{n}");
    assert!(n.contains(&format!("USERAUDIT_RHOST={RHOST}\n")), "{n}");
    assert!(n.contains("USERAUDIT_SERVICE=login\n"), "{n}");

    // and stays refused (before any password is asked), logged each time
    let r = login(&sb, "bob", PASSWORD);
    assert!(!r.ok);
    assert_eq!(last(&sb, "bob")["reason"], "account_expired");
    assert_eq!(sb.log(&["--user", "bob", "--failed"]).len(), 3);

    // alice logged in at day 29: only 2 days ago
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert_eq!(sb.status("alice")["state"], "active");
}

#[test]
fn account_hook_alone_disables_an_inactive_account() {
    if missing_tools() {
        return;
    }
    // as with an SSH key: the auth stack is skipped, the account stack is not
    let (mut sb, c) = sandbox("account_expiry_days = 30\n");
    let r = pamtester(&sb, "sshd", "carol", "", &["acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    at(&mut sb, &c, 31);
    let r = pamtester(&sb, "sshd", "carol", "", &["acct_mgmt"]);
    assert!(!r.ok, "{r:?}");
    assert!(r.shown().contains("User account has expired"), "PAM_ACCT_EXPIRED: {r:?}");
    let e = last(&sb, "carol");
    assert_eq!(e["reason"], "account_expired");
    assert_eq!(e["auth_method"], "publickey");
    assert_eq!(sb.status("carol")["reason"], "account_expired");
}

#[test]
fn never_logged_in_and_exempt_accounts_are_left_alone() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox("account_expiry_days = 30\nexempt_groups = [\"wheel\"]\n");
    // bob only ever failed: known to the module, but never logged in
    assert!(!login(&sb, "bob", "wrong").ok);
    assert!(sb.log(&["--user", "bob"]).len() == 1);
    assert!(login(&sb, "root", PASSWORD).ok);
    assert!(login(&sb, "dave", PASSWORD).ok);

    at(&mut sb, &c, 100);
    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert!(out.contains("0 account(s) would disable"), "{out}");
    let out = sb.admin_ok(&["sweep"]);
    assert!(out.contains("0 account(s) disabled"), "{out}");
    for u in ["carol", "bob", "root", "dave"] {
        let r = login(&sb, u, PASSWORD);
        assert!(r.ok, "{u} must not be disabled by inactivity: {r:?}");
        assert_eq!(sb.status(u)["state"], "active", "{u}");
    }
    // bob's clock started with that first login
    at(&mut sb, &c, 131);
    assert!(!login(&sb, "bob", PASSWORD).ok);
    assert_eq!(sb.status("bob")["reason"], "account_expired");
    // exempt: never, however long (user root, group wheel)
    assert!(login(&sb, "root", PASSWORD).ok);
    assert!(login(&sb, "dave", PASSWORD).ok);
    at(&mut sb, &c, 400);
    assert!(login(&sb, "root", PASSWORD).ok);
    assert!(login(&sb, "dave", PASSWORD).ok);
    let out = sb.admin_ok(&["sweep"]);
    assert!(!out.contains("root") && !out.contains("dave"), "{out}");
    assert_eq!(sb.status("root")["state"], "active");
    assert_eq!(sb.status("dave")["state"], "active");
}

// ---------------------------------------------------------------- sweep

#[test]
fn sweep_dry_run_lists_and_sweep_disables_and_notifies() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox("account_expiry_days = 30\nnotify_command = \"@DIR@/notify.sh\"\n");
    write_notify_script(&sb);
    for u in ["alice", "bob", "root"] {
        assert!(login(&sb, u, PASSWORD).ok);
    }
    assert!(!login(&sb, "carol", "wrong").ok);
    at(&mut sb, &c, 20);
    assert!(login(&sb, "erin", PASSWORD).ok);

    at(&mut sb, &c, 31);
    let since = |u: &str| sb.log(&["--user", u, "--succeeded"])[0]["time"].as_str().unwrap().to_string();
    let before = sb.admin_ok(&["status", "--format", "json"]);
    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("alice: would disable (inactive since {}, more than 30 days)", since("alice")),
            format!("bob: would disable (inactive since {}, more than 30 days)", since("bob")),
            "2 account(s) would disable".to_string(),
        ],
        "{out}"
    );
    assert_eq!(sb.admin_ok(&["status", "--format", "json"]), before, "--dry-run changes nothing");
    assert_eq!(sb.status("alice")["state"], "active");

    let out = sb.admin_ok(&["sweep"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!("alice: disabled (inactive since {}, more than 30 days)", since("alice")),
            format!("bob: disabled (inactive since {}, more than 30 days)", since("bob")),
            "2 account(s) disabled".to_string(),
        ],
        "{out}"
    );
    for u in ["alice", "bob"] {
        let st = sb.status(u);
        assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("disabled"), Some("account_expired")), "{u}");
        let n = wait_notify(&sb, "account_expired", u);
        assert!(n.contains("USERAUDIT_EVENT=account_expired\n"), "{n}");
        assert!(n.contains(&format!("USERAUDIT_USER={u}\n")), "{n}");
    }
    for u in ["erin", "root", "carol"] {
        assert_eq!(sb.status(u)["state"], "active", "{u}");
    }
    // the sweep refuses the next login, with the right password too
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok);
    assert!(r.shown().contains("not used for too long"), "{r:?}");
    assert_eq!(last(&sb, "alice")["reason"], "account_expired");
    // nothing left to do
    let out = sb.admin_ok(&["sweep"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["0 account(s) disabled"], "{out}");
    assert_eq!(notify_files(&sb), ["notify.account_expired.alice", "notify.account_expired.bob"]);
}

#[test]
fn retention_deletes_old_log_entries_only() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox("retention_days = 30\n");
    at(&mut sb, &c, -100);
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert!(!login(&sb, "bob", "wrong").ok);
    at(&mut sb, &c, -40);
    assert!(login(&sb, "alice", PASSWORD).ok);
    at(&mut sb, &c, -29);
    assert!(login(&sb, "carol", PASSWORD).ok);
    at(&mut sb, &c, 0);
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert_eq!(sb.log(&[]).len(), 5);

    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert!(out.contains("log: would delete 3 entries older than "), "{out}");
    assert_eq!(sb.log(&[]).len(), 5, "--dry-run deletes nothing");

    let out = sb.admin_ok(&["sweep"]);
    assert!(out.contains("log: deleted 3 entries older than "), "{out}");
    let log = sb.log(&[]);
    let kept: Vec<(&str, String)> =
        log.iter().map(|e| (e["user"].as_str().unwrap(), time_of(&e["time"]).format("%Y-%m-%d").to_string())).collect();
    assert_eq!(kept, [("alice", c.date(0)), ("carol", c.date(-29))]);
    // account state is not log: alice's last login stays
    assert_eq!(sb.status("alice")["last_login"], log[0]["time"]);
    let out = sb.admin_ok(&["sweep"]);
    assert!(out.contains("log: deleted 0 entries"), "{out}");

    // log now, sweep 100 days later: everything goes
    at(&mut sb, &c, 100);
    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert!(out.contains("log: would delete 2 entries"), "{out}");
    sb.admin_ok(&["sweep"]);
    assert_eq!(sb.log(&[]).len(), 0);
}

// ---------------------------------------------------------------- activate

#[test]
fn activate_reenables_and_restarts_the_inactivity_clock() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox("account_expiry_days = 30\n");
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert!(login(&sb, "bob", PASSWORD).ok);
    at(&mut sb, &c, 31);
    assert!(!login(&sb, "alice", PASSWORD).ok);
    assert_eq!(sb.status("alice")["reason"], "account_expired");

    let out = sb.admin_ok(&["activate", "alice", "bob"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "alice: activated (was disabled, account_expired, 0 failures)",
            "bob: already active (inactivity clock restarted)"
        ],
        "{out}"
    );
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["reason"].clone()), (Some("active"), Value::Null));
    // the clock restarted at activation: a sweep right now leaves both alone
    // (bob's last login was 31 days ago, too)
    let out = sb.admin_ok(&["sweep"]);
    assert!(out.contains("0 account(s) disabled"), "{out}");
    // alice is let in at once
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok, "{r:?}");
    assert_eq!(last(&sb, "alice")["outcome"], "success");

    // 29 days after activation: fine; 31 days after: disabled again
    at(&mut sb, &c, 60);
    assert!(login(&sb, "alice", PASSWORD).ok);
    at(&mut sb, &c, 62);
    assert!(!login(&sb, "bob", PASSWORD).ok, "31 days after bob's activation");
    assert_eq!(sb.status("bob")["reason"], "account_expired");
    at(&mut sb, &c, 91);
    assert!(!login(&sb, "alice", PASSWORD).ok);
    assert_eq!(sb.status("alice")["reason"], "account_expired");
}

// ---------------------------------------------------------------- password expiry (useraudit)

const PW_USERAUDIT: &str =
    "password_expiry_days = 10\npassword_expiry_warning_days = 3\npassword_change_source = \"useraudit\"\n";

fn warning(days: i64) -> String {
    if days == 1 {
        "Warning: your password will expire in 1 day.".into()
    } else {
        format!("Warning: your password will expire in {days} days.")
    }
}

#[test]
fn password_warning_in_the_window_only_and_not_when_silent() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox(PW_USERAUDIT);
    // first seen now: the count starts here, so turning the feature on
    // expires nobody at once
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok && !r.shown().contains("Warning"), "{r:?}");
    let st = sb.status("alice");
    assert_eq!(st["password_changed"], Value::Null);
    assert_eq!(st["password_expires"], c.midnight(10));

    for d in [5, 7] {
        at(&mut sb, &c, d);
        let r = login(&sb, "alice", PASSWORD);
        assert!(r.ok, "{r:?}");
        assert!(!r.shown().contains("Warning"), "no warning at day {d}: {r:?}");
    }
    at(&mut sb, &c, 5);
    assert!(login(&sb, "bob", PASSWORD).ok, "bob is first seen at day 5");

    at(&mut sb, &c, 8);
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok, "{r:?}");
    // PAM_TEXT_INFO: pamtester prints it on stdout (errors go to stderr)
    assert!(r.stdout.contains(&warning(2)), "day 8 of 10: {r:?}");
    assert!(!r.stderr.contains("Warning"), "{r:?}");
    assert_eq!(last(&sb, "alice")["outcome"], "success");
    // PAM_SILENT
    let r = pamtester(&sb, "login", "alice", "secret\n", &["authenticate", "acct_mgmt(PAM_SILENT)"]);
    assert!(r.ok, "{r:?}");
    assert!(!r.shown().contains("Warning"), "PAM_SILENT: {r:?}");
    // the `silent` module argument
    sb.write_service("login", &sb.stack("silent"));
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok, "{r:?}");
    assert!(!r.shown().contains("Warning"), "silent: {r:?}");
    sb.write_service("login", &sb.stack(""));

    at(&mut sb, &c, 9);
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok && r.stdout.contains(&warning(1)), "{r:?}");
    // bob counts from day 5
    let r = login(&sb, "bob", PASSWORD);
    assert!(r.ok && !r.shown().contains("Warning"), "bob is at day 4 of 10: {r:?}");
    at(&mut sb, &c, 13);
    let r = login(&sb, "bob", PASSWORD);
    assert!(r.ok && r.stdout.contains(&warning(2)), "bob at day 8 of 10: {r:?}");
    // never seen before: first seen now, not expired
    at(&mut sb, &c, 100);
    let r = login(&sb, "carol", PASSWORD);
    assert!(r.ok && !r.shown().contains("Warning"), "{r:?}");
}

#[test]
fn expired_password_with_action_disable_then_reactivation_lets_in_once_to_change() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox(&format!(
        "{PW_USERAUDIT}password_expired_action = \"disable\"\nnotify_command = \"@DIR@/notify.sh\"\n"
    ));
    write_notify_script(&sb);
    for u in ["alice", "bob", "root"] {
        assert!(login(&sb, u, PASSWORD).ok);
    }

    at(&mut sb, &c, 11);
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok, "expired at day 11 of 10: {r:?}");
    assert!(r.shown().contains("Your password has expired"), "the user is told: {r:?}");
    let e = last(&sb, "alice");
    assert_eq!((e["outcome"].as_str(), e["reason"].as_str()), (Some("failure"), Some("password_expired")));
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("disabled"), Some("password_expired")));
    assert_eq!(status_code(&sb, "alice"), Some(3));
    let n = wait_notify(&sb, "password_expired", "alice");
    assert!(n.contains("USERAUDIT_EVENT=password_expired\n") && n.contains("USERAUDIT_USER=alice\n"), "{n}");
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok);
    assert_eq!(last(&sb, "alice")["reason"], "password_expired");
    // exempt
    assert!(login(&sb, "root", PASSWORD).ok);
    assert_eq!(sb.status("root")["state"], "active");

    // re-activation: let in once, with a demand for a new password
    let out = sb.admin_ok(&["activate", "alice"]);
    assert_eq!(out.trim_end(), "alice: activated (was disabled, password_expired, 0 failures)");
    assert_eq!(sb.status("alice")["state"], "active");
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok, "{r:?}");
    assert!(r.stdout.contains("successfully authenticated"), "the password was accepted: {r:?}");
    assert!(r.shown().contains(NEW_AUTHTOK_REQD), "PAM_NEW_AUTHTOK_REQD: {r:?}");
    assert!(r.shown().contains("You are required to change your password"), "{r:?}");
    assert_eq!(sb.status("alice")["state"], "active", "not disabled again at once");
    // the change is recorded; then the login works and the count restarts
    let r = chauthtok(&sb, "alice", PASSWORD, "fresh-pw-1");
    assert!(r.ok, "{r:?}");
    let st = sb.status("alice");
    assert_eq!(time_of(&st["password_changed"]).format("%Y-%m-%d").to_string(), c.date(11), "{st}");
    assert_eq!(st["password_expires"], c.midnight(21));
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(r.ok, "{r:?}");
    assert!(!r.shown().contains("Warning") && !r.shown().contains("change your password"), "{r:?}");
    at(&mut sb, &c, 21);
    assert!(login(&sb, "alice", "fresh-pw-1").ok);

    // the chance lasts until the password is changed: bob, re-activated
    // and let in without changing it, is asked again, not disabled
    at(&mut sb, &c, 11);
    assert!(!login(&sb, "bob", PASSWORD).ok);
    sb.admin_ok(&["activate", "bob"]);
    for _ in 0..2 {
        let r = login(&sb, "bob", PASSWORD);
        assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
        assert_eq!(sb.status("bob")["state"], "active");
    }
}

#[test]
fn expired_password_with_action_change_demands_a_new_one_and_the_change_restarts_the_count() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox(&format!("{PW_USERAUDIT}password_expired_action = \"change\"\n"));
    assert!(login(&sb, "alice", PASSWORD).ok);

    at(&mut sb, &c, 11);
    for _ in 0..2 {
        let r = login(&sb, "alice", PASSWORD);
        assert!(!r.ok, "{r:?}");
        assert!(r.stdout.contains("successfully authenticated"), "{r:?}");
        assert!(r.shown().contains(NEW_AUTHTOK_REQD), "PAM_NEW_AUTHTOK_REQD: {r:?}");
        assert!(r.shown().contains("You are required to change your password"), "{r:?}");
        let e = last(&sb, "alice");
        assert_eq!(
            (e["outcome"].as_str(), e["reason"].as_str()),
            (Some("failure"), Some("password_expired")),
            "not a login until the password is changed"
        );
        let st = sb.status("alice");
        assert_eq!((st["state"].as_str(), st["reason"].clone()), (Some("active"), Value::Null), "never disabled");
    }
    // a failed change records nothing
    let r = chauthtok(&sb, "alice", "wrong", "fresh-pw-1");
    assert!(!r.ok, "{r:?}");
    assert_eq!(sb.status("alice")["password_changed"], Value::Null);
    assert!(login(&sb, "alice", PASSWORD).shown().contains(NEW_AUTHTOK_REQD));
    // a change through the password stack records the date
    let r = chauthtok(&sb, "alice", PASSWORD, "fresh-pw-1");
    assert!(r.ok, "{r:?}");
    assert!(r.stdout.contains("authentication token altered successfully"), "{r:?}");
    let st = sb.status("alice");
    assert_eq!(time_of(&st["password_changed"]).format("%Y-%m-%d").to_string(), c.date(11), "{st}");
    assert_eq!(st["password_expires"], c.midnight(21));
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(r.ok, "{r:?}");
    assert!(!r.shown().contains("change your password") && !r.shown().contains("Warning"), "{r:?}");
    // the countdown runs from the change: day 8 of 10 is day 19
    at(&mut sb, &c, 19);
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(r.ok && r.stdout.contains(&warning(2)), "{r:?}");
    at(&mut sb, &c, 22);
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
}

// ---------------------------------------------------------------- status

#[test]
fn status_shows_last_login_password_dates_and_why_disabled() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = sandbox(&format!("{PW_USERAUDIT}account_expiry_days = 30\n"));
    assert!(login(&sb, "alice", PASSWORD).ok);
    assert!(login(&sb, "bob", PASSWORD).ok);
    let alice_login = last(&sb, "alice")["time"].clone();
    at(&mut sb, &c, 2);
    assert!(chauthtok(&sb, "alice", PASSWORD, "fresh-pw-1").ok);
    at(&mut sb, &c, 3);
    let st = sb.status("alice");
    assert_eq!(st["state"], "active");
    assert_eq!(st["last_login"], alice_login, "{st}");
    let changed = time_of(&st["password_changed"]);
    assert_eq!(changed.format("%Y-%m-%d").to_string(), c.date(2), "{st}");
    assert!(st["password_changed"].as_str().unwrap().ends_with('Z'));
    assert_eq!(st["password_expires"], c.midnight(12), "{st}");
    let table = status_table(&sb, "alice");
    assert!(table.contains("PASSWORD EXPIRES"), "{table}");
    assert!(table.contains(&format!("{} (9 days left)", c.date(12))), "date and days left: {table}");

    // disabled: the state and why
    at(&mut sb, &c, 31);
    assert!(!login(&sb, "bob", PASSWORD).ok);
    let st = sb.status("bob");
    assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("disabled"), Some("account_expired")));
    assert!(time_of(&st["locked_at"]) > time_of(&st["last_login"]), "{st}");
    let table = status_table(&sb, "bob");
    let row = table.lines().find(|l| l.starts_with("bob ")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains("disabled") && row.contains("account_expired"), "{table}");
    assert!(row.contains("(expired)"), "bob's password is past day 10 as well: {table}");
    // all accounts, as JSON
    let all: Value = serde_json::from_str(&sb.admin_ok(&["status", "--format", "json"])).unwrap();
    let users: Vec<&str> = all.as_array().unwrap().iter().map(|r| r["user"].as_str().unwrap()).collect();
    assert!(users.contains(&"alice") && users.contains(&"bob"), "{all}");
}

// ---------------------------------------------------------------- password expiry (shadow)

#[test]
fn shadow_source_expiry_warning_and_actions() {
    if missing_tools() || !shadow_jail_works() {
        return;
    }
    let conf = |action: &str| {
        format!(
            "password_expiry_days = 10\npassword_expiry_warning_days = 3\npassword_change_source = \"shadow\"\npassword_expired_action = \"{action}\"\n"
        )
    };
    let (sb, c) = sandbox(&conf("disable"));
    let shadow = sb.path().join("shadow");
    // carol has no shadow entry
    write_shadow(
        &shadow,
        &[
            ("root", c.day(-20).to_string()),
            ("alice", c.day(-20).to_string()),
            ("bob", c.day(-8).to_string()),
            ("dave", c.day(-5).to_string()),
            ("erin", String::new()),
        ],
    );
    let jail = Jail::new(&sb, &shadow);

    // 20 days old with a limit of 10: expired, disabled
    let r = jail.login("alice");
    assert!(!r.ok, "{r:?}");
    assert!(r.shown().contains("Your password has expired"), "{r:?}");
    assert_eq!(last(&sb, "alice")["reason"], "password_expired");
    let st = jail.status("alice");
    assert_eq!((st["state"].as_str(), st["reason"].as_str()), (Some("disabled"), Some("password_expired")), "{st}");
    assert_eq!(st["password_changed"], c.midnight(-20), "{st}");
    assert_eq!(st["password_expires"], c.midnight(-10), "{st}");
    // 8 days old: warned, 2 days left (pam_unix's arithmetic)
    let r = jail.login("bob");
    assert!(r.ok, "{r:?}");
    assert!(r.stdout.contains(&warning(2)), "{r:?}");
    // 5 days old: nothing to say
    let r = jail.login("dave");
    assert!(r.ok && !r.shown().contains("Warning"), "{r:?}");
    let st = jail.status("dave");
    assert_eq!(st["password_changed"], c.midnight(-5), "{st}");
    assert_eq!(st["password_expires"], c.midnight(5), "{st}");
    // no shadow entry, or no aging (empty last-change field): not expired
    for u in ["carol", "erin"] {
        let r = jail.login(u);
        assert!(r.ok && !r.shown().contains("Warning"), "{u}: {r:?}");
        let st = jail.status(u);
        assert_eq!((st["state"].as_str(), st["password_expires"].clone()), (Some("active"), Value::Null), "{u}: {st}");
    }
    // exempt
    assert!(jail.login("root").ok);

    // the same with action "change": a new password is demanded
    std::fs::write(&sb.conf, conf("change")).unwrap();
    sb.admin_ok(&["activate", "alice"]);
    let r = jail.login("alice");
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    assert_eq!(jail.status("alice")["state"], "active");
    let r = jail.login("alice");
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    assert_eq!(jail.status("alice")["state"], "active");

    // a shadow entry changed today (as pam_unix writes it): fine again
    write_shadow(&shadow, &[("alice", c.day(0).to_string())]);
    let r = jail.login("alice");
    assert!(r.ok && !r.shown().contains("change your password") && !r.shown().contains("Warning"), "{r:?}");
}

#[test]
fn unreadable_shadow_is_treated_as_not_expired() {
    if missing_tools() || !shadow_jail_works() {
        return;
    }
    let (sb, c) = sandbox("password_expiry_days = 10\npassword_change_source = \"shadow\"\n");
    let shadow = sb.path().join("shadow");
    write_shadow(&shadow, &[("root", c.day(-20).to_string()), ("alice", c.day(-20).to_string())]);

    // root without the capabilities that bypass file modes, and a shadow
    // file nobody may read: cannot be read, so not expired
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o000)).unwrap();
    let blind = Jail {
        sb: &sb,
        shadow: shadow.clone(),
        bwrap: ["--cap-drop", "CAP_DAC_OVERRIDE", "--cap-drop", "CAP_DAC_READ_SEARCH"].map(String::from).to_vec(),
        runas: vec![],
    };
    let r = blind.login("alice");
    assert!(r.ok, "an unreadable shadow must not expire anyone: {r:?}");
    assert_eq!(last(&sb, "alice")["outcome"], "success", "the login was checked and logged");

    // readable: the same entry is expired
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).unwrap();
    let jail = Jail::new(&sb, &shadow);
    let r = jail.login("alice");
    assert!(!r.ok, "{r:?}");
    assert_eq!(jail.status("alice")["reason"], "password_expired");

    // a caller that is not root (e.g. a screen locker) cannot read shadow:
    // not expired, and `check` says why
    let own = sb.path().join("nobody");
    std::fs::create_dir(&own).unwrap();
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(sb.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = own.join("useraudit.db");
    sb.write_service("login", &sb.stack(&format!("db={}", db.display())));
    let nobody = Jail {
        sb: &sb,
        shadow: shadow.clone(),
        bwrap: vec![],
        runas: ["/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from).to_vec(),
    };
    let r = nobody.login("alice");
    assert!(r.ok, "{r:?}");
    let o = nobody.admin(&db, &["log", "--format", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let log: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log.as_array().map(Vec::len), Some(1), "the module ran as nobody and logged: {log}");
    assert_eq!(log[0]["outcome"], "success");
    let o = nobody.admin(&db, &["check"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("cannot read the shadow database"),
        "check must say so: {out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
