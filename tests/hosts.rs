//! Remote hosts through the real libpam: a guessing host is blocked at
//! exactly `host_failure_limit` and refused before the password prompt,
//! IPv6 networks and IPv4-mapped addresses are counted as one host,
//! trusted networks are never blocked and keep the owner in during a lock
//! caused by untrusted hosts, the counting is exact under concurrency,
//! damage is answered by on_error, and the `hosts`, `block` and `unblock`
//! commands.
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BAD: &str = "wrong";

fn attempt(sb: &Sandbox, user: &str, password: &str, rhost: &str) -> Pam {
    sb.login(user, password, rhost)
}

/// The account stack alone, as sshd runs it for a public-key login.
fn key_login(sb: &Sandbox, user: &str, rhost: &str) -> Pam {
    sb.pamtester("sshd", user, "", &[("rhost", rhost)], &["acct_mgmt"])
}

fn hosts(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let mut a = vec!["hosts", "--format", "json"];
    a.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&sb.admin_ok(&a)).unwrap();
    v.as_array().unwrap().clone()
}

fn host<'a>(list: &'a [Value], key: &str) -> &'a Value {
    list.iter().find(|h| h["host"] == key).unwrap_or_else(|| panic!("{key} not in {list:?}"))
}

fn reasons(log: &[Value]) -> Vec<String> {
    log.iter().map(|e| e["reason"].as_str().unwrap_or("-").to_string()).collect()
}

fn prompted(r: &Pam) -> bool {
    r.shown().contains("Password")
}

#[test]
fn a_guessing_host_is_blocked_at_exactly_n_and_refused_before_the_prompt() {
    if missing_tools() {
        return;
    }
    const N: usize = 5;
    let sb = Sandbox::new(&format!("host_failure_limit={N}"));
    let (a, b) = ("203.0.113.9", "198.51.100.20");
    let names = [
        "admin", "alice", "test", "oracle", "bob", "ubuntu", "pi", "carol", "git", "postgres", "user", "dave", "ftp",
        "guest", "www", "support", "mysql", "erin", "deploy", "backup",
    ];
    for (i, name) in names.iter().enumerate() {
        let r = attempt(&sb, name, BAD, a);
        assert!(!r.ok, "{name}: {r:?}");
        if i < N {
            assert!(prompted(&r), "attempt {} reached the password: {r:?}", i + 1);
            let h = hosts(&sb, &[]);
            let want = if i + 1 == N { "blocked" } else { "active" };
            assert_eq!(host(&h, a)["state"], want, "after {} failures: {h:?}", i + 1);
        } else {
            assert!(!prompted(&r), "attempt {} from a blocked host was asked for a password: {r:?}", i + 1);
        }
    }
    let log = sb.log(&["--rhost", a]);
    let mut rs = reasons(&log);
    rs.reverse();
    assert_eq!(rs[..N], vec!["auth"; N][..], "{rs:?}");
    assert_eq!(rs[N..], vec!["host_blocked"; names.len() - N][..], "{rs:?}");
    // Refused attempts neither extend the block nor count.
    let h = hosts(&sb, &["--blocked"]);
    assert_eq!(h.len(), 1, "{h:?}");
    let row = &h[0];
    assert_eq!(row["reason"], "host_failure_limit");
    let blocked_at = row["blocked_at"].as_str().unwrap().to_string();
    let by_time: Vec<&Value> = log.iter().filter(|e| e["reason"] == "auth").collect();
    assert_eq!(blocked_at, by_time[0]["time"].as_str().unwrap(), "blocked by the Nth failure");
    assert!(row["unblocks_at"].is_string() && row["last_failure"].is_string(), "{row}");
    for k in ["host", "state", "reason", "failures", "last_failure", "blocked_at", "unblocks_at"] {
        assert!(row.get(k).is_some(), "{k} missing: {row}");
    }
    // The right password and a public key from the blocked host: refused.
    let r = attempt(&sb, "alice", PASSWORD, a);
    assert!(!r.ok && !prompted(&r), "{r:?}");
    let r = key_login(&sb, "alice", a);
    assert!(!r.ok, "{r:?}");
    assert!(r.shown().contains("Permission denied") || r.shown().contains("PERM"), "{r:?}");
    assert_eq!(
        sb.log(&["--rhost", a, "--limit", "2"]).iter().map(|e| e["reason"].clone()).collect::<Vec<_>>(),
        ["host_blocked", "host_blocked"]
    );
    assert_eq!(hosts(&sb, &[])[0]["blocked_at"], blocked_at.as_str());
    // A second host is unaffected, and the accounts were not locked.
    assert!(attempt(&sb, "alice", PASSWORD, b).ok);
    assert!(key_login(&sb, "alice", b).ok);
    assert_eq!(sb.status("alice")["state"], "active");
    // Console logins (no PAM_RHOST) are never blocked by host.
    let r = sb.pamtester("login", "alice", &format!("{PASSWORD}\n"), &[], &["authenticate", "acct_mgmt"]);
    assert!(r.ok, "{r:?}");
    // The log's JSON and the table name the reason.
    assert!(sb.admin_ok(&["log", "--rhost", a]).contains("host_blocked"));
}

