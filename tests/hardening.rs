//! Hardening (issue 6) through real libpam: faults in the files the module
//! uses (the account state files in `DATABASE.accounts/`, the log spool
//! `DATABASE.spool`, their directories) and in the configuration answered
//! as `on_error` promises, with a syslog error that says what is wrong;
//! faults in the SQLite database itself, which logins no longer meet and
//! `useraudit-admin` reports without losing what was spooled meanwhile;
//! processes killed in the middle of logging; hostile names and hosts; file
//! permissions and trust.
//!
//! Syslog is captured by running pamtester inside bubblewrap with our own
//! datagram socket bound over `/dev/log` (`bwrap --bind / / --dev /dev
//! --bind SOCK /dev/log`). Where bwrap cannot run, the syslog assertions are
//! skipped with a message; the PAM verdicts are still checked. Tests that
//! need root (permissions do not stop root; ownership checks apply to root
//! only) skip when not run as root.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use pam_useraudit::policy::{Account, State};
use pam_useraudit::spool;
use pam_useraudit::state::{self, Accounts};
use pam_useraudit::store::{Merged, OpenOptions, Store};
use serde_json::Value;

// ------------------------------------------------------------------ helpers

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Skip (true) unless running as root.
fn not_root(what: &str) -> bool {
    if euid() != 0 {
        eprintln!("SKIP: {what} needs root");
        return true;
    }
    false
}

/// Whether bubblewrap can make a mount namespace here.
fn bwrap_works() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let ok = Command::new("bwrap")
            .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIP (syslog assertions): bwrap cannot run here, so /dev/log cannot be captured");
        }
        ok
    })
}

fn setpriv_works() -> bool {
    Path::new("/usr/bin/setpriv").exists()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// A datagram socket standing in for syslogd's `/dev/log`. A thread reads
/// it all the time: senders block when the queue (net.unix.max_dgram_qlen,
/// often 10) is full.
struct Syslog {
    _dir: tempfile::TempDir,
    path: PathBuf,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    seq: std::cell::Cell<u64>,
}

impl Syslog {
    fn new() -> Syslog {
        let dir = tempfile::tempdir().unwrap();
        // nobody (setpriv runs) must be able to reach the socket
        chmod(dir.path(), 0o755);
        let path = dir.path().join("log");
        let sock = UnixDatagram::bind(&path).unwrap();
        chmod(&path, 0o666);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 17];
            while let Ok(n) = sock.recv(&mut buf) {
                if &buf[..n] == b"\0QUIT" || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Syslog { _dir: dir, path, rx, seq: std::cell::Cell::new(0) }
    }

    fn send(&self, msg: &[u8]) {
        let s = UnixDatagram::unbound().unwrap();
        s.send_to(msg, &self.path).unwrap();
    }

    /// Every datagram received since the last call: a marker is sent and
    /// everything queued before it (FIFO) is collected.
    fn drain(&self) -> Vec<Vec<u8>> {
        let n = self.seq.get() + 1;
        self.seq.set(n);
        let mark = format!("\0SYNC{n}").into_bytes();
        self.send(&mark);
        let mut out = Vec::new();
        loop {
            match self.rx.recv_timeout(Duration::from_secs(30)) {
                Ok(d) if d == mark => return out,
                Ok(d) => out.push(d),
                Err(e) => panic!("syslog reader: {e}"),
            }
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.send(b"\0QUIT");
    }
}

/// The result of one run, with what the module wrote to syslog.
#[derive(Debug)]
#[allow(dead_code)] // stdout and stderr are for failure messages
struct Run {
    ok: bool,
    /// pamtester's exit code; None when a signal ended it (a crash).
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Raw datagrams; None when syslog could not be captured.
    syslog: Option<Vec<Vec<u8>>>,
}

/// `<PRI>` of a datagram: facility * 8 + severity.
fn pri(d: &[u8]) -> Option<u32> {
    let end = d.iter().position(|&b| b == b'>')?;
    std::str::from_utf8(d.get(1..end)?).ok()?.parse().ok()
}

const LOG_AUTHPRIV: u32 = 10 << 3;
const LOG_ERR: u32 = 3;

fn is_module_line(d: &[u8]) -> bool {
    d.windows(14).any(|w| w == b"pam_useraudit(")
}

impl Run {
    /// The module's own lines (others, e.g. libpam's, may quote raw input).
    fn module_lines(&self) -> Vec<Vec<u8>> {
        self.syslog.iter().flatten().filter(|d| is_module_line(d)).cloned().collect()
    }

    /// The module's LOG_ERR lines, as text.
    fn errors(&self) -> Vec<String> {
        self.module_lines()
            .iter()
            .filter(|d| pri(d) == Some(LOG_AUTHPRIV | LOG_ERR))
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    }

    /// Assert one error line (AUTHPRIV, err) contains every needle.
    fn assert_error(&self, what: &str, needles: &[&str]) {
        if self.syslog.is_none() {
            return;
        }
        let errs = self.errors();
        if std::env::var_os("HARDENING_DEBUG").is_some() {
            eprintln!("{what}: {:?}", errs.iter().find(|l| needles.iter().all(|n| l.contains(n))));
        }
        assert!(
            errs.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "{what}: no syslog error line containing {needles:?}; module lines: {:#?}",
            self.module_lines().iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect::<Vec<_>>()
        );
    }
}

/// How to run a PAM transaction: inside bwrap (syslog capture and extra
/// mounts), as nobody, or as root without the capabilities that let root
/// ignore file permissions.
struct Runner<'a> {
    sb: &'a Sandbox,
    log: Option<Syslog>,
    /// Extra bwrap arguments (e.g. --ro-bind DIR DIR).
    mounts: Vec<OsString>,
    nobody: bool,
    drop_dac: bool,
    /// Without pam_wrapper: the sandbox's `pam.d` is bound over `/etc/pam.d`
    /// inside bwrap (a private mount namespace; the host's is untouched).
    /// Such runs need not take turns for pam_wrapper's copies in /tmp, so
    /// slow ones may run in parallel without holding up other tests. Needs
    /// bwrap; without it, pam_wrapper is used as usual.
    own_pam_d: bool,
}

impl<'a> Runner<'a> {
    fn new(sb: &'a Sandbox) -> Runner<'a> {
        Runner {
            sb,
            log: bwrap_works().then(Syslog::new),
            mounts: vec![],
            nobody: false,
            drop_dac: false,
            own_pam_d: false,
        }
    }

    /// A runner with its own `/etc/pam.d` (see `own_pam_d`).
    fn parallel(sb: &'a Sandbox) -> Runner<'a> {
        let mut r = Runner::new(sb);
        r.own_pam_d = true;
        r
    }

    fn uses_own_pam_d(&self) -> bool {
        self.own_pam_d && self.log.is_some()
    }

    /// What LD_PRELOAD holds for pamtester.
    fn preload(&self) -> &'static str {
        if self.uses_own_pam_d() { "libnss_wrapper.so" } else { "libpam_wrapper.so libnss_wrapper.so" }
    }

    /// The environment of the sandbox, as `env` arguments for the innermost program.
    fn env_args(&self, preload: &str) -> Vec<OsString> {
        let p = self.sb.path();
        vec![
            "env".into(),
            "-u".into(),
            "PAM_WRAPPER_DEBUGLEVEL".into(),
            format!("LD_PRELOAD={preload}").into(),
            "PAM_WRAPPER=1".into(),
            concat("PAM_WRAPPER_SERVICE_DIR=", p.join("pam.d").as_os_str()),
            concat("NSS_WRAPPER_PASSWD=", p.join("passwd").as_os_str()),
            concat("NSS_WRAPPER_GROUP=", p.join("group").as_os_str()),
        ]
    }

    /// The wrapper in front of a program: bwrap, setpriv, env.
    fn prefix(&self, preload: &str) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if let Some(l) = &self.log {
            for s in ["bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"] {
                a.push(s.into());
            }
            a.push(l.path.clone().into());
            a.push("/dev/log".into());
            if self.own_pam_d {
                a.push("--bind".into());
                a.push(self.sb.path().join("pam.d").into());
                a.push("/etc/pam.d".into());
            }
            a.extend(self.mounts.iter().cloned());
            a.push("--".into());
        } else {
            assert!(self.mounts.is_empty(), "mounts need bwrap");
        }
        if self.nobody {
            for s in ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] {
                a.push(s.into());
            }
        }
        if self.drop_dac {
            a.push("setpriv".into());
            a.push("--bounding-set=-dac_override,-dac_read_search".into());
        }
        a.extend(self.env_args(preload));
        a
    }

    /// pamtester with raw bytes for the user and the items.
    fn run(&self, service: &str, user: &[u8], input: &str, items: &[(&str, &[u8])], ops: &[&str]) -> Run {
        // bwrap shares /tmp, where pam_wrapper copies service files.
        let _one_at_a_time = (!self.uses_own_pam_d()).then(pam_wrapper_lock);
        if let Some(l) = &self.log {
            l.drain();
        }
        let mut argv = self.prefix(self.preload());
        argv.push("pamtester".into());
        for (k, v) in items {
            argv.push("-I".into());
            let mut kv = format!("{k}=").into_bytes();
            kv.extend_from_slice(v);
            argv.push(OsString::from_vec(kv));
        }
        argv.push(service.into());
        argv.push(OsStr::from_bytes(user).into());
        argv.extend(ops.iter().map(OsString::from));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        Run {
            ok: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
            syslog: self.log.as_ref().map(Syslog::drain),
        }
    }

    /// A whole login (authenticate, acct_mgmt) from 203.0.113.9.
    fn login(&self, service: &str, user: &[u8], password: &str) -> Run {
        self.run(service, user, &format!("{password}\n"), &[("rhost", b"203.0.113.9")], &["authenticate", "acct_mgmt"])
    }
}

