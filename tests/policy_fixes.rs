//! Issue 12 through real libpam (pamtester under pam_wrapper, pam_matrix
//! for pam_unix): root's `su` past a lock, a lock taken while the clock was
//! ahead, the chance after `activate`, how a demanded password change is
//! logged, and shadow's last change 0. The real `su`, `runuser` and sshd
//! are in tests/sshd/policy.sh.
//!
//! Clocks start at noon UTC of the real day, so whole-day arithmetic never
//! straddles a midnight while a test runs.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::policy::*;
use common::*;
use serde_json::Value;

fn count(sb: &Sandbox, user: &str) -> usize {
    sb.log(&["--user", user]).len()
}

// ---------------------------------------------------------------- root's su

#[test]
fn root_on_this_machine_is_let_past_a_lock_and_it_is_logged() {
    if missing_tools() {
        return;
    }
    if faults::euid() != 0 {
        eprintln!("SKIP: root on this machine means real uid 0: run the tests as root");
        return;
    }
    let sb = Sandbox::with_config("", "login_failure_limit = 3\n");
    for i in 0..3 {
        let r = pt(&sb, "su", "alice", &format!("guess-{i}\n"), &[("rhost", RHOST)], &["authenticate"]);
        assert!(!r.ok, "{r:?}");
    }
    assert_eq!(sb.status("alice")["state"], "locked");

    // su run by root: real uid 0 (pamtester runs as root here), PAM_RUSER
    // root, no PAM_RHOST. su's stack starts with pam_rootok, so only the
    // account stack runs.
    let root_su = [("ruser", "root")];
    let r = pt(&sb, "su", "alice", "", &root_su, &["acct_mgmt"]);
    assert!(r.ok, "root's su is not refused by a lock from login_failure_limit: {r:?}");
    let e = last(&sb, "alice");
    assert_eq!(
        (e["outcome"].as_str(), e["service"].as_str(), e["ruser"].as_str(), &e["rhost"]),
        (Some("success"), Some("su"), Some("root"), &Value::Null),
        "logged: {e}"
    );
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["failures"].as_u64()), (Some("locked"), Some(3)), "the lock stays: {st}");
    // the same with a password typed (a stack without pam_rootok)
    let r = pt(&sb, "su", "alice", &format!("{PASSWORD}\n"), &root_su, &["authenticate", "acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    assert_eq!(sb.status("alice")["state"], "locked");

    // anyone else is refused: a remote host, another or no PAM_RUSER
    let refused: [&[(&str, &str)]; 4] =
        [&[("ruser", "root"), ("rhost", RHOST)], &[("ruser", "bob")], &[], &[("ruser", "root"), ("rhost", "")]];
    for items in refused {
        let before = count(&sb, "alice");
        let r = pt(&sb, "su", "alice", "", items, &["acct_mgmt"]);
        assert!(!r.ok, "{items:?}: {r:?}");
        assert!(r.shown().contains("The account is locked due to 3 failed logins."), "{items:?}: {r:?}");
        assert_eq!(count(&sb, "alice"), before + 1);
        let e = last(&sb, "alice");
        assert_eq!((e["outcome"].as_str(), e["reason"].as_str()), (Some("failure"), Some("locked")), "{items:?}: {e}");
        let r = pt(&sb, "su", "alice", &format!("{PASSWORD}\n"), items, &["authenticate"]);
        assert!(!r.ok, "preauth refuses {items:?}: {r:?}");
    }

    // disabled by hand: refused for root as well
    sb.admin_ok(&["lock", "bob"]);
    let r = pt(&sb, "su", "bob", "", &root_su, &["acct_mgmt"]);
    assert!(!r.ok, "{r:?}");
    assert_eq!(last(&sb, "bob")["reason"], "disabled");
}

// ---------------------------------------------------------------- clock ahead

#[test]
fn a_lock_taken_while_the_clock_was_ahead_lasts_unlock_after_from_now() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::with_config("", "login_failure_limit = 3\nunlock_after = \"15m\"\n");
    sb.faketime = Some("+365d".into());
    for i in 0..3 {
        assert!(!login(&sb, "alice", &format!("guess-{i}")).ok);
    }
    assert!(!login(&sb, "alice", PASSWORD).ok, "locked");

    // back at the real time: 15 minutes left, not a year
    sb.faketime = None;
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok, "{r:?}");
    assert!(r.shown().contains("(15 minutes left to unlock)"), "{r:?}");
    let st = sb.status("alice");
    assert_eq!(st["state"], "locked", "{st}");
    let locked_at = chrono::DateTime::parse_from_rfc3339(st["locked_at"].as_str().unwrap()).unwrap();
    assert!(
        locked_at.timestamp() <= SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
        "the lock time is now, not ahead: {st}"
    );
    // and the lock lapses 15 minutes from now
    sb.faketime = Some("+16m".into());
    let r = login(&sb, "alice", PASSWORD);
    assert!(r.ok, "unlocked after 15 minutes: {r:?}");
    assert_eq!(sb.status("alice")["state"], "active");
}

