//! Remote hosts counted across the fleet, against a real PostgreSQL server
//! that the tests start (see `common::pg`): with `host_failure_limit` set,
//! the failures from one remote host on all hosts count together and block
//! it on every host (by `fleet sync` rounds and by the daemons), also for
//! IPv6 addresses of one network; trusted networks are never blocked;
//! `block --fleet` and `unblock --fleet` need the fleet administrator's
//! role; `hosts --fleet` shows the fleet's view. Needs root; skipped
//! otherwise, unless CI is set.

mod common;

use common::pg::*;
use common::{PASSWORD, Pam, Sandbox};
use serde_json::Value;

const SPRAY: &str = "203.0.113.50";
const ELSEWHERE: &str = "198.51.100.1";
const HOSTS: [&str; 3] = ["h1", "h2", "h3"];
/// Each host's own limit; the spray makes 2 failures on each host, 6 in all.
const LIMIT: &str = "host_failure_limit = 5\n";

fn hosts(sb: &Sandbox, extra: &[&str]) -> Vec<Value> {
    let mut a = vec!["hosts", "--format", "json"];
    a.extend_from_slice(extra);
    let v: Value = serde_json::from_str(&sb.admin_ok(&a)).unwrap();
    v.as_array().unwrap().clone()
}

/// The row of one remote host in `hosts` (or `hosts --fleet`), if any.
fn row(sb: &Sandbox, key: &str, extra: &[&str]) -> Option<Value> {
    hosts(sb, extra).into_iter().find(|r| r["host"] == key)
}

fn state(sb: &Sandbox, key: &str) -> (String, String) {
    match row(sb, key, &[]) {
        None => ("-".into(), "-".into()),
        Some(r) => (r["state"].as_str().unwrap_or("-").into(), r["reason"].as_str().unwrap_or("-").into()),
    }
}

fn prompted(r: &Pam) -> bool {
    r.shown().contains("Password")
}

/// The account stack alone, as sshd runs it for a public-key login.
fn key_login(sb: &Sandbox, user: &str, rhost: &str) -> Pam {
    sb.pamtester("sshd", user, "", &[("rhost", rhost)], &["acct_mgmt"])
}

/// Two failed logins from `rhost` on each host, under names that differ per
/// host (the name lockout stays out of it; a name that is no account counts
/// against the host too).
fn spray(sbs: &[Sandbox], rhosts: &[&str]) {
    let names = ["alice", "bob", "carol", "dave", "erin", "nobody-here"];
    for (i, sb) in sbs.iter().enumerate() {
        for j in 0..2 {
            let rhost = rhosts[(2 * i + j) % rhosts.len()];
            let r = sb.login(names[(2 * i + j) % names.len()], "wrong", rhost);
            assert!(!r.ok && prompted(&r), "{r:?}");
        }
    }
}

fn sync_all(sbs: &[&Sandbox]) -> String {
    sbs.iter().map(|sb| sb.admin_ok(&["fleet", "sync"])).collect()
}

/// The module refuses the host before any password, and at the account
/// stage (public keys); another host still gets in.
fn assert_refused(sb: &Sandbox, rhost: &str) {
    let r = sb.login("alice", PASSWORD, rhost);
    assert!(!r.ok && !prompted(&r), "{rhost} was asked for a password: {r:?}");
    let r = key_login(sb, "bob", rhost);
    assert!(!r.ok, "{r:?}");
    let log = sb.log(&["--rhost", rhost, "--limit", "1"]);
    assert_eq!(log[0]["reason"], "host_blocked", "{log:?}");
    assert!(sb.login("alice", PASSWORD, ELSEWHERE).ok);
}

