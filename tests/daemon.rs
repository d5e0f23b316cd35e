//! The live log: `useraudit-admin daemon` run as a child process against a
//! sandbox, with real logins through the real module, and `log --follow`.
//! Nothing here times anything: each wait is bounded and asserts presence.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use common::{PASSWORD, Sandbox, admin_path, missing_tools};
use serde_json::Value;

const RHOST: &str = "203.0.113.9";
/// The longest any wait here lasts before the test fails.
const PATIENCE: Duration = Duration::from_secs(20);

/// A running daemon; killed when dropped (a test that failed midway).
struct Daemon {
    child: Child,
    stderr: std::path::PathBuf,
}

impl Daemon {
    fn start(sb: &Sandbox, name: &str) -> Daemon {
        Self::start_with(sb, name, sb.admin_command(&["daemon"]))
    }

    fn start_with(sb: &Sandbox, name: &str, mut cmd: Command) -> Daemon {
        let stderr = sb.path().join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let d = Daemon { child, stderr };
        d.wait_for("merging the log spool");
        d
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait until stderr says `what`.
    fn wait_for(&self, what: &str) {
        let until = Instant::now() + PATIENCE;
        while !self.stderr().contains(what) {
            assert!(Instant::now() < until, "the daemon never said {what:?}; it said: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap();
        assert!(ok.success());
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for the exit; its code.
    fn exit(&mut self) -> Option<i32> {
        let until = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(Instant::now() < until, "the daemon did not exit; it said: {}", self.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The users of the log's entries, read with SQLite directly (as `sqlite3`
/// would), oldest first; empty while the database cannot be read.
fn users_in_db(db: &Path) -> Vec<String> {
    let Ok(c) = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY) else {
        return vec![];
    };
    c.prepare("SELECT user FROM log ORDER BY id")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .map(|u| u.map(|u| String::from_utf8_lossy(&u).into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// Wait until the database holds exactly `want` (users, oldest first).
fn wait_for_rows(db: &Path, want: &[&str]) {
    let until = Instant::now() + PATIENCE;
    loop {
        let got = users_in_db(db);
        if got == want {
            return;
        }
        assert!(Instant::now() < until, "the database holds {got:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sandbox() -> Option<Sandbox> {
    if missing_tools() {
        return None;
    }
    let sb = Sandbox::new("");
    sb.create_db_dir();
    Some(sb)
}

#[test]
fn daemon_merges_each_login_into_the_database_as_it_arrives() {
    let Some(sb) = sandbox() else { return };
    let mut d = Daemon::start(&sb, "d");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    wait_for_rows(&sb.db, &["alice"]);
    assert!(!sb.login("bob", "wrong", RHOST).ok);
    wait_for_rows(&sb.db, &["alice", "bob"]);
    // Merged by the daemon, not by a command: the spool is gone.
    assert!(!useraudit_core::spool::path_for(&sb.db).exists());
    assert!(d.running());
}

/// The unit gives the daemon no capability at all
/// (`CapabilityBoundingSet=`): as root, the owner of the state files, it
/// needs none.
#[test]
fn the_daemon_needs_no_capability() {
    let Some(sb) = sandbox() else { return };
    if !Path::new("/usr/bin/setpriv").exists() || !is_root() {
        eprintln!("SKIP: needs root and setpriv");
        return;
    }
    let mut cmd = Command::new("/usr/bin/setpriv");
    let admin = sb.admin_command(&["daemon"]);
    cmd.arg("--bounding-set=-all").arg("--").arg(admin.get_program()).args(admin.get_args());
    for (k, v) in admin.get_envs() {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    }
    let mut d = Daemon::start_with(&sb, "d", cmd);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.child.id())).unwrap();
    assert!(status.lines().any(|l| l == "CapEff:\t0000000000000000"), "{status}");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    assert!(!sb.login("bob", "wrong", RHOST).ok);
    wait_for_rows(&sb.db, &["alice", "bob"]);
    assert!(d.running());
    d.signal("TERM");
    assert_eq!(d.exit(), Some(0), "{}", d.stderr());
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
}

#[test]
fn a_second_daemon_exits_1_and_names_the_first() {
    let Some(sb) = sandbox() else { return };
    let mut first = Daemon::start(&sb, "first");
    let o = sb.admin_command(&["daemon"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("pid {}", first.child.id())), "{err}");
    assert!(err.contains("already running"), "{err}");
    assert!(first.running());
}

#[test]
fn sigterm_ends_the_daemon_with_0_and_nothing_is_lost() {
    let Some(sb) = sandbox() else { return };
    let sb = std::sync::Arc::new(sb);
    let mut d = Daemon::start(&sb, "d");
    const LOGINS: usize = 40;
    // Logins go on while the daemon is told to stop, and after it stopped.
    let bg = {
        let sb = sb.clone();
        std::thread::spawn(move || {
            for i in 0..LOGINS {
                assert!(sb.login("alice", PASSWORD, &format!("10.0.1.{i}")).ok);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let until = Instant::now() + PATIENCE;
    while users_in_db(&sb.db).len() < 5 {
        assert!(Instant::now() < until, "nothing merged: {}", d.stderr());
        std::thread::sleep(Duration::from_millis(10));
    }
    d.signal("TERM");
    assert_eq!(d.exit(), Some(0), "{}", d.stderr());
    assert!(d.stderr().contains("stopped"));
    bg.join().unwrap();
    // What the daemon did not merge is still in the spool: a command
    // merges it; every login is there once.
    let mut hosts: Vec<String> =
        sb.log(&["--limit", "1000"]).iter().map(|e| e["rhost"].as_str().unwrap().to_string()).collect();
    hosts.sort();
    let mut want: Vec<String> = (0..LOGINS).map(|i| format!("10.0.1.{i}")).collect();
    want.sort();
    assert_eq!(hosts, want);
    // The lock went with it: a new daemon starts.
    let mut again = Daemon::start(&sb, "again");
    assert!(again.running());
}

/// SIGHUP re-reads `database` too: the daemon lets go of the old one (its
/// lock with it) and merges into the new one.
#[test]
fn sighup_moves_the_daemon_to_a_new_database() {
    let Some(mut sb) = sandbox() else { return };
    let old = sb.db.clone();
    std::fs::write(&sb.conf, format!("database = \"{}\"\n", old.display())).unwrap();
    // Without --db: the configuration decides.
    let mut daemon = sb.admin_users();
    daemon.arg("--conf").arg(&sb.conf).arg("daemon");
    let mut d = Daemon::start_with(&sb, "d", daemon);
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    wait_for_rows(&old, &["alice"]);
    let dir2 = sb.path().join("state2");
    std::fs::create_dir(&dir2).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir2, std::fs::Permissions::from_mode(0o700)).unwrap();
    let new = dir2.join("useraudit.db");
    std::fs::write(&sb.conf, format!("database = \"{}\"\n", new.display())).unwrap();
    d.signal("HUP");
    d.wait_for(&format!("merging into {}", new.display()));
    // The module's lines name the new database too.
    sb.db = new.clone();
    sb.use_module_copy();
    assert!(sb.login("bob", PASSWORD, RHOST).ok);
    wait_for_rows(&new, &["bob"]);
    assert_eq!(users_in_db(&old), ["alice"]);
    // The old database's lock was let go.
    let mut other = sb.admin_users();
    other.arg("--conf").arg(&sb.conf).arg("--db").arg(&old).arg("daemon");
    let mut free = Daemon::start_with(&sb, "free", other);
    assert!(free.running());
    assert!(d.running());
}

#[test]
fn a_locked_database_keeps_the_daemon_running_and_loses_nothing() {
    let Some(sb) = sandbox() else { return };
    let mut d = Daemon::start(&sb, "d");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    wait_for_rows(&sb.db, &["alice"]);
    // An administrator's sqlite3 session that holds a write transaction.
    let holder = rusqlite::Connection::open(&sb.db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    assert!(sb.login("bob", PASSWORD, RHOST).ok);
    d.wait_for("database is locked");
    assert!(sb.login("carol", PASSWORD, RHOST).ok);
    // Let it retry a few times (backoff up to 5 s): still one report.
    std::thread::sleep(Duration::from_secs(8));
    assert_eq!(d.stderr().matches("database is locked").count(), 1, "{}", d.stderr());
    assert!(d.running());
    assert!(useraudit_core::spool::path_for(&sb.db).exists() || has_set_aside(&sb));
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    wait_for_rows(&sb.db, &["alice", "bob", "carol"]);
    d.wait_for("merging again");
    assert!(d.running());
}

/// A spool file set aside by a merge that could not finish.
fn has_set_aside(sb: &Sandbox) -> bool {
    std::fs::read_dir(sb.db.parent().unwrap())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().contains(".spool.merging-"))
}

#[test]
fn a_damaged_database_keeps_the_daemon_running_until_it_is_moved_aside() {
    let Some(sb) = sandbox() else { return };
    std::fs::write(&sb.db, vec![0x5a; 8192]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sb.db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let stderr = sb.path().join("d.stderr");
    let child = sb
        .admin_command(&["daemon"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, stderr };
    d.wait_for("not a database");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    assert!(!sb.login("bob", "wrong", RHOST).ok);
    std::thread::sleep(Duration::from_secs(6));
    assert!(d.running());
    assert_eq!(d.stderr().matches("not a database").count(), 1, "{}", d.stderr());
    assert!(useraudit_core::spool::path_for(&sb.db).exists() || has_set_aside(&sb), "the spool must stay");
    std::fs::rename(&sb.db, sb.db.with_extension("db.damaged")).unwrap();
    wait_for_rows(&sb.db, &["alice", "bob"]);
    d.wait_for("merging again");
    assert!(d.running());
}

#[test]
fn sighup_rereads_the_configuration() {
    let Some(sb) = sandbox() else { return };
    let mut d = Daemon::start(&sb, "d");
    std::fs::write(&sb.conf, "login_failure_limit = \"many\"\n").unwrap();
    d.signal("HUP");
    d.wait_for("configuration not re-read");
    assert!(d.stderr().contains("login_failure_limit"), "{}", d.stderr());
    assert!(d.running());
    // Each SIGHUP is answered, and a bad configuration is not a database fault.
    d.signal("HUP");
    let until = Instant::now() + PATIENCE;
    while d.stderr().matches("configuration not re-read").count() < 2 {
        assert!(Instant::now() < until, "{}", d.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!d.stderr().contains("merging again"), "{}", d.stderr());
    std::fs::write(&sb.conf, "login_failure_limit = 5\n").unwrap();
    d.signal("HUP");
    d.wait_for("configuration re-read; merging into");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    wait_for_rows(&sb.db, &["alice"]);
    assert!(d.running());
}

/// `log --follow` with `args`, its stdout lines arriving on a channel.
struct Follow {
    child: Child,
    lines: Receiver<String>,
}

impl Follow {
    fn start(sb: &Sandbox, args: &[&str]) -> Follow {
        let mut a = vec!["log", "--follow"];
        a.extend_from_slice(args);
        let mut child = sb.admin_command(&a).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Follow { child, lines }
    }

    fn next(&self) -> String {
        self.lines.recv_timeout(PATIENCE).expect("log --follow printed nothing more")
    }

    fn json(&self) -> Value {
        let l = self.next();
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}"))
    }
}

impl Drop for Follow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_shows_the_last_entries_then_new_ones_as_json_lines() {
    let Some(sb) = sandbox() else { return };
    for u in ["alice", "bob", "carol"] {
        assert!(sb.login(u, PASSWORD, RHOST).ok);
    }
    // Without a daemon: it merges by itself.
    let f = Follow::start(&sb, &["--format", "json", "--limit", "2"]);
    assert_eq!(f.json()["user"], "bob");
    assert_eq!(f.json()["user"], "carol");
    assert!(!sb.login("dave", "wrong", RHOST).ok);
    let e = f.json();
    assert_eq!(e["user"], "dave");
    assert_eq!(e["outcome"], "failure");
    // Filters apply to new entries too.
    let only = Follow::start(&sb, &["--format", "json", "--user", "alice", "--failed"]);
    assert!(sb.login("erin", PASSWORD, RHOST).ok);
    assert!(!sb.login("alice", "wrong", RHOST).ok);
    assert_eq!(f.json()["user"], "erin");
    assert_eq!(f.json()["user"], "alice");
    let e = only.json();
    assert_eq!((e["user"].as_str(), e["outcome"].as_str()), (Some("alice"), Some("failure")));
    assert!(only.lines.recv_timeout(Duration::from_millis(500)).is_err(), "only alice's failure matches");
}

#[test]
fn follow_with_the_daemon_prints_csv_with_one_header() {
    let Some(sb) = sandbox() else { return };
    let _d = Daemon::start(&sb, "d");
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    wait_for_rows(&sb.db, &["alice"]);
    let f = Follow::start(&sb, &["--format", "csv"]);
    assert_eq!(f.next(), "id,time,outcome,user,service,rhost,ruser,tty,auth_method,reason");
    assert!(f.next().contains(",success,alice,login,"));
    assert!(sb.login("bob", PASSWORD, RHOST).ok);
    wait_for_rows(&sb.db, &["alice", "bob"]);
    let row = f.next();
    assert!(row.contains(",success,bob,login,"), "{row}");
    let t = Follow::start(&sb, &[]);
    assert!(t.next().starts_with("TIME "));
    assert!(t.next().contains("alice"));
    assert!(t.next().contains("bob"));
    assert!(!sb.login("carol", "wrong", RHOST).ok);
    let row = t.next();
    assert!(row.contains("carol") && row.contains("failure"), "{row}");
    assert!(f.next().contains(",failure,carol,login,"));
}

#[test]
fn follow_ends_on_sigint_and_when_its_output_closes() {
    let Some(sb) = sandbox() else { return };
    assert!(sb.login("alice", PASSWORD, RHOST).ok);
    let mut f = Follow::start(&sb, &["--format", "json"]);
    assert_eq!(f.json()["user"], "alice");
    let ok = Command::new("kill").arg("-INT").arg(f.child.id().to_string()).status().unwrap();
    assert!(ok.success());
    assert_eq!(wait_exit(&mut f.child), Some(0));
    // `| head -1`: the one line is printed and nothing more comes, yet
    // the command ends when head does.
    let script = "\"$0\" --conf \"$1\" --db \"$2\" log -f --format json | head -1";
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(admin_path())
        .arg(&sb.conf)
        .arg(&sb.db)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert_eq!(wait_exit(&mut sh), Some(0));
    let mut out = String::new();
    std::io::Read::read_to_string(sh.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("\"alice\""), "{out}");
}

fn wait_exit(c: &mut Child) -> Option<i32> {
    let until = Instant::now() + PATIENCE;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s.code();
        }
        if Instant::now() > until {
            let _ = c.kill();
            panic!("did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `kill -9` of the daemon, ten times, while logins go on: afterwards every
/// attempt is in the log exactly once (a merge cut short anywhere is taken
/// up by the next one without duplicating what was committed).
#[test]
fn kill_9_during_logins_loses_and_duplicates_nothing() {
    let Some(sb) = sandbox() else { return };
    let sb = std::sync::Arc::new(sb);
    const LOGINS: usize = 80;
    let bg = {
        let sb = sb.clone();
        std::thread::spawn(move || {
            for i in 0..LOGINS {
                let user = if i % 2 == 0 { "alice" } else { "bob" };
                let pw = if i % 3 == 0 { "wrong" } else { PASSWORD };
                sb.login(user, pw, &format!("10.0.0.{i}"));
                // Spread the logins over the ten daemons' lives.
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let mut during = 0;
    for k in 0..10 {
        let mut d = Daemon::start(&sb, &format!("d{k}"));
        let seen = users_in_db(&sb.db).len();
        let until = Instant::now() + PATIENCE;
        while users_in_db(&sb.db).len() == seen && !bg.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !bg.is_finished() {
            during += 1;
        }
        d.child.kill().unwrap();
        assert_eq!(d.exit(), None, "killed by a signal");
    }
    eprintln!("{during} of 10 kills while logins went on");
    bg.join().unwrap();
    let mut hosts: Vec<String> =
        sb.log(&["--limit", "1000"]).iter().map(|e| e["rhost"].as_str().unwrap().to_string()).collect();
    hosts.sort();
    let mut want: Vec<String> = (0..LOGINS).map(|i| format!("10.0.0.{i}")).collect();
    want.sort();
    assert_eq!(hosts, want);
}

/// With `metrics_file` set, the daemon keeps that file current: written
/// when it starts, and again after a merge, with the new attempt counted.
#[test]
fn the_daemon_keeps_the_metrics_file_current() {
    if missing_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("useraudit.prom");
    let sb = Sandbox::with_config("", &format!("metrics_file = \"{}\"\n", prom.display()));
    sb.create_db_dir();
    let _d = Daemon::start(&sb, "d");
    let read_until = |want: &dyn Fn(&str) -> bool| {
        let until = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&prom).unwrap_or_default();
            if want(&text) {
                return text;
            }
            assert!(Instant::now() < until, "{} never showed what was expected: {text}", prom.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = read_until(&|t| t.contains("# TYPE useraudit_attempts_total counter"));
    assert!(!first.contains("outcome=\"failure\""), "{first}");
    assert!(!sb.login("bob", "wrong", RHOST).ok);
    let after = read_until(&|t| t.contains("outcome=\"failure\""));
    let line = after.lines().find(|l| l.starts_with("useraudit_attempts_total{") && l.contains("outcome=\"failure\""));
    assert!(line.is_some_and(|l| l.ends_with(" 1")), "{after}");
}
