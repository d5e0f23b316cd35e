//! Faults in the SQLite database, through real libpam and the real
//! `useraudit-admin`: a file that is not a database, damaged pages, a cut
//! short file, a database locked by another process, a schema version no
//! release wrote (and the current one, which opens unchanged). Logins never
//! open the database and do not notice; `useraudit-admin` reports the
//! fault, naming the file, and loses nothing that was spooled meanwhile.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`.

mod common;

use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use serde_json::Value;
use useraudit_core::spool;

/// A file that is not a database where the database should be: logins do
/// not notice; `log` and `check` fail naming it and keep the spool; `status`
/// and `activate` work on the account state with a warning; once the
/// administrator moves the file aside, the next command starts a new
/// database holding every attempt made meanwhile. The file is left alone.
#[test]
fn database_file_not_a_database() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    std::fs::create_dir(sb.db.parent().unwrap()).unwrap();
    chmod(sb.db.parent().unwrap(), 0o700);
    let junk: Vec<u8> = (0..16384u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(&sb.db, &junk).unwrap();
    chmod(&sb.db, 0o600);
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    for cmd in ["log", "check"] {
        assert_admin_fails(&sb, &[cmd], &[&db, "not a database"]);
    }
    // The account state is not in the database: it can still be shown and
    // changed, with a warning that the log is incomplete.
    let warned = |o: &std::process::Output| {
        let e = String::from_utf8_lossy(&o.stderr);
        e.contains("warning: the log spool was not merged") && e.contains(&db) && e.contains("not a database")
    };
    let st = sb.admin(&["status", "carol"]);
    assert_eq!(st.status.code(), Some(3), "carol is locked: {st:?}");
    assert!(warned(&st), "{st:?}");
    let act = sb.admin(&["activate", "carol"]);
    assert!(act.status.success() && String::from_utf8_lossy(&act.stdout).contains("carol: activated"), "{act:?}");
    assert!(warned(&act), "{act:?}");
    assert_eq!(sb.admin(&["status", "carol"]).status.code(), Some(0));
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    assert_eq!(std::fs::read(&sb.db).unwrap(), junk, "the file is left alone");
    let aside = sb.path().join("useraudit.db.broken");
    std::fs::rename(&sb.db, &aside).unwrap();
    remove_wal(&sb.db);
    assert_log_has(&sb, &made, 0);
    assert_eq!(std::fs::read(&aside).unwrap(), junk);
}

/// Keep page 1 (header and schema), overwrite every later page: each table
/// and index is garbage. Logins do not notice; `log` fails naming the
/// database; commands that work on the account state go on with a warning;
/// after the administrator restores a backup, `log` holds the backup's
/// entries and every attempt made meanwhile.
#[test]
fn corrupt_database_pages() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    // enough rows for several pages
    for _ in 0..3 {
        assert!(sb.login("bob", PASSWORD, &"192.0.2.1".repeat(100)).ok);
    }
    sb.admin_ok(&["check"]);
    checkpoint(&sb.db);
    let backup = std::fs::read(&sb.db).unwrap();
    assert!(backup.len() >= 3 * 4096, "{} bytes", backup.len());
    let mut bytes = backup.clone();
    for b in &mut bytes[4096..] {
        *b = 0x5a;
    }
    std::fs::write(&sb.db, &bytes).unwrap();
    let r = Runner::new(&sb);
    let mut made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    assert_admin_fails(&sb, &["log"], &[&db, "malformed"]);
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    // the account state is in files: status and activate go on, warning
    let warning = "useraudit-admin: warning: the log spool was not merged";
    let o = sb.admin(&["status", "carol", "--format", "json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "carol is locked: {err}");
    assert!(err.contains(warning) && err.contains(&db), "{err}");
    let st: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st[0]["state"], "locked", "{st}");
    let o = sb.admin(&["activate", "carol"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "activate: {err}");
    assert!(err.contains(warning), "{err}");
    let ok = r.login("login", b"carol", PASSWORD);
    assert!(ok.ok && ok.errors().is_empty(), "carol, activated: {ok:?}");
    made.push("carol success -".into());
    // the administrator restores the backup
    remove_wal(&sb.db);
    std::fs::write(&sb.db, &backup).unwrap();
    assert_log_has(&sb, &made, 3);
    assert_eq!(integrity(&sb.db), "ok");
}

/// Cut the file to half its size: the header promises pages that are
/// gone. Logins do not notice; `log` fails naming the database; once the
/// damaged file is moved aside, nothing logged meanwhile is missing.
#[test]
fn truncated_database() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    assert!(sb.login("erin", PASSWORD, "192.0.2.1").ok);
    // many more entries, spooled as the module would
    let big = vec![b'x'; 1000];
    for i in 0..40 {
        spool::append(
            &sb.db,
            &spool::NewEntry {
                time: 1_000_000 * (i + 1),
                success: false,
                user: b"erin",
                rhost: Some(&big),
                reason: Some(useraudit_core::policy::LogReason::Auth),
                ..Default::default()
            },
        )
        .unwrap();
    }
    sb.admin_ok(&["check"]);
    checkpoint(&sb.db);
    let len = std::fs::metadata(&sb.db).unwrap().len();
    assert!(len >= 8 * 4096, "{len}");
    std::fs::OpenOptions::new().write(true).open(&sb.db).unwrap().set_len(len / 2 / 4096 * 4096).unwrap();
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    assert_admin_fails(&sb, &["log"], &[&db, "malformed"]);
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    std::fs::rename(&sb.db, sb.path().join("useraudit.db.broken")).unwrap();
    remove_wal(&sb.db);
    assert_log_has(&sb, &made, 0);
}

