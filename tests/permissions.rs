//! File permissions and trust, through real libpam and the real
//! `useraudit-admin`: what the module and the CLI create is private, also
//! under a lax umask; as root, directories and files that others could
//! write, symbolic links in their place, and `notify_command`s that are not
//! safely root's are refused; a caller that is not root can neither read
//! nor change the account state.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`. Most of
//! these tests need root (ownership checks apply to root only) and skip
//! when not run as root.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use useraudit_core::state;

/// The module creates what it uses, private: the database's directory (and
/// its parents) and `DATABASE.accounts/` 0700, the account state files and
/// the log spool 0600; never the database, which useraudit-admin creates
/// (0600) and merges the spool into.
#[test]
fn missing_database_directory_is_created_private() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("");
    sb.db = sb.path().join("new/deeper/ua.db");
    sb.write_service("login", &sb.stack(""));
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok);
    let dir = sb.db.parent().unwrap().to_path_buf();
    let accounts = state::dir_for(&sb.db);
    let alice = state_file(&sb, "alice");
    assert_eq!(mode(&dir), 0o700, "database directory");
    assert_eq!(mode(dir.parent().unwrap()), 0o700, "created parents");
    assert_eq!(mode(&accounts), 0o700, "account state directory");
    assert_eq!(mode(&alice), 0o600, "account state file");
    assert_eq!(mode(&spool_of(&sb)), 0o600, "log spool");
    for p in [&dir, &accounts, &alice, &spool_of(&sb)] {
        assert_eq!(std::fs::metadata(p).unwrap().uid(), euid(), "{}", p.display());
    }
    // no database, and no temporary file left behind
    assert_eq!(names_in(&dir), ["ua.db.accounts", "ua.db.spool"]);
    assert_eq!(names_in(&accounts), ["alice"]);
    // the CLI creates the database, private, and merges the login into it
    sb.admin_ok(&["check"]);
    assert_eq!(mode(&sb.db), 0o600, "database file");
    assert_eq!(std::fs::metadata(&sb.db).unwrap().uid(), euid());
    for ext in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{ext}", sb.db.display()));
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{ext} is as private as the database: {:o}", mode(&p));
        }
    }
    assert!(!unmerged_spool(&sb), "the spool was merged and removed");
    let log = sb.log(&[]);
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(entry_text(&log[0]), "alice success -");
    assert_eq!(log[0]["rhost"], "203.0.113.9");
}

/// Under umask 000 the module still creates the directories 0700 and the
/// account state file and spool 0600, and useraudit-admin the database
/// 0600.
#[test]
fn database_and_directory_created_0600_0700_even_with_a_lax_umask() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    // pamtester under `sh -c 'umask 000; ...'`: the module must not inherit it
    let mut r = Runner::new(&sb);
    r.log = None;
    let argv = r.prefix("libpam_wrapper.so libnss_wrapper.so");
    let cmd: Vec<String> = argv.iter().map(|a| sh_quote(a.to_str().unwrap())).collect();
    let one_at_a_time = pam_wrapper_lock();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("umask 000; printf 'secret\\n' | {} pamtester login alice authenticate acct_mgmt", cmd.join(" ")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    drop(one_at_a_time);
    assert!(st.success());
    assert_eq!(mode(sb.db.parent().unwrap()), 0o700, "database directory");
    assert_eq!(mode(&state::dir_for(&sb.db)), 0o700, "account state directory");
    assert_eq!(mode(&state_file(&sb, "alice")), 0o600, "account state file");
    assert_eq!(mode(&spool_of(&sb)), 0o600, "log spool");
    // useraudit-admin under the same umask
    let st = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$@\"")
        .arg("sh")
        .arg(admin_path())
        .arg("--conf")
        .arg(&sb.conf)
        .arg("--db")
        .arg(&sb.db)
        .arg("check")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(mode(&sb.db), 0o600, "database");
    for ext in ["-wal", "-shm"] {
        let p = PathBuf::from(format!("{}{ext}", sb.db.display()));
        if p.exists() {
            assert_eq!(mode(&p) & 0o077, 0, "{ext} is as private as the database: {:o}", mode(&p));
        }
    }
    assert_eq!(sb.log(&[]).len(), 1, "the login was merged");
}

