//! Hostile names and hosts, through real libpam and the real
//! `useraudit-admin`: huge, control characters, newlines, bytes that are not
//! UTF-8, SQL and shell syntax, terminal escapes, look-alikes of a real
//! account. They are stored exactly (capped), kept apart, shown escaped in
//! every output format, and cannot forge syslog lines.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`.

mod common;

use common::faults::*;
use common::*;
use serde_json::Value;

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
    assert_eq!(longest, useraudit_core::text::FIELD_CAP as i64);
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
