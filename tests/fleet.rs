//! The fleet store against a real PostgreSQL server that the tests start
//! themselves (Debian's `postgresql` package: a throwaway cluster made by
//! `initdb` and run by `pg_ctl` as the unprivileged `postgres` user, on a
//! Unix socket in a temporary directory, no TCP). Several simulated hosts,
//! each its own sandbox (state directory, `fleet.host`), share the cluster.
//! Needs root (to run the server as `postgres`); skipped otherwise, unless
//! CI is set. The cluster and the hosts are made by `common::pg`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::pg::*;
use common::{PASSWORD, Sandbox};
use serde_json::Value;

#[test]
fn every_entry_arrives_once_also_across_an_outage_and_repeats() {
    let hosts = ["h1", "h2", "h3"];
    let Some((_one, pg)) = fleet_test(&hosts) else { return };
    let sbs: Vec<Sandbox> = hosts.iter().map(|h| host_sandbox(&pg, h, h, "")).collect();
    for (i, sb) in sbs.iter().enumerate() {
        for _ in 0..=i {
            assert!(sb.login("bob", PASSWORD, RHOST).ok);
        }
        assert!(!sb.login("carol", "wrong", RHOST).ok);
    }
    for sb in &sbs {
        sb.admin_ok(&["fleet", "sync"]);
        // A repeated sync sends nothing again.
        sb.admin_ok(&["fleet", "sync"]);
    }
    for (sb, h) in sbs.iter().zip(hosts) {
        let n = pg.count(&format!("SELECT count(*) FROM fleet_log WHERE host = '{h}'"));
        assert_eq!(n as usize, local_count(sb), "{h}");
    }
    // The fleet view: every host's rows, each with its host; filters work.
    let all = fleet_log(&sbs[0], &[]);
    assert_eq!(all.len(), sbs.iter().map(local_count).sum::<usize>());
    for h in hosts {
        assert!(all.iter().any(|e| e["host"] == h), "{h} missing from {all:?}");
    }
    let carol = fleet_log(&sbs[1], &["--user", "carol", "--failed"]);
    assert_eq!(carol.len(), 3);
    assert!(carol.iter().all(|e| e["user"] == "carol" && e["outcome"] == "failure"));
    let table = sbs[0].admin_ok(&["log", "--fleet"]);
    assert!(table.starts_with("HOST"), "{table}");
    let st: Value = serde_json::from_str(&sbs[0].admin_ok(&["status", "--fleet", "--format", "json"])).unwrap();
    assert!(st.as_array().unwrap().iter().any(|r| r["user"] == "carol" && r["host"].is_string()), "{st}");

    // PostgreSQL goes away: logins go on locally, entries wait.
    pg.stop();
    for sb in &sbs {
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
        assert!(!sb.login("bob", "wrong", RHOST).ok);
        let o = sb.admin(&["fleet", "sync"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("cannot connect"), "{o:?}");
        let o = sb.admin(&["fleet", "status", "--format", "json"]);
        assert_eq!(o.status.code(), Some(1));
        let s: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(s["reachable"], false);
        assert_eq!(s["waiting"], 2);
    }
    // The host's own limit (10) keeps working meanwhile.
    for _ in 0..10 {
        assert!(!sbs[0].login("erin", "wrong", RHOST).ok);
    }
    assert_eq!(sbs[0].status("erin")["reason"], "login_failure_limit");
    assert!(!sbs[0].login("erin", PASSWORD, RHOST).ok);
    pg.start();
    for sb in &sbs {
        sb.admin_ok(&["fleet", "sync"]);
        sb.admin_ok(&["fleet", "sync"]);
        let s: Value = serde_json::from_str(&sb.admin_ok(&["fleet", "status", "--format", "json"])).unwrap();
        assert_eq!(s["reachable"], true);
        assert_eq!(s["waiting"], 0);
    }
    for (sb, h) in sbs.iter().zip(hosts) {
        let n = pg.count(&format!("SELECT count(*) FROM fleet_log WHERE host = '{h}'"));
        let distinct = pg.count(&format!("SELECT count(DISTINCT local_id) FROM fleet_log WHERE host = '{h}'"));
        assert_eq!(n as usize, local_count(sb), "{h}");
        assert_eq!(n, distinct);
    }
}

#[test]
fn daemons_carry_every_entry_once_across_a_30_s_outage_and_local_lockout_holds_meanwhile() {
    let hosts = ["h1", "h2", "h3"];
    let Some((_one, pg)) = fleet_test(&hosts) else { return };
    let sbs: Vec<Sandbox> = hosts.iter().map(|h| host_sandbox(&pg, h, h, "")).collect();
    for sb in &sbs {
        // The database exists before its daemon starts.
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
    }
    let _daemons: Vec<Daemon> = sbs.iter().map(Daemon::start).collect();
    let mut c = pg.client("postgres");
    for (sb, h) in sbs.iter().zip(hosts) {
        eventually("the daemon pushes before the outage", || fleet_rows(&mut c, h).total == 1);
        assert_eq!(local_count(sb), 1);
    }
    drop(c);

    // PostgreSQL goes away for 30 s of logins on every host: successes and
    // failures of several names, an unknown name among them.
    pg.stop();
    let t0 = Instant::now();
    let mut round = 0;
    while t0.elapsed() < Duration::from_secs(30) {
        for sb in &sbs {
            assert!(sb.login("bob", PASSWORD, RHOST).ok);
            // carol's failures never reach the host's limit (10): a
            // success every 4th round resets them.
            let carol_ok = round % 4 == 3;
            assert_eq!(sb.login("carol", if carol_ok { PASSWORD } else { "wrong" }, RHOST).ok, carol_ok);
            assert!(!sb.login("nobody", "wrong", RHOST).ok);
            // erin only fails: the host's own limit locks her at the 10th.
            assert!(!sb.login("erin", "wrong", RHOST).ok);
        }
        if round == 0 {
            for sb in &sbs {
                let o = sb.admin(&["fleet", "status", "--format", "json"]);
                assert_eq!(o.status.code(), Some(1), "{o:?}");
                let s: Value = serde_json::from_slice(&o.stdout).unwrap();
                assert_eq!(s["reachable"], false, "{s}");
                assert!(s["waiting"].as_i64().unwrap() >= 4, "{s}");
            }
        }
        if round == 10 {
            // Local lockout works without PostgreSQL: erin is locked on
            // every host by its own limit, and refused the right password.
            for sb in &sbs {
                let st = sb.status("erin");
                assert_eq!(st["reason"], "login_failure_limit", "{st}");
                assert!(!sb.login("erin", PASSWORD, RHOST).ok);
            }
        }
        round += 1;
    }
    assert!(round > 10, "only {round} rounds of logins in 30 s");
    for sb in &sbs {
        assert_eq!(sb.status("erin")["reason"], "login_failure_limit");
    }

    // PostgreSQL is back: every daemon pushes what waited, each entry once.
    pg.start();
    let mut c = pg.client("postgres");
    for (sb, h) in sbs.iter().zip(hosts) {
        let local = local_count(sb) as i64;
        assert!(local > 4 * round as i64, "{h}: {local} entries");
        eventually("the entries that waited arrive", || fleet_rows(&mut c, h).total >= local);
        let f = fleet_rows(&mut c, h);
        assert_eq!(f, FleetRows { total: local, distinct: local, generations: 1, max_id: local }, "{h}");
        let s: Value = serde_json::from_str(&sb.admin_ok(&["fleet", "status", "--format", "json"])).unwrap();
        assert_eq!(s["reachable"], true, "{s}");
        assert_eq!(s["waiting"], 0, "{s}");
    }
}

/// One host's rows in the fleet log: how many, how many distinct
/// (generation, local id), how many generations, the highest local id.
#[derive(Debug, PartialEq, Eq)]
struct FleetRows {
    total: i64,
    distinct: i64,
    generations: i64,
    max_id: i64,
}

fn fleet_rows(c: &mut postgres::Client, host: &str) -> FleetRows {
    let r = c
        .query_one(
            "SELECT count(*), count(DISTINCT (generation, local_id)), count(DISTINCT generation),
                    coalesce(max(local_id), 0)
             FROM fleet_log WHERE host = $1",
            &[&host],
        )
        .unwrap();
    FleetRows { total: r.get(0), distinct: r.get(1), generations: r.get(2), max_id: r.get(3) }
}

#[test]
fn a_daemon_killed_in_the_middle_of_a_push_10_times_loses_and_duplicates_nothing() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    let sb = host_sandbox(&pg, "h1", "h1", "");
    // Make the database, then fill it with many entries: their push takes
    // 16 batches (one transaction each), of which each of the 10 rounds
    // below takes one, as a rule: the kill follows the commit it waits for
    // within milliseconds, far less than a batch of 5,000 rows takes.
    assert!(sb.login("bob", PASSWORD, RHOST).ok);
    sb.admin_ok(&["status"]);
    let n = 16 * useraudit_admin::fleet::BATCH;
    bulk_fill(&sb, n);
    let total = local_count_all(&sb) as i64;
    assert_eq!(total as usize, n + 1);
    let mut c = pg.client("postgres");
    let mut in_fleet = || fleet_rows(&mut c, "h1").total;
    // Each round starts a daemon, waits until its push has committed more
    // than the fleet log held before, and kills it at once (SIGKILL): in
    // the middle of its push, between two batches or inside one (which the
    // server then rolls back), or after a commit and before the write of
    // the mark (then the next daemon sends that batch again).
    let mut before = in_fleet();
    for round in 0..10 {
        let mut d = Daemon::start(&sb);
        let until = Instant::now() + Duration::from_secs(30);
        while in_fleet() <= before {
            assert!(Instant::now() < until, "round {round}: the push never went on past {before} of {total}");
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = d.0.kill(); // SIGKILL
        let _ = d.0.wait();
        // The server has dropped the killed daemon's connection, rolling
        // back a batch it had not committed: the count is settled.
        eventually("the killed daemon's connection is gone", || {
            pg.count("SELECT count(*) FROM pg_stat_activity WHERE usename = 'h1'") == 0
        });
        let after = in_fleet();
        // It grew, and was not complete: the kill came mid-push.
        assert!(before < after && after < total, "round {round}: {before} -> {after} of {total}");
        before = after;
    }
    // A last daemon completes the push: every entry once.
    {
        let _d = Daemon::start(&sb);
        eventually("the last daemon pushes every entry", || in_fleet() >= total);
    }
    let full = FleetRows { total, distinct: total, generations: 1, max_id: total };
    let mut c = pg.client("postgres");
    assert_eq!(fleet_rows(&mut c, "h1"), full);
    let out = sb.admin_ok(&["fleet", "sync"]);
    assert!(out.contains("pushed 0 entries"), "{out}");
    // A kill after a commit and before the mark is written, made certain:
    // the mark goes back; the next round sends those rows again and
    // PostgreSQL keeps one of each.
    let mark_path = useraudit_admin::fleet::mark_path(&sb.db);
    let mark = std::fs::read_to_string(&mark_path).unwrap();
    let back = total - 7_000;
    assert!(mark.contains(&format!("pushed={total}\n")), "{mark}");
    std::fs::write(&mark_path, mark.replace(&format!("pushed={total}\n"), &format!("pushed={back}\n"))).unwrap();
    let out = sb.admin_ok(&["fleet", "sync"]);
    assert!(out.contains("pushed 0 entries"), "{out}");
    assert_eq!(fleet_rows(&mut c, "h1"), full);
    assert!(std::fs::read_to_string(&mark_path).unwrap().contains(&format!("pushed={total}\n")));
}

/// Add `n` entries to the local log at once, in one statement: the push
/// reads the log table only, and the store's row-by-row writes (with the
/// metrics counters) would take seconds.
fn bulk_fill(sb: &Sandbox, n: usize) {
    let c = rusqlite::Connection::open(&sb.db).unwrap();
    c.execute(
        "WITH RECURSIVE i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k + 1 < ?1)
         INSERT INTO log (time, success, user, service, rhost)
         SELECT 1000000 + k, k % 3 = 0, CAST('bulk' AS BLOB), CAST('sshd' AS BLOB), ?2 FROM i",
        rusqlite::params![n as i64, RHOST.as_bytes()],
    )
    .unwrap();
}

fn local_count_all(sb: &Sandbox) -> usize {
    use useraudit_admin::store::{OpenOptions, Store};
    let s = Store::open(&sb.db, OpenOptions { create: false, require_root_owned: false }).unwrap();
    s.count().unwrap() as usize
}

#[test]
fn failures_on_several_hosts_lock_the_name_everywhere_until_activate_fleet() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2", "h3"]) else { return };
    let a = host_sandbox(&pg, "h1", "h1", "");
    let b = host_sandbox(&pg, "h2", "h2", "");
    let c = host_sandbox(&pg, "h3", "h3", "");
    // 3 failures on each of two hosts: below each host's own limit (10),
    // above the fleet's (5).
    for sb in [&a, &b] {
        for _ in 0..3 {
            assert!(!sb.login("alice", "wrong", RHOST).ok);
        }
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
    }
    // Two rounds: the first carries every host's entries, the second
    // brings the decision back to the hosts that pushed first.
    for _ in 0..2 {
        for sb in [&a, &b, &c] {
            sb.admin_ok(&["fleet", "sync"]);
        }
    }
    for sb in [&a, &b, &c] {
        let s = sb.status("alice");
        assert_eq!(s["reason"], "fleet_failure_limit", "{s}");
        // The module refuses the right password now.
        assert!(!sb.login("alice", PASSWORD, RHOST).ok);
        // bob is not touched.
        assert_eq!(sb.status("bob")["state"], "active");
    }
    let o = a.admin(&["status", "--fleet", "alice", "--format", "json"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st[0]["state"], "locked", "{st}");
    assert_eq!(st[0]["failures"], 6, "{st}");

    // A host's role cannot act for the fleet.
    let o = a.admin(&["activate", "--fleet", "alice"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"), "{o:?}");
    assert!(!b.login("alice", PASSWORD, RHOST).ok);

    // The fleet administrator's role can: every host applies it at its sync.
    let admin = host_sandbox(&pg, "fadmin", "h1", "");
    let o = admin.admin(&["activate", "--fleet", "alice"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("recorded for the fleet"), "{o:?}");
    for sb in [&a, &b, &c] {
        sb.admin_ok(&["fleet", "sync"]);
        assert_eq!(sb.status("alice")["state"], "active");
        assert!(sb.login("alice", PASSWORD, RHOST).ok);
    }
    // And it stays lifted: the failures before it no longer count.
    for sb in [&a, &b, &c] {
        sb.admin_ok(&["fleet", "sync"]);
        assert_eq!(sb.status("alice")["state"], "active");
    }
}

#[test]
fn lock_fleet_disables_the_name_on_every_host() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2"]) else { return };
    let a = host_sandbox(&pg, "h1", "h1", "");
    let b = host_sandbox(&pg, "h2", "h2", "");
    for sb in [&a, &b] {
        assert!(sb.login("dave", PASSWORD, RHOST).ok);
        sb.admin_ok(&["fleet", "sync"]);
    }
    let admin = host_sandbox(&pg, "fadmin", "console", "");
    assert!(admin.login("dave", PASSWORD, RHOST).ok);
    // A name that is no account on the administrator's own host is still
    // recorded for the fleet.
    let out = admin.admin_ok(&["lock", "--fleet", "zed"]);
    assert!(out.contains("zed: lock recorded for the fleet") && out.contains("not an account on this host"), "{out}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_action WHERE \"user\" = 'zed'"), 1);
    admin.admin_ok(&["lock", "--fleet", "dave", "--reason", "left"]);
    for sb in [&a, &b] {
        sb.admin_ok(&["fleet", "sync"]);
        assert_eq!(sb.status("dave")["state"], "disabled");
        assert!(!sb.login("dave", PASSWORD, RHOST).ok);
    }
}

#[test]
fn a_host_role_cannot_change_history_or_record_admin_actions() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    let sb = host_sandbox(&pg, "h1", "h1", "");
    assert!(!sb.login("erin", "wrong", RHOST).ok);
    sb.admin_ok(&["fleet", "sync"]);
    let mut c = pg.client("h1");
    for sql in [
        "DELETE FROM fleet_log",
        "UPDATE fleet_log SET success = true",
        "TRUNCATE fleet_log",
        "INSERT INTO fleet_action (time, \"user\", action) VALUES (1, 'erin', 'activate')",
        "DELETE FROM fleet_action",
        // Rows name the role that added them; a host cannot say otherwise.
        "INSERT INTO fleet_log (host, local_id, time, success, \"user\", added_by) VALUES ('h9', 1, 1, false, 'x', 'h9')",
    ] {
        let e = c.batch_execute(sql).unwrap_err();
        let msg = e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
        assert!(msg.contains("permission denied"), "{sql}: {e}");
    }
    // `check` shows the table, with the limit it falls back to.
    let check = sb.admin_ok(&["check"]);
    assert!(check.contains("fleet.host = \"h1\"") && check.contains("fleet.failure_limit = 5"), "{check}");
    // It may add entries and read.
    let n: i64 = c.query_one("SELECT count(*) FROM fleet_log", &[]).unwrap().get(0);
    assert!(n >= 1);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'erin'"), 1);
}

#[test]
fn daemons_spread_a_spray_lock_to_every_host_and_activate_fleet_lifts_it() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2", "h3"]) else { return };
    let hosts: Vec<Sandbox> = ["h1", "h2", "h3"].iter().map(|h| host_sandbox(&pg, h, h, "")).collect();
    for sb in &hosts {
        // The database exists before its daemon starts.
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
    }
    let _daemons: Vec<Daemon> = hosts.iter().map(Daemon::start).collect();
    // 2 failures of alice on each of 3 hosts: the fleet limit is 5.
    for sb in &hosts {
        for _ in 0..2 {
            assert!(!sb.login("alice", "wrong", RHOST).ok);
        }
    }
    for sb in &hosts {
        eventually("alice is locked on every host", || sb.status("alice")["reason"] == "fleet_failure_limit");
        assert!(!sb.login("alice", PASSWORD, RHOST).ok);
        // Also for a login that checks only the account (a public key).
        let r = sb.pamtester("sshd", "alice", "", &[("rhost", RHOST)], &["acct_mgmt"]);
        assert!(!r.ok, "{r:?}");
    }
    let admin = host_sandbox(&pg, "fadmin", "console", "");
    admin.admin_ok(&["activate", "--fleet", "alice"]);
    for sb in &hosts {
        eventually("alice is active again", || sb.status("alice")["state"] == "active");
        assert!(sb.login("alice", PASSWORD, RHOST).ok);
    }
    // Every entry arrives once.
    for (sb, h) in hosts.iter().zip(["h1", "h2", "h3"]) {
        let local = local_count(sb);
        eventually("every entry is in the fleet log", || {
            pg.count(&format!("SELECT count(*) FROM fleet_log WHERE host = '{h}'")) as usize == local
        });
    }
}