#[test]
fn ipv6_networks_and_ipv4_mapped_addresses_count_as_one_host() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("host_failure_limit=3");
    for h in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff:ffff:ffff:fffe"] {
        assert!(!attempt(&sb, "nosuchuser", BAD, h).ok);
    }
    let list = hosts(&sb, &[]);
    assert_eq!(host(&list, "2001:db8:1:2::/64")["state"], "blocked", "{list:?}");
    let r = attempt(&sb, "alice", PASSWORD, "2001:db8:1:2::77");
    assert!(!r.ok && !prompted(&r), "{r:?}");
    assert!(attempt(&sb, "alice", PASSWORD, "2001:db8:1:3::1").ok, "another /64 is another host");

    for h in ["::ffff:198.51.100.7", "::ffff:198.51.100.7", "198.51.100.7"] {
        assert!(!attempt(&sb, "bob", BAD, h).ok);
    }
    let list = hosts(&sb, &[]);
    assert_eq!(host(&list, "198.51.100.7")["state"], "blocked", "{list:?}");
    let r = attempt(&sb, "bob", PASSWORD, "::ffff:198.51.100.7");
    assert!(!r.ok && !prompted(&r), "{r:?}");
    assert_eq!(list.len(), 2, "{list:?}");
}

#[test]
fn a_trusted_network_is_never_blocked() {
    if missing_tools() {
        return;
    }
    let sb =
        Sandbox::with_config("", "host_failure_limit = 2\ntrusted_hosts = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n");
    for _ in 0..6 {
        assert!(!attempt(&sb, "nosuchuser", BAD, "192.0.2.50").ok);
        assert!(!attempt(&sb, "nosuchuser", BAD, "2001:db8:5::9").ok);
    }
    assert!(attempt(&sb, "alice", PASSWORD, "192.0.2.50").ok);
    assert!(attempt(&sb, "alice", PASSWORD, "::ffff:192.0.2.50").ok);
    assert!(attempt(&sb, "alice", PASSWORD, "2001:db8:5::9").ok);
    assert_eq!(hosts(&sb, &[]), Vec::<Value>::new(), "trusted hosts are not even counted");
    // A name is never trusted by a network, however it looks.
    for _ in 0..2 {
        assert!(!attempt(&sb, "alice", BAD, "192.0.2.50.example").ok);
    }
    assert_eq!(host(&hosts(&sb, &[]), "192.0.2.50.example")["state"], "blocked");
    // Nor can the administrator block a trusted host.
    let o = sb.admin(&["block", "192.0.2.7"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("trusted_hosts"), "{o:?}");
}

#[test]
fn a_lock_from_untrusted_hosts_keeps_the_owner_in_from_a_trusted_one() {
    if missing_tools() {
        return;
    }
    let (office, internet) = ("10.1.2.3", "203.0.113.9");
    let sb = Sandbox::with_config("", "login_failure_limit = 3\ntrusted_hosts = [\"10.0.0.0/8\"]\n");
    for _ in 0..3 {
        assert!(!attempt(&sb, "alice", BAD, internet).ok);
    }
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["lock_scope"].as_str()), (Some("locked"), Some("untrusted")), "{st}");
    // The owner on the office network gets in; the lock stays.
    assert!(attempt(&sb, "alice", PASSWORD, office).ok);
    assert!(key_login(&sb, "alice", office).ok);
    let st = sb.status("alice");
    assert_eq!((st["state"].as_str(), st["lock_scope"].as_str()), (Some("locked"), Some("untrusted")), "{st}");
    assert_eq!(st["failures"], 3, "{st}");
    let r = attempt(&sb, "alice", PASSWORD, internet);
    assert!(!r.ok && !prompted(&r), "the untrusted host is still refused: {r:?}");
    assert!(!key_login(&sb, "alice", internet).ok);
    let o = sb.admin(&["status", "alice"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("untrusted"), "{o:?}");
    // One failure from the trusted host makes the lock apply everywhere.
    assert!(!attempt(&sb, "alice", BAD, office).ok);
    assert_eq!(sb.status("alice")["lock_scope"], "all");
    assert!(!attempt(&sb, "alice", PASSWORD, office).ok);

    // A trusted failure among those that caused the lock: scope "all".
    sb.admin_ok(&["activate", "alice"]);
    assert_eq!(sb.status("alice")["lock_scope"], Value::Null);
    assert!(!attempt(&sb, "alice", BAD, office).ok);
    assert!(!attempt(&sb, "alice", BAD, internet).ok);
    assert!(!attempt(&sb, "alice", BAD, internet).ok);
    assert_eq!(sb.status("alice")["lock_scope"], "all");
    let r = attempt(&sb, "alice", PASSWORD, office);
    assert!(!r.ok && !prompted(&r), "{r:?}");

    // Locks by hand apply everywhere.
    sb.admin_ok(&["activate", "alice"]);
    sb.admin_ok(&["lock", "alice"]);
    assert_eq!(sb.status("alice")["lock_scope"], "all");
    assert!(!attempt(&sb, "alice", PASSWORD, office).ok);
}