#[test]
fn a_spray_over_three_hosts_blocks_the_address_on_every_host() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    let sbs: Vec<Sandbox> = HOSTS.iter().map(|h| host_sandbox(&pg, h, h, LIMIT)).collect();
    spray(&sbs, &[SPRAY]);
    for sb in &sbs {
        // Below each host's own limit.
        assert_eq!(state(sb, SPRAY).0, "active");
    }
    // Two rounds: the first carries every host's entries, the second brings
    // the decision back to the hosts that pushed first.
    let said = sync_all(&sbs.iter().collect::<Vec<_>>()) + &sync_all(&sbs.iter().collect::<Vec<_>>());
    assert_eq!(said.matches(&format!("hosts blocked by the fleet: {SPRAY}")).count(), 3, "{said}");
    for sb in &sbs {
        let r = row(sb, SPRAY, &[]).unwrap();
        assert_eq!((r["state"].as_str(), r["reason"].as_str()), (Some("blocked"), Some("fleet_host_failure_limit")));
        // The local block time: from the failure that reached the limit.
        assert!(r["blocked_at"].is_string() && r["unblocks_at"].is_string(), "{r}");
        assert_refused(sb, SPRAY);
    }
    // Refused attempts are not failures: the fleet does not block again.
    let said = sync_all(&sbs.iter().collect::<Vec<_>>());
    assert!(said.contains("hosts blocked by the fleet: none") && !said.contains(SPRAY), "{said}");

    // The fleet's view: the remote host under "host", as `hosts` has it;
    // where it was last seen under "last_seen_on".
    let v = row(&sbs[0], SPRAY, &["--fleet"]).unwrap();
    assert_eq!((v["state"].as_str(), v["reason"].as_str()), (Some("blocked"), Some("fleet_host_failure_limit")), "{v}");
    assert!(HOSTS.contains(&v["last_seen_on"].as_str().unwrap()), "{v}");
    for k in ["failures", "last_failure", "blocked_at", "unblocks_at", "last_seen", "note"] {
        assert!(v.get(k).is_some(), "{k} missing: {v}");
    }
    let blocked = hosts(&sbs[1], &["--fleet", "--blocked"]);
    assert_eq!(blocked.len(), 1, "{blocked:?}");
    let table = sbs[2].admin_ok(&["hosts", "--fleet"]);
    assert!(table.starts_with("HOST") && table.contains("SEEN ON") && table.contains(SPRAY), "{table}");
    let csv = sbs[2].admin_ok(&["hosts", "--fleet", "--format", "csv"]);
    assert!(csv.starts_with("host,state,reason,failures,") && csv.contains("last_seen_on"), "{csv}");

    // A local unblock keeps the host unblocked here: the fleet's failures
    // before it no longer count on this host.
    let out = sbs[1].admin_ok(&["unblock", SPRAY]);
    assert!(out.contains("unblocked"), "{out}");
    sync_all(&sbs.iter().collect::<Vec<_>>());
    assert_eq!(state(&sbs[1], SPRAY).0, "active");
    assert!(sbs[1].login("alice", PASSWORD, SPRAY).ok);
    assert_eq!(state(&sbs[0], SPRAY).0, "blocked");
    // The fleet's view is the fleet's: still blocked.
    assert_eq!(row(&sbs[1], SPRAY, &["--fleet"]).unwrap()["state"], "blocked");
}

#[test]
fn a_trusted_network_is_never_blocked_by_the_fleet() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    let trusting = format!("{LIMIT}trusted_hosts = [\"203.0.113.0/24\"]\n");
    let sbs = [
        host_sandbox(&pg, "h1", "h1", LIMIT),
        host_sandbox(&pg, "h2", "h2", LIMIT),
        host_sandbox(&pg, "h3", "h3", &trusting),
    ];
    spray(&sbs, &[SPRAY]);
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    for sb in &sbs[..2] {
        assert_eq!(state(sb, SPRAY), ("blocked".into(), "fleet_host_failure_limit".into()));
    }
    // h3 trusts the network: no block, no file, and its logins go on.
    assert_eq!(state(&sbs[2], SPRAY).0, "-");
    assert!(sbs[2].login("alice", PASSWORD, SPRAY).ok);
    assert!(key_login(&sbs[2], "bob", SPRAY).ok);
    // Nor by hand for the fleet: recorded, and h3 leaves it alone.
    let admin = host_sandbox(&pg, "fadmin", "console", &trusting);
    let out = admin.admin_ok(&["block", "--fleet", "203.0.113.77"]);
    assert!(out.contains("block recorded for the fleet") && out.contains("in trusted_hosts here"), "{out}");
    assert_eq!(state(&admin, "203.0.113.77").0, "-");
    sync_all(&sbs.iter().collect::<Vec<_>>());
    assert_eq!(state(&sbs[0], "203.0.113.77"), ("blocked".into(), "admin".into()));
    assert_eq!(state(&sbs[2], "203.0.113.77").0, "-");
    assert!(sbs[2].login("alice", PASSWORD, "203.0.113.77").ok);
}

