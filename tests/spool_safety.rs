//! The log spool under damage and pressure, through real libpam and the
//! real `useraudit-admin`:
//! - a spool whose header is damaged is set aside, its intact records are
//!   recovered exactly once, logins behind it are kept in a new spool, and
//!   every command says so (stderr and syslog) while the file exists;
//! - a full disk never turns a refusal into a success, and failures are
//!   counted before they are logged;
//! - the spool is bounded: entries for names that are not accounts are
//!   dropped first, counted, and the count shows in the log.
//!
//! Syslog is captured by running the programs inside bubblewrap with the
//! shared `Syslog` socket of tests/common/faults.rs bound over `/dev/log`;
//! where bwrap cannot run, the syslog assertions are skipped. The full-disk
//! test needs root (a tmpfs in a mount namespace) and skips without it.

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::faults::{Syslog, bwrap_works, entry_text, euid, names_in, run_on_a_full_disk};
use common::*;
use serde_json::Value;
use useraudit_core::spool;

/// Runs pamtester and useraudit-admin for a sandbox, inside bwrap when it
/// works so that syslog is captured.
struct Runner<'a> {
    sb: &'a Sandbox,
    log: Option<Syslog>,
}

struct Ran {
    out: Output,
    /// None when syslog could not be captured.
    syslog: Option<Vec<String>>,
}

impl Ran {
    fn ok(&self) -> bool {
        self.out.status.success()
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    /// Assert a syslog line holds every needle (when syslog is captured).
    fn assert_syslog(&self, what: &str, needles: &[&str]) {
        let Some(lines) = &self.syslog else { return };
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "{what}: no syslog line with {needles:?}: {lines:#?}"
        );
    }
}