fn recorder(sb: &Sandbox, out: &Path) -> PathBuf {
    let p = sb.path().join("notify.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{{ env | grep '^USERAUDIT_' | sort; echo --; }} >> '{}'\n", out.display()))
        .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn notices(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out).unwrap_or_default().split("--\n").filter(|b| !b.is_empty()).map(String::from).collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_block_notifies_once_and_lifts_itself_after_host_block_time() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("host_failure_limit=2");
    let out = sb.path().join("notified");
    let cmd = recorder(&sb, &out);
    std::fs::write(&sb.conf, format!("notify_command = \"{}\"\nhost_block_time = \"1h\"\n", cmd.display())).unwrap();
    let a = "203.0.113.50";
    for u in ["alice", "nosuchuser"] {
        assert!(!attempt(&sb, u, BAD, a).ok);
    }
    for _ in 0..3 {
        assert!(!attempt(&sb, "alice", PASSWORD, a).ok);
    }
    wait_for("the notification", || !notices(&out).is_empty());
    std::thread::sleep(Duration::from_millis(300));
    let got = notices(&out);
    assert_eq!(got.len(), 1, "one notification per block: {got:?}");
    assert!(
        got[0].contains("USERAUDIT_EVENT=host_blocked\n") && got[0].contains(&format!("USERAUDIT_RHOST={a}\n")),
        "{got:?}"
    );
    // Two hours later the block has lapsed.
    if !Path::new(FAKETIME_LIB).exists() {
        eprintln!("SKIP: faketime is missing");
        return;
    }
    sb.faketime = Some(format!("+{}", 2 * 3600));
    assert_eq!(hosts(&sb, &[])[0]["state"], "active");
    assert!(attempt(&sb, "alice", PASSWORD, a).ok);
    // And a new block notifies again.
    for _ in 0..2 {
        assert!(!attempt(&sb, "alice", BAD, a).ok);
    }
    wait_for("the second notification", || notices(&out).len() == 2);
}