#[test]
fn block_and_unblock_fleet_need_the_fleet_administrator_and_reach_every_host() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    let sbs: Vec<Sandbox> = HOSTS.iter().map(|h| host_sandbox(&pg, h, h, LIMIT)).collect();
    let (scanner, net) = ("192.0.2.66", "2001:db8:7:7::1");
    for sb in &sbs {
        assert!(sb.login("alice", PASSWORD, ELSEWHERE).ok);
    }
    // A host's role cannot act for the fleet; nothing is applied here either.
    for args in [&["block", "--fleet", scanner][..], &["unblock", "--fleet", scanner][..]] {
        let o = sbs[0].admin(args);
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("permission denied"), "{o:?}");
    }
    assert_eq!(state(&sbs[0], scanner).0, "-");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_action"), 0);

    // The fleet administrator's role can; an IPv6 address stands for its
    // network, as for `block`.
    let admin = host_sandbox(&pg, "fadmin", "console", LIMIT);
    let out = admin.admin_ok(&["block", "--fleet", scanner, "--reason", "scanner, ticket 9"]);
    assert!(out.contains(&format!("{scanner}: block recorded for the fleet")) && out.contains("blocked"), "{out}");
    assert_eq!(state(&admin, scanner), ("blocked".into(), "admin".into()));
    admin.admin_ok(&["block", "--fleet", net]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_action WHERE \"user\" = '2001:db8:7:7::/64'"), 1);
    // And a spray that the fleet's count blocks.
    spray(&sbs, &[SPRAY]);
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    for sb in &sbs {
        let r = row(sb, scanner, &[]).unwrap();
        assert_eq!((r["reason"].as_str(), r["note"].as_str()), (Some("admin"), Some("scanner, ticket 9")), "{r}");
        assert_eq!(r["unblocks_at"], Value::Null);
        assert_refused(sb, scanner);
        assert_refused(sb, "2001:db8:7:7::42");
        assert_eq!(state(sb, SPRAY).0, "blocked");
    }
    let v = row(&sbs[0], scanner, &["--fleet"]).unwrap();
    assert_eq!((v["reason"].as_str(), v["note"].as_str()), (Some("admin"), Some("scanner, ticket 9")), "{v}");
    assert_eq!(row(&sbs[0], "2001:db8:7:7::/64", &["--fleet"]).unwrap()["state"], "blocked");

    // unblock --fleet lifts both kinds everywhere, and resets the fleet's
    // count of the host: the failures before it never block it again.
    let out = admin.admin_ok(&["unblock", "--fleet", scanner, net, SPRAY]);
    assert!(out.contains(&format!("{SPRAY}: unblock recorded for the fleet")), "{out}");
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    for sb in &sbs {
        for h in [scanner, "2001:db8:7:7::/64", SPRAY] {
            assert_eq!(state(sb, h).0, "active", "{h}");
        }
        assert!(sb.login("alice", PASSWORD, SPRAY).ok);
        assert!(sb.login("alice", PASSWORD, "2001:db8:7:7::42").ok);
    }
    // One more failure from the spraying address: 1 counted, not 7.
    assert!(!sbs[0].login("alice", "wrong", SPRAY).ok);
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    let v = row(&sbs[2], SPRAY, &["--fleet"]).unwrap();
    assert_eq!((v["state"].as_str(), v["failures"].as_u64()), (Some("active"), Some(1)), "{v}");
    assert_eq!(v["last_seen_on"], "h1", "{v}");
    for sb in &sbs {
        assert_eq!(state(sb, SPRAY).0, "active");
    }
    assert!(hosts(&sbs[1], &["--fleet", "--blocked"]).is_empty());
}

