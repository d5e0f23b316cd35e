//! Faults in the files a login uses, through real libpam: the account state
//! files in `DATABASE.accounts/` and the log spool `DATABASE.spool` locked
//! by another process, damaged, unreadable or unwritable, their directories
//! unreadable, on a read-only or full filesystem. Each is answered as
//! `on_error` promises, with a syslog error that names what is wrong.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`. Tests
//! that need root (permissions do not stop root; mounts in bubblewrap) skip
//! when not run as root.

mod common;

use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use useraudit_core::spool;
use useraudit_core::state;

/// Another process holds an account's state file locked (`flock`) longer
/// than the busy timeout (3 s). Decisions come from the last committed
/// state, which the held lock does not hide: preauth does not wait; a
/// write waits, bounded, with an error naming the file; then a failure is
/// refused uncounted, and a login of this active account is let in (also
/// with `on_error = "deny"`) without its reset. The cases run side by side.
#[test]
fn account_state_locked_longer_than_busy_timeout() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok);
    let before = rows(&sb.db);
    let file = state_file(&sb, "alice");
    let f = file.display().to_string();
    sb.write_service("su", &sb.stack("on_error=deny"));
    // service, password, operations, let in, hooks that wait for the file
    let cases: [(&str, &str, &[&str], bool, u32); 5] = [
        // authsucc waits (preauth reads without the lock); acct_mgmt knows
        // from authsucc that this login was let in and logged
        ("login", PASSWORD, &["authenticate", "acct_mgmt"], true, 1),
        ("login", "wrong", &["authenticate", "acct_mgmt"], false, 1),
        ("su", PASSWORD, &["authenticate", "acct_mgmt"], true, 1),
        ("login", "", &["acct_mgmt"], true, 1),
        ("su", "", &["acct_mgmt"], true, 1),
    ];
    let held = Flock::exclusive(&file);
    let done: Vec<(Run, Duration)> = std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|&(svc, pw, ops, _, _)| {
                let sb = &sb;
                s.spawn(move || {
                    let r = Runner::parallel(sb);
                    let t = Instant::now();
                    let run = r.run(svc, b"alice", &format!("{pw}\n"), &[("rhost", b"203.0.113.9")], ops);
                    (run, t.elapsed())
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    drop(held);
    for ((svc, pw, ops, allowed, waits), (run, took)) in cases.iter().zip(done) {
        let what = format!("{svc} {ops:?} with {pw:?}");
        assert_eq!(run.ok, *allowed, "{what}: {run:?}");
        run.assert_error(&what, &[&f, "still locked"]);
        assert!(took >= Duration::from_millis(2900 * u64::from(*waits)), "{what}: waited {waits} x 3 s: {took:?}");
        // bounded: the 3 s budget counts the sleeps asked for; a loaded
        // machine oversleeps some
        assert!(took < Duration::from_secs(5 * u64::from(*waits) + 5), "{what}: waits are bounded: {took:?}");
        if std::env::var_os("HARDENING_DEBUG").is_some() {
            eprintln!("{what}: {took:?}");
        }
    }
    // The logins let in are logged as successes, the failure as a failure
    // (authfail logs before it counts).
    assert_eq!(rows(&sb.db), before + 5);
    let log = sb.log(&["--user", "alice"]);
    let mut texts: Vec<String> = log[..5].iter().map(entry_text).collect();
    texts.sort();
    let success = "alice success -";
    assert_eq!(texts, ["alice failure auth", success, success, success, success]);
    // and with the lock gone, logins are as before
    let r = Runner::new(&sb);
    sb.write_service("login", &sb.stack(""));
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok && ok.errors().is_empty(), "{ok:?}");
    assert_eq!(rows(&sb.db), before + 6);
}

/// Another process holds an account's state file locked for a moment (well
/// inside the busy timeout): the login waits for it, then goes ahead and is
/// logged.
#[test]
fn account_state_locked_briefly_the_login_waits_and_is_logged() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let before = rows(&sb.db);
    let r = Runner::parallel(&sb);
    let held = Flock::exclusive(&state_file(&sb, "alice"));
    let t = Instant::now();
    let holder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(600));
        drop(held);
    });
    let run = r.login("login", b"alice", PASSWORD);
    let took = t.elapsed();
    holder.join().unwrap();
    assert!(run.ok, "{run:?}");
    assert!(run.errors().is_empty(), "{:?}", run.errors());
    assert!(took >= Duration::from_millis(600), "the login did not wait for the lock: {took:?}");
    assert!(took < Duration::from_millis(2900), "the login waited out the busy timeout: {took:?}");
    assert_eq!(rows(&sb.db), before + 1);
    let log = sb.log(&["--user", "alice"]);
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0]["outcome"], "success");
    assert_eq!(log[0]["rhost"], "203.0.113.9");
}

