//! useraudit-admin as an administrator and a script use it: output that a
//! spreadsheet or a filter reads back, exit codes, the database path, and
//! accounts whose state files are damaged.

mod common;

use std::process::Output;

use common::{Sandbox, missing_tools};

const RHOST: &str = "203.0.113.9";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
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