#[test]
fn block_and_unblock_by_hand_and_hostile_hosts_stay_data() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("host_failure_limit=2");
    sb.create_db_dir();
    let a = "198.51.100.9";
    let o = sb.admin_ok(&["block", a, "--reason", "scanner, see ticket 7"]);
    assert!(o.contains("blocked"), "{o}");
    let h = hosts(&sb, &[]);
    let row = host(&h, a);
    assert_eq!((row["state"].as_str(), row["reason"].as_str()), (Some("blocked"), Some("admin")), "{row}");
    assert_eq!(row["unblocks_at"], Value::Null);
    assert!(sb.admin_ok(&["hosts"]).contains("admin: scanner, see ticket 7"));
    let r = attempt(&sb, "alice", PASSWORD, a);
    assert!(!r.ok && !prompted(&r), "{r:?}");
    // IPv6: blocked by its network
    sb.admin_ok(&["block", "2001:db8:9:9::1"]);
    assert!(!attempt(&sb, "alice", PASSWORD, "2001:db8:9:9::2").ok);
    let o = sb.admin_ok(&["unblock", a, "2001:db8:9:9::/64", "192.0.2.200"]);
    assert!(o.contains(&format!("{a}: unblocked")) && o.contains("2001:db8:9:9::/64: unblocked"), "{o}");
    assert!(o.contains("192.0.2.200: not blocked"), "{o}");
    assert!(attempt(&sb, "alice", PASSWORD, a).ok);
    assert!(attempt(&sb, "alice", PASSWORD, "2001:db8:9:9::2").ok);
    assert_eq!(hosts(&sb, &["--blocked"]), Vec::<Value>::new());

    // Hostile PAM_RHOST values are stored and shown as data.
    let long = "x".repeat(64 * 1024);
    let hostile = ["\x1b[31mred\x07", "../../etc/passwd", "%2e%2e%", "192.0.2.300", long.as_str(), "a,b;\"c\""];
    for h in hostile {
        for _ in 0..2 {
            assert!(!attempt(&sb, "alice", BAD, h).ok);
        }
        let r = attempt(&sb, "alice", PASSWORD, h);
        assert!(!r.ok && !prompted(&r), "{:?}: {r:?}", &h[..h.len().min(40)]);
    }
    assert!(attempt(&sb, "alice", PASSWORD, "192.0.2.30").ok);
    let list = hosts(&sb, &["--blocked"]);
    assert_eq!(list.len(), hostile.len(), "{}", list.len());
    for h in hostile {
        assert!(list.iter().any(|r| r["host"] == h), "{:?}", &h[..h.len().min(40)]);
    }
    let table = sb.admin_ok(&["hosts"]);
    let csv = sb.admin_ok(&["hosts", "--format", "csv"]);
    for text in [&table, &csv] {
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "raw control characters");
        assert!(text.contains("\\x1b[31mred\\x07"), "escaped");
    }
    // a header, the hosts unblocked above (kept, active) and the hostile ones
    assert_eq!(csv.lines().count(), 1 + 2 + hostile.len(), "{}", csv.len());
    assert!(csv.contains("\"a,b;\"\"c\"\"\""), "{csv}");
    // Nothing was written outside the hosts directory.
    let names: Vec<String> = std::fs::read_dir(sb.path().join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("useraudit.db")), "{names:?}");
    let o = sb.admin(&["block", ""]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
}