/// A damaged account state file (garbage, then a flipped bit) is an error
/// answered by `on_error` and named in syslog, and by `status`;
/// `useraudit-admin activate` starts the account afresh.
#[test]
fn damaged_account_state_file_is_an_error_until_activated() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let r = Runner::new(&sb);
    let file = state_file(&sb, "alice");
    let f = file.display().to_string();
    for (damage, needle) in [("garbage", "not a useraudit account file"), ("flipped bit", "checksum")] {
        if damage == "garbage" {
            std::fs::write(&file, b"garbage, not an account file\n").unwrap();
        } else {
            // in every record: an intact older one would be read instead
            let mut b = std::fs::read(&file).unwrap();
            let n = b.len();
            b[n - 2] ^= 1;
            b[40] ^= 1;
            std::fs::write(&file, &b).unwrap();
        }
        assert_on_error(&r, "", &[&f, needle], true);
        // other accounts are not affected
        let bob = r.login("login", b"bob", PASSWORD);
        assert!(bob.ok && bob.errors().is_empty(), "{damage}: bob: {bob:?}");
        assert_admin_fails(&sb, &["status", "alice"], &[&f, needle]);
        // The list shows the accounts it can and reports the damaged one.
        let o = sb.admin(&["status"]);
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(out.lines().any(|l| l.starts_with("bob ")) && !out.contains("alice"), "{out}");
        assert!(err.trim_end().lines().count() == 1 && err.contains(&f) && err.contains(needle), "{err}");
        let out = sb.admin_ok(&["activate", "alice"]);
        assert!(out.starts_with("alice: "), "{out}");
        let ok = r.login("login", b"alice", PASSWORD);
        assert!(ok.ok && ok.errors().is_empty(), "{damage}: repaired: {ok:?}");
        let bad = r.login("login", b"alice", "wrong");
        assert!(!bad.ok && bad.errors().is_empty(), "{damage}: {bad:?}");
        let st = sb.status("alice");
        assert_eq!((st["state"].as_str(), st["failures"].as_i64()), (Some("active"), Some(1)), "{damage}: {st}");
    }
    // The failures met while the file was damaged were logged all the same
    // (authfail logs before it counts): one per damage, one after each repair.
    assert_eq!(sb.log(&["--user", "alice", "--failed"]).len(), 4);
}

/// Root without CAP_DAC_OVERRIDE: a log spool it cannot write, an account
/// state file it cannot read, then one it cannot write. The database
/// itself, unreadable, is nothing to logins.
#[test]
fn spool_or_state_file_unreadable_or_unwritable() {
    if missing_tools() || not_root("dropping DAC capabilities") || !setpriv_works() {
        return;
    }
    let sb = sandbox_with_db("");
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let spool = spool_of(&sb);
    let sp = spool.display().to_string();
    let mut r = Runner::new(&sb);
    r.drop_dac = true;
    for m in [0o000, 0o400] {
        chmod(&spool, m);
        assert_on_error(&r, "", &[&sp, "cannot open", "Permission denied"], true);
    }
    chmod(&spool, 0o600);
    assert_eq!(rows(&sb.db), 2, "nothing was spooled but alice's first login");
    let file = state_file(&sb, "alice");
    let f = file.display().to_string();
    let bytes = std::fs::read(&file).unwrap();
    for m in [0o000, 0o400] {
        chmod(&file, m);
        assert_on_error(&r, "", &[&f, "cannot open", "Permission denied"], true);
    }
    chmod(&file, 0o600);
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "the state was not changed");
    // the wrong passwords were logged though they could not be counted
    // (authfail logs before it counts), and the logins on_error = "allow"
    // let in as successes (two per mode)
    assert_eq!(rows(&sb.db), 8);
    assert_eq!(sb.log(&["--user", "alice", "--failed"]).len(), 2);
    assert_eq!(sb.log(&["--user", "alice", "--succeeded"]).len(), 5);
    // the database: logins never look at it
    chmod(&sb.db, 0o000);
    let ok = r.login("login", b"alice", PASSWORD);
    chmod(&sb.db, 0o600);
    assert!(ok.ok && ok.errors().is_empty(), "{ok:?}");
    assert_eq!(rows(&sb.db), 9);
}

