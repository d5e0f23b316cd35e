//! The account state files through real libpam and the real CLI: writes cut
//! short never leave a torn record, a lock held by another (stopped)
//! process does not decide a login, an empty file is damage and the module
//! never leaves one, the state directory used is the one checked, a file
//! that holds another name is never overwritten, long names of the older
//! form are still found, and only writes that lock or unlock are flushed.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use useraudit_core::files::Enc;
use useraudit_core::state;

// ------------------------------------------------------------------ helpers

/// The environment the sandbox gives pamtester (pam_wrapper, nss_wrapper).
fn pam_env(sb: &Sandbox, cmd: &mut Command) {
    cmd.env("LD_PRELOAD", "libpam_wrapper.so libnss_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", sb.path().join("pam.d"))
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .env_remove("PAM_WRAPPER_DEBUGLEVEL");
}

/// The account state file of `user`.
fn state_file(sb: &Sandbox, user: &[u8]) -> PathBuf {
    state::dir_for(&sb.db).join(state::file_name(user))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn wrong(sb: &Sandbox, user: &str) {
    assert!(!sb.login(user, "wrong", "203.0.113.9").ok);
}

/// pamtester started and stopped at its password prompt: the hooks before
/// the prompt (preauth) have run in it. Holds the pam_wrapper turn.
struct AtPrompt {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl AtPrompt {
    fn start(sb: &Sandbox, service: &str, user: &[u8], ops: &[&str]) -> AtPrompt {
        use std::os::unix::ffi::OsStrExt;
        let turn = pam_wrapper_lock();
        let mut cmd = Command::new("pamtester");
        cmd.arg(service).arg(std::ffi::OsStr::from_bytes(user)).args(ops);
        pam_env(sb, &mut cmd);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let readers: [Box<dyn Read + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for mut r in readers {
            let out = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut b = [0u8; 256];
                while let Ok(n @ 1..) = r.read(&mut b) {
                    out.lock().unwrap().extend_from_slice(&b[..n]);
                }
            });
        }
        let t = Instant::now();
        while !String::from_utf8_lossy(&output.lock().unwrap()).contains("assword") {
            let shown = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
            assert!(t.elapsed() < Duration::from_secs(30), "no prompt: {shown}");
            std::thread::sleep(Duration::from_millis(10));
        }
        AtPrompt { child, output, _turn: turn }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Type the password and wait for the end: whether it succeeded, and
    /// what it printed.
    fn answer(mut self, password: &str) -> (bool, String) {
        let _ = self.child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes());
        let st = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (st.success(), String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned())
    }
}

/// A process holding an exclusive `flock` on a file, stopped (SIGSTOP), as
/// a caller could stop its own `su` in the middle of a login. Killed when
/// dropped.
struct StoppedHolder(Child);

impl StoppedHolder {
    fn new(file: &Path) -> StoppedHolder {
        assert!(file.exists(), "flock(1) would create {}", file.display());
        let child = Command::new("flock").arg(file).args(["sleep", "600"]).spawn().unwrap();
        let t = Instant::now();
        // held once a non-blocking attempt fails
        let held = || Command::new("flock").args(["-n", "-E", "99"]).arg(file).arg("true").status().unwrap().code();
        while held() != Some(99) {
            assert!(t.elapsed() < Duration::from_secs(30), "flock(1) did not take the lock");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(Command::new("kill").args(["-STOP", &child.id().to_string()]).status().unwrap().success());
        StoppedHolder(child)
    }
}

impl Drop for StoppedHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `status USER --format json`: exit code and the row.
fn status(sb: &Sandbox, user: &str) -> (Option<i32>, serde_json::Value) {
    let o = sb.admin(&["status", user, "--format", "json"]);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (o.status.code(), v[0].clone())
}

/// A version 1 state file, as the previous release wrote it.
fn v1_file(user: &[u8], state: &str, reason: Option<&str>, failures: u32) -> Vec<u8> {
    let mut p = Enc::default();
    p.bytes(Some(user));
    p.bytes(Some(state.as_bytes()));
    p.bytes(reason.map(str::as_bytes));
    p.u32(failures);
    p.u32(0);
    p.opt_i64(None);
    p.opt_i64(None);
    p.opt_i64(Some(1_700_000_000_000_000));
    p.opt_i64(None);
    p.i64(1_600_000_000_000_000);
    p.opt_i64(None);
    p.u8(0);
    p.bytes(None);
    let mut out = b"UAac\x01".to_vec();
    out.extend_from_slice(&(p.0.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&p.0).to_le_bytes());
    out.extend_from_slice(&p.0);
    out
}

/// The file name the previous release gave a long account name.
fn v1_long_name(user: &[u8]) -> String {
    let esc = state::file_name(&user[..1]);
    assert_eq!(esc, "x");
    let h = user.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{}~{h:016x}", "x".repeat(183))
}

/// Add an account (and its password for every service) to the sandbox.
fn add_user(sb: &Sandbox, name: &str, uid: u32) {
    let mut f = std::fs::OpenOptions::new().append(true).open(sb.path().join("passwd")).unwrap();
    writeln!(f, "{name}:x:{uid}:{uid}:{name}:/home/x:/bin/sh").unwrap();
    for s in SERVICES {
        let mut f = std::fs::OpenOptions::new().append(true).open(sb.path().join(format!("passdb-{s}"))).unwrap();
        writeln!(f, "{name}:{PASSWORD}:{s}").unwrap();
    }
}

// -------------------------------------------------------------------- tests

/// A state write cut short by a file size limit (RLIMIT_FSIZE of a few
/// bytes up to about a record's length, set on the login process after
/// preauth, so that the write that meets it is the login's reset) leaves
/// the last committed state: `status` and `check` read it, and the count
/// goes on from it exactly.
#[test]
fn a_write_cut_short_leaves_the_last_committed_state() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    sb.create_db_dir();
    for limit in [1, 5, 13, 31, 47, 64, 90, 120] {
        sb.admin_ok(&["activate", "alice"]);
        wrong(&sb, "alice");
        wrong(&sb, "alice");
        let p = AtPrompt::start(&sb, "login", b"alice", &["authenticate"]);
        let st = Command::new("prlimit")
            .arg("--pid")
            .arg(p.pid().to_string())
            .arg(format!("--fsize={limit}:{limit}"))
            .status()
            .unwrap();
        assert!(st.success());
        let (_, shown) = p.answer(PASSWORD);
        let (code, row) = status(&sb, "alice");
        assert_eq!(code, Some(0), "limit {limit}: the state is readable and active: {row} {shown}");
        let failures = row["failures"].as_u64().unwrap();
        assert!(failures == 2 || failures == 0, "limit {limit}: {row}");
        let o = sb.admin(&["check"]);
        assert!(o.status.success(), "limit {limit}: {}", text(&o));
        // counting goes on from the committed state
        wrong(&sb, "alice");
        let (code, row) = status(&sb, "alice");
        if failures == 2 {
            assert_eq!((code, row["state"].as_str()), (Some(3), Some("locked")), "limit {limit}: {row}");
        } else {
            assert_eq!((code, row["failures"].as_u64()), (Some(0), Some(1)), "limit {limit}: {row}");
        }
    }
}

/// Another process holds the account's state file locked and is stopped.
/// A locked account is still refused, by preauth and by the account hook
/// alone, with `on_error = "allow"`; an account that is not locked still
/// logs in (its reset waits for the lock, then the login is decided from
/// the committed state), also with `on_error = "deny"`.
#[test]
fn a_stopped_lock_holder_decides_nothing() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2");
    sb.write_service("su", &sb.stack("on_error=deny"));
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
    wrong(&sb, "alice");
    wrong(&sb, "alice");
    assert_eq!(status(&sb, "alice").0, Some(3));
    {
        let _held = StoppedHolder::new(&state_file(&sb, b"alice"));
        let r = sb.login("alice", PASSWORD, "203.0.113.9");
        assert!(!r.ok, "a locked account stays locked: {r:?}");
        assert!(r.shown().contains("locked"), "{r:?}");
        let r = sb.pamtester("login", "alice", "", &[], &["acct_mgmt"]);
        assert!(!r.ok, "the account hook alone: {r:?}");
        wrong(&sb, "alice");
        // the refusals are logged
        assert_eq!(status(&sb, "alice").0, Some(3));
    }
    let log = sb.log(&["--user", "alice"]);
    let reasons: Vec<&str> = log.iter().map(|e| e["reason"].as_str().unwrap_or("-")).collect();
    assert_eq!(reasons, ["locked", "locked", "locked", "auth", "auth"], "{log:?}");
    {
        let _held = StoppedHolder::new(&state_file(&sb, b"bob"));
        for svc in ["login", "su"] {
            let r = sb.pamtester(svc, "bob", &format!("{PASSWORD}\n"), &[], &["authenticate", "acct_mgmt"]);
            assert!(r.ok, "{svc}: an active account logs in: {r:?}");
        }
        wrong(&sb, "bob");
    }
    // the failure met while the lock was held could not be counted
    let (code, row) = status(&sb, "bob");
    assert_eq!((code, row["failures"].as_u64()), (Some(0), Some(0)), "{row}");
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
}