/// The database locked by another process (a long `BEGIN EXCLUSIVE`, say
/// an administrator's sqlite3 session): logins do not notice;
/// useraudit-admin waits at most the busy timeout (3 s) to merge the
/// spool, then `log` fails saying so and `status` goes on with a warning;
/// once the lock is gone, every attempt made meanwhile is in the log. A
/// lock held briefly is waited for.
#[test]
fn database_locked_logins_do_not_wait_and_the_merge_waits_bounded() {
    if missing_tools() {
        return;
    }
    let sb = sandbox_with_db("");
    let holder = rusqlite::Connection::open(&sb.db).unwrap();
    holder
        .execute_batch("BEGIN EXCLUSIVE; INSERT INTO log (time, success, user) VALUES (0, 0, CAST('holder' AS BLOB));")
        .unwrap();
    let r = Runner::new(&sb);
    let made = assert_logins_unaffected(&r);
    let db = sb.db.display().to_string();
    let t = Instant::now();
    assert_admin_fails(&sb, &["log"], &[&db, "locked"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(3 + 5),
        "log waited the busy timeout, and no longer: {took:?}"
    );
    let o = sb.admin(&["status", "carol", "--format", "json"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "carol is locked: {err}");
    assert!(
        err.contains("useraudit-admin: warning: the log spool was not merged")
            && err.contains(&db)
            && err.contains("locked"),
        "{err}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_log_has(&sb, &made, 1);

    // Held for a moment: the merge waits for it.
    let ok = r.login("login", b"alice", PASSWORD);
    assert!(ok.ok, "{ok:?}");
    let (held, hold) = std::sync::mpsc::channel();
    let path = sb.db.clone();
    let holder = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "BEGIN EXCLUSIVE; INSERT INTO log (time, success, user) VALUES (0, 0, CAST('holder' AS BLOB));",
        )
        .unwrap();
        held.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        c.execute_batch("COMMIT").unwrap();
    });
    hold.recv().unwrap();
    let t = Instant::now();
    let log = sb.log(&[]);
    let took = t.elapsed();
    holder.join().unwrap();
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(2900),
        "log waited for the lock, not the whole busy timeout: {took:?}"
    );
    let texts: Vec<String> = log.iter().map(entry_text).collect();
    assert_eq!(texts.len(), 1 + made.len() + 2, "{texts:#?}");
    assert_eq!(texts[0], "alice success -");
    assert_eq!(texts.last().unwrap(), "holder failure -");
}

/// The tables of the database as SQLite describes them, and its schema
/// version.
fn schema_of(db: &std::path::Path) -> (Vec<(String, String, Option<String>)>, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    let tables = c
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    (tables, c.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap())
}