/// One word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn concat(a: &str, b: &OsStr) -> OsString {
    let mut s = OsString::from(a);
    s.push(b);
    s
}

/// The promise of `on_error` for a fault present in the sandbox (or made by
/// `extra` module arguments): `allow` lets the right password in and keeps a
/// wrong one out, `deny` refuses; every attempt logs an error containing
/// `needles`. `login` gets `allow`, `su` gets `deny`.
fn assert_on_error(r: &Runner<'_>, extra: &str, needles: &[&str], account_only: bool) {
    let sb = r.sb;
    sb.write_service("login", &sb.stack(extra));
    sb.write_service("su", &sb.stack(&format!("{extra} on_error=deny")));
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok, "allow: the right password gets in: {ok:?}");
    ok.assert_error("allow, right password", needles);
    let bad = r.login("login", b"alice", "wrong");
    assert!(!bad.ok, "allow: a wrong password stays out: {bad:?}");
    bad.assert_error("allow, wrong password", needles);
    let deny = r.login("su", b"alice", PASSWORD);
    assert!(!deny.ok, "deny: refused: {deny:?}");
    deny.assert_error("deny", needles);
    if account_only {
        // A login that skips the auth stack (an SSH key) meets the same rule.
        let a = r.run("login", b"alice", "", &[], &["acct_mgmt"]);
        assert!(a.ok, "allow: account hook alone: {a:?}");
        a.assert_error("allow, account hook", needles);
        let d = r.run("su", b"alice", "", &[], &["acct_mgmt"]);
        assert!(!d.ok, "deny: account hook alone refuses: {d:?}");
    }
}

/// The log spool the module appends to.
fn spool_of(sb: &Sandbox) -> PathBuf {
    spool::path_for(&sb.db)
}

/// Whether spooled entries wait for a merge: the spool, or a part of it
/// that a merge which could not finish set aside beside it.
fn unmerged_spool(sb: &Sandbox) -> bool {
    let spool = spool_of(sb);
    let name = spool.file_name().unwrap().to_string_lossy().into_owned();
    names_in(spool.parent().unwrap()).iter().any(|n| n.starts_with(&name) && !n.contains(".damaged"))
}

/// The account state file of `user`.
fn state_file(sb: &Sandbox, user: &str) -> PathBuf {
    state::dir_for(&sb.db).join(state::file_name(user.as_bytes()))
}