impl<'a> Runner<'a> {
    fn new(sb: &'a Sandbox) -> Runner<'a> {
        Runner { sb, log: bwrap_works().then(Syslog::new) }
    }

    fn command(&self, env: &[(&str, OsString)], argv: &[OsString]) -> Command {
        let mut cmd = match &self.log {
            Some(l) => {
                let mut c = Command::new("bwrap");
                c.args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
                    .arg(&l.path)
                    .arg("/dev/log")
                    .arg("--")
                    .args(argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.env_remove("PAM_WRAPPER_DEBUGLEVEL");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn finish(&self, mut cmd: Command, input: &str) -> Ran {
        if let Some(l) = &self.log {
            l.drain();
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        Ran { out, syslog: self.log.as_ref().map(Syslog::drain_text) }
    }

    /// pamtester `ops` for `user` on `login`, from 203.0.113.9.
    fn pam(&self, user: &str, password: &str, ops: &[&str]) -> Ran {
        let _one_at_a_time = pam_wrapper_lock();
        let p = self.sb.path();
        let env = [
            ("LD_PRELOAD", OsString::from("libpam_wrapper.so libnss_wrapper.so")),
            ("PAM_WRAPPER", "1".into()),
            ("PAM_WRAPPER_SERVICE_DIR", p.join("pam.d").into()),
            ("NSS_WRAPPER_PASSWD", p.join("passwd").into()),
            ("NSS_WRAPPER_GROUP", p.join("group").into()),
        ];
        let mut argv: Vec<OsString> =
            vec!["pamtester".into(), "-I".into(), "rhost=203.0.113.9".into(), "login".into(), user.into()];
        argv.extend(ops.iter().map(OsString::from));
        self.finish(self.command(&env, &argv), &format!("{password}\n"))
    }

    fn login(&self, user: &str, password: &str) -> Ran {
        self.pam(user, password, &["authenticate", "acct_mgmt"])
    }

    fn admin(&self, args: &[&str]) -> Ran {
        let p = self.sb.path();
        let env = [
            ("LD_PRELOAD", OsString::from("libnss_wrapper.so")),
            ("NSS_WRAPPER_PASSWD", p.join("passwd").into()),
            ("NSS_WRAPPER_GROUP", p.join("group").into()),
        ];
        let mut argv: Vec<OsString> = vec![
            admin_path().into(),
            "--conf".into(),
            self.sb.conf.clone().into(),
            "--db".into(),
            self.sb.db.clone().into(),
        ];
        argv.extend(args.iter().map(OsString::from));
        self.finish(self.command(&env, &argv), "")
    }

    /// `log --format json`, which must succeed; and the run.
    fn log(&self) -> (Vec<Value>, Ran) {
        let r = self.admin(&["log", "--format", "json"]);
        assert!(r.ok(), "log: {}", r.stderr());
        let v: Value = serde_json::from_slice(&r.out.stdout).unwrap();
        (v.as_array().unwrap().clone(), r)
    }
}

/// The spool files set aside as damaged.
fn damaged_files(sb: &Sandbox) -> Vec<PathBuf> {
    let dir = sb.db.parent().unwrap();
    names_in(dir).into_iter().filter(|n| n.starts_with("useraudit.db.spool.damaged-")).map(|n| dir.join(n)).collect()
}

// ------------------------------------------------- A: a damaged spool header

/// Issue 12.3: two failures logged, the spool's first bytes overwritten,
/// one more attempt, then `log`. The login that meets the damaged header
/// starts a new spool (and says so in syslog); the merge recovers the two
/// intact records behind the damaged header, exactly once however many
/// commands run; every command warns on stderr and syslog while the
/// damaged file exists; `check` exits 1 naming it, and 0 once it is gone.
#[test]
fn damaged_spool_header_is_recovered_and_reported_until_removed() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=5");
    let r = Runner::new(&sb);
    assert!(!r.login("alice", "wrong").ok());
    assert!(!r.login("alice", "wrong").ok());
    let spool = spool::path_for(&sb.db);
    let f = std::fs::OpenOptions::new().write(true).open(&spool).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"garbage!", 0).unwrap();
    drop(f);

    let third = r.login("bob", PASSWORD);
    assert!(third.ok(), "{}", third.stderr());
    third.assert_syslog("the login meeting the damaged header", &["useraudit.db.spool", "damaged"]);
    let damaged = damaged_files(&sb);
    assert_eq!(damaged.len(), 1, "set aside, not appended to: {:?}", names_in(sb.db.parent().unwrap()));
    assert!(spool.exists(), "the third attempt went to a new spool");
    let damaged_name = damaged[0].display().to_string();

    for round in 0..2 {
        let (log, run) = r.log();
        let got: Vec<String> = log.iter().map(entry_text).collect();
        assert_eq!(
            got,
            vec!["bob success -", "alice failure auth", "alice failure auth"],
            "round {round}: every entry exactly once"
        );
        let err = run.stderr();
        assert!(err.contains("damaged") && err.contains(&damaged_name), "round {round}: stderr {err:?}");
        run.assert_syslog("log", &["damaged", &damaged_name]);
    }
    let st = r.admin(&["status", "alice"]);
    assert!(st.stderr().contains(&damaged_name), "status warns too: {}", st.stderr());
    let check = r.admin(&["check"]);
    assert_eq!(check.out.status.code(), Some(1), "check: {}", check.stderr());
    assert!(check.stderr().contains(&damaged_name), "check names it: {}", check.stderr());
    check.assert_syslog("check", &["damaged", &damaged_name]);

    // The administrator removes it once inspected.
    std::fs::remove_file(&damaged[0]).unwrap();
    let check = r.admin(&["check"]);
    assert!(check.ok(), "check: {}", check.stderr());
    assert!(!check.stderr().contains("damaged"), "{}", check.stderr());
    let (log, _) = r.log();
    assert_eq!(log.len(), 3);
}

// ------------------------------------------------- B: a full disk, a bound

/// Issue 13.2: a filesystem filled up (a small tmpfs in a private mount
/// namespace). alice was locked before it filled; bob had one failure.
/// On the full disk: alice's right password is refused (preauth and the
/// account hook alone, as an SSH key would); bob's next two failures are
/// counted although they cannot be logged, so he is locked too and his
/// right password is refused. Each logging failure is reported in syslog.
#[test]
fn a_full_disk_never_turns_a_refusal_into_a_success() {
    if missing_tools() {
        return;
    }
    if euid() != 0 || !bwrap_works() {
        eprintln!("SKIP: a tmpfs in bwrap needs root");
        return;
    }
    let sb = Sandbox::new("");
    let mnt = sb.path().join("small");
    let out = sb.path().join("out");
    std::fs::create_dir(&mnt).unwrap();
    std::fs::create_dir(&out).unwrap();
    let db = mnt.join("state/ua.db");
    sb.write_service("login", &sb.stack(&format!("db={} login_failure_limit=3", db.display())));
    let log = Syslog::new();
    let p = sb.path();
    let env = format!(
        "env -u PAM_WRAPPER_DEBUGLEVEL LD_PRELOAD='libpam_wrapper.so libnss_wrapper.so' PAM_WRAPPER=1 PAM_WRAPPER_SERVICE_DIR={} NSS_WRAPPER_PASSWD={} NSS_WRAPPER_GROUP={}",
        p.join("pam.d").display(),
        p.join("passwd").display(),
        p.join("group").display()
    );
    let pt = |step: &str, user: &str, pw: &str, ops: &str| {
        format!(
            "logger -t spool-safety STEP-{step}\nprintf '{pw}\\n' | {env} pamtester -I rhost=203.0.113.9 login {user} {ops} >/dev/null 2>&1; echo $? > {}/{step}\n",
            out.display()
        )
    };
    let both = "authenticate acct_mgmt";
    let pad = "x".repeat(1000);
    let script = [
        pt("a1", "alice", "wrong", both),
        pt("a2", "alice", "wrong", both),
        pt("a3", "alice", "wrong", both),
        pt("b1", "bob", "wrong", both),
        format!("dd if=/dev/zero of={}/fill bs=4096 2>/dev/null; true\n", mnt.display()),
        // The spool's last page may still have room: two entries with
        // fields near their cap use it up (the second is cut short).
        format!("{env} pamtester -I ruser={pad} -I tty={pad} login nosuch authenticate </dev/null >/dev/null 2>&1\n"),
        format!("{env} pamtester -I ruser={pad} -I tty={pad} login nosuch authenticate </dev/null >/dev/null 2>&1\n"),
        pt("alice-full", "alice", PASSWORD, both),
        pt("alice-key", "alice", "", "acct_mgmt"),
        pt("b2", "bob", "wrong", both),
        pt("b3", "bob", "wrong", both),
        pt("bob-full", "bob", PASSWORD, both),
        "logger -t spool-safety STEP-end\n".into(),
        format!("cp -a {}/state {}/state\n", mnt.display(), out.display()),
    ]
    .concat();
    run_on_a_full_disk(&log, &mnt, &script);
    let rc = |step: &str| std::fs::read_to_string(out.join(step)).unwrap().trim().to_string();
    for s in ["a1", "a2", "a3", "b1", "b2", "b3"] {
        assert_ne!(rc(s), "0", "{s}: a wrong password is refused");
    }
    assert_ne!(rc("alice-full"), "0", "full disk: locked alice's right password is refused");
    assert_ne!(rc("alice-key"), "0", "full disk: locked alice's key login is refused");
    assert_ne!(rc("bob-full"), "0", "full disk: bob's failures were counted and locked him");
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for l in log.drain_text() {
        if let Some(i) = l.find("STEP-") {
            steps.push((l[i + 5..].trim().to_string(), vec![]));
        } else if let Some(last) = steps.last_mut() {
            last.1.push(l);
        }
    }
    let spool = spool::path_for(&db).display().to_string();
    for step in ["alice-full", "b2", "bob-full"] {
        let lines = &steps.iter().find(|(s, _)| s == step).unwrap().1;
        assert!(
            lines.iter().any(|l| l.contains(&spool) && l.contains("No space left on device")),
            "{step}: the failure to log is reported: {lines:#?}"
        );
    }
    // The state as the full disk left it: bob locked at 3 failures.
    let accts = useraudit_core::state::Accounts::open(&out.join("state/ua.db"), false, false).unwrap();
    let bob = accts.get(b"bob").unwrap().unwrap();
    assert_eq!((bob.state, bob.failures), (useraudit_core::policy::State::Locked, 3));
}

/// Append to the spool of `sb` as the module would (not bounded here):
/// entries for `user` with `pad` bytes of rhost and tty, while `more(len,
/// record)` says so (`len` the spool's length, `record` the last
/// record's size, 0 before the first).
fn fill_spool(sb: &Sandbox, user: &[u8], pad: usize, more: impl Fn(u64, u64) -> bool) {
    let big = vec![b'h'; pad];
    let spool = spool::path_for(&sb.db);
    let len = || std::fs::metadata(&spool).map_or(0, |m| m.len());
    let (mut t, mut rec) = (1_000_000, 0);
    while more(len(), rec) {
        let e = spool::NewEntry {
            time: t,
            user,
            rhost: (pad > 0).then_some(&big[..]),
            tty: (pad > 0).then_some(&big[..]),
            reason: Some(useraudit_core::policy::LogReason::Auth),
            ..Default::default()
        };
        let was = len();
        spool::append(&sb.db, &e).unwrap();
        rec = len() - was;
        t += 1;
    }
}

/// Issue 13.2: the spool is bounded by `spool_max_bytes`. Past three
/// quarters of it, attempts for names that are not accounts are dropped
/// while accounts' entries are still written; at the bound, those are
/// dropped too, but their failures still count. What was dropped is
/// counted in syslog and, after the merge, by one log entry with reason
/// `dropped`. The spool never grows past the bound.
#[test]
fn spool_bound_drops_unknown_names_first_and_counts_them() {
    if missing_tools() {
        return;
    }
    let max: u64 = 65536;
    let sb = Sandbox::with_config("login_failure_limit=10", &format!("spool_max_bytes = {max}\n"));
    let r = Runner::new(&sb);
    let spool = spool::path_for(&sb.db);
    std::fs::create_dir(sb.db.parent().unwrap()).unwrap();
    fill_spool(&sb, b"nosuchuser", 1000, |len, _| len < max * 3 / 4);
    let filled = std::fs::metadata(&spool).unwrap().len();
    let before = std::fs::read(&spool).unwrap();
    // Unknown names: dropped, nothing written; syslog says so.
    let u = r.login("nosuch", "wrong");
    assert!(!u.ok());
    u.assert_syslog("the first drop", &["spool", "dropped"]);
    assert!(!r.login("nosuch2", "wrong").ok());
    let now = std::fs::read(&spool).unwrap();
    assert_eq!(now.len() as u64, filled, "nothing appended for names that are not accounts");
    assert_eq!(now[32..], before[32..], "only the header's counter changed");
    // An account's entry is still written.
    assert!(!r.login("alice", "wrong").ok());
    let with_alice = std::fs::metadata(&spool).unwrap().len();
    assert!(with_alice > filled, "alice's failure was logged");
    // Up to the bound with accounts' entries: then those are dropped too,
    // and still counted as failures.
    // Filled up to the bound (what is left is smaller than bob's entry).
    fill_spool(&sb, b"alice", 1000, |len, rec| len + rec.max(2100) <= max);
    fill_spool(&sb, b"a", 0, |len, rec| len + rec.max(48) <= max);
    let at_bound = std::fs::metadata(&spool).unwrap().len();
    let full = r.login("bob", "wrong");
    assert!(!full.ok());
    let b2 = r.login("bob", "wrong");
    assert!(!b2.ok());
    let len = std::fs::metadata(&spool).unwrap().len();
    assert!(at_bound <= max && len == at_bound, "nothing was appended at the bound: {at_bound} -> {len}");
    // The first command merges, and says in syslog what was dropped.
    let st = r.admin(&["status", "bob", "--format", "json"]);
    let bob: Value = serde_json::from_slice(&st.out.stdout).unwrap();
    assert_eq!(bob[0]["failures"], 2, "bob's failures were counted: {bob}");
    st.assert_syslog("the merge", &["entries were dropped", "spool_max_bytes"]);

    let (log, _) = r.log();
    let dropped: Vec<&Value> = log.iter().filter(|e| e["reason"] == "dropped").collect();
    assert_eq!(dropped.len(), 1, "one entry counts what was dropped: {dropped:?}");
    let text = dropped[0]["user"].as_str().unwrap();
    let n: u64 = text.split_whitespace().find_map(|w| w.trim_start_matches('[').parse().ok()).unwrap();
    assert!(n >= 2, "at least the two unknown names: {text}");
    assert!(!log.iter().any(|e| e["user"] == "nosuch" || e["user"] == "nosuch2"), "dropped names are not logged");
    assert!(log.iter().any(|e| e["user"] == "alice"), "accounts' entries kept");
    // After the merge the spool starts afresh: unknown names are logged again.
    assert!(!r.login("nosuch3", "wrong").ok());
    let (log, _) = r.log();
    assert!(log.iter().any(|e| e["user"] == "nosuch3"));
}

/// A refusal decided from readable state stays a refusal when nothing can
/// be written (`ulimit -f 0` with SIGXFSZ ignored: every write fails with
/// EFBIG, as on a full disk; no root needed). bob, locked before, is
/// refused with the right password, in preauth and in the account hook
/// alone; alice, inactive for longer than `account_expiry_days`, is
/// refused although her disable cannot be written. Each failed write is
/// reported in syslog.
#[test]
fn refusals_stay_refusals_when_nothing_can_be_written() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("login_failure_limit=3 account_expiry_days=5");
    sb.faketime = Some("-10d".into());
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok);
    sb.faketime = None;
    for _ in 0..3 {
        assert!(!sb.login("bob", "wrong", "203.0.113.9").ok);
    }
    // pam_wrapper copies the service files, which the limit forbids: the
    // sandbox's pam.d is bound over /etc/pam.d in bwrap instead.
    if !bwrap_works() {
        eprintln!("SKIP: needs bwrap for a private /etc/pam.d");
        return;
    }
    let r = Runner::new(&sb);
    let log = r.log.as_ref().unwrap();
    let limited = |user: &str, ops: &[&str]| {
        let p = sb.path();
        let mut cmd = Command::new("bwrap");
        cmd.args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
            .arg(&log.path)
            .arg("/dev/log")
            .arg("--bind")
            .arg(p.join("pam.d"))
            .arg("/etc/pam.d")
            .args(["--", "sh", "-c", "ulimit -f 0; trap '' XFSZ; exec \"$@\"", "sh", "pamtester"])
            .args(["-I", "rhost=203.0.113.9", "login", user])
            .args(ops)
            .env("LD_PRELOAD", "libnss_wrapper.so")
            .env("NSS_WRAPPER_PASSWD", p.join("passwd"))
            .env("NSS_WRAPPER_GROUP", p.join("group"));
        r.finish(cmd, &format!("{PASSWORD}\n"))
    };
    let spool = spool::path_for(&sb.db).display().to_string();
    let both = ["authenticate", "acct_mgmt"];
    let bob = limited("bob", &both);
    assert!(!bob.ok(), "locked bob's right password is refused: {}", bob.stderr());
    bob.assert_syslog("bob", &["cannot log the attempt", &spool, "too large"]);
    let bob_key = limited("bob", &["acct_mgmt"]);
    assert!(!bob_key.ok(), "locked bob's key login is refused");
    let alice = limited("alice", &both);
    assert!(!alice.ok(), "inactive alice is refused although her disable cannot be written: {}", alice.stderr());
    alice.assert_syslog("alice", &["alice", "too large"]);
    // Nothing was written: alice is not disabled yet, and is refused again
    // (and disabled) once writes work.
    assert!(!sb.login("alice", PASSWORD, "203.0.113.9").ok);
    assert_eq!(sb.status("alice")["state"], "disabled");
}