/// A database of schema version 1, which no release wrote (a development
/// build's, whose account table is gone from the design): every command
/// that needs the log fails naming the file and the version, the file is
/// left as it was, and logins go on into the spool; once the file is moved
/// aside, the next command starts a new database holding them.
#[test]
fn database_of_a_schema_version_no_release_wrote_is_refused() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    sb.create_db_dir();
    {
        let c = rusqlite::Connection::open(&sb.db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE log (id INTEGER PRIMARY KEY, time INTEGER NOT NULL, success INTEGER NOT NULL,
                 user BLOB NOT NULL, service BLOB, rhost BLOB, ruser BLOB, tty BLOB, auth_method BLOB, reason TEXT);
             CREATE TABLE account (user BLOB PRIMARY KEY, state TEXT NOT NULL) WITHOUT ROWID;
             INSERT INTO account VALUES (CAST('alice' AS BLOB), 'locked');
             PRAGMA user_version=1;",
        )
        .unwrap();
    }
    checkpoint(&sb.db);
    let bytes = std::fs::read(&sb.db).unwrap();
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok, "the account table of version 1 is nothing to logins");
    let db = sb.db.display().to_string();
    for cmd in ["log", "check"] {
        assert_admin_fails(&sb, &[cmd], &[&db, "schema version 1", "never in a release"]);
    }
    assert!(unmerged_spool(&sb), "the spool is kept for a later merge");
    remove_wal(&sb.db);
    assert_eq!(std::fs::read(&sb.db).unwrap(), bytes, "the file is left alone");
    std::fs::rename(&sb.db, sb.path().join("useraudit.db.v1")).unwrap();
    let log = sb.log(&[]);
    assert_eq!(log.iter().map(entry_text).collect::<Vec<_>>(), ["alice success -"]);
}

/// A database of schema version 2, as the first release left it (the log,
/// its indexes and the merged spool generations, in WAL mode), is brought
/// to the current version by adding to it: its entries are shown, the
/// spool is merged into it, and nothing it had is changed. Opened again at
/// the current version, its schema is not touched.
#[test]
fn database_of_the_first_release_is_upgraded_by_adding_to_it() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("");
    sb.create_db_dir();
    {
        let c = rusqlite::Connection::open(&sb.db).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE log (
                id          INTEGER PRIMARY KEY,
                time        INTEGER NOT NULL,
                success     INTEGER NOT NULL,
                user        BLOB NOT NULL,
                service     BLOB,
                rhost       BLOB,
                ruser       BLOB,
                tty         BLOB,
                auth_method BLOB,
                reason      TEXT
             );
             CREATE INDEX log_time ON log(time);
             CREATE INDEX log_user_time ON log(user, time);
             CREATE INDEX log_rhost_time ON log(rhost, time);
             CREATE TABLE spool_merged (
                generation BLOB PRIMARY KEY,
                upto       INTEGER NOT NULL,
                time       INTEGER NOT NULL
             ) WITHOUT ROWID;
             INSERT INTO log (time, success, user, rhost, reason)
                 VALUES (1000000, 0, CAST('bob' AS BLOB), CAST('198.51.100.1' AS BLOB), 'auth');
             PRAGMA user_version=2;",
        )
        .unwrap();
    }
    let before = schema_of(&sb.db);
    assert!(sb.login("alice", PASSWORD, "192.0.2.1").ok);
    let check = sb.admin_ok(&["check"]);
    assert!(check.contains("schema version 3, 2 log entries, integrity ok"), "{check}");
    let log = sb.log(&[]);
    assert_eq!(log.iter().map(entry_text).collect::<Vec<_>>(), ["alice success -", "bob failure auth"]);
    assert_eq!(log[1]["rhost"], "198.51.100.1");
    let upgraded = schema_of(&sb.db);
    assert_eq!(upgraded.1, 3, "{upgraded:?}");
    for object in &before.0 {
        assert!(upgraded.0.contains(object), "{object:?} was changed or dropped: {upgraded:?}");
    }
    assert!(upgraded.0.iter().any(|(_, name, _)| name == "attempt_count"), "{upgraded:?}");
    sb.admin_ok(&["check"]);
    assert_eq!(schema_of(&sb.db), upgraded, "the schema of the current version was not changed");
}