/// A sandbox with one logged login, merged into its database by
/// `useraudit-admin check` (the module never opens the database; every
/// command of the CLI creates it and merges the spool).
fn sandbox_with_db(args: &str) -> Sandbox {
    let sb = Sandbox::new(args);
    assert!(sb.login("bob", PASSWORD, "192.0.2.1").ok);
    assert!(!sb.db.exists(), "the module does not create the database");
    assert!(spool_of(&sb).exists(), "the login was spooled");
    sb.admin_ok(&["check"]);
    assert!(sb.db.exists());
    assert!(!unmerged_spool(&sb), "the spool was merged and removed");
    assert_eq!(sb.log(&[]).len(), 1);
    sb
}

/// Merge the log spool into the database, as every useraudit-admin command
/// does first, and count the log. Through the library: as root, the CLI
/// refuses the unsafe files that some tests make on purpose.
fn merge(db: &Path) -> (Merged, i64) {
    let mut s =
        Store::open(db, OpenOptions { create: false, require_root_owned: false }).unwrap_or_else(|e| panic!("{e}"));
    let m = s.merge_spool().unwrap_or_else(|e| panic!("{e}"));
    let n = s.count().unwrap_or_else(|e| panic!("{e}"));
    (m, n)
}

/// Rows in the log once the spool is merged (which must find no damage).
fn rows(db: &Path) -> i64 {
    let (m, n) = merge(db);
    assert_eq!(m.damaged, 0, "damaged bytes in the spool of {}", db.display());
    n
}

/// One account's state as the module keeps it.
fn account(db: &Path, user: &str) -> Option<Account> {
    Accounts::open(db, false, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .get(user.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn integrity(db: &Path) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    let v: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    v.join("; ")
}

/// Checkpoint the WAL into the database file and remove it, so the file
/// alone holds everything (before damaging or copying it).
fn checkpoint(db: &Path) {
    {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    remove_wal(db);
}

fn remove_wal(db: &Path) {
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
}

/// The names in a directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// An exclusive `flock` on a file, held as another process would hold it
/// (flock locks belong to the open file, so the module's own open of the
/// file waits for it). Released when dropped.
struct Flock(#[allow(dead_code)] std::fs::File);

impl Flock {
    fn exclusive(path: &Path) -> Flock {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: `f` is an open descriptor for the whole call; flock has
        // no other preconditions.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
        Flock(f)
    }
}

/// A log entry as `user outcome reason` (`-` for no reason).
fn entry_text(e: &Value) -> String {
    format!(
        "{} {} {}",
        e["user"].as_str().unwrap(),
        e["outcome"].as_str().unwrap(),
        e["reason"].as_str().unwrap_or("-")
    )
}

/// `useraudit-admin ARGS` fails as the contract says: exit 1, nothing on
/// stdout, one line on stderr holding every needle. Returns the line.
fn assert_admin_fails(sb: &Sandbox, args: &[&str], needles: &[&str]) -> String {
    let o = sb.admin(args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "useraudit-admin {args:?}: {err}");
    assert!(o.stdout.is_empty(), "useraudit-admin {args:?}: {}", String::from_utf8_lossy(&o.stdout));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    for n in needles {
        assert!(err.contains(n), "useraudit-admin {args:?}: {n:?} not in {err:?}");
    }
    err
}

/// Logins meet a fault in the database exactly as if there were none: they
/// are decided from the account state files and logged to the spool. The
/// right password gets in, also where `on_error=deny` would refuse; a wrong
/// one stays out; the failure limit (2 here) locks; the module logs no
/// error. Returns the attempts made, oldest first, as `entry_text` shows
/// them.
fn assert_logins_unaffected(r: &Runner<'_>) -> Vec<String> {
    let sb = r.sb;
    sb.write_service("login", &sb.stack("login_failure_limit=2"));
    sb.write_service("su", &sb.stack("login_failure_limit=2 on_error=deny"));
    let mut made = Vec::new();
    let mut check = |what: &str, run: Run, ok: bool, logged: &str| {
        assert_eq!(run.ok, ok, "{what}: {run:?}");
        assert!(run.errors().is_empty(), "{what}: the module logged errors: {:#?}", run.errors());
        made.push(logged.to_string());
    };
    check("the right password gets in", r.login("login", b"alice", PASSWORD), true, "alice success -");
    check("a wrong password stays out", r.login("login", b"alice", "wrong"), false, "alice failure auth");
    check("on_error=deny: nothing to refuse", r.login("su", b"alice", PASSWORD), true, "alice success -");
    check("on_error=deny: account hook alone", r.run("su", b"alice", "", &[], &["acct_mgmt"]), true, "alice success -");
    for i in 1..=2 {
        check(&format!("carol's failure {i}"), r.login("login", b"carol", "wrong"), false, "carol failure auth");
    }
    check("carol is locked at the limit", r.login("login", b"carol", PASSWORD), false, "carol failure locked");
    let carol = account(&sb.db, "carol").expect("carol's state");
    assert_eq!((carol.state, carol.failures), (State::Locked, 2));
    let alice = account(&sb.db, "alice").expect("alice's state");
    assert_eq!((alice.state, alice.failures), (State::Active, 0), "alice's failure was reset by her next login");
    made
}

/// The log (merged by this command) holds `before` older entries, then
/// exactly the attempts in `made` (oldest first): nothing spooled while the
/// database could not be used was lost or doubled.
fn assert_log_has(sb: &Sandbox, made: &[String], before: usize) {
    let got: Vec<String> = sb.log(&[]).iter().map(entry_text).collect();
    assert_eq!(got.len(), before + made.len(), "{got:#?}");
    let want: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(got[..made.len()], want[..], "newest first");
}

/// Make the sandbox readable (not the database directory) for nobody.
fn open_sandbox_to_nobody(sb: &Sandbox) {
    for p in [sb.path().to_path_buf(), sb.path().join("pam.d")] {
        chmod(&p, 0o755);
    }
    for e in std::fs::read_dir(sb.path().join("pam.d")).unwrap() {
        chmod(&e.unwrap().path(), 0o644);
    }
    for f in ["passwd", "group", "useraudit.toml"] {
        chmod(&sb.path().join(f), 0o644);
    }
    for s in SERVICES {
        chmod(&sb.path().join(format!("passdb-{s}")), 0o644);
    }
}

// ------------------------------------------------------- faults: database

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

/// A file that is not a database where the database should be: logins do
/// not notice; `log` and `check` fail naming it and keep the spool; `status`
/// and `activate` work on the account state with a warning; once the
/// administrator moves the file aside, the next command starts a new
/// database holding every attempt made meanwhile. The file is left alone.
#[test]
fn database_file_not_a_database() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    std::fs::create_dir(sb.db.parent().unwrap()).unwrap();
    chmod(sb.db.parent().unwrap(), 0o700);
    let junk: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&sb.db, &junk).unwrap();
    chmod(&sb.db, 0o600);
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    for cmd in ["log", "check"] {
        assert_admin_fails(&sb, &[cmd], &[&db, "not a database"]);
    }
    // The account state is not in the database: it can still be shown and
    // changed, with a warning that the log is incomplete.
    let warned = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr);
        e.contains("warning: the log spool was not merged") && e.contains(&db) && e.contains("not a database")
    };
    let st = sb.admin(&["status", "carol"]);
    assert_eq!(st.status.code(), Some(3), "carol is locked: {st:?}");
    assert!(warned(&st), "{st:?}");
    let act = sb.admin(&["activate", "carol"]);
    assert!(act.status.success() && String::from_utf8_lossy(&act.stdout).contains("carol: activated"), "{act:?}");
    assert!(warned(&act), "{act:?}");
    assert_eq!(sb.admin(&["status", "carol"]).status.code(), Some(0));
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    assert_eq!(std::fs::read(&sb.db).unwrap(), junk, "the file is left alone");
    let aside = sb.path().join("useraudit.db.broken");
    std::fs::rename(&sb.db, &aside).unwrap();
    remove_wal(&sb.db);
    assert_log_has(&sb, &made, 0);
    assert_eq!(std::fs::read(&aside).unwrap(), junk);
}