/// The database's directory, then the account state directory, cannot be
/// searched (mode 0000, root without CAP_DAC_OVERRIDE).
#[test]
fn database_or_account_state_directory_unreadable() {
    if missing_tools() || not_root("dropping DAC capabilities") || !setpriv_works() {
        return;
    }
    let sb = sandbox_with_db("");
    let dir = sb.db.parent().unwrap().to_path_buf();
    let accounts = state::dir_for(&sb.db);
    let mut r = Runner::new(&sb);
    r.drop_dac = true;
    chmod(&dir, 0o000);
    assert_on_error(&r, "", &[&accounts.display().to_string(), "Permission denied"], true);
    chmod(&dir, 0o700);
    assert_eq!(rows(&sb.db), 1, "nothing was spooled");
    chmod(&accounts, 0o000);
    assert_on_error(&r, "", &[&state_file(&sb, "alice").display().to_string(), "Permission denied"], true);
    chmod(&accounts, 0o700);
    // the spool is beside the database: the wrong password was logged
    // (authfail logs before it counts), and so were the two logins
    // on_error = "allow" let in; what "deny" refused was not a login
    assert_eq!(rows(&sb.db), 4);
    assert_eq!(sb.log(&["--user", "alice", "--failed"]).len(), 1);
    assert_eq!(sb.log(&["--user", "alice", "--succeeded"]).len(), 2);
}

/// The database's directory on a read-only mount (e.g. `/var` remounted
/// read-only after an fs error), then the spool alone; the database file
/// alone on a read-only mount is nothing to logins.
#[test]
fn read_only_filesystem() {
    if missing_tools() || not_root("read-only bind mounts in bwrap") || !bwrap_works() {
        return;
    }
    let sb = sandbox_with_db("");
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let spool = spool_of(&sb);
    let alice = state_file(&sb, "alice");
    let (spooled, state) = (std::fs::read(&spool).unwrap(), std::fs::read(&alice).unwrap());
    let dir = sb.db.parent().unwrap().to_path_buf();
    let mut r = Runner::new(&sb);
    r.mounts = vec!["--ro-bind".into(), dir.clone().into(), dir.clone().into()];
    assert_on_error(&r, "", &[&dir.display().to_string(), "Read-only file system"], true);
    assert_eq!(std::fs::read(&spool).unwrap(), spooled, "nothing was spooled");
    assert_eq!(std::fs::read(&alice).unwrap(), state, "no state was changed");
    let mut r = Runner::new(&sb);
    r.mounts = vec!["--ro-bind".into(), spool.clone().into(), spool.clone().into()];
    assert_on_error(&r, "", &[&spool.display().to_string(), "Read-only file system"], true);
    assert_eq!(std::fs::read(&spool).unwrap(), spooled, "nothing was spooled");
    let mut r = Runner::new(&sb);
    r.mounts = vec!["--ro-bind".into(), sb.db.clone().into(), sb.db.clone().into()];
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok && ok.errors().is_empty(), "{ok:?}");
    assert_eq!(rows(&sb.db), 3, "bob, alice, and the last login");
}

