//! Helpers for the fault tests (`faults_*.rs`, `hostile_input.rs`,
//! `permissions.rs`, `spool_safety.rs`): running PAM transactions inside bubblewrap with
//! syslog captured, as nobody, or as root without the capabilities that let
//! root ignore file permissions; the promise of `on_error`; the files the
//! module and `useraudit-admin` use; merging and reading the log.
//!
//! Syslog is captured by running pamtester inside bubblewrap with our own
//! datagram socket bound over `/dev/log` (`bwrap --bind / / --dev /dev
//! --bind SOCK /dev/log`). Where bwrap cannot run, the syslog assertions are
//! skipped with a message; the PAM verdicts are still checked. Tests that
//! need root (permissions do not stop root; ownership checks apply to root
//! only) skip when not run as root.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use useraudit_admin::store::{Merged, OpenOptions, Store};
use useraudit_core::policy::{Account, State};
use useraudit_core::spool;
use useraudit_core::state::{self, Accounts};

use super::*;

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Skip (true) unless running as root.
pub fn not_root(what: &str) -> bool {
    if euid() != 0 {
        eprintln!("SKIP: {what} needs root");
        return true;
    }
    false
}

/// Whether bubblewrap can make a mount namespace here.
pub fn bwrap_works() -> bool {
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

pub fn setpriv_works() -> bool {
    Path::new("/usr/bin/setpriv").exists()
}

pub fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().mode() & 0o7777
}

/// Run `script` with `sh` in bubblewrap, with a 1 MiB tmpfs at `mnt` (a
/// disk that fills up) and `log` as `/dev/log`; one PAM test at a time.
/// Panics unless the script succeeds.
pub fn run_on_a_full_disk(log: &Syslog, mnt: &Path, script: &str) {
    let one_at_a_time = super::pam_wrapper_lock();
    let st = std::process::Command::new("bwrap")
        .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
        .arg(&log.path)
        .arg("/dev/log")
        .args(["--size", "1048576", "--tmpfs"])
        .arg(mnt)
        .args(["--", "sh", "-c", script])
        .status()
        .unwrap();
    drop(one_at_a_time);
    assert!(st.success());
}

/// A datagram socket standing in for syslogd's `/dev/log`. A thread reads
/// it all the time: senders block when the queue (net.unix.max_dgram_qlen,
/// often 10) is full.
pub struct Syslog {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    seq: std::cell::Cell<u64>,
}