#[test]
fn a_damaged_host_file_is_answered_by_on_error() {
    if missing_tools() {
        return;
    }
    let a = "203.0.113.77";
    for (on_error, ok) in [("deny", false), ("allow", true)] {
        let sb = Sandbox::with_config("host_failure_limit=3", &format!("on_error = \"{on_error}\"\n"));
        assert!(!attempt(&sb, "alice", BAD, a).ok);
        let f = sb.path().join("state/useraudit.db.hosts").join(a);
        assert!(f.exists(), "{}", f.display());
        std::fs::write(&f, b"UAhs\x02garbage that is not a record").unwrap();
        let r = attempt(&sb, "alice", PASSWORD, a);
        assert_eq!(r.ok, ok, "on_error = {on_error}: {r:?}");
        // never read as a host with no failures: the admin says so
        let o = sb.admin(&["hosts"]);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("damaged"), "{o:?}");
        // unblock starts it afresh
        sb.admin_ok(&["unblock", a]);
        assert_eq!(host(&hosts(&sb, &[]), a)["failures"], 0);
    }
}

#[test]
fn without_host_counting_the_hosts_directory_is_never_touched() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    for _ in 0..3 {
        assert!(!attempt(&sb, "alice", BAD, "203.0.113.9").ok);
        assert!(!attempt(&sb, "nosuchuser", BAD, "203.0.113.9").ok);
    }
    assert!(attempt(&sb, "alice", PASSWORD, "203.0.113.9").ok);
    assert!(!sb.path().join("state/useraudit.db.hosts").exists());
}

// ---------------------------------------------------------- concurrency

fn drive(sb: &Sandbox, rhost: &str, args: &[&str]) -> Value {
    let o = Command::new("timeout")
        .arg("50")
        .arg(pam_drive())
        .arg("--confdir")
        .arg(sb.path().join("pam.d"))
        .args(["--service", "login", "--rhost", rhost, "--json"])
        .args(args)
        .env("LD_PRELOAD", "libnss_wrapper.so")
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .env_remove("PAM_WRAPPER")
        .output()
        .unwrap();
    assert!(o.status.success(), "pam_drive {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn eight_processes_at_once_count_every_failure_of_a_host_once() {
    if missing_tools() {
        return;
    }
    const PROCS: u64 = 8;
    const COUNT: u64 = 6;
    let attempts = PROCS * COUNT;
    let (p, c) = (PROCS.to_string(), COUNT.to_string());
    let a = "203.0.113.88";
    // With the limit equal to the number of attempts, a lost update would
    // leave the host unblocked; one more, and it must stay active.
    for (limit, blocked) in [(attempts, true), (attempts + 1, false)] {
        let sb = Sandbox::new(&format!("host_failure_limit={limit} host_failure_window=1d"));
        let s = drive(&sb, a, &["--user", "nosuchuser", "--password", BAD, "--procs", &p, "--count", &c]);
        assert_eq!(s["attempts"], attempts, "{s}");
        let list = hosts(&sb, &[]);
        let row = host(&list, a);
        assert_eq!(row["state"], if blocked { "blocked" } else { "active" }, "limit {limit}: {row}");
        if !blocked {
            assert_eq!(row["failures"], attempts, "every failure counted once: {row}");
        }
        assert_eq!(reasons(&sb.log(&["--rhost", a])), vec!["auth"; attempts as usize], "limit {limit}");
    }
    // A smaller limit: blocked at exactly N; the rest refused as host_blocked
    // or failed while the block landed, never counted twice.
    const N: u64 = 5;
    let sb = Sandbox::new(&format!("host_failure_limit={N}"));
    let s = drive(&sb, a, &["--user", "alice", "--password", BAD, "--procs", &p, "--count", &c]);
    assert_eq!(s["attempts"], attempts, "{s}");
    let log = sb.log(&["--rhost", a]);
    assert_eq!(log.len() as u64, attempts);
    let auth = reasons(&log).iter().filter(|r| *r == "auth").count() as u64;
    let refused = reasons(&log).iter().filter(|r| *r == "host_blocked").count() as u64;
    assert_eq!(auth + refused, attempts, "{:?}", reasons(&log));
    assert!(auth >= N && refused > 0, "auth {auth}, refused {refused}");
    let list = hosts(&sb, &[]);
    let row = host(&list, a);
    assert_eq!(row["state"], "blocked");
    let mut failed: Vec<&Value> = log.iter().filter(|e| e["reason"] == "auth").collect();
    failed.sort_by_key(|e| e["id"].as_i64().unwrap());
    assert!(failed.iter().any(|e| e["time"] == row["blocked_at"]), "blocked by one of the failures: {row}");
}

#[test]
fn the_report_marks_blocked_and_trusted_hosts_and_metrics_count_blocks() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::with_config("", "host_failure_limit = 2\ntrusted_hosts = [\"192.0.2.0/24\"]\n");
    for _ in 0..2 {
        assert!(!attempt(&sb, "alice", BAD, "203.0.113.5").ok);
        assert!(!attempt(&sb, "alice", BAD, "192.0.2.5").ok);
    }
    assert!(!attempt(&sb, "alice", BAD, "198.51.100.5").ok);
    let r: Value = serde_json::from_str(&sb.admin_ok(&["report", "--format", "json"])).unwrap();
    let mark = |h: &str| {
        r["top_hosts"].as_array().unwrap().iter().find(|x| x["rhost"] == h).unwrap_or_else(|| panic!("{h}: {r}"))["mark"]
            .clone()
    };
    assert_eq!(mark("203.0.113.5"), "blocked");
    assert_eq!(mark("192.0.2.5"), "trusted");
    assert_eq!(mark("198.51.100.5"), Value::Null);
    let m = sb.admin_ok(&["metrics"]);
    assert!(m.contains("\nuseraudit_blocked_hosts 1\n"), "{m}");
}