/// An empty account state file is damage, not a fresh account: the right
/// password of a locked account emptied that way gets in only by
/// `on_error = "allow"`, `check` fails naming the file, `status` flags it,
/// and `activate` starts the account afresh.
#[test]
fn an_empty_state_file_is_damage() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    sb.create_db_dir();
    sb.write_service("su", &sb.stack("on_error=deny"));
    sb.admin_ok(&["lock", "alice"]);
    let file = state_file(&sb, b"alice");
    std::fs::write(&file, b"").unwrap();
    let f = file.display().to_string();
    let r = sb.pamtester("su", "alice", &format!("{PASSWORD}\n"), &[], &["authenticate", "acct_mgmt"]);
    assert!(!r.ok, "on_error = deny refuses: {r:?}");
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok, "on_error = allow");
    for args in [&["check"][..], &["status"], &["status", "alice"]] {
        let o = sb.admin(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(&f) && e.contains("empty"), "{args:?}: {e}");
    }
    sb.admin_ok(&["activate", "alice"]);
    let (code, row) = status(&sb, "alice");
    assert_eq!((code, row["state"].as_str()), (Some(0), Some("active")));
    assert!(sb.admin(&["check"]).status.success());
}

/// The first write of an account's state, cut short (a file size limit of
/// 0, then of a few bytes), leaves no file behind, least of all an empty
/// one; the next login writes it whole.
#[test]
fn a_state_file_is_never_left_empty() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
    let file = state_file(&sb, b"carol");
    for limit in [0, 10] {
        let p = AtPrompt::start(&sb, "login", b"carol", &["authenticate"]);
        let lim = format!("--fsize={limit}:{limit}");
        assert!(Command::new("prlimit").arg("--pid").arg(p.pid().to_string()).arg(lim).status().unwrap().success());
        p.answer(PASSWORD);
        assert!(!file.exists(), "limit {limit}: {} was left behind", file.display());
        let o = sb.admin(&["check"]);
        assert!(o.status.success(), "limit {limit}: {}", text(&o));
    }
    assert!(sb.login("carol", PASSWORD, "192.0.2.1").ok);
    assert!(std::fs::metadata(&file).unwrap().len() > 0);
    assert_eq!(status(&sb, "carol").0, Some(0));
}