/// A full filesystem (a 1 MiB tmpfs filled up), for a new database and for
/// a spool that grows: an append that cannot be written whole is answered
/// by `on_error`; freeing space lets logging continue, and the merge skips
/// the cut-short record (reported as damaged bytes) and loses no intact
/// one.
#[test]
fn full_disk() {
    if missing_tools() || not_root("a tmpfs in bwrap") || !bwrap_works() {
        return;
    }
    let mut sb = Sandbox::new("");
    let mnt = sb.path().join("small");
    let out = sb.path().join("out");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&out).unwrap();
    let db = mnt.join("state/ua.db");
    sb.write_service("login", &sb.stack(&format!("db={}", db.display())));
    sb.write_service("su", &sb.stack(&format!("db={} on_error=deny", db.display())));
    let log = Syslog::new();
    let env = Runner::new(&sb).env_args("libpam_wrapper.so libnss_wrapper.so");
    let env: Vec<String> = env.iter().map(|s| sh_quote(s.to_str().unwrap())).collect();
    // Records of about 3 KiB (rhost, ruser and tty near the 1 KiB cap), so
    // that once the disk is full the spool's last page has no room for a
    // whole one: the append is cut short.
    let pad = |c: &str| c.repeat(1000);
    let pt = |step: &str, svc: &str, pw: &str| {
        format!(
            "logger -t hardening STEP-{step}\nprintf '{pw}\\n' | {} pamtester -I rhost={step}-{} -I ruser={} -I tty={} {svc} alice authenticate acct_mgmt >/dev/null 2>&1; echo $? > {}/{step}\n",
            env.join(" "),
            pad("h"),
            pad("u"),
            pad("t"),
            out.display()
        )
    };
    let fill = format!("dd if=/dev/zero of={}/fill bs=4096 2>/dev/null; true\n", mnt.display());
    let free = format!("rm -f {}/fill\n", mnt.display());
    let script = [
        fill.clone(),
        pt("new-allow", "login", PASSWORD),
        pt("new-deny", "su", PASSWORD),
        free.clone(),
        pt("first", "login", PASSWORD),
        pt("second", "login", "wrong"),
        fill,
        pt("full-allow", "login", PASSWORD),
        pt("full-wrong", "login", "wrong"),
        pt("full-deny", "su", PASSWORD),
        free,
        pt("after", "login", PASSWORD),
        "logger -t hardening STEP-end\n".into(),
        format!("cp -a {}/state {}/state\n", mnt.display(), out.display()),
    ]
    .concat();
    run_on_a_full_disk(&log, &mnt, &script);
    let rc = |step: &str| std::fs::read_to_string(out.join(step)).unwrap().trim().to_string();
    assert_eq!(rc("new-allow"), "0", "full disk, new database, allow: the right password gets in");
    assert_ne!(rc("new-deny"), "0", "full disk, new database, deny: refused");
    assert_eq!(rc("first"), "0");
    assert_ne!(rc("second"), "0");
    assert_eq!(rc("full-allow"), "0", "full disk, allow: the right password gets in");
    assert_ne!(rc("full-wrong"), "0", "full disk, allow: a wrong password stays out");
    assert_ne!(rc("full-deny"), "0", "full disk, deny: refused");
    assert_eq!(rc("after"), "0");
    // syslog, split at the step markers
    let mut steps: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
    for d in log.drain() {
        let s = String::from_utf8_lossy(&d);
        if let Some(i) = s.find("STEP-") {
            steps.push((s[i + 5..].trim().to_string(), vec![]));
        } else if let Some(last) = steps.last_mut() {
            last.1.push(d);
        }
    }
    if std::env::var_os("HARDENING_DEBUG").is_some() {
        for (s, l) in &steps {
            eprintln!("{s}: {:#?}", l.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>());
        }
    }
    let run_of = |step: &str| Run {
        ok: true,
        code: Some(0),
        stdout: String::new(),
        stderr: String::new(),
        syslog: Some(steps.iter().find(|(s, _)| s == step).unwrap_or_else(|| panic!("no syslog for {step}")).1.clone()),
    };
    let spool = spool::path_for(&db).display().to_string();
    let no_space = "No space left on device";
    // A new database: the first write (alice's state) finds no room.
    for step in ["new-allow", "new-deny"] {
        run_of(step).assert_error(step, &[&db.parent().unwrap().display().to_string(), no_space]);
    }
    // A full spool: the first append is cut short, later ones find no room.
    run_of("full-allow").assert_error("full-allow", &[&spool, "short write", "disk full?"]);
    for step in ["full-allow", "full-wrong", "full-deny"] {
        run_of(step).assert_error(step, &[&spool, no_space]);
    }
    for step in ["first", "second", "after"] {
        let run = run_of(step);
        assert!(run.errors().is_empty(), "{step}: there was room: {:?}", run.errors());
    }
    // The copy taken before the tmpfs went away: its first merge skips the
    // cut-short record and reports it, and holds exactly the attempts made
    // while there was room.
    sb.db = out.join("state/ua.db");
    let check = sb.admin_ok(&["check"]);
    let damaged: u64 = check
        .lines()
        .find_map(|l| {
            l.strip_prefix("# warning: the log spool had ")?.strip_suffix(" damaged byte(s), skipped")?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no damage reported: {check}"));
    assert!((1..3000).contains(&damaged), "part of one record was damaged: {damaged} bytes");
    assert_eq!(integrity(&sb.db), "ok");
    let got: Vec<(String, String)> = sb
        .log(&[])
        .iter()
        .rev()
        .map(|e| {
            let h = e["rhost"].as_str().unwrap();
            (h[..h.find('-').unwrap_or(h.len())].to_string(), e["outcome"].as_str().unwrap().to_string())
        })
        .collect();
    let want: Vec<(String, String)> = [("first", "success"), ("second", "failure"), ("after", "success")]
        .iter()
        .map(|(h, o)| (h.to_string(), o.to_string()))
        .collect();
    assert_eq!(got, want);
}
