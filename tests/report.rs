//! `useraudit-admin report` and `useraudit-admin metrics`, through the real
//! CLI: a log made of real logins through the module and of entries with
//! known times put in through the store's own API; the report's totals,
//! top lists, new-host logins, chart and JSON; the metrics checked by
//! promtool, and their counters across a sweep with retention.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{PASSWORD, Sandbox, missing_tools};
use serde_json::Value;
use useraudit_admin::store::{NewEntry, OpenOptions, Store};
use useraudit_core::policy::LogReason;
use useraudit_core::text::{DAY_MICROS, parse_time};

/// useraudit-admin in the sandbox with an environment of its own.
fn admin_env(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = sb.admin_command(args);
    cmd.env_remove("LC_ALL").env_remove("LC_CTYPE").env_remove("LANG").env_remove("COLUMNS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

fn store(sb: &Sandbox) -> Store {
    Store::open(&sb.db, OpenOptions { create: true, require_root_owned: false }).unwrap()
}

fn t(s: &str) -> i64 {
    parse_time(s, 0).unwrap()
}

fn entry<'a>(time: i64, success: bool, user: &'a [u8], rhost: &'a [u8]) -> NewEntry<'a> {
    NewEntry {
        time,
        success,
        user,
        service: Some(b"sshd"),
        rhost: Some(rhost),
        reason: (!success).then_some(LogReason::Auth),
        ..Default::default()
    }
}

/// A known log: real logins now (alice from a host she used before the
/// span and from one she never used; a name that is no account; carol
/// locked by the failure limit), and older entries put in with known
/// times. The report gives exactly its totals, top lists, locked accounts
/// and new-host logins, in the table (escaped) and in JSON.
#[test]
fn known_log_gives_known_totals_tops_and_new_hosts() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=3");
    sb.create_db_dir();
    // Before the span (10 days ago): alice logged in from .50; a failure
    // of bob from .66 (outside the span, counted nowhere).
    let old = useraudit_core::text::now_micros() - 10 * DAY_MICROS;
    {
        let s = store(&sb);
        s.insert(&entry(old, true, b"alice", b"203.0.113.50")).unwrap();
        s.insert(&entry(old, false, b"bob", b"198.51.100.66")).unwrap();
        // a hostile name and host, within the span
        s.insert(&entry(old + 9 * DAY_MICROS, false, b"ev\x1b[31mil\n", b"h\x1b]0;x\x07")).unwrap();
    }
    assert!(sb.login("alice", PASSWORD, "203.0.113.50").ok, "a host alice used before");
    assert!(sb.login("alice", PASSWORD, "203.0.113.77").ok, "a host new for alice");
    assert!(sb.login("alice", PASSWORD, "203.0.113.77").ok, "the same again");
    for _ in 0..3 {
        assert!(!sb.login("carol", "wrong", "198.51.100.7").ok);
    }
    for _ in 0..2 {
        assert!(!sb.login("nosuchuser", "wrong", "198.51.100.7").ok);
    }
    assert!(!sb.login("bob", "wrong", "198.51.100.8").ok);

    let json: Value =
        serde_json::from_str(&ok(admin_env(&sb, &["report", "--format", "json"], &[]), "report")).unwrap();
    let totals = &json["totals"];
    assert_eq!(totals["attempts"], 10, "{json:#}");
    assert_eq!(totals["successes"], 3);
    assert_eq!(totals["failures"], 7);
    assert_eq!(totals["unknown_names"], 2, "nosuchuser and the hostile name");
    assert_eq!(totals["remote_hosts"], 5, "{json:#}");
    assert_eq!(json["unit"], "day");

    let hosts: Vec<(String, u64, u64)> = json["top_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["rhost"].as_str().unwrap().to_string(),
                h["failures"].as_u64().unwrap(),
                h["successes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        hosts,
        vec![("198.51.100.7".into(), 5, 0), ("198.51.100.8".into(), 1, 0), ("h\u{1b}]0;x\u{7}".into(), 1, 0),]
    );
    assert!(json["top_hosts"][0]["mark"].is_null(), "no host feature yet");
    let names: Vec<(String, u64, bool)> = json["top_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (n["user"].as_str().unwrap().to_string(), n["failures"].as_u64().unwrap(), n["account"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("carol".into(), 3, true),
            ("nosuchuser".into(), 2, false),
            ("bob".into(), 1, true),
            ("ev\u{1b}[31mil\n".into(), 1, false),
        ]
    );
    let accounts = json["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "{json:#}");
    assert_eq!(accounts[0]["user"], "carol");
    assert_eq!(accounts[0]["state"], "locked");
    assert_eq!(accounts[0]["reason"], "login_failure_limit");
    let new = json["new_hosts"].as_array().unwrap();
    assert_eq!(new.len(), 1, "{json:#}");
    assert_eq!(
        (new[0]["user"].as_str(), new[0]["rhost"].as_str(), new[0]["logins"].as_u64()),
        (Some("alice"), Some("203.0.113.77"), Some(2))
    );
    assert_eq!(json["new_hosts_total"], 1);

    // The table: the same data, hostile bytes escaped.
    let table = ok(admin_env(&sb, &["report"], &[("LANG", "C.UTF-8")]), "report");
    assert!(!table.contains('\u{1b}') && !table.contains('\u{7}'), "{table}");
    assert!(table.contains("ev\\x1b[31mil\\n"), "{table}");
    assert!(table.contains("h\\x1b]0;x\\x07"), "{table}");
    let row = |name: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap()
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(|c| c.trim().to_string())
            .collect()
    };
    assert_eq!(row("nosuchuser"), ["nosuchuser", "2", "0", "no (not an account)"], "{table}");
    assert_eq!(row("ev\\x1b[31mil\\n"), ["ev\\x1b[31mil\\n", "1", "0", "no (not an account)"], "{table}");
    assert_eq!(row("bob")[3], "yes", "{table}");
    let locked = table.split("Accounts locked or disabled now\n").nth(1).unwrap().lines().nth(1).unwrap();
    assert!(locked.starts_with("carol  locked  login_failure_limit  "), "{table}");
    let new_line = table.lines().find(|l| l.contains("203.0.113.77")).unwrap();
    assert!(new_line.contains("alice") && new_line.ends_with(" 2"), "{table}");
    assert!(table.contains("  attempts       10\n"), "{table}");

    // A span that starts before alice's first login from .50 makes none new.
    let json: Value =
        serde_json::from_str(&ok(admin_env(&sb, &["report", "--since", "11d", "--format", "json"], &[]), "report"))
            .unwrap();
    assert_eq!(json["totals"]["attempts"], 12);
    let new: Vec<&str> = json["new_hosts"].as_array().unwrap().iter().map(|n| n["rhost"].as_str().unwrap()).collect();
    assert_eq!(new, vec!["203.0.113.77", "203.0.113.50"], "both new within this span, newest first");
}

/// Entries at known times: the chart's buckets (per day; per hour for a
/// span up to 48 h) and its exact rendering at width 80, with block
/// characters in a UTF-8 locale and ASCII otherwise or with --ascii.
#[test]
fn chart_buckets_and_rendering() {
    let sb = Sandbox::new("");
    sb.create_db_dir();
    {
        let mut s = store(&sb);
        let mut e = Vec::new();
        for i in 0..40 {
            e.push(entry(t("2025-01-01T10:00:00Z") + i, i % 4 == 0, b"alice", b"203.0.113.9"));
        }
        for i in 0..3 {
            e.push(entry(t("2025-01-03T23:59:59Z") - i, true, b"bob", b"203.0.113.9"));
        }
        e.push(entry(t("2025-01-04T00:00:00Z"), false, b"bob", b"203.0.113.9"));
        s.bulk_insert(e).unwrap();
    }
    let span = ["report", "--since", "2025-01-01", "--until", "2025-01-04"];
    let json: Value =
        serde_json::from_str(&ok(admin_env(&sb, &[&span[..], &["--format", "json"]].concat(), &[]), "json")).unwrap();
    let buckets: Vec<(String, u64, u64)> = json["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (b["start"].as_str().unwrap().into(), b["failures"].as_u64().unwrap(), b["successes"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(
        buckets,
        vec![
            ("2025-01-01T00:00:00Z".into(), 30, 10),
            ("2025-01-02T00:00:00Z".into(), 0, 0),
            ("2025-01-03T00:00:00Z".into(), 0, 3),
        ],
        "the entry at --until is outside"
    );

    let chart = |out: &str| -> Vec<String> {
        let lines: Vec<&str> = out.lines().collect();
        let at = lines.iter().position(|l| l.starts_with("Attempts per")).unwrap();
        lines[at..].iter().take_while(|l| !l.is_empty()).map(|l| l.to_string()).collect()
    };
    let utf8 = chart(&ok(admin_env(&sb, &span, &[("LANG", "en_US.UTF-8"), ("COLUMNS", "80")]), "utf8"));
    // width 80: a 10-character date, 2 spaces, a bar of 50, 2 spaces,
    // "30 failed  10 ok" (16); the longest bucket (40) fills the bar: 30
    // failures are 37.5 cells, rounded to 38.
    let expected_utf8 = vec![
        "Attempts per day (UTC): █ failed, ░ succeeded; the longest bar is 40 attempts".to_string(),
        format!("2025-01-01  {}{}  30 failed  10 ok", "█".repeat(38), "░".repeat(12)),
        format!("2025-01-02  {}   0 failed   0 ok", " ".repeat(50)),
        format!("2025-01-03  {}{}   0 failed   3 ok", "░".repeat(4), " ".repeat(46)),
    ];
    assert_eq!(utf8, expected_utf8, "\n{}", utf8.join("\n"));
    for l in &utf8[1..] {
        assert_eq!(l.chars().count(), 80, "{l}");
    }
    let ascii_of =
        |v: &[String]| -> Vec<String> { v.iter().map(|l| l.replace('█', "#").replace('░', "=")).collect() };
    for env in [
        &[("LANG", "C"), ("COLUMNS", "80")][..],
        &[("COLUMNS", "80")],
        &[("LC_ALL", "POSIX"), ("LANG", "C.UTF-8"), ("COLUMNS", "80")],
    ] {
        let ascii = chart(&ok(admin_env(&sb, &span, env), "ascii"));
        assert_eq!(ascii, ascii_of(&utf8), "{env:?}");
        assert!(ascii.iter().all(|l| l.is_ascii()));
    }
    let forced = chart(&ok(
        admin_env(&sb, &[&span[..], &["--ascii"]].concat(), &[("LANG", "C.UTF-8"), ("COLUMNS", "80")]),
        "--ascii",
    ));
    assert_eq!(forced, ascii_of(&utf8));
    // Not a terminal, no COLUMNS: 80.
    let plain = chart(&ok(admin_env(&sb, &span, &[("LANG", "C.UTF-8")]), "no COLUMNS"));
    assert_eq!(plain, utf8);
    // Wider: the bars grow.
    let wide = chart(&ok(admin_env(&sb, &span, &[("LANG", "C.UTF-8"), ("COLUMNS", "120")]), "wide"));
    assert!(wide[1..].iter().all(|l| l.chars().count() == 120), "{wide:?}");

    // Up to 48 hours: per hour.
    let hours = ["report", "--since", "2025-01-01T09:00:00Z", "--until", "2025-01-01T12:00:00Z", "--format", "json"];
    let json: Value = serde_json::from_str(&ok(admin_env(&sb, &hours, &[]), "hours")).unwrap();
    assert_eq!(json["unit"], "hour");
    let counts: Vec<u64> = json["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["failures"].as_u64().unwrap() + b["successes"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, vec![0, 40, 0]);

    let e = admin_env(&sb, &["report", "--since", "2025-01-04", "--until", "2025-01-01"], &[]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("must be before"));
    let e = admin_env(&sb, &["report", "--since", "1800-01-01"], &[]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("too long for the chart"), "{e:?}");
}

/// promtool, from Debian's prometheus package: required under CI.
fn promtool() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/promtool");
    if p.exists() {
        return Some(p);
    }
    if std::env::var_os("CI").is_some() {
        panic!("promtool is missing: run `make deps` (Debian package prometheus)");
    }
    eprintln!("SKIP: promtool is missing (make deps installs the prometheus package)");
    None
}

/// `promtool check rules FILE`, or `promtool check metrics < FILE`.
fn promtool_check(promtool: &Path, args: &[&str], file: &Path) {
    let mut cmd = Command::new(promtool);
    cmd.args(args);
    if args.contains(&"metrics") {
        cmd.stdin(std::fs::File::open(file).unwrap());
    } else {
        cmd.arg(file);
    }
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "promtool {args:?}: {}{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

/// A series' value in the text format.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')).map(|v| v.parse().unwrap()))
}

/// The metrics pass `promtool check metrics` (with hostile service names
/// among them), `--output` replaces the file with mode 0644, and the
/// counters do not go down when a sweep deletes entries for retention_days.
#[test]
fn metrics_pass_promtool_and_counters_survive_retention() {
    if missing_tools() {
        return;
    }
    let Some(promtool) = promtool() else { return };
    let sb = Sandbox::with_config("login_failure_limit=3", "retention_days = 30\n");
    sb.create_db_dir();
    {
        let s = store(&sb);
        let old = useraudit_core::text::now_micros() - 40 * DAY_MICROS;
        for i in 0..5 {
            s.insert(&entry(old + i, false, b"alice", b"203.0.113.9")).unwrap();
        }
        let hostile = NewEntry { service: Some(b"s\"v\\c\n\xff{x=\"1\"}"), ..entry(old, true, b"bob", b"h") };
        s.insert(&hostile).unwrap();
    }
    for _ in 0..3 {
        assert!(!sb.login("carol", "wrong", "198.51.100.7").ok);
    }
    assert!(sb.login("alice", PASSWORD, "203.0.113.9").ok);

    let file = sb.path().join("useraudit.prom");
    let file_s = file.to_str().unwrap();
    ok(admin_env(&sb, &["metrics", "--output", file_s], &[]), "metrics");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644);
    promtool_check(&promtool, &["check", "metrics"], &file);
    let before = std::fs::read_to_string(&file).unwrap();
    let failures = "useraudit_attempts_total{outcome=\"failure\",service=\"sshd\",reason=\"auth\"}";
    assert_eq!(sample(&before, failures), Some(5.0), "{before}");
    let login_fail = "useraudit_attempts_total{outcome=\"failure\",service=\"login\",reason=\"auth\"}";
    assert_eq!(sample(&before, login_fail), Some(3.0), "{before}");
    assert_eq!(
        sample(&before, "useraudit_attempts_total{outcome=\"success\",service=\"login\",reason=\"\"}"),
        Some(1.0)
    );
    assert!(before.contains("service=\"s\\\"v\\\\\\\\c\\\\n\\\\xff{x=\\\"1\\\"}\""), "{before}");
    assert_eq!(sample(&before, "useraudit_accounts{state=\"locked\"}"), Some(1.0));
    assert_eq!(sample(&before, "useraudit_spool_backlog_entries"), Some(0.0));
    assert_eq!(sample(&before, "useraudit_merge_ok"), Some(1.0));
    assert!(sample(&before, "useraudit_last_merge_timestamp_seconds").is_some());
    assert!(before.contains("# TYPE useraudit_attempts_total counter\n"));

    // A login waiting in the spool shows in the backlog (no merge: the
    // backlog read by itself).
    assert!(!sb.login("bob", "wrong", "198.51.100.8").ok);
    let (bytes, entries) = useraudit_core::spool::backlog(&sb.db).unwrap();
    assert!(bytes > 0);
    assert_eq!(entries, 1);

    let swept = ok(admin_env(&sb, &["sweep"], &[]), "sweep");
    assert!(swept.contains("deleted 6 entries"), "{swept}");
    let after = ok(admin_env(&sb, &["metrics"], &[]), "metrics");
    assert_eq!(sample(&after, failures), Some(5.0), "retention does not lower a counter:\n{after}");
    assert_eq!(sample(&after, login_fail), Some(4.0), "bob's failure merged since");
    let counters = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| l.starts_with("useraudit_attempts_total{"))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    };
    for (k, v) in counters(&before) {
        let now = counters(&after).into_iter().find(|(k2, _)| *k2 == k).map(|(_, v)| v);
        assert!(now.is_some_and(|n| n >= v), "{k} went from {v} to {now:?}");
    }
    std::fs::write(&file, &after).unwrap();
    promtool_check(&promtool, &["check", "metrics"], &file);
}

/// The example alerting rules shipped with the package are valid.
#[test]
fn example_alerting_rules_pass_promtool() {
    let Some(promtool) = promtool() else { return };
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus/useraudit-rules.yml");
    promtool_check(&promtool, &["check", "rules"], &rules);
    let text = std::fs::read_to_string(&rules).unwrap();
    for metric in
        ["useraudit_attempts_total", "useraudit_spool_backlog_entries", "useraudit_last_merge_timestamp_seconds"]
    {
        assert!(text.contains(metric), "the rules use {metric}");
    }
}