#[test]
fn tls_with_a_self_signed_certificate_connects_with_sslmode_require() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    pg.stop();
    let d = pg.dir.path();
    let (crt, key) = (d.join("server.crt"), d.join("server.key"));
    let o = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Command::new("chown").arg("postgres:postgres").arg(&crt).arg(&key).status().unwrap().success());
    // TCP only with TLS: a connection without it is refused.
    std::fs::write(
        d.join("data/pg_hba.conf"),
        "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    pg.start_with(&format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        crt.display(),
        key.display()
    ));
    let url =
        |mode: &str| format!("host=127.0.0.1 port={port} dbname=useraudit user=h1 sslmode={mode} connect_timeout=5");
    let host = |mode: &str| {
        let conf = format!("[fleet]\nurl = \"{}\"\nhost = \"h1\"\n", url(mode));
        let sb = Sandbox::with_config("", &conf);
        sb.create_db_dir();
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
        sb
    };
    let sb = host("require");
    let out = sb.admin_ok(&["fleet", "sync"]);
    assert!(out.contains("pushed 1 entry"), "{out}");
    // Without TLS the server refuses; verify-full refuses a certificate no
    // authority signed.
    let o = host("disable").admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no encryption"), "{o:?}");
    let o = host("verify-full").admin(&["fleet", "sync"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("certificate verify failed"), "{o:?}");
    let mut c = postgres::Client::connect(
        &format!("host={} port={port} dbname=useraudit user=postgres", pg.sock().display()),
        postgres::NoTls,
    )
    .unwrap();
    let n: i64 = c.query_one("SELECT count(*) FROM fleet_log", &[]).unwrap().get(0);
    assert_eq!(n, 1);
}