/// The state directory is opened once per PAM handle and used by its
/// descriptor: a directory put in its place during a login gets nothing
/// (the failure is counted in the one that was checked); a symbolic link
/// in place of the state directory is refused.
#[test]
fn the_state_directory_used_is_the_one_checked() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=5");
    sb.write_service("su", &sb.stack("on_error=deny"));
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let dir = state::dir_for(&sb.db);
    let moved = sb.path().join("moved");
    let p = AtPrompt::start(&sb, "login", b"alice", &["authenticate"]);
    std::fs::rename(&dir, &moved).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let (ok, shown) = p.answer("wrong");
    assert!(!ok, "{shown}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "nothing was written in the new directory");
    std::fs::remove_dir(&dir).unwrap();
    std::os::unix::fs::symlink(&moved, &dir).unwrap();
    let before = std::fs::read(moved.join("alice")).unwrap();
    let r = sb.pamtester("su", "alice", &format!("{PASSWORD}\n"), &[], &["authenticate", "acct_mgmt"]);
    assert!(!r.ok, "a symlinked state directory is refused: {r:?}");
    assert!(!sb.login("alice", "wrong", "192.0.2.1").ok);
    assert_eq!(std::fs::read(moved.join("alice")).unwrap(), before, "nothing was written through the link");
    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let (code, row) = status(&sb, "alice");
    assert_eq!((code, row["failures"].as_u64()), (Some(0), Some(1)), "{row}");
}