/// A directory the module uses (the database's, or `DATABASE.accounts/`)
/// that others could write, or that root does not own, is refused when
/// running as root: `on_error` applies. A database file like that, or a
/// symlink in its place, is refused by useraudit-admin (logins never look
/// at it); a symlink in place of the spool or an account state file is
/// refused by the module, its target untouched.
#[test]
fn unsafe_database_or_directory_refused_as_root() {
    if missing_tools() || not_root("ownership checks (they apply to root)") {
        return;
    }
    let sb = sandbox_with_db("");
    let dir = sb.db.parent().unwrap().to_path_buf();
    let accounts = state::dir_for(&sb.db);
    let bob = std::fs::read(state_file(&sb, "bob")).unwrap();
    let r = Runner::new(&sb);
    let d = format!("{}: refusing directory", dir.display());
    let a = format!("{}: refusing directory", accounts.display());
    let cases: [(&Path, u32, u32, [&str; 2]); 6] = [
        (&dir, 0o770, 0, [&d, "(owner uid 0, mode 0770)"]),
        (&dir, 0o707, 0, [&d, "(owner uid 0, mode 0707)"]),
        (&dir, 0o700, 1000, [&d, "(owner uid 1000, mode 0700)"]),
        (&accounts, 0o770, 0, [&a, "(owner uid 0, mode 0770)"]),
        (&accounts, 0o707, 0, [&a, "(owner uid 0, mode 0707)"]),
        (&accounts, 0o700, 1000, [&a, "(owner uid 1000, mode 0700)"]),
    ];
    for (path, m, uid, needles) in cases {
        chmod(path, m);
        std::os::unix::fs::chown(path, Some(uid), None).unwrap();
        assert_on_error(&r, "", &needles, true);
        chmod(path, 0o700);
        std::os::unix::fs::chown(path, Some(0), None).unwrap();
        assert!(!unmerged_spool(&sb), "nothing spooled beside a refused directory ({needles:?})");
        assert_eq!(names_in(&accounts), ["bob"], "{needles:?}");
        assert_eq!(std::fs::read(state_file(&sb, "bob")).unwrap(), bob);
    }
    // The database file: refused by the CLI; logins do not notice, and
    // what they spool meanwhile is merged once it is put right.
    let f = sb.db.display().to_string();
    let mut logged = 1;
    for (m, uid, needle) in [(0o620, 0, "mode 0620"), (0o602, 0, "mode 0602"), (0o600, 1000, "owner uid 1000")] {
        chmod(&sb.db, m);
        std::os::unix::fs::chown(&sb.db, Some(uid), None).unwrap();
        let ok = r.login("login", b"alice", PASSWORD);
        assert!(ok.ok && ok.errors().is_empty(), "{needle}: {ok:?}");
        let bad = r.login("login", b"alice", "wrong");
        assert!(!bad.ok && bad.errors().is_empty(), "{needle}: {bad:?}");
        assert_admin_fails(&sb, &["log"], &[&f, "refusing database", needle]);
        assert!(unmerged_spool(&sb), "{needle}: the spool is kept");
        chmod(&sb.db, 0o600);
        std::os::unix::fs::chown(&sb.db, Some(0), None).unwrap();
        logged += 2;
        let log = sb.log(&[]);
        assert_eq!(log.len(), logged, "{needle}");
        assert_eq!(entry_text(&log[0]), "alice failure auth");
        assert_eq!(entry_text(&log[1]), "alice success -");
    }
    // a symlink in place of the database is refused, its target untouched
    let target = sb.path().join("elsewhere.db");
    checkpoint(&sb.db);
    std::fs::rename(&sb.db, &target).unwrap();
    std::os::unix::fs::symlink(&target, &sb.db).unwrap();
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok && ok.errors().is_empty(), "{ok:?}");
    assert_admin_fails(&sb, &["log"], &[&f, "not a regular file"]);
    assert_eq!(rows(&target), logged as i64, "nothing merged into the target");
    std::fs::remove_file(&sb.db).unwrap();
    std::fs::rename(&target, &sb.db).unwrap();
    logged += 1;
    assert_eq!(sb.log(&[]).len(), logged);
    // a symlink in place of the spool, or of an account state file
    let decoy = sb.path().join("decoy");
    std::fs::write(&decoy, b"not to be touched").unwrap();
    for link in [spool_of(&sb), state_file(&sb, "alice")] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&decoy, &link).unwrap();
        assert_on_error(&r, "", &[&link.display().to_string(), "cannot open"], true);
        assert_eq!(std::fs::read(&decoy).unwrap(), b"not to be touched");
        std::fs::remove_file(&link).unwrap();
    }
}

