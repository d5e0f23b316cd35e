//! useraudit-admin as an administrator and a script use it: output that a
//! spreadsheet or a filter reads back, exit codes, the database path, and
//! accounts whose state files are damaged.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output, Stdio};

use common::{Sandbox, missing_tools, pam_wrapper_lock};

const RHOST: &str = "203.0.113.9";

/// One authentication attempt with raw bytes for the name and the items
/// (`rhost`, `ruser`), on `service`.
fn attempt(sb: &Sandbox, service: &str, user: &[u8], items: &[(&str, &[u8])]) -> bool {
    let mut cmd = Command::new("pamtester");
    for (k, v) in items {
        let mut item = k.as_bytes().to_vec();
        item.push(b'=');
        item.extend_from_slice(v);
        cmd.arg("-I").arg(OsStr::from_bytes(&item));
    }
    cmd.arg(service).arg(OsStr::from_bytes(user)).arg("authenticate");
    cmd.env("LD_PRELOAD", "libpam_wrapper.so libnss_wrapper.so")
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", sb.path().join("pam.d"))
        .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
        .env_remove("PAM_WRAPPER_DEBUGLEVEL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _one_at_a_time = pam_wrapper_lock();
    let mut child = cmd.spawn().unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(b"wrong\n");
    }
    child.wait_with_output().unwrap().status.success()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// RFC 4180 records (the log never holds a raw line break, so one per line).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    for line in text.lines() {
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars().peekable();
        let mut quoted = false;
        let mut at_start = true;
        while let Some(c) = chars.next() {
            if quoted {
                match c {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    '"' => {
                        quoted = false;
                        assert!(matches!(chars.peek(), None | Some(',')), "text after a closing quote: {line}");
                    }
                    c => cur.push(c),
                }
                continue;
            }
            match c {
                '"' if at_start => quoted = true,
                '"' => panic!("a quote inside an unquoted field: {line}"),
                ',' => {
                    fields.push(std::mem::take(&mut cur));
                    at_start = true;
                    continue;
                }
                c => cur.push(c),
            }
            at_start = false;
        }
        assert!(!quoted, "unterminated quote: {line}");
        fields.push(cur);
        records.push(fields);
    }
    records
}

// ---------------------------------------------------------------- exit codes

#[test]
fn option_values_that_cannot_be_taken_are_usage_errors() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", RHOST).ok);
    let cases: &[(&[&str], &[&str])] = &[
        (&["log", "--since", "yesterday"], &["--since", "RFC 3339", "2026-11-28", "3d"]),
        (&["log", "--until", "soon"], &["--until", "RFC 3339"]),
        (&["log", "--limit", "abc"], &["--limit", "whole number"]),
        (&["log", "--limit", "-1"], &["--limit"]),
        (&["log", "--format", "xml"], &["table", "json", "csv"]),
        (&["status", "--format", "csv"], &["table", "json"]),
        (&["log", "--failed", "--succeeded"], &[]),
    ];
    for (args, says) in cases {
        let o = sb.admin(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        for s in *says {
            assert!(err.contains(s), "{args:?} should mention {s:?}: {err}");
        }
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // Good values still work.
    assert_eq!(sb.log(&["--since", "2000-01-01", "--until", "1h", "--limit", "5"]).len(), 0);
    assert_eq!(sb.log(&["--since", "1h"]).len(), 1);
}

// ---------------------------------------------------------------- CSV

#[test]
fn csv_fields_that_a_spreadsheet_would_evaluate_are_neutralised() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", RHOST).ok);
    let hyperlink = r#"=HYPERLINK("http://evil.example/","click")"#;
    assert!(!attempt(&sb, "login", b"=cmd|' /C calc'!A0", &[("rhost", hyperlink.as_bytes()), ("ruser", b"@SUM(1+1)")]));
    assert!(!attempt(&sb, "login", b"+1+1", &[("rhost", b"-2+3"), ("ruser", b"-")]));
    assert!(!attempt(&sb, "login", b"'quoted", &[("rhost", RHOST.as_bytes())]));
    assert!(!attempt(&sb, "login", b"@x", &[("rhost", b"\t=1+1")]));

    let csv = sb.admin_ok(&["log", "--format", "csv"]);
    let records = parse_csv(&csv);
    assert_eq!(records.len(), 6, "{csv}");
    for r in &records {
        assert_eq!(r.len(), 10, "{r:?}");
        for f in r {
            assert!(!f.starts_with(['=', '+', '-', '@', '\t', '\r']), "a spreadsheet would evaluate {f:?}: {csv}");
        }
    }
    let row = |user: &str| {
        records.iter().find(|r| r[3] == user).unwrap_or_else(|| panic!("no row for {user:?}: {csv}")).clone()
    };
    let cmd = row("'=cmd|' /C calc'!A0");
    assert_eq!(cmd[5], format!("'{hyperlink}"));
    assert_eq!(cmd[6], "'@SUM(1+1)");
    let plus = row("'+1+1");
    assert_eq!((plus[5].as_str(), plus[6].as_str()), ("'-2+3", "'-"));
    // A leading quote of its own gets one more, so no two names look alike.
    row("''quoted");
    // Escaped control characters are not formulas; the escape stays as it was.
    assert_eq!(row("'@x")[5], "\\t=1+1");
    let alice = row("alice");
    assert_eq!((alice[1].ends_with('Z'), alice[2].as_str(), alice[5].as_str()), (true, "success", RHOST));

    // JSON and the table show the names as they are.
    let json = sb.log(&[]);
    assert!(json.iter().any(|e| e["user"] == "=cmd|' /C calc'!A0" && e["rhost"] == hyperlink), "{json:?}");
    let table = sb.admin_ok(&["log"]);
    assert!(table.lines().any(|l| l.contains(" +1+1 ")), "{table}");
}