/// Long names: a file that holds another name (as a crafted collision of
/// hashed file names would give) is an error, never state to overwrite;
/// a long name's file from the previous release (64-bit FNV-1a name,
/// version 1 record) is still read and updated.
#[test]
fn a_file_holding_another_name_is_never_overwritten() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    sb.write_service("su", &sb.stack("on_error=deny"));
    let long_a = "x".repeat(240);
    let long_b = format!("{}b", "x".repeat(239));
    add_user(&sb, &long_a, 2001);
    add_user(&sb, &long_b, 2002);
    // another account's state where long_b's file goes
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
    let target = state_file(&sb, long_b.as_bytes());
    assert!(target.file_name().unwrap().len() <= 200);
    std::fs::copy(state_file(&sb, b"bob"), &target).unwrap();
    let bytes = std::fs::read(&target).unwrap();
    assert!(!sb.login(&long_b, "wrong", "192.0.2.1").ok);
    let r = sb.pamtester("su", &long_b, &format!("{PASSWORD}\n"), &[], &["authenticate", "acct_mgmt"]);
    assert!(!r.ok, "on_error = deny refuses: {r:?}");
    assert_eq!(std::fs::read(&target).unwrap(), bytes, "the other name's state was not overwritten");
    let o = sb.admin(&["check"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("holds the state of another name (\"bob\")"), "{}", text(&o));
    std::fs::remove_file(&target).unwrap();
    // the previous release's file of a locked long name
    let old = state::dir_for(&sb.db).join(v1_long_name(long_a.as_bytes()));
    std::fs::write(&old, v1_file(long_a.as_bytes(), "locked", Some("login_failure_limit"), 3)).unwrap();
    let r = sb.login(&long_a, PASSWORD, "192.0.2.1");
    assert!(!r.ok, "still locked: {r:?}");
    assert_eq!(status(&sb, &long_a).0, Some(3));
    sb.admin_ok(&["activate", &long_a]);
    assert!(sb.login(&long_a, PASSWORD, "192.0.2.1").ok);
    assert!(!state_file(&sb, long_a.as_bytes()).exists(), "kept in its old file");
    assert!(sb.admin(&["check"]).status.success());
}

/// Version 1 state files (the previous release) are read: a locked
/// account stays locked, and `activate` lets it in.
#[test]
fn version_1_state_files_still_read() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
    std::fs::write(state_file(&sb, b"alice"), v1_file(b"alice", "locked", Some("login_failure_limit"), 3)).unwrap();
    assert!(!sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let (code, row) = status(&sb, "alice");
    assert_eq!((code, row["failures"].as_u64()), (Some(3), Some(3)), "{row}");
    sb.admin_ok(&["activate", "alice"]);
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    wrong(&sb, "alice");
    assert_eq!(status(&sb, "alice").1["failures"].as_u64(), Some(1));
}

