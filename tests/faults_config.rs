//! Faults in the configuration, through real libpam: a configuration file
//! that is missing, unparsable, of the wrong type, with an unknown key, a
//! bad module argument, or (as root) writable by someone other than root.
//! Each is answered as `on_error` promises, with a syslog error that names
//! the file, line and key.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`.

mod common;

use common::faults::*;
use common::*;
use useraudit_core::spool;
use useraudit_core::state;

#[test]
fn configuration_missing_unparsable_wrong_type_unknown_key() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    let r = Runner::new(&sb);
    let conf = sb.conf.display().to_string();
    // missing (explicit conf=)
    let missing = sb.path().join("nope.toml");
    assert_on_error(
        &r,
        &format!("conf={}", missing.display()),
        &[&missing.display().to_string(), "No such file"],
        true,
    );
    // unparsable
    std::fs::write(&sb.conf, "# a comment\nlogin_failure_limit = = 3\n").unwrap();
    assert_on_error(&r, "", &[&format!("{conf}, line 2"), "not valid TOML"], true);
    // wrong type
    std::fs::write(&sb.conf, "on_error = \"allow\"\n\nlogin_failure_limit = \"three\"\n").unwrap();
    assert_on_error(&r, "", &[&format!("{conf}, line 3, key login_failure_limit"), "whole number"], true);
    // unknown key (a typo must not silently switch the limit off)
    std::fs::write(&sb.conf, "\nlogin_faillure_limit = 3\n").unwrap();
    assert_on_error(&r, "", &[&format!("{conf}, line 2, key login_faillure_limit"), "unknown key"], true);
    // a section
    std::fs::write(&sb.conf, "[useraudit]\nlogin_failure_limit = 3\n").unwrap();
    assert_on_error(&r, "", &[&conf, "key useraudit", "sections"], false);
    // not UTF-8
    std::fs::write(&sb.conf, b"login_failure_limit = 3 # \xff\xfe\n").unwrap();
    assert_on_error(&r, "", &[&conf], false);
    // a bad module argument value is the same kind of error
    std::fs::write(&sb.conf, "").unwrap();
    assert_on_error(&r, "unlock_after=soon", &["module argument, key unlock_after"], false);
}

#[test]
fn configuration_writable_by_others_refused_as_root() {
    if missing_tools() || not_root("ownership checks (they apply to root)") {
        return;
    }
    // The file would exempt alice and switch logging to another database.
    let sb = sandbox_with_db("");
    let before = rows(&sb.db);
    let other = sb.path().join("attacker.db");
    std::fs::write(&sb.conf, format!("exempt_users = [\"alice\"]\ndatabase = \"{}\"\n", other.display())).unwrap();
    let r = Runner::new(&sb);
    let c = sb.conf.display().to_string();
    for (m, uid, needle) in [(0o664, 0, "mode 0664"), (0o646, 0, "mode 0646"), (0o644, 1000, "owner uid 1000")] {
        chmod(&sb.conf, m);
        std::os::unix::fs::chown(&sb.conf, Some(uid), None).unwrap();
        // without db= on the line, so the file's `database` would apply
        let no_db = |extra: &str| sb.stack(extra).replace(&format!("db={}", sb.db.display()), "");
        sb.write_service("login", &no_db(""));
        sb.write_service("su", &no_db("on_error=deny"));
        let ok = r.login("login", b"alice", PASSWORD);
        assert!(ok.ok, "allow: {ok:?}");
        ok.assert_error("config", &[&c, "refusing a configuration", needle]);
        assert!(!r.login("login", b"alice", "wrong").ok);
        let deny = r.login("su", b"alice", PASSWORD);
        assert!(!deny.ok, "deny: {deny:?}");
        deny.assert_error("config deny", &[&c, "refusing a configuration", needle]);
        assert!(
            !other.exists() && !spool::path_for(&other).exists() && !state::dir_for(&other).exists(),
            "the file's database was never used"
        );
    }
    std::os::unix::fs::chown(&sb.conf, Some(0), None).unwrap();
    chmod(&sb.conf, 0o644);
    // the CLI refuses it too, as root
    chmod(&sb.conf, 0o666);
    let o = sb.admin(&["check"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing a configuration"));
    chmod(&sb.conf, 0o644);
    assert_eq!(rows(&sb.db), before);
}