#[test]
fn a_database_moved_aside_and_replaced_still_pushes_every_entry() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    let sb = host_sandbox(&pg, "h1", "h1", "");
    for _ in 0..3 {
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
    }
    sb.admin_ok(&["fleet", "sync"]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log"), 3);
    // A damaged database is moved aside: the new one's ids start again at 1.
    let aside = sb.path().join("old.db");
    std::fs::rename(&sb.db, &aside).unwrap();
    for ext in ["-wal", "-shm"] {
        let mut p = sb.db.clone().into_os_string();
        p.push(ext);
        let _ = std::fs::remove_file(p);
    }
    assert!(sb.login("carol", PASSWORD, RHOST).ok);
    assert!(sb.login("carol", PASSWORD, RHOST).ok);
    sb.admin_ok(&["fleet", "sync"]);
    sb.admin_ok(&["fleet", "sync"]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log"), 5);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'carol'"), 2);
}

#[test]
fn entries_after_retention_emptied_the_log_still_arrive_and_metrics_show_the_sync() {
    let Some((_one, pg)) = fleet_test(&["h1"]) else { return };
    let mut sb = host_sandbox(&pg, "h1", "h1", "retention_days = 1");
    let metric = |sb: &Sandbox, name: &str| -> Option<String> {
        let text = sb.admin_ok(&["metrics"]);
        text.lines().find(|l| l.starts_with(&format!("{name} "))).map(|l| l[name.len() + 1..].to_string())
    };
    for _ in 0..2 {
        assert!(sb.login("bob", PASSWORD, RHOST).ok);
    }
    assert_eq!(metric(&sb, "useraudit_fleet_waiting_entries").as_deref(), Some("2"));
    assert_eq!(metric(&sb, "useraudit_fleet_last_sync_timestamp_seconds"), None);
    assert!(sb.admin_ok(&["fleet", "sync"]).contains("pushed 2 entries"));
    assert_eq!(metric(&sb, "useraudit_fleet_waiting_entries").as_deref(), Some("0"));
    assert!(metric(&sb, "useraudit_fleet_last_sync_timestamp_seconds").is_some());
    // Three days later retention has deleted every entry, the newest too;
    // the next entries must not take their ids again.
    sb.faketime = Some(format!("+{}", 3 * 86_400));
    assert!(sb.admin_ok(&["sweep"]).contains("deleted 2 entries"));
    assert!(sb.login("carol", PASSWORD, RHOST).ok);
    let out = sb.admin_ok(&["fleet", "sync"]);
    assert!(out.contains("pushed 1 entry"), "{out}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE \"user\" = 'carol'"), 1);
    assert_eq!(pg.count("SELECT count(DISTINCT local_id) FROM fleet_log"), 3);
}