/// Keep page 1 (header and schema), overwrite every later page: each table
/// and index is garbage. Logins do not notice; `log` fails naming the
/// database; commands that work on the account state go on with a warning;
/// after the administrator restores a backup, `log` holds the backup's
/// entries and every attempt made meanwhile.
#[test]
fn corrupt_database_pages() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    // enough rows for several pages
    for _ in 0..3 {
        assert!(sb.login("bob", PASSWORD, &"192.0.2.1".repeat(100)).ok);
    }
    sb.admin_ok(&["check"]);
    checkpoint(&sb.db);
    let backup = std::fs::read(&sb.db).unwrap();
    assert!(backup.len() >= 3 * 4096, "{} bytes", backup.len());
    let mut bytes = backup.clone();
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    std::fs::write(&sb.db, &bytes).unwrap();
    let r = Runner::new(&sb);
    let mut made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    assert_admin_fails(&sb, &["log"], &[&db, "malformed"]);
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    // the account state is in files: status and activate go on, warning
    let warning = "useraudit-admin: warning: the log spool was not merged";
    let o = sb.admin(&["status", "carol", "--format", "json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "carol is locked: {err}");
    assert!(err.contains(warning) && err.contains(&db), "{err}");
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st[0]["state"], "locked", "{st}");
    let o = sb.admin(&["activate", "carol"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "activate: {err}");
    assert!(err.contains(warning), "{err}");
    let ok = r.login("login", b"carol", PASSWORD);
    assert!(ok.ok && ok.errors().is_empty(), "carol, activated: {ok:?}");
    made.push("carol success -".into());
    // the administrator restores the backup
    remove_wal(&sb.db);
    std::fs::write(&sb.db, &backup).unwrap();
    assert_log_has(&sb, &made, 3);
    assert_eq!(integrity(&sb.db), "ok");
}

/// Cut the file to half its size: the header promises pages that are
/// gone. Logins do not notice; `log` fails naming the database; once the
/// damaged file is moved aside, nothing logged meanwhile is missing.
#[test]
fn truncated_database() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("erin", PASSWORD, "192.0.2.1").ok);
    // many more entries, spooled as the module would
    let big = vec![b'x'; 1000];
    for i in 0..40 {
        spool::append(
            &sb.db,
            &spool::NewEntry {
                time: 1_000_000 * (i + 1),
                success: false,
                user: b"erin",
                rhost: Some(&big),
                reason: Some(pam_useraudit::policy::LogReason::Auth),
                ..Default::default()
            },
        )
        .unwrap();
    }
    sb.admin_ok(&["check"]);
    checkpoint(&sb.db);
    let len = std::fs::metadata(&sb.db).unwrap().len();
    assert!(len >= 8 * 4096, "{len}");
    std::fs::OpenOptions::new().write(true).open(&sb.db).unwrap().set_len(len / 2 / 4096 * 4096).unwrap();
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    assert_admin_fails(&sb, &["log"], &[&db, "malformed"]);
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    std::fs::rename(&sb.db, sb.path().join("useraudit.db.broken")).unwrap();
    remove_wal(&sb.db);
    assert_log_has(&sb, &made, 0);
}

/// The database locked by another process (a long `BEGIN EXCLUSIVE`, say
/// an administrator's sqlite3 session): logins do not notice;
/// useraudit-admin waits at most the busy timeout (3 s) to merge the
/// spool, then `log` fails saying so and `status` goes on with a warning;
/// once the lock is gone, every attempt made meanwhile is in the log. A
/// lock held briefly is waited for.
#[test]
fn database_locked_logins_do_not_wait_and_the_merge_waits_bounded() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    let holder = rusqlite::Connection::open(&sb.db).unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO log (time, success, user) VALUES (0, 0, CAST('holder' AS BLOB));")
        .unwrap();
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    let t = Instant::now();
    assert_admin_fails(&sb, &["log"], &[&db, "locked"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(3 + 5),
        "log waited the busy timeout, and no longer: {took:?}"
    );
    let o = sb.admin(&["status", "carol", "--format", "json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "carol is locked: {err}");
    assert!(
        err.contains("useraudit-admin: warning: the log spool was not merged")
            && err.contains(&db)
            && err.contains("locked"),
        "{err}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_log_has(&sb, &made, 1);

    // Held for a moment: the merge waits for it.
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok, "{ok:?}");
    let (held, hold) = std::sync::mpsc::channel();
    let path = sb.db.clone();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "BEGIN EXCLUSIVE; INSERT INTO log (time, success, user) VALUES (0, 0, CAST('holder' AS BLOB));",
        )
        .unwrap();
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        c.execute_batch("COMMIT").unwrap();
    });
    hold.recv().unwrap();
    let t = Instant::now();
    let log = sb.log(&[]);
    let took = t.elapsed();
    holder.join().unwrap();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2900),
        "log waited for the lock, not the whole busy timeout: {took:?}"
    );
    let texts: Vec<String> = log.iter().map(entry_text).collect();
    assert_eq!(texts.len(), 1 + made.len() + 2, "{texts:#?}");
    assert_eq!(texts[0], "alice success -");
    assert_eq!(texts.last().unwrap(), "holder failure -");
}

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
        for args in [&["status"][..], &["status", "alice"]] {
            assert_admin_fails(&sb, args, &[&f, needle]);
        }
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
    let one_at_a_time = pam_wrapper_lock();
    let st = Command::new("bwrap")
        .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
        .arg(&log.path)
        .arg("/dev/log")
        .args(["--size", "1048576", "--tmpfs"])
        .arg(&mnt)
        .args(["--", "sh", "-c", &script])
        .status()
        .unwrap();
    drop(one_at_a_time);
    assert!(st.success());
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