#[test]
fn a_password_change_recorded_while_the_clock_was_ahead_counts_from_now() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = expiry_sandbox("change");
    assert!(login(&sb, "alice", PASSWORD).ok);
    sb.faketime = Some(c.at(365));
    assert!(chauthtok(&sb, "alice", "fresh-pw-1", "fresh-pw-1").ok);
    // back at the real time: seen now, so it expires 10 days from now,
    // not 10 days after that future change
    sb.faketime = Some(c.at(0));
    assert!(login(&sb, "alice", "fresh-pw-1").ok);
    sb.faketime = Some(c.at(11));
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
}

// ---------------------------------------------------------------- password change

const PW_USERAUDIT: &str = "password_expiry_days = 10\npassword_change_source = \"useraudit\"\n";

fn expiry_sandbox(action: &str) -> (Sandbox, Clock) {
    let mut sb = Sandbox::with_config("", &format!("{PW_USERAUDIT}password_expired_action = \"{action}\"\n"));
    let c = Clock::new();
    sb.faketime = Some(c.at(0));
    (sb, c)
}

/// A change through the password stack with the new password typed twice
/// (`retype` the second time).
fn chauthtok(sb: &Sandbox, user: &str, new: &str, retype: &str) -> Pam {
    pt(sb, "login", user, &format!("{PASSWORD}\n{new}\n{retype}\n"), &[("rhost", RHOST)], &["chauthtok"])
}

#[test]
fn the_chance_after_activate_lasts_until_the_password_is_changed() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = expiry_sandbox("disable");
    assert!(login(&sb, "alice", PASSWORD).ok);
    sb.faketime = Some(c.at(11));
    assert!(!login(&sb, "alice", PASSWORD).ok);
    assert_eq!(sb.status("alice")["reason"], "password_expired");
    sb.admin_ok(&["activate", "alice"]);

    // a typo at "Retype new password": the change fails
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    let r = chauthtok(&sb, "alice", "fresh-pw-1", "fresh-pw-2");
    assert!(!r.ok, "{r:?}");
    assert_eq!(sb.status("alice")["password_changed"], Value::Null);
    // ... and a client that cannot change it (no tty): the login ends there
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "the chance is still there: {r:?}");
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["reason"].clone()), (Some("active"), Value::Null), "{st}");
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "and still: {r:?}");
    assert_eq!(sb.status("alice")["state"], "active");

    // the change itself uses it up: the next expiry disables again
    let r = chauthtok(&sb, "alice", "fresh-pw-1", "fresh-pw-1");
    assert!(r.ok, "{r:?}");
    assert!(login(&sb, "alice", "fresh-pw-1").ok);
    sb.faketime = Some(c.at(22));
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(!r.ok && !r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    assert_eq!(sb.status("alice")["state"], "disabled");
}