#[test]
fn a_host_without_a_mark_takes_the_fleets_standing_and_never_replays_an_old_activate() {
    let Some((_one, pg)) = fleet_test(&["h1", "h2"]) else { return };
    let h1 = host_sandbox(&pg, "h1", "h1", "");
    assert!(h1.login("bob", PASSWORD, RHOST).ok);
    let admin = host_sandbox(&pg, "fadmin", "console", "");
    admin.admin_ok(&["activate", "--fleet", "carol"]);
    admin.admin_ok(&["lock", "--fleet", "dave"]);
    admin.admin_ok(&["lock", "--fleet", "erin"]);
    admin.admin_ok(&["activate", "--fleet", "erin"]);
    h1.admin_ok(&["fleet", "sync"]);
    assert_eq!(h1.status("dave")["state"], "disabled");
    // carol is locked here by this host's administrator, after the
    // fleet's activate of her; then the sync mark is lost.
    assert!(h1.login("carol", PASSWORD, RHOST).ok);
    h1.admin_ok(&["lock", "carol"]);
    assert_eq!(h1.status("carol")["reason"], "admin");
    let mark = {
        let mut p = h1.db.clone().into_os_string();
        p.push(".fleet");
        std::path::PathBuf::from(p)
    };
    std::fs::remove_file(&mark).unwrap();
    h1.admin_ok(&["fleet", "sync"]);
    // Nothing was pushed twice.
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE host = 'h1'") as usize, local_count(&h1));
    assert_eq!(h1.status("carol")["reason"], "admin", "an old activate --fleet was applied again");
    assert!(!h1.login("carol", PASSWORD, RHOST).ok);
    assert_eq!(h1.status("dave")["state"], "disabled");
    // A host new to the fleet: the latest action of each name.
    let h2 = host_sandbox(&pg, "h2", "h2", "");
    assert!(h2.login("bob", PASSWORD, RHOST).ok);
    let out = h2.admin_ok(&["fleet", "sync"]);
    assert!(out.contains("applied 1 admin action"), "{out}");
    assert_eq!(h2.status("dave")["state"], "disabled");
    assert!(h2.login("erin", PASSWORD, RHOST).ok);
    assert!(std::fs::read_to_string(&mark).unwrap().contains("action=4"));
}