// -------------------------------------------------- faults: configuration

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

// ------------------------------------------------------------ panics

/// A panic inside the module, loaded by libpam with dlopen, unwinds through
/// the module's own (statically linked) unwinder, is caught at the
/// `pam_sm_*` entry and answered as `on_error` says, every time, without
/// harm to the application. The panic comes from the module argument
/// `debug_panic`, which exists only in debug builds of the module.
#[test]
fn panic_in_the_module_is_caught_and_answered_as_on_error() {
    if missing_tools() {
        return;
    }
    if !cfg!(debug_assertions) || std::env::var_os("USERAUDIT_SO").is_some() {
        eprintln!("SKIP: `debug_panic` needs the debug build of the module from this target directory");
        return;
    }
    let sb = sandbox_with_db("");
    let r = Runner::new(&sb);
    sb.write_service("login", &sb.stack("debug_panic"));
    sb.write_service("su", &sb.stack("debug_panic on_error=deny"));
    const NEEDLE: &str = "internal error (panic: debug_panic module argument) caught";
    // `hooks` module hooks ran, each panicked and was caught: nothing on
    // the application's stderr, one AUTHPRIV error line each with the
    // usual prefix; exit code `code` (pamtester: 0 all succeeded, 1 an
    // operation failed; None: a signal).
    let check = |what: &str, run: &Run, code: i32, hooks: usize| {
        assert_eq!(run.code, Some(code), "{what}: pamtester exit code: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{what}: the panic reached stderr: {run:?}");
        if let Some(log) = &run.syslog {
            let caught: Vec<_> = log
                .iter()
                .filter(|d| pri(d) == Some(LOG_AUTHPRIV | LOG_ERR))
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .filter(|l| l.contains(NEEDLE))
                .collect();
            let all: Vec<_> = log.iter().map(|d| String::from_utf8_lossy(d)).collect();
            assert_eq!(caught.len(), hooks, "{what}: syslog lines {NEEDLE:?}: {all:#?}");
            assert!(
                caught.iter().all(|l| l.contains("pam_useraudit(login:") || l.contains("pam_useraudit(su:")),
                "{what}: prefix: {caught:#?}"
            );
        }
    };
    // allow: preauth, authsucc and account each panic and answer success
    let ok = r.login("login", b"alice", PASSWORD);
    check("allow, right password", &ok, 0, 3);
    assert!(format!("{}{}", ok.stdout, ok.stderr).contains("successfully"), "{ok:?}");
    // authfail still refuses
    let bad = r.login("login", b"alice", "wrong");
    check("allow, wrong password", &bad, 1, 2);
    // an account hook alone (an SSH key login)
    let acct = r.run("login", b"alice", "", &[], &["acct_mgmt"]);
    check("allow, account hook", &acct, 0, 1);
    // deny: preauth refuses, and so does the account hook
    let deny = r.login("su", b"alice", PASSWORD);
    check("deny", &deny, 1, 1);
    let deny_acct = r.run("su", b"alice", "", &[], &["acct_mgmt"]);
    check("deny, account hook", &deny_acct, 1, 1);
    // the core never ran: nothing was logged beyond the first login
    assert_eq!(rows(&sb.db), 1);
    // and without the argument the module works as before
    sb.write_service("login", &sb.stack(""));
    let again = r.login("login", b"alice", PASSWORD);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(!again.stderr.contains("panicked"), "{again:?}");
    assert_eq!(rows(&sb.db), 2);
}

