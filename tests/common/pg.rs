//! A throwaway PostgreSQL cluster for the fleet tests (Debian's
//! `postgresql` package: `initdb` and `pg_ctl` run as the unprivileged
//! `postgres` user, a Unix socket in a temporary directory, no TCP), and
//! simulated hosts, each its own sandbox (state directory, `fleet.host`),
//! and daemon. Needs root (to run the server as `postgres`); a test is
//! skipped otherwise, unless CI is set.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::{Sandbox, missing_tools};
use serde_json::Value;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
pub const RHOST: &str = "203.0.113.9";

/// One cluster at a time: each test stops and starts its own.
pub static ONE: Mutex<()> = Mutex::new(());

/// A throwaway PostgreSQL cluster; stopped when dropped.
pub struct Pg {
    pub dir: tempfile::TempDir,
}

pub fn as_postgres(args: &[&str]) -> std::process::Output {
    Command::new("runuser").args(["-u", "postgres", "--"]).args(args).stdin(Stdio::null()).output().unwrap()
}

impl Pg {
    /// None (skip) when not root or the server is not installed.
    pub fn new() -> Option<Pg> {
        let root = euid() == 0;
        let have = Path::new(BIN).join("initdb").exists();
        if !root || !have || missing_tools() {
            if std::env::var_os("CI").is_some_and(|v| v == "true") {
                panic!("the fleet tests need root and Debian's postgresql package (make deps)");
            }
            eprintln!("SKIP: the fleet tests need root and Debian's postgresql package");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let st = Command::new("chown").arg("postgres:postgres").arg(dir.path()).status().unwrap();
        assert!(st.success());
        let data = dir.path().join("data");
        let o = as_postgres(&[
            &format!("{BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        assert!(o.status.success(), "initdb: {}", String::from_utf8_lossy(&o.stderr));
        let pg = Pg { dir };
        pg.start();
        pg.psql("CREATE DATABASE useraudit");
        Some(pg)
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn start(&self) {
        self.start_with("");
    }

    pub fn start_with(&self, extra: &str) {
        let d = self.dir.path();
        let o = as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            d.join("data").to_str().unwrap(),
            "-l",
            d.join("server.log").to_str().unwrap(),
            "-o",
            &format!("-k {} -c listen_addresses='' -c fsync=off {extra}", d.display()),
            "-w",
            "start",
        ]);
        assert!(o.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&o.stderr));
    }

    pub fn stop(&self) {
        let d = self.dir.path();
        let _ = as_postgres(&[
            &format!("{BIN}/pg_ctl"),
            "-D",
            d.join("data").to_str().unwrap(),
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    /// A connection string for `user`.
    pub fn url(&self, user: &str) -> String {
        format!("host={} dbname=useraudit user={user} connect_timeout=5", self.sock().display())
    }

    pub fn client(&self, user: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(user), postgres::NoTls).unwrap()
    }

    pub fn psql(&self, sql: &str) {
        let mut c = postgres::Client::connect(
            &format!("host={} dbname=postgres user=postgres", self.sock().display()),
            postgres::NoTls,
        )
        .unwrap();
        c.batch_execute(sql).unwrap();
    }

    pub fn count(&self, sql: &str) -> i64 {
        self.client("postgres").query_one(sql, &[]).unwrap().get(0)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn euid() -> u32 {
    // The owner of a file this process just made is its effective uid.
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid()
}

/// The cluster with the schema made by `fleet init` (as the superuser), a
/// login role per host in `useraudit_host`, and `fadmin` in
/// `useraudit_fleet_admin`.
pub fn cluster(hosts: &[&str]) -> Option<Pg> {
    let pg = Pg::new()?;
    let sb = host_sandbox(&pg, "postgres", "init", "");
    sb.admin_ok(&["fleet", "init"]);
    // Idempotent: a second run changes nothing and succeeds.
    sb.admin_ok(&["fleet", "init"]);
    let mut c = pg.client("postgres");
    for h in hosts {
        c.batch_execute(&format!("CREATE ROLE {h} LOGIN IN ROLE useraudit_host")).unwrap();
    }
    c.batch_execute("CREATE ROLE fadmin LOGIN IN ROLE useraudit_fleet_admin").unwrap();
    Some(pg)
}

/// A host: its own sandbox, connecting as `role`, named `host` in the fleet.
pub fn host_sandbox(pg: &Pg, role: &str, host: &str, extra: &str) -> Sandbox {
    let conf = format!(
        "login_failure_limit = 10\n{extra}\n[fleet]\nurl = \"{}\"\nhost = \"{host}\"\ninterval = \"1s\"\nfailure_limit = 5\n",
        pg.url(role)
    );
    let sb = Sandbox::with_config("", &conf);
    sb.create_db_dir();
    sb
}

/// The start of a fleet test: None (skip) when not root, unless CI=true
/// (then it fails); else the lock that keeps fleet tests one at a time and
/// the cluster of [`cluster`], in that order, so that the cluster is
/// stopped before the next test may start.
pub fn fleet_test(hosts: &[&str]) -> Option<(std::sync::MutexGuard<'static, ()>, Pg)> {
    if skip() {
        return None;
    }
    let one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    Some((one, cluster(hosts)?))
}

/// Not root: skip, unless CI=true (then fail).
pub fn skip() -> bool {
    if euid() == 0 {
        return false;
    }
    if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("the fleet tests need root (to run PostgreSQL as the postgres user)");
    }
    eprintln!("SKIP: the fleet tests need root (to run PostgreSQL as the postgres user)");
    true
}

pub fn fleet_log(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let mut a = vec!["log", "--fleet", "--format", "json"];
    a.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&sb.admin_ok(&a)).unwrap();
    v.as_array().unwrap().clone()
}

pub fn local_count(sb: &Sandbox) -> usize {
    sb.log(&[]).len()
}

/// A running `useraudit-admin daemon` of one host; killed when dropped.
pub struct Daemon(pub std::process::Child);

impl Daemon {
    pub fn start(sb: &Sandbox) -> Daemon {
        let child = sb
            .admin_command(&["daemon"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (at most 30 s) until `f` holds.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