/// Wait for a file the notify command writes; bounded.
fn wait_for(p: &Path, limit: Duration) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with("END\n") {
                return Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn notify_command_rules_are_enforced() {
    if missing_tools() || not_root("notify_command ownership rules (root must own it)") {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=1");
    let r = Runner::new(&sb);
    // not absolute: a configuration error (module argument and file)
    assert_on_error(&r, "notify_command=bin/notify", &["module argument, key notify_command", "absolute path"], false);
    std::fs::write(&sb.conf, "notify_command = \"notify.sh\"\n").unwrap();
    assert_on_error(&r, "", &[&format!("{}, line 1, key notify_command", sb.conf.display())], false);
    std::fs::write(&sb.conf, "").unwrap();

    // a script that records its environment and proves no shell saw the name
    let bin = sb.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    chmod(&bin, 0o755);
    let write_script = |name: &str, m: u32, uid: u32| -> (PathBuf, PathBuf) {
        let out = sb.path().join(format!("{name}.out"));
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\n{{ env | grep ^USERAUDIT_ | sort; echo END; }} > {}.tmp\nmv {0}.tmp {0}\n",
                out.display()
            ),
        )
        .unwrap();
        chmod(&p, m);
        std::os::unix::fs::chown(&p, Some(uid), None).unwrap();
        (p, out)
    };
    let (group_w, group_out) = write_script("group-writable", 0o775, 0);
    let (world_w, world_out) = write_script("world-writable", 0o757, 0);
    let (foreign, foreign_out) = write_script("foreign", 0o755, 1000);
    let (good, good_out) = write_script("good", 0o755, 0);
    // a good script in a directory anyone can write to (and so replace it)
    let open_dir = sb.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    let in_open = open_dir.join("notify");
    std::fs::copy(&good, &in_open).unwrap();
    chmod(&in_open, 0o755);
    chmod(&open_dir, 0o777);
    let pwned = sb.path().join("pwned");
    let shell_name = format!("x$(touch {})`touch {}`", pwned.display(), pwned.display());
    // an account whose name is shell syntax
    let mut pw = std::fs::read_to_string(sb.path().join("passwd")).unwrap();
    pw.push_str(&format!("{shell_name}:x:1200:1200::/home/x:/bin/sh\n"));
    std::fs::write(sb.path().join("passwd"), pw).unwrap();

    for (users, cmd, needle) in [
        (["alice"], &group_w, "writable by group or others (mode 0775)"),
        (["bob"], &world_w, "writable by group or others (mode 0757)"),
        (["carol"], &foreign, "owned by uid 1000, not root"),
        (["erin"], &in_open, "directory"),
    ] {
        sb.write_service("login", &sb.stack(&format!("notify_command={}", cmd.display())));
        let run = r.login("login", users[0].as_bytes(), "wrong");
        assert!(!run.ok);
        assert_eq!(sb.status(users[0])["state"], "locked", "the lock itself still happens");
        run.assert_error("notify refused", &["refusing notify_command", &cmd.display().to_string(), needle]);
    }
    // the good one runs, once, with the name passed verbatim and no shell
    sb.write_service("login", &sb.stack(&format!("notify_command={}", good.display())));
    assert!(!r.login("login", shell_name.as_bytes(), "wrong").ok);
    let env = wait_for(&good_out, Duration::from_secs(10)).expect("the good notify command ran");
    assert!(env.contains(&format!("USERAUDIT_USER={shell_name}\n")), "{env}");
    assert!(env.contains("USERAUDIT_EVENT=locked\n"), "{env}");
    assert!(!pwned.exists(), "the account name reached a shell");
    // the refused ones never ran (the good one, started later, has finished)
    for o in [&group_out, &world_out, &foreign_out] {
        assert!(!o.exists(), "{} ran", o.display());
    }
}

/// A program that is not root (a screen locker) meets the root-only
/// account state and log spool: it cannot read them, and its attempts
/// change nothing in them — neither a reset by a right password nor a
/// failure, nor a log entry; it is allowed per on_error's rule for non-root
/// callers. The CLI refuses it the database too.
#[test]
fn non_root_caller_cannot_read_or_change_state() {
    if missing_tools() || not_root("running a caller as nobody") || !setpriv_works() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2 debug");
    assert!(!sb.login("alice", "wrong", "192.0.2.1").ok);
    assert!(!sb.login("alice", "wrong", "192.0.2.1").ok);
    assert!(!sb.login("bob", "wrong", "192.0.2.1").ok);
    assert_eq!(sb.status("alice")["state"], "locked");
    let before_rows = rows(&sb.db);
    open_sandbox_to_nobody(&sb);
    let mut r = Runner::new(&sb);
    r.nobody = true;
    // bob: a right password would reset his count — through nobody, no
    let ok = r.login("login", b"bob", PASSWORD);
    assert!(ok.ok, "non-root caller: allowed: {ok:?}");
    // alice: locked, but the screen locker cannot know (documented)
    let a = r.login("login", b"alice", PASSWORD);
    assert!(a.ok, "non-root caller: allowed: {a:?}");
    assert!(!r.login("login", b"bob", "wrong").ok);
    // said at debug level only, never as an error
    if ok.syslog.is_some() {
        assert!(ok.errors().is_empty(), "{:?}", ok.errors());
        assert!(
            ok.module_lines().iter().any(|l| String::from_utf8_lossy(l).contains("not root")),
            "a debug line says why: {:?}",
            ok.module_lines()
        );
    }
    assert_eq!(rows(&sb.db), before_rows, "nothing was logged by nobody");
    assert_eq!(sb.status("bob")["failures"], 1, "bob's count was not reset");
    assert_eq!(sb.status("alice")["state"], "locked", "alice's lock was not lifted");
    // the CLI as nobody cannot read the log or reset anyone
    for args in [&["log"][..], &["status", "alice"], &["activate", "alice"]] {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(admin_path())
            .arg("--conf")
            .arg(&sb.conf)
            .arg("--db")
            .arg(&sb.db)
            .args(args)
            .env("LD_PRELOAD", "libnss_wrapper.so")
            .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
            .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "nobody: useraudit-admin {args:?}");
        assert!(o.stdout.is_empty());
    }
    assert_eq!(sb.status("alice")["state"], "locked");
}