/// The module carries its own unwinder (gcc's libgcc_eh, linked in
/// statically): libgcc_s is not NEEDED, and no `_Unwind_*` symbol is left
/// for the dynamic linker to resolve from whatever the application loaded.
/// Checks the module under test and, if built, the release module.
#[test]
fn module_links_its_unwinder_statically() {
    if !Path::new("/usr/bin/readelf").exists() {
        eprintln!("SKIP: readelf (binutils) is missing");
        return;
    }
    let mut modules = vec![module_path()];
    let release = admin_path().parent().unwrap().parent().unwrap().join("release/libpam_useraudit.so");
    if release.exists() && !modules.contains(&release) {
        modules.push(release);
    }
    for so in modules {
        let out = Command::new("readelf").arg("--wide").arg("--dynamic").arg("--dyn-syms").arg(&so).output().unwrap();
        assert!(out.status.success(), "readelf {}: {}", so.display(), String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert!(!needed.is_empty(), "{}: no NEEDED entries?\n{text}", so.display());
        assert!(!needed.iter().any(|l| l.contains("libgcc_s")), "{}: {needed:#?}", so.display());
        let unresolved: Vec<&str> = text.lines().filter(|l| l.contains(" UND ") && l.contains("_Unwind_")).collect();
        assert!(
            unresolved.is_empty(),
            "{}: unwinder symbols left to the dynamic linker: {unresolved:#?}",
            so.display()
        );
    }
}

// ----------------------------------------------------------- SIGKILL

const KILL_DRIVER: &str = r#"
/* One process, COUNT attempts in a row through the real libpam. Writes
   "s\n" before each attempt and "r\n" as soon as pam_authenticate has
   returned (the attempt's log entry must then be committed). */
#include <security/pam_appl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static const char *pw;
static int conv(int n, const struct pam_message **m, struct pam_response **r, void *d) {
    struct pam_response *a = calloc((size_t)n, sizeof *a);
    (void)d;
    if (!a) return PAM_BUF_ERR;
    for (int i = 0; i < n; i++)
        if (m[i]->msg_style == PAM_PROMPT_ECHO_OFF || m[i]->msg_style == PAM_PROMPT_ECHO_ON)
            a[i].resp = strdup(pw);
    *r = a;
    return PAM_SUCCESS;
}
static void nodelay(int r, unsigned u, void *d) { (void)r; (void)u; (void)d; }
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    const char *dir = argv[1], *svc = argv[2], *user = argv[3];
    long n = atol(argv[5]);
    struct pam_conv c = {conv, NULL};
    pw = argv[4];
    for (long i = 0; i < n; i++) {
        pam_handle_t *h = NULL;
        if (write(1, "s\n", 2) != 2) return 1;
        if (pam_start_confdir(svc, user, &c, dir, &h) != PAM_SUCCESS) return 1;
        pam_set_item(h, PAM_RHOST, "192.0.2.77");
        pam_set_item(h, PAM_FAIL_DELAY, (const void *)nodelay);
        int rc = pam_authenticate(h, 0);
        if (write(1, "r\n", 2) != 2) return 1;
        if (rc == PAM_SUCCESS) rc = pam_acct_mgmt(h, 0);
        pam_end(h, rc);
    }
    return 0;
}
"#;

