//! useraudit-admin as an administrator and a script use it: output that a
//! spreadsheet or a filter reads back, exit codes, the database path, and
//! accounts whose state files are damaged.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{Sandbox, missing_tools, pam_wrapper_lock};
use serde_json::Value;

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

/// useraudit-admin with raw byte arguments, against the sandbox's
/// configuration and database.
fn admin_bytes(sb: &Sandbox, args: &[&[u8]]) -> Output {
    let mut cmd = sb.admin_command(&[]);
    for a in args {
        cmd.arg(OsStr::from_bytes(a));
    }
    cmd.output().unwrap()
}

/// useraudit-admin with the sandbox's users, configuration and `args`
/// only (no `--db`), run in `cwd`.
fn admin_plain(sb: &Sandbox, cwd: &Path, args: &[&str]) -> Output {
    sb.admin_users().arg("--conf").arg(&sb.conf).args(args).current_dir(cwd).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// How many log entries `log --format json` with these filter arguments
/// returns (the command must succeed).
fn count(sb: &Sandbox, filter: &[&[u8]]) -> usize {
    let mut args: Vec<&[u8]> = vec![b"log", b"--format", b"json"];
    args.extend_from_slice(filter);
    let o = admin_bytes(sb, &args);
    assert_eq!(o.status.code(), Some(0), "{filter:?}: {}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v.as_array().unwrap().len()
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

/// The cells of a table (columns start where the header's names start).
fn table_cells(table: &str) -> Vec<Vec<String>> {
    let mut lines = table.lines();
    let header: Vec<char> = lines.next().unwrap().chars().collect();
    let mut starts = vec![0];
    for i in 1..header.len() {
        if header[i] != ' ' && header[i - 1] == ' ' && i >= 2 && header[i - 2] == ' ' {
            starts.push(i);
        }
    }
    lines
        .map(|l| {
            let c: Vec<char> = l.chars().collect();
            (0..starts.len())
                .map(|k| {
                    let end = starts.get(k + 1).copied().unwrap_or(c.len()).min(c.len());
                    c[starts[k].min(end)..end].iter().collect::<String>().trim_end().to_string()
                })
                .collect()
        })
        .collect()
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

// ---------------------------------------------------------------- filters

#[test]
fn filters_accept_what_the_output_shows() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", RHOST).ok);
    assert!(!attempt(&sb, "login", b"\xff\xfe", &[("rhost", b"host\twith\ttabs")]));
    assert!(!attempt(&sb, "sshd", b"evil\nuser", &[("rhost", RHOST.as_bytes())]));
    assert!(!attempt(&sb, "login", b"back\\slash", &[("rhost", b"\xc3")]));
    assert!(!attempt(&sb, "login", b"back\\\\slash", &[("rhost", RHOST.as_bytes())]));
    assert!(!attempt(&sb, "login", b" spaced ", &[("rhost", RHOST.as_bytes())]));
    assert_eq!(count(&sb, &[]), 6);

    // Written the way the table shows them.
    assert_eq!(count(&sb, &[b"--user", br"\xff\xfe"]), 1);
    assert_eq!(count(&sb, &[b"--user", br"evil\nuser"]), 1);
    assert_eq!(count(&sb, &[b"--user", br"back\\slash"]), 1);
    assert_eq!(count(&sb, &[b"--user", br"back\\\\slash"]), 1);
    assert_eq!(count(&sb, &[b"--user", br"\x20spaced\x20"]), 1);
    assert_eq!(count(&sb, &[b"--rhost", br"host\twith\ttabs"]), 1);
    assert_eq!(count(&sb, &[b"--rhost", br"\xc3"]), 1);
    assert_eq!(count(&sb, &[b"--service", br"ss\x68d"]), 1);
    assert_eq!(count(&sb, &[b"--user", br"\u{65}vil\nuser"]), 1);
    // And as the raw bytes.
    assert_eq!(count(&sb, &[b"--user", b"\xff\xfe"]), 1);
    assert_eq!(count(&sb, &[b"--user", b"evil\nuser"]), 1);
    assert_eq!(count(&sb, &[b"--rhost", b"host\twith\ttabs"]), 1);
    assert_eq!(count(&sb, &[b"--user", b"alice", b"--rhost", RHOST.as_bytes(), b"--service", b"login"]), 1);

    // Every name, host and service the table shows selects its rows.
    let table = sb.admin_ok(&["log"]);
    let rows = table_cells(&table);
    assert_eq!(rows.len(), 6, "{table}");
    for r in &rows {
        for (col, opt) in [(2, "--user"), (3, "--service"), (4, "--rhost")] {
            let n = rows.iter().filter(|o| o[col] == r[col]).count();
            assert_eq!(count(&sb, &[opt.as_bytes(), r[col].as_bytes()]), n, "{opt} {:?}\n{table}", r[col]);
        }
    }
    // So does every one that JSON shows.
    for e in sb.log(&[]) {
        let u = e["user"].as_str().unwrap();
        assert!(count(&sb, &[b"--user", u.as_bytes()]) >= 1, "{u:?}");
    }

    // A backslash that starts no escape is a usage error, not an empty answer.
    for bad in [&br"back\slash"[..], br"\x4", br"\u{110000}", br"trailing\"] {
        let o = admin_bytes(&sb, &[b"log", b"--user", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("\\\\"), "says how to write a backslash: {}", stderr(&o));
    }
}

// ---------------------------------------------------------------- --db

#[test]
fn database_path_must_be_absolute_and_its_directory_must_exist() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    let tmp = sb.path();
    // relative: a usage error, nothing created where the command ran
    let o = admin_plain(&sb, tmp, &["--db", "relative.db", "log"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("absolute"), "{}", stderr(&o));
    assert!(!tmp.join("relative.db").exists() && !tmp.join("relative.db.accounts").exists());

    // a directory that does not exist: named, never created
    let typo = tmp.join("typo/dir/x.db");
    for cmd in [
        &["log"][..],
        &["status"],
        &["status", "alice"],
        &["lock", "alice"],
        &["activate", "alice"],
        &["sweep"],
        &["check"],
    ] {
        let mut args = vec!["--db", typo.to_str().unwrap()];
        args.extend_from_slice(cmd);
        let o = admin_plain(&sb, tmp, &args);
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}", tmp.join("typo/dir").display())) && err.contains("does not exist"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!tmp.join("typo").exists(), "{cmd:?} created a directory");
    }
    // the same for the configuration's `database`
    std::fs::write(&sb.conf, format!("database = \"{}\"\n", typo.display())).unwrap();
    let o = admin_plain(&sb, tmp, &["log"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!tmp.join("typo").exists());
    std::fs::write(&sb.conf, "").unwrap();

    // an existing directory: the database and the state directory are made there
    std::fs::create_dir(tmp.join("fresh")).unwrap();
    let db = tmp.join("fresh/x.db");
    let o = admin_plain(&sb, tmp, &["--db", db.to_str().unwrap(), "log"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(db.exists() && tmp.join("fresh/x.db.accounts").is_dir());
}

// ---------------------------------------------------------------- status

#[test]
fn status_shows_every_account_it_can_and_reports_the_others() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    for u in ["alice", "bob", "carol"] {
        assert!(sb.login(u, "secret", RHOST).ok);
    }
    let bob_file = sb.path().join("state/useraudit.db.accounts/bob");
    assert!(bob_file.exists());
    std::fs::write(&bob_file, b"garbage, not an account record").unwrap();

    let o = sb.admin(&["status"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let users: Vec<String> = table_cells(&out).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(users, ["alice", "carol"], "{out}");
    let err = stderr(&o);
    assert!(err.contains(&bob_file.display().to_string()), "{err}");

    let o = sb.admin(&["status", "alice", "bob", "nosuch", "carol", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let users: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["user"].as_str().unwrap()).collect();
    assert_eq!(users, ["alice", "carol"]);
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| !l.contains("warning")).collect();
    assert_eq!(lines.len(), 2, "one line per problem: {err}");
    assert!(lines[0].contains(&bob_file.display().to_string()), "{err}");
    assert!(lines[1].contains("no such account: nosuch"), "{err}");

    // One account that cannot be read is an error, not "not allowed".
    let o = sb.admin(&["status", "bob"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Without problems nothing changes.
    assert_eq!(sb.admin(&["status", "alice", "carol"]).status.code(), Some(0));
}

// ---------------------------------------------------------------- sweep

#[test]
fn sweep_fails_when_the_spool_cannot_be_merged() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", RHOST).ok);
    assert!(sb.admin_ok(&["sweep"]).contains("0 account(s) disabled"));
    // A corrupt database: every merge fails, the spool grows.
    for suffix in ["", "-wal", "-shm"] {
        let p = format!("{}{suffix}", sb.db.display());
        let _ = std::fs::remove_file(&p);
    }
    std::fs::write(&sb.db, vec![0x5a; 8192]).unwrap();
    assert!(sb.login("bob", "secret", RHOST).ok);
    let o = sb.admin(&["sweep"]);
    assert_eq!(o.status.code(), Some(1), "retention_days = 0; stdout {}; stderr {}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("spool") && err.contains(&sb.db.display().to_string()), "{err}");
    let o = sb.admin(&["sweep", "--dry-run"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // Commands that only touch accounts still work (with a warning).
    let o = sb.admin(&["status", "alice"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning"), "{}", stderr(&o));
}

/// A process killed while creating a state file leaves its temporary file
/// (`.new-` and 16 hex digits) in the state directory. `sweep` removes
/// those older than an hour, from the account and the host state
/// directories, and says how many; `--dry-run` only counts them. A newer
/// one (a creation may be in progress), other names and the state files
/// themselves stay. A state directory that cannot be used fails the sweep,
/// naming it, after the rest is done.
#[test]
fn sweep_removes_stale_temporary_state_files() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::with_config("", "account_expiry_days = 30\nlogin_failure_limit = 5\nhost_failure_limit = 5\n");
    // alice's state file and the host's
    assert!(!sb.login("alice", "wrong", RHOST).ok);
    let accounts = Path::new(&format!("{}.accounts", sb.db.display())).to_path_buf();
    let hosts = Path::new(&format!("{}.hosts", sb.db.display())).to_path_buf();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    let make = |dir: &Path, name: &str, stale: bool| {
        let f = std::fs::File::create(dir.join(name)).unwrap();
        if stale {
            f.set_modified(two_hours_ago).unwrap();
        }
        dir.join(name)
    };
    let stale = [make(&accounts, ".new-0123456789abcdef", true), make(&hosts, ".new-00000000000000aa", true)];
    let kept = [
        make(&accounts, ".new-fedcba9876543210", false),
        make(&accounts, ".new-0123", true),
        make(&hosts, ".new-00000000000000bb", false),
    ];
    let all_there = |what: &str| {
        for p in stale.iter().chain(&kept) {
            assert!(p.exists(), "{what}: {}", p.display());
        }
    };

    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "0 account(s) would disable",
            "would remove 2 stale temporary state files (left by interrupted writes, older than an hour)"
        ],
        "{out}"
    );
    all_there("a dry run removes nothing");

    let out = sb.admin_ok(&["sweep"]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "0 account(s) disabled",
            "removed 2 stale temporary state files (left by interrupted writes, older than an hour)"
        ],
        "{out}"
    );
    for p in &stale {
        assert!(!p.exists(), "removed: {}", p.display());
    }
    for p in &kept {
        assert!(p.exists(), "kept: {}", p.display());
    }
    assert_eq!(sb.status("alice")["failures"], 1, "alice's state is intact");
    let o = sb.admin(&["hosts", "--format", "json"]);
    let h: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&o)));
    assert_eq!((h[0]["host"].as_str(), h[0]["failures"].as_u64()), (Some(RHOST), Some(1)), "the host's is too: {h}");
    // Nothing left to remove: nothing said.
    assert_eq!(sb.admin_ok(&["sweep"]).lines().collect::<Vec<_>>(), ["0 account(s) disabled"]);

    // A host state directory the sweep must not trust (not root's): the
    // account directory is still swept, then the sweep fails naming it.
    if common::faults::euid() == 0 {
        let again = make(&accounts, ".new-0123456789abcdef", true);
        std::os::unix::fs::chown(&hosts, Some(65534), None).unwrap();
        let o = sb.admin(&["sweep"]);
        std::os::unix::fs::chown(&hosts, Some(0), None).unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stdout(&o).contains("removed 1 stale temporary state file ("), "{}", stdout(&o));
        assert!(!again.exists());
        let err = stderr(&o);
        // One line for each thing left undone, each naming the directory.
        let lines: Vec<&str> = err.trim_end().lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        for (line, what) in lines.iter().zip(["host files were not swept", "stale temporary files were not removed"]) {
            assert!(line.contains(what) && line.contains(&hosts.display().to_string()), "{err}");
        }
    }
}

#[test]
fn status_json_carries_the_note_given_when_locking() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("alice", "secret", RHOST).ok);
    sb.admin_ok(&["lock", "alice", "--reason", "left the company \"today\""]);
    sb.admin_ok(&["lock", "bob"]);
    let alice = sb.status("alice");
    assert_eq!(alice["note"], "left the company \"today\"", "{alice}");
    assert_eq!(alice["reason"], "admin");
    assert_eq!(sb.status("bob")["note"], Value::Null);
    assert_eq!(sb.status("carol")["note"], Value::Null);
}

// ---------------------------------------------------------------- wording

#[test]
fn counts_and_columns_are_worded_for_what_they_hold() {
    if missing_tools() {
        return;
    }
    let mut sb = Sandbox::new("");
    std::fs::write(
        &sb.conf,
        "password_expiry_days = 1\npassword_change_source = \"useraudit\"\naccount_expiry_days = 1\n",
    )
    .unwrap();
    // One day left on a password changed today.
    let r = sb.pamtester("login", "alice", "secret\nnew-pw-1\nnew-pw-1\n", &[("rhost", RHOST)], &["chauthtok"]);
    assert!(r.ok, "{r:?}");
    let table = sb.admin_ok(&["status", "alice"]);
    assert!(table.contains("(1 day left)"), "{table}");

    // One failure.
    assert!(!sb.login("bob", "wrong", RHOST).ok);
    let out = sb.admin_ok(&["activate", "bob"]);
    assert_eq!(out.trim(), "bob: activated (was active, 1 failure)");

    // The column of a disabled account's time says so.
    sb.admin_ok(&["lock", "carol"]);
    let o = sb.admin(&["status", "carol"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let table = stdout(&o);
    let header = table.lines().next().unwrap();
    assert!(!header.contains("LOCKED SINCE"), "{header}");
    assert!(header.contains("LOCKED/DISABLED AT"), "{header}");

    // account_expiry_days = 1: "more than 1 day".
    assert!(sb.login("dave", "secret", RHOST).ok);
    sb.faketime = Some(format!("+{}", 3 * 86_400));
    let out = sb.admin_ok(&["sweep", "--dry-run"]);
    assert!(out.contains("more than 1 day)"), "{out}");
    assert!(!out.contains("1 days"), "{out}");
}