/// `strace` recording the flushes (`fsync`, `fdatasync`) of a program and
/// its children, with the paths of their descriptors.
fn strace(sb: &Sandbox, program: &Path) -> Command {
    let out = sb.path().join("strace.out");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"]).arg(out).arg(program);
    cmd
}

/// The flushes strace recorded that name the state directory or a file in it.
fn state_flushes(sb: &Sandbox) -> Vec<String> {
    let dir = state::dir_for(&sb.db).display().to_string();
    std::fs::read_to_string(sb.path().join("strace.out"))
        .unwrap()
        .lines()
        .filter(|l| (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&dir))
        .map(str::to_string)
        .collect()
}

/// useraudit-admin under strace (see [`strace`]).
fn admin_flushes(sb: &Sandbox, args: &[&str]) -> Vec<String> {
    let mut cmd = strace(sb, &admin_path());
    cmd.arg("--conf")
        .arg(&sb.conf)
        .arg("--db")
        .arg(&sb.db)
        .args(args)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .stdout(Stdio::null());
    assert!(cmd.status().unwrap().success(), "{args:?}");
    state_flushes(sb)
}

/// Only a write that locks or unlocks an account is flushed to disk (and
/// the directory too when that write creates the file): counting failures
/// and recording logins are not.
#[test]
fn only_writes_that_lock_or_unlock_are_flushed() {
    if missing_tools() {
        return;
    }
    if Command::new("strace").arg("-V").output().is_err() {
        if std::env::var_os("CI").is_some() {
            panic!("strace is missing: run `make deps`");
        }
        eprintln!("SKIP: strace is missing (make deps installs it)");
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2");
    let trace = |input: &str, user: &str| {
        let _turn = pam_wrapper_lock();
        let mut cmd = strace(&sb, Path::new("pamtester"));
        cmd.args(["login", user, "authenticate", "acct_mgmt"]);
        pam_env(&sb, &mut cmd);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
        child.wait().unwrap();
        state_flushes(&sb)
    };
    let alice = state_file(&sb, b"alice").display().to_string();
    assert_eq!(trace("wrong\n", "alice"), Vec::<String>::new(), "the first failure creates the file");
    let locking = trace("wrong\n", "alice");
    assert_eq!(locking.len(), 1, "{locking:?}");
    assert!(locking[0].contains(" fdatasync(") && locking[0].contains(&alice), "{locking:?}");
    assert_eq!(trace(&format!("{PASSWORD}\n"), "alice"), Vec::<String>::new(), "a refusal writes nothing");
    // activate lifts the lock (useraudit-admin, same code)
    let lifting = admin_flushes(&sb, &["activate", "alice"]);
    assert_eq!(lifting.len(), 1, "{lifting:?}");
    assert!(lifting[0].contains(&alice), "{lifting:?}");
    assert_eq!(trace(&format!("{PASSWORD}\n"), "alice"), Vec::<String>::new(), "a login that resets");
    assert_eq!(trace("wrong\n", "alice"), Vec::<String>::new(), "a failure that does not lock");
    // a lock that creates the file: the file, then the directory
    let creating = admin_flushes(&sb, &["lock", "carol"]);
    let dir = state::dir_for(&sb.db).display().to_string();
    assert_eq!(creating.len(), 2, "{creating:?}");
    assert!(creating[0].contains(&format!("{dir}/.new-")), "{creating:?}");
    assert!(creating[1].contains(" fsync(") && creating[1].contains(&format!("<{dir}>")), "{creating:?}");
    assert_eq!(status(&sb, "carol").0, Some(3));
}