/// Build the driver above once per test run.
fn kill_driver() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hardening");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("kill_driver.c");
        let bin = dir.join("kill_driver");
        std::fs::write(&src, KILL_DRIVER).unwrap();
        let out = Command::new("cc").args(["-O2", "-Wall", "-o"]).arg(&bin).arg(&src).arg("-lpam").output();
        match out {
            Ok(o) if o.status.success() => Some(bin),
            Ok(o) => {
                if std::env::var_os("CI").is_some() {
                    panic!("cannot build the kill driver: {}", String::from_utf8_lossy(&o.stderr));
                }
                eprintln!("SKIP: cannot build the kill driver: {}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                eprintln!("SKIP: no C compiler: {e}");
                None
            }
        }
    })
    .clone()
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_in_the_middle_of_logging_loses_nothing_returned() {
    if missing_tools() {
        return;
    }
    let Some(driver) = kill_driver() else { return };
    let sb = Sandbox::new("");
    let seed = std::env::var("HARDENING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("sigkill test seed: {seed} (HARDENING_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let outdir = tempfile::tempdir().unwrap();
    const ROUNDS: usize = 30;
    const PROCS: usize = 4;
    // more than a process gets through before it is killed
    const COUNT: &str = "1000";
    let (mut started_total, mut returned_total, mut completed_rounds, mut killed) = (0i64, 0i64, 0, 0);
    // users and passwords: failures (authfail: logged to the spool, then
    // counted in the account's state file) and successes (authsucc, then
    // the account hook) interleaved
    let who = [("alice", "wrong"), ("bob", PASSWORD), ("carol", "wrong"), ("nosuchuser", "x")];
    // A record in the spool here is under 100 bytes (short names, no tty or
    // ruser): a kill can cut short at most the one its process was writing.
    const MAX_RECORD: u64 = 128;
    sb.admin_ok(&["check"]); // the database, for merging after each round
    let mut alice_killed = 0i64;
    let mut damaged_total = 0u64;
    for round in 0..ROUNDS {
        let mut children = Vec::new();
        for (p, (user, pw)) in who.iter().enumerate().take(PROCS) {
            let out = outdir.path().join(format!("{round}-{p}"));
            let f = std::fs::File::create(&out).unwrap();
            let child = Command::new(&driver)
                .arg(sb.path().join("pam.d"))
                .arg("login")
                .arg(user)
                .arg(pw)
                .arg(COUNT)
                .env("LD_PRELOAD", "libnss_wrapper.so")
                .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
                .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
                .stdout(f)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            children.push((child, out, *user));
        }
        // kill at a random moment, each process at its own
        let t0 = Instant::now();
        let mut deadlines: Vec<Duration> = (0..PROCS).map(|_| Duration::from_micros(rng.next() % 250_000)).collect();
        deadlines.sort();
        let mut killed_now = 0u64;
        for (i, (child, _, user)) in children.iter_mut().enumerate() {
            let d = deadlines[i];
            if let Some(rest) = d.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL, this child only
                killed += 1;
                killed_now += 1;
                if *user == "alice" {
                    alice_killed += 1;
                }
            }
        }
        for (mut child, out, _) in children {
            let st = child.wait().unwrap();
            let mut text = String::new();
            std::fs::File::open(&out).unwrap().read_to_string(&mut text).unwrap();
            started_total += text.matches('s').count() as i64;
            returned_total += text.matches('r').count() as i64;
            if st.success() {
                completed_rounds += 1;
            }
        }
        // what useraudit-admin does first: merge the spool
        let (m, n) = merge(&sb.db);
        damaged_total += m.damaged;
        assert!(
            m.damaged <= killed_now * MAX_RECORD,
            "round {round} (seed {seed}): {} damaged bytes in the spool, {killed_now} processes killed",
            m.damaged
        );
        assert_eq!(integrity(&sb.db), "ok", "round {round} (seed {seed})");
        assert!(
            n >= returned_total && n <= started_total,
            "round {round} (seed {seed}): {n} log rows; {returned_total} attempts returned, {started_total} started"
        );
    }
    eprintln!(
        "sigkill: {ROUNDS} rounds, {killed} processes killed, {completed_rounds} ran to the end; \
         {started_total} attempts started, {returned_total} returned, {} logged, \
         {damaged_total} damaged spool bytes skipped",
        rows(&sb.db)
    );
    assert!(killed >= ROUNDS, "most processes were killed mid-run ({killed})");
    // The account state agrees with the log: each of alice's failures is
    // logged, then counted, so her count is her logged failures, less at
    // most one per process of hers killed between the two (nothing else
    // reset it).
    let logged = sb.log(&["--user", "alice"]).len() as i64;
    let counted = sb.status("alice")["failures"].as_i64().unwrap();
    assert!(
        counted <= logged && logged - counted <= alice_killed,
        "alice: {counted} failures counted, {logged} logged, {alice_killed} of her processes killed (seed {seed})"
    );
    // and the module still works afterwards
    assert!(sb.login("erin", PASSWORD, "203.0.113.9").ok);
    assert_eq!(sb.log(&["--user", "erin"]).len(), 1);
}

// ------------------------------------------------------------- bad input

/// Raw control characters a terminal or a log reader would act on.
fn has_raw_control(s: &[u8]) -> bool {
    s.iter().any(|&b| b < 0x20 || b == 0x7f)
}

/// Characters that are not bytes < 0x20 but still act on terminals or
/// reorder text: DEL, C1 controls, bidi overrides, line separators.
fn has_invisible(s: &str) -> bool {
    s.chars().any(|c| matches!(c as u32, 0x7f..=0x9f | 0x200b..=0x200f | 0x2028..=0x202e | 0x2066..=0x2069))
}

/// User names typed at a login prompt and remote hosts as a client sends
/// them: huge, control characters, newlines, bytes that are not UTF-8,
/// SQL and shell syntax, terminal escapes, look-alikes of `alice`.
fn hostile_names() -> Vec<Vec<u8>> {
    vec![
        vec![b'A'; 65536],
        b"alice ".to_vec(),
        b" alice".to_vec(),
        b"alice\n".to_vec(),
        b"ALICE".to_vec(),
        b"alice\nMar  1 00:00:00 host sshd[1]: Accepted password for root".to_vec(),
        b"al\x1b[2J\x1b[31mice".to_vec(),
        b"'; DROP TABLE log; --".to_vec(),
        b"$(reboot)`reboot`".to_vec(),
        b"\xff\xfe\xc3(".to_vec(),
        b"al\\xffice".to_vec(),
        b"al\xffice".to_vec(),
        "ali\u{202e}ecila\u{9b}31m\u{7f}".as_bytes().to_vec(),
        b"hunter2-secret".to_vec(),
    ]
}

fn hostile_hosts() -> Vec<Vec<u8>> {
    vec![
        vec![b'h'; 65536],
        b"host\r\nEvil: 1".to_vec(),
        b"\x1b]0;title\x07".to_vec(),
        b"'); DELETE FROM account; --".to_vec(),
        b"\xc0\xaf".to_vec(),
    ]
}

/// Each hostile name `times` times from a hostile host (also as ruser and
/// tty), with the right password; checks every module syslog line on the
/// way. Returns the number of attempts.
fn hostile_attempts(r: &Runner<'_>, times: usize) -> usize {
    let (names, hosts) = (hostile_names(), hostile_hosts());
    let mut attempts = 0;
    for (i, n) in names.iter().enumerate() {
        let h = &hosts[i % hosts.len()];
        for _ in 0..times {
            let run = r.run(
                "login",
                n,
                "secret\n",
                &[("rhost", h), ("ruser", n), ("tty", h)],
                &["authenticate", "acct_mgmt"],
            );
            assert!(
                !run.ok,
                "{:?} is not an account and cannot log in",
                String::from_utf8_lossy(&n[..n.len().min(40)])
            );
            attempts += 1;
            for line in run.module_lines() {
                let body = &line[..line.len() - usize::from(line.ends_with(b"\n"))];
                assert!(!has_raw_control(body), "raw control in syslog: {line:?}");
                let s = String::from_utf8_lossy(&line);
                assert!(
                    !s.contains("hunter2") && !s.contains("DROP TABLE") && !s.contains("AAAA") && !s.contains("reboot"),
                    "an unknown name in syslog: {s}"
                );
            }
        }
    }
    attempts
}

fn capped(b: &[u8]) -> &[u8] {
    &b[..b.len().min(1024)]
}

#[test]
fn hostile_names_and_hosts_are_stored_exactly_capped_and_kept_apart() {
    if missing_tools() {
        return;
    }
    // debug: the module says as much as it ever does
    let sb = Sandbox::new("login_failure_limit=2 debug");
    let r = Runner::new(&sb);
    let mut attempts = hostile_attempts(&r, 3);
    // none of the look-alikes counted against alice: she was never locked
    let st = sb.status("alice");
    assert_eq!(st["failures"], 0, "{st}");
    assert_eq!(st["state"], "active");
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok, "alice still gets in");
    attempts += 1;
    // the tables are intact and nothing else got state
    let all: Value = serde_json::from_str(&sb.admin_ok(&["status", "--format", "json"])).unwrap();
    let users: Vec<&str> = all.as_array().unwrap().iter().map(|a| a["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice"], "only the real account has state");
    assert_eq!(sb.log(&[]).len(), attempts);
    // stored as raw bytes, exactly (cut at FIELD_CAP = 1024 bytes)
    let c = rusqlite::Connection::open(&sb.db).unwrap();
    let (names, hosts) = (hostile_names(), hostile_hosts());
    for (i, n) in names.iter().enumerate() {
        let h = capped(&hosts[i % hosts.len()]);
        let k: i64 = c
            .query_row(
                "SELECT count(*) FROM log WHERE user = ?1 AND ruser = ?1 AND rhost = ?2 AND tty = ?2",
                rusqlite::params![capped(n), h],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(k, 3, "{:?} stored exactly", String::from_utf8_lossy(&n[..n.len().min(40)]));
    }
    let longest: i64 = c.query_row("SELECT max(length(user)) FROM log", [], |r| r.get(0)).unwrap();
    assert_eq!(longest, pam_useraudit::text::FIELD_CAP as i64);
    let longest: i64 = c.query_row("SELECT max(length(rhost)) FROM log", [], |r| r.get(0)).unwrap();
    assert_eq!(longest, 1024);
    let long = sb.log(&["--user", &"A".repeat(1024)]);
    assert_eq!(long.len(), 3, "the 64 KiB name is found by its first 1024 bytes");
    assert_eq!(long[0]["rhost"].as_str().unwrap(), "h".repeat(1024));
    // --user finds exactly the look-alike asked for
    assert_eq!(sb.log(&["--user", "alice "]).len(), 3);
    assert_eq!(sb.log(&["--user", "alice"]).len(), 1);
    assert_eq!(sb.log(&["--user", "'; DROP TABLE log; --"]).len(), 3);
    let e = &sb.log(&["--user", "'; DROP TABLE log; --"])[0];
    assert_eq!(e["rhost"], "\x1b]0;title\x07");
    // names 1, 6 and 11 came from this host
    assert_eq!(sb.log(&["--rhost", "host\r\nEvil: 1"]).len(), 9);
}

#[test]
fn hostile_names_and_hosts_are_escaped_in_table_and_csv() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    let r = Runner::new(&sb);
    let attempts = hostile_attempts(&r, 1);
    let table = sb.admin(&["log"]).stdout;
    let csv = sb.admin(&["log", "--format", "csv"]).stdout;
    for (fmt, out) in [("table", &table), ("csv", &csv)] {
        let text = String::from_utf8(out.clone()).unwrap_or_else(|_| panic!("{fmt} output is not UTF-8"));
        for l in text.lines() {
            assert!(!has_raw_control(l.as_bytes()), "{fmt}: raw control character in {l:?}");
            assert!(!has_invisible(l), "{fmt}: invisible/bidi character in {l:?}");
        }
        assert_eq!(text.lines().count(), attempts + 1, "{fmt}: one line per entry");
        assert!(text.contains("al\\x1b[2J\\x1b[31mice"), "{fmt}");
        assert!(text.contains("alice\\n"), "{fmt}");
        assert!(text.contains("alice\\nMar  1 00:00:00 host sshd[1]: Accepted"), "{fmt}");
        assert!(text.contains("\\xff\\xfe\\xc3("), "{fmt}");
        assert!(text.contains("ali\\u{202e}ecila\\u{009b}31m\\x7f"), "{fmt}");
        assert!(text.contains("host\\r\\nEvil: 1"), "{fmt}");
        assert!(text.contains("\\x1b]0;title\\x07"), "{fmt}");
        assert!(text.contains("\\xc0\\xaf"), "{fmt}");
        // a literal backslash and a byte that is not UTF-8 stay distinct
        assert!(text.contains("al\\\\xffice") && text.contains("al\\xffice"), "{fmt}");
        assert!(!text.contains(&"A".repeat(1025)) && text.contains(&"A".repeat(1024)), "{fmt}: capped");
    }
    let table = String::from_utf8(table).unwrap();
    assert!(table.contains("alice\\x20") && table.contains("\\x20alice"), "look-alikes with spaces are visible");
    // the table still lines up: OUTCOME at the same column on every line
    let lines: Vec<&str> = table.lines().collect();
    let col = lines[0].find("OUTCOME").unwrap(); // the header is ASCII
    for l in &lines[1..] {
        let rest: String = l.chars().skip(col).collect();
        assert!(rest.starts_with("failure") || rest.starts_with("success"), "{l}");
    }
}