#[test]
fn an_ipv6_spray_from_one_network_counts_as_one_host() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    let sbs: Vec<Sandbox> = HOSTS.iter().map(|h| host_sandbox(&pg, h, h, LIMIT)).collect();
    let addrs = ["2001:db8:5:5::1", "2001:db8:5:5::2", "2001:db8:5:5:a::3", "2001:db8:5:5::4", "2001:db8:5:5::5"];
    spray(&sbs, &addrs);
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    let key = "2001:db8:5:5::/64";
    // Pushed under the key each host counts the address under.
    assert_eq!(pg.count(&format!("SELECT count(*) FROM fleet_log WHERE rhost_key = '{key}'")), 6);
    for sb in &sbs {
        assert_eq!(state(sb, key), ("blocked".into(), "fleet_host_failure_limit".into()));
        assert_refused(sb, "2001:db8:5:5:ffff::9");
        // Another network is another host.
        assert!(sb.login("alice", PASSWORD, "2001:db8:5:6::1").ok);
    }
    let v = row(&sbs[0], key, &["--fleet"]).unwrap();
    assert_eq!(v["state"], "blocked", "{v}");
}

#[test]
fn entries_pushed_before_the_schema_had_host_keys_still_count() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    // The schema as it was before remote hosts were counted.
    let mut c = pg.client("postgres");
    c.batch_execute("ALTER TABLE fleet_log DROP COLUMN rhost_key").unwrap();
    let sbs: Vec<Sandbox> = HOSTS.iter().map(|h| host_sandbox(&pg, h, h, LIMIT)).collect();
    spray(&sbs, &[SPRAY]);
    // Pushed without keys; nothing is blocked by the fleet yet.
    let said = sync_all(&sbs.iter().collect::<Vec<_>>());
    assert!(said.contains("pushed 2 entries") && !said.contains(SPRAY), "{said}");
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log"), 6);
    let o = sbs[0].admin(&["hosts", "--fleet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("fleet init"), "{o:?}");
    // `fleet init` migrates; the old rows count under their remote host.
    let init = host_sandbox(&pg, "postgres", "init", "");
    init.admin_ok(&["fleet", "init"]);
    assert_eq!(pg.count("SELECT count(*) FROM fleet_log WHERE rhost_key IS NULL"), 6);
    assert_eq!(pg.count("SELECT count(*) FROM useraudit_meta WHERE key = 'schema' AND value = '2'"), 1);
    for _ in 0..2 {
        sync_all(&sbs.iter().collect::<Vec<_>>());
    }
    for sb in &sbs {
        assert_eq!(state(sb, SPRAY), ("blocked".into(), "fleet_host_failure_limit".into()));
    }
}

#[test]
fn daemons_block_a_spraying_address_on_every_host_and_unblock_fleet_lifts_it() {
    let Some((_one, pg)) = fleet_test(&HOSTS) else { return };
    let sbs: Vec<Sandbox> = HOSTS.iter().map(|h| host_sandbox(&pg, h, h, LIMIT)).collect();
    for sb in &sbs {
        // The database exists before its daemon starts.
        assert!(sb.login("bob", PASSWORD, ELSEWHERE).ok);
    }
    let _daemons: Vec<Daemon> = sbs.iter().map(Daemon::start).collect();
    spray(&sbs, &[SPRAY]);
    for sb in &sbs {
        eventually("the address is blocked on every host", || state(sb, SPRAY).0 == "blocked");
        assert_eq!(state(sb, SPRAY).1, "fleet_host_failure_limit");
        assert_refused(sb, SPRAY);
    }
    let admin = host_sandbox(&pg, "fadmin", "console", LIMIT);
    admin.admin_ok(&["unblock", "--fleet", SPRAY]);
    for sb in &sbs {
        eventually("the address is unblocked on every host", || state(sb, SPRAY).0 == "active");
        assert!(sb.login("alice", PASSWORD, SPRAY).ok);
    }
}