#[test]
fn sweep_removes_only_host_files_with_no_block_and_no_failure_that_counts() {
    if missing_tools() || !Path::new(FAKETIME_LIB).exists() {
        return;
    }
    // One hour's window and block time (the defaults).
    let mut sb = Sandbox::new("host_failure_limit=3");
    let (spent, lapsed, failing, blocked) = ("203.0.113.1", "203.0.113.2", "203.0.113.3", "203.0.113.4");
    assert!(!attempt(&sb, "alice", BAD, spent).ok);
    for _ in 0..3 {
        assert!(!attempt(&sb, "bob", BAD, lapsed).ok);
    }
    assert_eq!(host(&hosts(&sb, &[]), lapsed)["state"], "blocked");
    // Two hours later: the first two hold nothing that counts.
    sb.faketime = Some(format!("+{}", 2 * 3600));
    assert!(!attempt(&sb, "carol", BAD, failing).ok);
    sb.admin_ok(&["block", blocked]);
    let files = || std::fs::read_dir(sb.path().join("state/useraudit.db.hosts")).unwrap().count();
    assert_eq!(files(), 4);
    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert!(out.contains("would remove 2 host files with no block"), "{out}");
    assert_eq!(files(), 4);
    let out = sb.admin_ok(&["sweep"]);
    assert!(out.contains("removed 2 host files with no block"), "{out}");
    assert_eq!(files(), 2);
    let left: Vec<Value> = hosts(&sb, &[]);
    assert_eq!(left.len(), 2, "{left:?}");
    assert_eq!(host(&left, failing)["failures"], 1);
    assert_eq!(host(&left, blocked)["state"], "blocked");
    // Nothing more to remove; the log keeps the history.
    assert!(!sb.admin_ok(&["sweep"]).contains("host file"));
    assert!(sb.log(&["--rhost", spent]).len() == 1 && sb.log(&["--rhost", lapsed]).len() == 3);
    // A swept host is counted afresh.
    for _ in 0..3 {
        assert!(!attempt(&sb, "alice", BAD, spent).ok);
    }
    assert_eq!(host(&hosts(&sb, &[]), spent)["state"], "blocked");
}