/// JSON keeps UTF-8 text as it is, which is exact for scripts; but the
/// JSON text must still be safe on a terminal and two different stored
/// names must not come out as the same string.
#[test]
fn hostile_names_in_json_are_unambiguous_and_terminal_safe() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    let r = Runner::new(&sb);
    let attempts = hostile_attempts(&r, 1);
    let json = String::from_utf8(sb.admin(&["log", "--format", "json"]).stdout).unwrap();
    let log: Value = serde_json::from_str(&json).unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), attempts);
    // UTF-8 text comes back exactly
    for n in hostile_names() {
        if let Ok(s) = std::str::from_utf8(capped(&n)) {
            assert_eq!(log.iter().filter(|e| e["user"] == s).count(), 1, "{s:?} exactly once");
        }
    }
    // distinct stored names, distinct JSON strings
    let users: std::collections::BTreeSet<&str> = log.iter().map(|e| e["user"].as_str().unwrap()).collect();
    assert_eq!(users.len(), hostile_names().len(), "two different names print as the same JSON string: {users:#?}");
    assert!(!has_raw_control(json.trim_end().as_bytes()), "json: raw control character");
    assert!(!has_invisible(&json), "json: raw DEL, C1 or bidi character: a terminal would act on it");
}

/// Known accounts whose names hold control characters: every line the
/// module writes about them is escaped, so they cannot forge syslog lines.
#[test]
fn syslog_lines_cannot_be_forged_by_account_names() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=1 debug");
    let evil: &[u8] = b"ev\ril\x1b[31m\x7f";
    let mut pw = std::fs::read(sb.path().join("passwd")).unwrap();
    pw.extend_from_slice(evil);
    pw.extend_from_slice(b":x:1100:1100::/home/evil:/bin/sh\n");
    std::fs::write(sb.path().join("passwd"), pw).unwrap();
    for s in SERVICES {
        let mut p = std::fs::read(sb.path().join(format!("passdb-{s}"))).unwrap();
        p.extend_from_slice(evil);
        p.extend_from_slice(format!(":{PASSWORD}:{s}\n").as_bytes());
        std::fs::write(sb.path().join(format!("passdb-{s}")), p).unwrap();
    }
    let r = Runner::new(&sb);
    let bad = r.run("login", evil, "wrong\n", &[("rhost", b"203.0.113.9\nfake")], &["authenticate"]);
    assert!(!bad.ok);
    let locked = r.login("login", evil, PASSWORD);
    assert!(!locked.ok, "locked after one failure: {locked:?}");
    let st = sb.status(&String::from_utf8_lossy(evil));
    assert_eq!(st["state"], "locked", "{st}");
    if bad.syslog.is_some() {
        let lines: Vec<Vec<u8>> = bad.module_lines().into_iter().chain(locked.module_lines()).collect();
        assert!(!lines.is_empty());
        for l in &lines {
            let body = &l[..l.len() - usize::from(l.ends_with(b"\n"))];
            assert!(!has_raw_control(body), "raw control character in a module syslog line: {l:?}");
        }
        let text: Vec<String> = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
        assert!(
            text.iter().any(|l| l.contains("ev\\ril\\x1b[31m\\x7f") && l.contains("locked")),
            "the lock is announced with the name escaped: {text:#?}"
        );
    }
}

// ------------------------------------------------------------ permissions

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