#[test]
fn a_login_that_must_change_its_password_is_not_a_success_until_it_does() {
    if missing_tools() {
        return;
    }
    let (mut sb, c) = expiry_sandbox("change");
    sb.args = "login_failure_limit=5".into();
    for s in SERVICES {
        sb.write_service(s, &sb.stack(""));
    }
    assert!(login(&sb, "alice", PASSWORD).ok);
    let first = sb.status("alice")["last_login"].clone();
    sb.faketime = Some(c.at(11));
    assert!(!login(&sb, "alice", "guess").ok);

    // the demand: logged as a failure (password_expired); the count and
    // the last login stay
    let before = count(&sb, "alice");
    let r = login(&sb, "alice", PASSWORD);
    assert!(!r.ok && r.stdout.contains("successfully authenticated") && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    assert_eq!(count(&sb, "alice"), before + 1, "one entry");
    let e = last(&sb, "alice");
    assert_eq!((e["outcome"].as_str(), e["reason"].as_str()), (Some("failure"), Some("password_expired")), "{e}");
    let st = sb.status("alice");
    assert_eq!((st["failures"].as_u64(), &st["last_login"]), (Some(1), &first), "{st}");
    // the same for a login without the auth stack (a public key)
    let r = pt(&sb, "login", "alice", "", &[("rhost", RHOST)], &["acct_mgmt"]);
    assert!(!r.ok && r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    let e = last(&sb, "alice");
    assert_eq!((e["outcome"].as_str(), e["reason"].as_str()), (Some("failure"), Some("password_expired")), "{e}");
    assert_eq!(sb.status("alice")["failures"], 1);

    // a change that fails in the same login: still no success
    let before = count(&sb, "alice");
    let r = pt(
        &sb,
        "login",
        "alice",
        &format!("{PASSWORD}\n{PASSWORD}\nfresh-pw-1\nfresh-pw-2\n"),
        &[("rhost", RHOST)],
        &["authenticate", "chauthtok"],
    );
    assert!(!r.ok, "{r:?}");
    assert_eq!(count(&sb, "alice"), before + 1, "only the demand is logged");
    assert_eq!(last(&sb, "alice")["outcome"], "failure");
    let st = sb.status("alice");
    assert_eq!(
        (st["failures"].as_u64(), &st["last_login"], &st["password_changed"]),
        (Some(1), &first, &Value::Null),
        "{st}"
    );

    // the change done in the same login: the password hook logs the
    // completed login as a success, and only now the count and the last
    // login move
    let before = count(&sb, "alice");
    let r = pt(
        &sb,
        "login",
        "alice",
        &format!("{PASSWORD}\n{PASSWORD}\nfresh-pw-1\nfresh-pw-1\n"),
        &[("rhost", RHOST), ("ruser", "someone")],
        &["authenticate", "chauthtok"],
    );
    assert!(r.ok && r.stdout.contains("authentication token altered successfully"), "{r:?}");
    let l = sb.log(&["--user", "alice", "--limit", "2"]);
    assert_eq!(count(&sb, "alice"), before + 2, "the demand, then the completed login: {l:?}");
    assert_eq!(
        (l[1]["outcome"].as_str(), l[1]["reason"].as_str()),
        (Some("failure"), Some("password_expired")),
        "{l:?}"
    );
    assert_eq!(
        (
            l[0]["outcome"].as_str(),
            &l[0]["reason"],
            l[0]["service"].as_str(),
            l[0]["rhost"].as_str(),
            l[0]["ruser"].as_str()
        ),
        (Some("success"), &Value::Null, Some("login"), Some(RHOST), Some("someone")),
        "{l:?}"
    );
    let st = sb.status("alice");
    assert_eq!(st["failures"], 0, "{st}");
    assert_ne!(st["last_login"], first, "{st}");
    assert_eq!(st["last_login"], l[0]["time"], "{st}");
    let r = login(&sb, "alice", "fresh-pw-1");
    assert!(r.ok && !r.shown().contains(NEW_AUTHTOK_REQD), "{r:?}");
    assert_eq!(last(&sb, "alice")["outcome"], "success");

    // a change in a handle that was not asked for one is not a login
    let before = count(&sb, "alice");
    let r = pt(&sb, "passwd", "alice", &format!("{PASSWORD}\nother-pw-1\nother-pw-1\n"), &[], &["chauthtok"]);
    assert!(r.ok, "{r:?}");
    assert_eq!(count(&sb, "alice"), before, "nothing logged");
}

// ---------------------------------------------------------------- chage -d 0

#[test]
fn shadow_last_change_0_demands_a_change_and_never_disables() {
    if missing_tools() || !shadow_jail_works() {
        return;
    }
    // the default action ("disable")
    let sb = Sandbox::with_config("", "password_expiry_days = 10\npassword_change_source = \"shadow\"\n");
    let shadow = sb.path().join("shadow");
    let today = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 / DAY;
    let old = (today - 20).to_string();
    write_shadow(&shadow, &[("alice", "0"), ("bob", old.as_str())]);
    let jail = Jail::new(&sb, &shadow);

    // `chage -d 0` / `passwd -e`: change it at the next login
    for _ in 0..2 {
        let r = jail.login("alice");
        assert!(!r.ok, "{r:?}");
        assert!(r.shown().contains(NEW_AUTHTOK_REQD), "PAM_NEW_AUTHTOK_REQD, as pam_unix: {r:?}");
        assert!(!r.shown().contains("has been disabled"), "{r:?}");
        let st = sb.status("alice");
        assert_eq!((st["state"].as_str(), st["reason"].clone()), (Some("active"), Value::Null), "not disabled: {st}");
        let e = last(&sb, "alice");
        assert_eq!((e["outcome"].as_str(), e["reason"].as_str()), (Some("failure"), Some("password_expired")), "{e}");
    }
    // a password past password_expiry_days still follows the action
    let r = jail.login("bob");
    assert!(!r.ok && r.shown().contains("has been disabled"), "{r:?}");
    assert_eq!(sb.status("bob")["reason"], "password_expired");
    // changed (shadow stamped today): fine
    write_shadow(&shadow, &[("alice", today.to_string())]);
    assert!(jail.login("alice").ok);
}