impl Syslog {
    pub fn new() -> Syslog {
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

    pub fn send(&self, msg: &[u8]) {
        let s = UnixDatagram::unbound().unwrap();
        s.send_to(msg, &self.path).unwrap();
    }

    /// Every datagram received since the last call: a marker is sent and
    /// everything queued before it (FIFO) is collected.
    pub fn drain(&self) -> Vec<Vec<u8>> {
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

    /// `drain`, each datagram as (lossy) text.
    pub fn drain_text(&self) -> Vec<String> {
        self.drain().iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect()
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
pub struct Run {
    pub ok: bool,
    /// pamtester's exit code; None when a signal ended it (a crash).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Raw datagrams; None when syslog could not be captured.
    pub syslog: Option<Vec<Vec<u8>>>,
}

/// `<PRI>` of a datagram: facility * 8 + severity.
pub fn pri(d: &[u8]) -> Option<u32> {
    let end = d.iter().position(|&b| b == b'>')?;
    std::str::from_utf8(d.get(1..end)?).ok()?.parse().ok()
}

pub const LOG_AUTHPRIV: u32 = 10 << 3;
pub const LOG_ERR: u32 = 3;

pub fn is_module_line(d: &[u8]) -> bool {
    d.windows(14).any(|w| w == b"pam_useraudit(")
}

impl Run {
    /// The module's own lines (others, e.g. libpam's, may quote raw input).
    pub fn module_lines(&self) -> Vec<Vec<u8>> {
        self.syslog.iter().flatten().filter(|d| is_module_line(d)).cloned().collect()
    }

    /// The module's LOG_ERR lines, as text.
    pub fn errors(&self) -> Vec<String> {
        self.module_lines()
            .iter()
            .filter(|d| pri(d) == Some(LOG_AUTHPRIV | LOG_ERR))
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect()
    }

    /// Assert one error line (AUTHPRIV, err) contains every needle.
    pub fn assert_error(&self, what: &str, needles: &[&str]) {
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
pub struct Runner<'a> {
    pub sb: &'a Sandbox,
    pub log: Option<Syslog>,
    /// Extra bwrap arguments (e.g. --ro-bind DIR DIR).
    pub mounts: Vec<OsString>,
    pub nobody: bool,
    pub drop_dac: bool,
    /// Without pam_wrapper: the sandbox's `pam.d` is bound over `/etc/pam.d`
    /// inside bwrap (a private mount namespace; the host's is untouched).
    /// Such runs need not take turns for pam_wrapper's copies in /tmp, so
    /// slow ones may run in parallel without holding up other tests. Needs
    /// bwrap; without it, pam_wrapper is used as usual.
    pub own_pam_d: bool,
}

impl<'a> Runner<'a> {
    pub fn new(sb: &'a Sandbox) -> Runner<'a> {
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
    pub fn parallel(sb: &'a Sandbox) -> Runner<'a> {
        let mut r = Runner::new(sb);
        r.own_pam_d = true;
        r
    }

    pub fn uses_own_pam_d(&self) -> bool {
        self.own_pam_d && self.log.is_some()
    }

    /// What LD_PRELOAD holds for pamtester.
    pub fn preload(&self) -> &'static str {
        if self.uses_own_pam_d() { "libnss_wrapper.so" } else { "libpam_wrapper.so libnss_wrapper.so" }
    }

    /// The environment of the sandbox, as `env` arguments for the innermost program.
    pub fn env_args(&self, preload: &str) -> Vec<OsString> {
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
    pub fn prefix(&self, preload: &str) -> Vec<OsString> {
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
    pub fn run(&self, service: &str, user: &[u8], input: &str, items: &[(&str, &[u8])], ops: &[&str]) -> Run {
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
    pub fn login(&self, service: &str, user: &[u8], password: &str) -> Run {
        self.run(service, user, &format!("{password}\n"), &[("rhost", b"203.0.113.9")], &["authenticate", "acct_mgmt"])
    }
}

/// One word for `sh -c`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

pub fn concat(a: &str, b: &OsStr) -> OsString {
    let mut s = OsString::from(a);
    s.push(b);
    s
}

/// The promise of `on_error` for a fault present in the sandbox (or made by
/// `extra` module arguments): `allow` lets the right password in and keeps a
/// wrong one out, `deny` refuses; every attempt logs an error containing
/// `needles`. `login` gets `allow`, `su` gets `deny`.
pub fn assert_on_error(r: &Runner<'_>, extra: &str, needles: &[&str], account_only: bool) {
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
pub fn spool_of(sb: &Sandbox) -> PathBuf {
    spool::path_for(&sb.db)
}

/// Whether spooled entries wait for a merge: the spool, or a part of it
/// that a merge which could not finish set aside beside it.
pub fn unmerged_spool(sb: &Sandbox) -> bool {
    let spool = spool_of(sb);
    let name = spool.file_name().unwrap().to_string_lossy().into_owned();
    names_in(spool.parent().unwrap()).iter().any(|n| n.starts_with(&name) && !n.contains(".damaged"))
}

/// The account state file of `user`.
pub fn state_file(sb: &Sandbox, user: &str) -> PathBuf {
    state::dir_for(&sb.db).join(state::file_name(user.as_bytes()))
}

/// A sandbox with one logged login, merged into its database by
/// `useraudit-admin check` (the module never opens the database; every
/// command of the CLI creates it and merges the spool).
pub fn sandbox_with_db(args: &str) -> Sandbox {
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
pub fn merge(db: &Path) -> (Merged, i64) {
    let mut s =
        Store::open(db, OpenOptions { create: false, require_root_owned: false }).unwrap_or_else(|e| panic!("{e}"));
    let m = s.merge_spool().unwrap_or_else(|e| panic!("{e}"));
    let n = s.count().unwrap_or_else(|e| panic!("{e}"));
    (m, n)
}

/// Rows in the log once the spool is merged (which must find no damage).
pub fn rows(db: &Path) -> i64 {
    let (m, n) = merge(db);
    assert_eq!(m.damaged, 0, "damaged bytes in the spool of {}", db.display());
    n
}

/// One account's state as the module keeps it.
pub fn account(db: &Path, user: &str) -> Option<Account> {
    Accounts::open(db, false, false)
        .unwrap_or_else(|e| panic!("{e}"))
        .get(user.as_bytes())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn integrity(db: &Path) -> String {
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
pub fn checkpoint(db: &Path) {
    {
        let c = rusqlite::Connection::open(db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    }
    remove_wal(db);
}

pub fn remove_wal(db: &Path) {
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
}

/// The names in a directory, sorted.
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// An exclusive `flock` on a file, held as another process would hold it
/// (flock locks belong to the open file, so the module's own open of the
/// file waits for it). Released when dropped.
pub struct Flock(#[allow(dead_code)] std::fs::File);

impl Flock {
    pub fn exclusive(path: &Path) -> Flock {
        let f = std::fs::File::open(path).unwrap();
        // SAFETY: `f` is an open descriptor for the whole call; flock has
        // no other preconditions.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(rc, 0, "flock {}: {}", path.display(), std::io::Error::last_os_error());
        Flock(f)
    }
}

/// A log entry as `user outcome reason` (`-` for no reason).
pub fn entry_text(e: &Value) -> String {
    format!(
        "{} {} {}",
        e["user"].as_str().unwrap(),
        e["outcome"].as_str().unwrap(),
        e["reason"].as_str().unwrap_or("-")
    )
}

/// `useraudit-admin ARGS` fails as the contract says: exit 1, nothing on
/// stdout, one line on stderr holding every needle. Returns the line.
pub fn assert_admin_fails(sb: &Sandbox, args: &[&str], needles: &[&str]) -> String {
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
pub fn assert_logins_unaffected(r: &Runner<'_>) -> Vec<String> {
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
pub fn assert_log_has(sb: &Sandbox, made: &[String], before: usize) {
    let got: Vec<String> = sb.log(&[]).iter().map(entry_text).collect();
    assert_eq!(got.len(), before + made.len(), "{got:#?}");
    let want: Vec<String> = made.iter().rev().cloned().collect();
    assert_eq!(got[..made.len()], want[..], "newest first");
}

/// Make the sandbox readable (not the database directory) for nobody.
pub fn open_sandbox_to_nobody(sb: &Sandbox) {
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
