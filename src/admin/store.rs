//! The SQLite store. This module owns all SQL: schema, migrations, and
//! every query. WAL journal, `synchronous=NORMAL`, a bounded busy timeout,
//! times as 64-bit microseconds, text fields as raw bytes.
#![forbid(unsafe_code)]

use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use useraudit_core::files::FileError;
use useraudit_core::policy::LogReason;
use useraudit_core::spool::{self, Record};

pub use useraudit_core::files::BUSY_TIMEOUT;

/// The busy handler: short sleeps growing to 1 ms ([`useraudit_core::files::busy_wait`]),
/// [`BUSY_TIMEOUT`] in total. The writers are useraudit-admin commands (a
/// merge, a retention sweep), whose transactions last milliseconds;
/// SQLite's own handler sleeps 1, 2, 5, 10 ... 100 ms, so a waiter would
/// sleep on while the lock was free.
fn busy_handler(n: i32) -> bool {
    let n = u64::try_from(n).unwrap_or(0);
    useraudit_core::files::busy_wait(n, BUSY_BUDGET_US.with(std::cell::Cell::get))
}

thread_local! {
    /// The busy handler's budget: [`BUSY_TIMEOUT`], but [`STAT_WAIT`] for
    /// the best-effort write of the merge time.
    static BUSY_BUDGET_US: std::cell::Cell<u64> = const { std::cell::Cell::new(BUSY_TIMEOUT.as_micros() as u64) };
}

/// How long the merge time's write may wait for a busy database.
const STAT_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Per-connection settings: commits do not fsync (WAL + NORMAL: a crash of
/// the process loses nothing committed; a power cut can lose the last
/// commits, never the file's integrity). A merge syncs its commits all the
/// same, before it removes the spool ([`Store::merge_spool`]).
const WAL_SETTINGS: &str = "PRAGMA synchronous=NORMAL;";

/// Rows deleted per transaction by [`Store::delete_before`] (a few
/// milliseconds of holding the write lock).
const DELETE_BATCH: usize = 2000;

/// The schema version of the first release, the oldest a database can
/// have. A new database is created at this version from [`SCHEMA`], then
/// brought up to date by [`MIGRATIONS`].
const FIRST_VERSION: i64 = 2;

/// The schema at [`FIRST_VERSION`]: the login log, and the spool
/// generations already merged (useraudit_core::spool), remembered so that
/// no merge is applied twice. Account state is not here: it is in the
/// state files (useraudit_core::state).
const SCHEMA: &str = "CREATE TABLE log (
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
    ) WITHOUT ROWID;";

/// The steps after [`FIRST_VERSION`], one per version: step `i` takes a
/// database from version `FIRST_VERSION + i` to the next. `PRAGMA
/// user_version` is the version reached. Never edit a step that has
/// shipped; add one.
const MIGRATIONS: &[&str] = &[
    // 2 -> 3: counters for `useraudit-admin metrics`, kept at merge time in the
    // same transaction as the entries they count, so that they never go
    // down when retention deletes old entries; seeded from the log kept so
    // far (at most SERVICE_CAP services, the rest under OTHER_SERVICE).
    // And an index for the report's new-host logins: has this user logged
    // in from this host before?
    "CREATE TABLE attempt_count (
        service BLOB NOT NULL,
        outcome TEXT NOT NULL,
        reason  TEXT NOT NULL,
        n       INTEGER NOT NULL,
        PRIMARY KEY (service, outcome, reason)
    ) WITHOUT ROWID;
    CREATE TABLE merge_stat (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    WITH top AS (
        SELECT coalesce(service, x'') AS service FROM log WHERE reason IS NOT 'dropped'
        GROUP BY 1 ORDER BY count(*) DESC LIMIT 32
    )
    INSERT INTO attempt_count (service, outcome, reason, n)
        SELECT CASE WHEN coalesce(service, x'') IN (SELECT service FROM top) THEN coalesce(service, x'') ELSE x'00' END,
               CASE success WHEN 0 THEN 'failure' ELSE 'success' END,
               coalesce(reason, ''),
               count(*)
        FROM log WHERE reason IS NOT 'dropped' GROUP BY 1, 2, 3;
    CREATE INDEX log_user_rhost_success ON log(user, rhost, time) WHERE success = 1;",
];

/// The most services the attempt counters keep apart (the PAM service
/// comes from the program that calls PAM: a few in practice, but nothing
/// bounds them). Services met after that many count under
/// [`OTHER_SERVICE`]; a service once counted keeps its own counter.
/// Migration 3 has the same number.
pub const SERVICE_CAP: i64 = 32;

/// The counter key of the services past [`SERVICE_CAP`]: one NUL byte,
/// which no PAM service name (a C string) can be.
pub const OTHER_SERVICE: &[u8] = b"\0";

/// One attempt counter: attempts with this service (empty: none was
/// given; [`OTHER_SERVICE`]: the services past the cap), outcome and
/// reason (empty: none), ever merged into the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptCount {
    pub service: Vec<u8>,
    pub outcome: String,
    pub reason: String,
    pub n: u64,
}

/// What the merges recorded, for `metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeStats {
    /// When the spool was last merged (µs), complete, whether or not it
    /// held anything; None before the first merge of this schema.
    pub last_merge: Option<i64>,
    /// Entries the module dropped at the spool's bound, ever merged.
    pub dropped: u64,
}

/// One log entry as the report reads it.
#[derive(Debug, Clone, Copy)]
pub struct ReportRow<'a> {
    pub time: i64,
    pub success: bool,
    pub user: &'a [u8],
    pub rhost: Option<&'a [u8]>,
}

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = FIRST_VERSION + MIGRATIONS.len() as i64;

/// Why the store cannot be used.
#[derive(Debug)]
pub enum StoreError {
    /// The file or directory is missing, unreadable or has unsafe permissions.
    /// `source` is the I/O error behind it, if one was.
    Access { path: PathBuf, message: String, source: Option<std::io::Error> },
    /// SQLite failed.
    Sql { path: PathBuf, context: &'static str, source: rusqlite::Error },
    /// The database was written by a newer useraudit.
    Newer { path: PathBuf, found: i64 },
    /// The database has a schema version older than any release wrote (a
    /// development build's): there is no upgrade from it.
    Unknown { path: PathBuf, found: i64 },
    /// The log spool beside the database cannot be merged.
    Spool(FileError),
}

impl StoreError {
    /// True when the caller lacks permission (a non-root program meeting
    /// the root-only database).
    pub fn permission_denied(&self) -> bool {
        match self {
            StoreError::Access { source, .. } => {
                source.as_ref().is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
            }
            StoreError::Sql { source, .. } => matches!(
                source.sqlite_error_code(),
                Some(
                    rusqlite::ErrorCode::CannotOpen
                        | rusqlite::ErrorCode::ReadOnly
                        | rusqlite::ErrorCode::PermissionDenied
                )
            ),
            StoreError::Newer { .. } | StoreError::Unknown { .. } => false,
            StoreError::Spool(e) => e.denied(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Access { path, message, .. } => {
                write!(f, "database {}: {message}", path.display())
            }
            StoreError::Sql { path, context, source } => {
                write!(f, "database {}: {context}: {source}", path.display())
            }
            StoreError::Newer { path, found } => write!(
                f,
                "database {}: schema version {found} is newer than this useraudit understands ({SCHEMA_VERSION}); upgrade useraudit",
                path.display()
            ),
            StoreError::Unknown { path, found } => write!(
                f,
                "database {}: schema version {found} was never in a release of useraudit (the oldest is {FIRST_VERSION}) and cannot be upgraded; move the file aside and a new database is created",
                path.display()
            ),
            StoreError::Spool(e) => write!(f, "log spool {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Access { source, .. } => source.as_ref().map(|e| e as _),
            StoreError::Sql { source, .. } => Some(source),
            StoreError::Newer { .. } | StoreError::Unknown { .. } => None,
            StoreError::Spool(e) => Some(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

pub use useraudit_core::spool::NewEntry;

/// One stored login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: i64,
    pub time: i64,
    pub success: bool,
    pub user: Vec<u8>,
    pub service: Option<Vec<u8>>,
    pub rhost: Option<Vec<u8>>,
    pub ruser: Option<Vec<u8>>,
    pub tty: Option<Vec<u8>>,
    pub auth_method: Option<Vec<u8>>,
    pub reason: Option<String>,
}

/// A filter on the log; newest first.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub success: Option<bool>,
    pub user: Option<Vec<u8>>,
    pub rhost: Option<Vec<u8>>,
    pub service: Option<Vec<u8>>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub limit: Option<u64>,
}

/// How to open.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Create the directory (0700) and file (0600) when missing.
    pub create: bool,
    /// Refuse a database or directory that is not owned by root or is
    /// writable by group or others (set when running as root).
    pub require_root_owned: bool,
}

/// What [`Store::merge_spool`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Merged {
    /// Log entries moved from the spool.
    pub entries: u64,
    /// Bytes of the spool that were not intact records (skipped).
    pub damaged: u64,
    /// Entries the module dropped at the spool's bound (`spool_max_bytes`),
    /// now counted by one log entry with reason `dropped`.
    pub dropped: u64,
}

/// Records per merge transaction: a few MiB at most in memory, and a
/// transaction short enough that other writers get in between.
const MERGE_BATCH: usize = 2000;

/// An open database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A write transaction (`BEGIN IMMEDIATE`): it takes the write lock at
/// once, so writers at the same time (two merges, a merge and a retention
/// sweep) are serialised, each waiting at most [`BUSY_TIMEOUT`].
pub struct Txn<'a> {
    tx: rusqlite::Transaction<'a>,
    path: &'a Path,
    /// The id this transaction holds (see [`hold_id_floor`]).
    held: Option<i64>,
}

fn check_owner(path: &Path, md: &std::fs::Metadata, what: &str) -> Result<()> {
    useraudit_core::files::check_owner(path, md, what).map_err(|e| from_file(path, e))
}

/// A file problem as a database error, naming the database.
fn from_file(db: &Path, e: FileError) -> StoreError {
    let message = if e.path == db { e.detail() } else { format!("{}: {}", e.path.display(), e.detail()) };
    StoreError::Access { path: db.into(), message, source: e.into_io_error() }
}

fn access(path: &Path, message: String, e: std::io::Error) -> StoreError {
    StoreError::Access { path: path.into(), message, source: Some(e) }
}

impl Store {
    /// Open (and if asked create) the database, and bring its schema up to date.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Store> {
        useraudit_core::files::prepare_dir(useraudit_core::files::parent(path), opts.create, opts.require_root_owned)
            .map_err(|e| from_file(path, e))?;
        match std::fs::symlink_metadata(path) {
            Ok(md) => {
                if !md.is_file() {
                    return Err(StoreError::Access {
                        path: path.into(),
                        message: "not a regular file".into(),
                        source: None,
                    });
                }
                if opts.require_root_owned {
                    check_owner(path, &md, "database")?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && opts.create => {
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(access(path, format!("cannot create it: {e}"), e)),
                }
            }
            Err(e) => return Err(access(path, e.to_string(), e)),
        }
        let sql = |context: &'static str| move |source| StoreError::Sql { path: path.into(), context, source };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(sql("cannot open"))?;
        conn.busy_handler(Some(busy_handler)).map_err(sql("cannot set busy handler"))?;
        conn.execute_batch(WAL_SETTINGS).map_err(sql("cannot configure"))?;
        let mut store = Store { conn, path: path.into() };
        store.migrate()?;
        Ok(store)
    }

    fn err(&self, context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql { path: self.path.clone(), context, source }
    }

    fn version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.err("cannot read schema version (not a useraudit database?)"))
    }

    fn migrate(&mut self) -> Result<()> {
        let v = self.version()?;
        if v == SCHEMA_VERSION {
            return Ok(());
        }
        if v > SCHEMA_VERSION {
            return Err(StoreError::Newer { path: self.path.clone(), found: v });
        }
        if v != 0 && v < FIRST_VERSION {
            return Err(StoreError::Unknown { path: self.path.clone(), found: v });
        }
        let path = self.path.clone();
        let sql = |context: &'static str| {
            let path = path.clone();
            move |source| StoreError::Sql { path, context, source }
        };
        // WAL must be set outside a transaction; it is stored in the file.
        // Processes that meet a new file at once all try to switch it; the
        // switch upgrades a read lock to an exclusive one, and SQLite answers
        // BUSY at once rather than wait (two such upgrades would deadlock),
        // so it is retried here within the same budget as any other wait.
        let mut tries = 0;
        loop {
            match self.conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
                Ok(_) => break,
                Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy) && busy_handler(tries) => {
                    tries += 1;
                }
                Err(e) => return Err(sql("cannot switch to WAL")(e)),
            }
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql("cannot start migration"))?;
        // Another process may have migrated while we waited for the lock.
        let mut v: i64 =
            tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql("cannot read schema version"))?;
        if v == 0 {
            tx.execute_batch(SCHEMA).map_err(sql("cannot create the schema"))?;
            v = FIRST_VERSION;
            tx.execute_batch(&format!("PRAGMA user_version={v}")).map_err(sql("cannot create the schema"))?;
        }
        while v < SCHEMA_VERSION {
            tx.execute_batch(MIGRATIONS[(v - FIRST_VERSION) as usize]).map_err(sql("cannot migrate schema"))?;
            v += 1;
            tx.execute_batch(&format!("PRAGMA user_version={v}")).map_err(sql("cannot migrate schema"))?;
        }
        tx.commit().map_err(sql("cannot commit migration"))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Move the log spool's entries into the log. The spool is first set
    /// aside (logins start a new one at once). Each file set aside is read
    /// in chunks and merged in transactions of [`MERGE_BATCH`] records;
    /// each also records how far the file's generation was merged, so a
    /// merge cut short anywhere (or two merges at once) adds every record
    /// exactly once, and memory stays bounded however large the file. The
    /// last transaction records the whole file and the count of entries
    /// dropped at the spool's bound (as one log entry), and is synced
    /// (`synchronous=FULL`) before the file is removed, so a power cut
    /// cannot lose both copies. Files whose header was damaged are
    /// recovered the same way (their records found by scanning) and kept
    /// for the administrator; see [`spool::damaged_files`].
    pub fn merge_spool(&mut self) -> Result<Merged> {
        let mut unlimited = usize::MAX;
        self.merge_spool_batched(MERGE_BATCH, &mut unlimited)
    }

    /// [`Store::merge_spool`] with `batch` records per transaction,
    /// stopping (as a crash would) once `batches` transactions are spent.
    fn merge_spool_batched(&mut self, batch: usize, batches: &mut usize) -> Result<Merged> {
        spool::set_aside(&self.path).map_err(StoreError::Spool)?;
        let mut total = Merged::default();
        let mut files = spool::set_aside_files(&self.path).map_err(StoreError::Spool)?;
        files.extend(spool::damaged_files(&self.path).map_err(StoreError::Spool)?);
        // Two commands may merge at once and meet the same file: each batch
        // skips what the other recorded, and a file the other one has
        // removed (or set aside as damaged) meanwhile is done by it.
        for file in files {
            let sf = match spool::open_set_aside(&file) {
                Ok(sf) => sf,
                Err(_) if !file.exists() => continue,
                Err(e) => return Err(StoreError::Spool(e)),
            };
            self.conn.execute_batch("PRAGMA synchronous=FULL").map_err(self.err("cannot configure"))?;
            let r = self.merge_file(&sf, batch, batches);
            self.conn.execute_batch(WAL_SETTINGS).map_err(self.err("cannot configure"))?;
            let (m, complete) = r?;
            total.entries += m.entries;
            total.damaged += m.damaged;
            total.dropped += m.dropped;
            if !complete {
                return Ok(total);
            }
            if !sf.intact {
                continue;
            }
            match sf.remove() {
                Ok(()) => {}
                Err(_) if !file.exists() => {}
                Err(e) => return Err(StoreError::Spool(e)),
            }
        }
        // Best effort, waiting briefly: a command must not wait out a busy
        // database (a VACUUM, another merge) for this; the time then stays
        // where it was (the metric only ever lags).
        let now = useraudit_core::text::now_micros();
        BUSY_BUDGET_US.with(|b| b.set(STAT_WAIT.as_micros() as u64));
        let _ = self.write(|t| set_stat(&t.tx, "last_merge", now).map_err(t.err("cannot write the merge time")));
        BUSY_BUDGET_US.with(|b| b.set(BUSY_TIMEOUT.as_micros() as u64));
        Ok(total)
    }

    /// Merge one spool file in batches; what it added, and whether it got
    /// to the end (false: the `batches` budget ran out first).
    fn merge_file(&mut self, sf: &spool::SpoolFile, batch: usize, batches: &mut usize) -> Result<(Merged, bool)> {
        let upto_of = |c: &Connection, generation: &[u8]| -> rusqlite::Result<Option<i64>> {
            c.query_row("SELECT upto FROM spool_merged WHERE generation = ?1", [generation], |r| r.get(0)).optional()
        };
        // A damaged header whose generation survived, of a file a merge had
        // begun: go on from there, not from the start under a new id.
        let generation = match sf.header_generation {
            Some(g) if upto_of(&self.conn, &g).map_err(self.err("cannot read the spool record"))?.is_some() => {
                g.to_vec()
            }
            _ => sf.generation.to_vec(),
        };
        let upto = |c: &Connection| -> rusqlite::Result<i64> { Ok(upto_of(c, &generation)?.unwrap_or(0)) };
        let done = upto(&self.conn).map_err(self.err("cannot read the spool record"))?;
        let mut recs = sf.records_from(u64::try_from(done).unwrap_or(0));
        let len = i64::try_from(sf.len).unwrap_or(i64::MAX);
        let mut out = Merged::default();
        loop {
            let mut chunk = Vec::with_capacity(batch.min(4096));
            while chunk.len() < batch {
                match recs.next_record().map_err(StoreError::Spool)? {
                    Some(r) => chunk.push(r),
                    None => break,
                }
            }
            let last = chunk.len() < batch;
            if *batches == 0 {
                out.damaged = recs.damaged;
                return Ok((out, false));
            }
            *batches -= 1;
            let end = if last { len } else { chunk.last().map_or(len, |(e, _)| i64::try_from(*e).unwrap_or(i64::MAX)) };
            let now = useraudit_core::text::now_micros();
            let (n, dropped) = self.write(|t| {
                // Read again inside the transaction: another merge may
                // have got further meanwhile.
                let done = upto(&t.tx).map_err(t.err("cannot read the spool record"))?;
                if done >= end {
                    return Ok((0, 0));
                }
                let mut n = 0u64;
                for (e, rec) in &chunk {
                    if i64::try_from(*e).unwrap_or(i64::MAX) <= done {
                        continue;
                    }
                    match rec {
                        Record::Entry(e) => {
                            insert_entry(&t.tx, &e.as_new()).map_err(t.err("cannot write the log"))?;
                            n += 1;
                        }
                        Record::SetMethod { time, user, method } => {
                            t.tx.prepare_cached(
                                "UPDATE log SET auth_method = ?1 WHERE id =
                                 (SELECT max(id) FROM log WHERE user = ?2 AND time = ?3)",
                            )
                            .and_then(|mut st| st.execute(params![useraudit_core::text::cap(method), user, time]))
                            .map_err(t.err("cannot write the log"))?;
                        }
                    }
                }
                let dropped = if last && sf.dropped > 0 {
                    insert_dropped(&t.tx, now, sf.dropped).map_err(t.err("cannot write the log"))?;
                    sf.dropped
                } else {
                    0
                };
                t.tx.execute(
                    "INSERT OR REPLACE INTO spool_merged (generation, upto, time) VALUES (?1, ?2, ?3)",
                    params![generation, end, now],
                )
                .map_err(t.err("cannot write the spool record"))?;
                Ok((n, dropped))
            })?;
            out.entries += n;
            out.dropped += dropped;
            if last {
                out.damaged = recs.damaged;
                return Ok((out, true));
            }
        }
    }

    /// Record an attempt outside a transaction (one statement, atomic).
    pub fn insert(&self, e: &NewEntry<'_>) -> Result<i64> {
        insert_entry(&self.conn, e).map_err(self.err("cannot write the log"))
    }

    /// Run `f` in one `BEGIN IMMEDIATE` transaction, committed when it returns Ok.
    pub fn write<T>(&mut self, f: impl FnOnce(&Txn<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let out = {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|source| {
                StoreError::Sql { path: path.clone(), context: "cannot start a write (busy?)", source }
            })?;
            let mut txn = Txn { tx, path: &path, held: None };
            txn.held = hold_id_floor(&txn.tx).map_err(txn.err("cannot read the log's highest id"))?;
            let out = f(&txn)?;
            if let Some(id) = txn.held {
                txn.tx.execute("DELETE FROM log WHERE id = ?1", [id]).map_err(txn.err("cannot write the log"))?;
            }
            txn.tx.commit().map_err(|source| StoreError::Sql {
                path: path.clone(),
                context: "cannot commit",
                source,
            })?;
            out
        };
        Ok(out)
    }

    /// The log, newest first.
    pub fn query(&self, q: &LogQuery) -> Result<Vec<Entry>> {
        self.query_from(q, None)
    }

    /// The highest entry id (0 in an empty log): `log --follow` shows what
    /// comes after it.
    pub fn last_id(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT coalesce(max(id), 0) FROM log", [], |r| r.get(0))
            .map_err(self.err("cannot read the log"))
    }

    /// The entries that match `q` (its limit aside) merged after entry
    /// `after`, in the order they were merged.
    pub fn query_after(&self, q: &LogQuery, after: i64) -> Result<Vec<Entry>> {
        self.query_from(&LogQuery { limit: None, ..q.clone() }, Some(after))
    }

    /// At most `n` entries merged after entry `after`, in the order they
    /// were merged (the fleet push).
    pub fn entries_after(&self, after: i64, n: usize) -> Result<Vec<Entry>> {
        self.query_from(&LogQuery { limit: Some(n as u64), ..LogQuery::default() }, Some(after))
    }

    /// A random number that names this log: made once, kept in
    /// `merge_stat` (as `log_identity`). A database moved aside and
    /// replaced by a new one gets a new identity, and its ids start again:
    /// the fleet push keys entries on (host, identity, id).
    pub fn identity(&self) -> Result<i64> {
        self.conn
            .execute("INSERT OR IGNORE INTO merge_stat (name, value) VALUES ('log_identity', random())", [])
            .map_err(self.err("cannot write the log's identity"))?;
        self.conn
            .query_row("SELECT value FROM merge_stat WHERE name = 'log_identity'", [], |r| r.get(0))
            .map_err(self.err("cannot read the log's identity"))
    }

    /// How many entries were merged after entry `after`.
    pub fn count_after(&self, after: i64) -> Result<i64> {
        self.conn
            .query_row("SELECT count(*) FROM log WHERE id > ?", [after], |r| r.get(0))
            .map_err(self.err("cannot read the log"))
    }

    fn query_from(&self, q: &LogQuery, after: Option<i64>) -> Result<Vec<Entry>> {
        let mut sql = String::from(
            "SELECT id, time, success, user, service, rhost, ruser, tty, auth_method, reason FROM log WHERE 1",
        );
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        use rusqlite::types::Value;
        if let Some(a) = after {
            sql.push_str(" AND id > ?");
            args.push(Value::Integer(a));
        }
        if let Some(s) = q.success {
            sql.push_str(" AND success = ?");
            args.push(Value::Integer(i64::from(s)));
        }
        for (col, v) in [("user", &q.user), ("rhost", &q.rhost), ("service", &q.service)] {
            if let Some(v) = v {
                sql.push_str(&format!(" AND {col} = ?"));
                args.push(Value::Blob(v.clone()));
            }
        }
        if let Some(t) = q.since {
            sql.push_str(" AND time >= ?");
            args.push(Value::Integer(t));
        }
        if let Some(t) = q.until {
            sql.push_str(" AND time < ?");
            args.push(Value::Integer(t));
        }
        sql.push_str(if after.is_some() { " ORDER BY id" } else { " ORDER BY time DESC, id DESC" });
        if let Some(n) = q.limit {
            sql.push_str(" LIMIT ?");
            args.push(Value::Integer(i64::try_from(n).unwrap_or(i64::MAX)));
        }
        let mut st = self.conn.prepare(&sql).map_err(self.err("cannot read the log"))?;
        let rows = st
            .query_map(rusqlite::params_from_iter(args), |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    time: r.get(1)?,
                    success: r.get::<_, i64>(2)? != 0,
                    user: r.get(3)?,
                    service: r.get(4)?,
                    rhost: r.get(5)?,
                    ruser: r.get(6)?,
                    tty: r.get(7)?,
                    auth_method: r.get(8)?,
                    reason: r.get(9)?,
                })
            })
            .and_then(|r| r.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(self.err("cannot read the log"))?;
        Ok(rows)
    }

    /// The attempt counters (see [`AttemptCount`]), never decreasing.
    pub fn attempt_counts(&self) -> Result<Vec<AttemptCount>> {
        self.conn
            .prepare("SELECT service, outcome, reason, n FROM attempt_count ORDER BY service, outcome, reason")
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(AttemptCount {
                        service: r.get(0)?,
                        outcome: r.get(1)?,
                        reason: r.get(2)?,
                        n: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                    })
                })?
                .collect()
            })
            .map_err(self.err("cannot read the counters"))
    }

    /// What the merges recorded.
    pub fn merge_stats(&self) -> Result<MergeStats> {
        let stat = |name: &str| -> rusqlite::Result<Option<i64>> {
            self.conn.query_row("SELECT value FROM merge_stat WHERE name = ?1", [name], |r| r.get(0)).optional()
        };
        let read = || -> rusqlite::Result<MergeStats> {
            Ok(MergeStats {
                last_merge: stat("last_merge")?,
                dropped: stat("dropped")?.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            })
        };
        read().map_err(self.err("cannot read the counters"))
    }

    /// Call `f` for every attempt logged in [since, until), in no
    /// particular order (the entries counting drops at the spool's bound
    /// are not attempts, and are left out). Streams: memory does not grow
    /// with the span.
    pub fn scan_attempts(&self, since: i64, until: i64, mut f: impl FnMut(ReportRow<'_>)) -> Result<()> {
        let mut st = self
            .conn
            .prepare(
                "SELECT time, success, user, rhost FROM log
                 WHERE time >= ?1 AND time < ?2 AND reason IS NOT 'dropped'",
            )
            .map_err(self.err("cannot read the log"))?;
        let mut rows = st.query(params![since, until]).map_err(self.err("cannot read the log"))?;
        while let Some(r) = rows.next().map_err(self.err("cannot read the log"))? {
            let bytes = |i: usize| -> rusqlite::Result<Option<&[u8]>> {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Blob(b) | rusqlite::types::ValueRef::Text(b) => Some(b),
                    _ => None,
                })
            };
            let row = (|| -> rusqlite::Result<ReportRow<'_>> {
                Ok(ReportRow {
                    time: r.get(0)?,
                    success: r.get::<_, i64>(1)? != 0,
                    user: bytes(2)?.unwrap_or_default(),
                    rhost: bytes(3)?,
                })
            })()
            .map_err(self.err("cannot read the log"))?;
            f(row);
        }
        Ok(())
    }

    /// Whether `user` logged in successfully from `rhost` before `before`
    /// (in the log kept).
    pub fn logged_in_before(&self, user: &[u8], rhost: &[u8], before: i64) -> Result<bool> {
        self.conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM log INDEXED BY log_user_rhost_success
                 WHERE user = ?1 AND rhost = ?2 AND success = 1 AND time < ?3)",
            )
            .and_then(|mut st| st.query_row(params![user, rhost, before], |r| r.get(0)))
            .map_err(self.err("cannot read the log"))
    }

    /// Number of log entries.
    pub fn count(&self) -> Result<i64> {
        self.conn.query_row("SELECT count(*) FROM log", [], |r| r.get(0)).map_err(self.err("cannot count the log"))
    }

    /// Number of log entries older than `before`.
    pub fn count_before(&self, before: i64) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM log WHERE time < ?1", [before], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(self.err("cannot count the log"))
    }

    /// `PRAGMA quick_check`: "ok" or what is wrong.
    pub fn quick_check(&self) -> Result<String> {
        let mut st = self.conn.prepare("PRAGMA quick_check").map_err(self.err("cannot check"))?;
        let rows: Vec<String> =
            st.query_map([], |r| r.get(0)).and_then(|r| r.collect()).map_err(self.err("cannot check"))?;
        Ok(rows.join("; "))
    }

    /// Delete log entries older than `before`; returns how many. In
    /// transactions of [`DELETE_BATCH`] rows, so a merge waiting to write
    /// gets in between them instead of waiting out a long delete (and,
    /// past the busy timeout, failing).
    pub fn delete_before(&mut self, before: i64) -> Result<u64> {
        let mut total = 0u64;
        loop {
            let n = self.write(|t| {
                // Ids are never given again (see `hold_id_floor`).
                t.tx.execute(
                    "INSERT INTO merge_stat (name, value)
                     SELECT 'id_floor', m FROM (SELECT max(id) AS m FROM log) WHERE m IS NOT NULL
                     ON CONFLICT (name) DO UPDATE SET value = max(value, excluded.value)",
                    [],
                )
                .map_err(t.err("cannot write the log's highest id"))?;
                t.tx.execute(
                    "DELETE FROM log WHERE id IN
                     (SELECT id FROM log WHERE time < ?1 AND id IS NOT ?3 ORDER BY time LIMIT ?2)",
                    params![before, DELETE_BATCH, t.held],
                )
                .map_err(t.err("cannot delete old entries"))
            })?;
            total += n as u64;
            if n < DELETE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Load many entries quickly (for benchmarks and imports): one transaction.
    pub fn bulk_insert<'a>(&mut self, entries: impl IntoIterator<Item = NewEntry<'a>>) -> Result<usize> {
        self.write(|t| {
            let mut n = 0;
            for e in entries {
                t.insert(&e)?;
                n += 1;
            }
            Ok(n)
        })
    }
}

impl Txn<'_> {
    fn err(&self, context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sql { path: self.path.into(), context, source }
    }

    pub fn insert(&self, e: &NewEntry<'_>) -> Result<i64> {
        insert_entry(&self.tx, e).map_err(self.err("cannot write the log"))
    }
}

fn insert_entry(c: &Connection, e: &NewEntry<'_>) -> rusqlite::Result<i64> {
    use useraudit_core::text::cap;
    let mut st = c.prepare_cached(
        "INSERT INTO log (time, success, user, service, rhost, ruser, tty, auth_method, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    st.execute(params![
        e.time,
        e.success,
        cap(e.user),
        e.service.map(cap),
        e.rhost.map(cap),
        e.ruser.map(cap),
        e.tty.map(cap),
        e.auth_method.map(cap),
        e.reason.map(LogReason::as_str),
    ])?;
    let id = c.last_insert_rowid();
    count_attempt(c, e)?;
    Ok(id)
}

/// Add one to the attempt counter of `e`, in the caller's transaction
/// (see [`SERVICE_CAP`]).
fn count_attempt(c: &Connection, e: &NewEntry<'_>) -> rusqlite::Result<()> {
    let service = e.service.map(useraudit_core::text::cap).unwrap_or_default();
    let known: bool = c
        .prepare_cached("SELECT EXISTS (SELECT 1 FROM attempt_count WHERE service = ?1)")?
        .query_row([service], |r| r.get(0))?;
    let key = if known {
        service
    } else {
        let n: i64 = c
            .prepare_cached("SELECT count(DISTINCT service) FROM attempt_count WHERE service != ?1")?
            .query_row([OTHER_SERVICE], |r| r.get(0))?;
        if n < SERVICE_CAP { service } else { OTHER_SERVICE }
    };
    c.prepare_cached(
        "INSERT INTO attempt_count (service, outcome, reason, n) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT DO UPDATE SET n = n + 1",
    )?
    .execute(params![
        key,
        if e.success { "success" } else { "failure" },
        e.reason.map(LogReason::as_str).unwrap_or_default()
    ])?;
    Ok(())
}

fn set_stat(c: &Connection, name: &str, value: i64) -> rusqlite::Result<()> {
    c.prepare_cached("INSERT OR REPLACE INTO merge_stat (name, value) VALUES (?1, ?2)")?
        .execute(params![name, value])?;
    Ok(())
}

/// The log entry that counts entries dropped at the spool's bound: reason
/// `dropped`, the count in the user field (no attempt has that reason, so
/// it cannot be mistaken for a name), at the time of the merge.
/// Log ids are never given twice: the fleet push and `log --follow` go on
/// from the highest id they saw. SQLite gives a new row the highest id in
/// the table plus one, so once retention has deleted the newest entries
/// (a host quiet for longer than `retention_days`) it would give their
/// ids again. Retention records the highest id it saw (`id_floor`); while
/// the log's highest id is below it, a write transaction first holds that
/// id with a row of its own, so that its entries get the ids after it,
/// and removes the row before it commits (nobody else ever sees it).
/// Returns the held id.
fn hold_id_floor(c: &Connection) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    let floor: Option<i64> = c
        .prepare_cached(
            "SELECT value FROM merge_stat WHERE name = 'id_floor' AND value > (SELECT coalesce(max(id), 0) FROM log)",
        )?
        .query_row([], |r| r.get(0))
        .optional()?;
    if let Some(id) = floor {
        c.execute("INSERT INTO log (id, time, success, user) VALUES (?1, 0, 0, x'')", [id])?;
    }
    Ok(floor)
}

fn insert_dropped(c: &Connection, time: i64, n: u64) -> rusqlite::Result<()> {
    let text = format!("[{n} entries dropped at the spool bound]");
    c.prepare_cached("INSERT INTO log (time, success, user, service, reason) VALUES (?1, 0, ?2, ?3, 'dropped')")?
        .execute(params![time, text.as_bytes(), &b"useraudit"[..]])?;
    c.prepare_cached(
        "INSERT INTO merge_stat (name, value) VALUES ('dropped', ?1)
         ON CONFLICT DO UPDATE SET value = value + excluded.value",
    )?
    .execute([i64::try_from(n).unwrap_or(i64::MAX)])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn access_errors_keep_the_io_error() {
        use std::error::Error as _;
        let db = Path::new("/var/lib/useraudit/ua.db");
        let io = std::io::Error::from_raw_os_error(13);
        let e = from_file(db, FileError::io(Path::new("/var/lib/useraudit"), "directory", &io));
        assert!(e.permission_denied());
        assert_eq!(e.to_string(), format!("database {}: /var/lib/useraudit: directory: {io}", db.display()));
        let src = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
        assert_eq!(src.raw_os_error(), Some(13));
        let e = from_file(db, FileError::new(db, "not a directory"));
        assert!(!e.permission_denied());
        assert!(e.source().is_none());
        assert_eq!(e.to_string(), format!("database {}: not a directory", db.display()));
    }

    fn tmp() -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/ua.db");
        (d, p)
    }

    fn open(p: &Path) -> Store {
        Store::open(p, OpenOptions { create: true, require_root_owned: false }).unwrap()
    }

    #[test]
    fn creates_with_modes_and_schema() {
        let (_d, p) = tmp();
        let s = open(&p);
        assert_eq!(std::fs::metadata(p.parent().unwrap()).unwrap().mode() & 0o777, 0o700);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert_eq!(s.version().unwrap(), SCHEMA_VERSION);
        let jm: String = s.conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(jm, "wal");
        drop(s);
        // reopening is a no-op migration
        let s = open(&p);
        assert_eq!(s.count().unwrap(), 0);
    }

    #[test]
    fn refuses_missing_without_create_and_newer_schema() {
        let (_d, p) = tmp();
        assert!(Store::open(&p, OpenOptions { create: false, require_root_owned: false }).is_err());
        let s = open(&p);
        s.conn.execute_batch("PRAGMA user_version=99").unwrap();
        drop(s);
        let e = Store::open(&p, OpenOptions { create: false, require_root_owned: false }).err().unwrap();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    /// Schema version 1 was never in a release: refused, naming the file,
    /// which is left as it was.
    #[test]
    fn refuses_a_version_no_release_wrote() {
        let (_d, p) = tmp();
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        Connection::open(&p).unwrap().execute_batch("CREATE TABLE log (id INTEGER); PRAGMA user_version=1").unwrap();
        let before = std::fs::read(&p).unwrap();
        let e = Store::open(&p, OpenOptions { create: true, require_root_owned: false }).err().unwrap();
        assert!(matches!(e, StoreError::Unknown { found: 1, .. }), "{e}");
        assert!(e.to_string().contains(&p.display().to_string()) && e.to_string().contains("version 1"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }

    #[test]
    fn not_a_database() {
        let (d, _) = tmp();
        let p = d.path().join("junk.db");
        std::fs::write(&p, vec![b'x'; 4096]).unwrap();
        let e = Store::open(&p, OpenOptions { create: true, require_root_owned: false }).err().unwrap();
        assert!(matches!(e, StoreError::Sql { .. }), "{e}");
    }

    #[test]
    fn unsafe_permissions_refused() {
        let (d, _) = tmp();
        let dir = d.path().join("open");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Store::open(&dir.join("ua.db"), OpenOptions { create: true, require_root_owned: true }).err().unwrap();
        assert!(e.to_string().contains("refusing directory"), "{e}");
    }

    #[test]
    fn log_round_trip_and_filters() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let weird: &[u8] = b"al\xffice\n\x1b[31m";
        for (i, (user, ok)) in [(&b"alice"[..], true), (weird, false), (b"bob", false)].iter().enumerate() {
            s.insert(&NewEntry {
                time: 1000 + i as i64,
                success: *ok,
                user,
                service: Some(b"sshd"),
                rhost: Some(b"203.0.113.9"),
                reason: (!ok).then_some(LogReason::Auth),
                ..Default::default()
            })
            .unwrap();
        }
        let all = s.query(&LogQuery::default()).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].user, b"bob");
        assert_eq!(all[1].user, weird);
        assert_eq!(all[2].reason, None);
        assert_eq!(all[1].reason.as_deref(), Some("auth"));
        let f = s.query(&LogQuery { success: Some(false), ..Default::default() }).unwrap();
        assert_eq!(f.len(), 2);
        let u = s.query(&LogQuery { user: Some(weird.to_vec()), ..Default::default() }).unwrap();
        assert_eq!(u.len(), 1);
        let t = s.query(&LogQuery { since: Some(1001), until: Some(1002), ..Default::default() }).unwrap();
        assert_eq!(t.len(), 1);
        let l = s.query(&LogQuery { limit: Some(1), ..Default::default() }).unwrap();
        assert_eq!(l[0].user, b"bob");
        // huge fields are capped
        let big = vec![b'x'; 70_000];
        s.insert(&NewEntry { time: 5, user: &big, rhost: Some(&big), ..Default::default() }).unwrap();
        let e = s.query(&LogQuery { since: Some(5), until: Some(6), ..Default::default() }).unwrap();
        assert_eq!(e[0].user.len(), useraudit_core::text::FIELD_CAP);
        assert_eq!(e[0].rhost.as_ref().unwrap().len(), useraudit_core::text::FIELD_CAP);
        // retention
        let n = s.delete_before(1001).unwrap();
        assert_eq!(n, 2);
        assert_eq!(s.count().unwrap(), 2);
    }

    /// Retention deletes in batches: several full batches and a partial
    /// one, exactly the old rows and nothing newer.
    #[test]
    fn retention_deletes_in_batches() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let old = 2 * DELETE_BATCH + 17;
        let entries = (0..old + 500).map(|i| NewEntry { time: i as i64, user: b"u", ..Default::default() });
        s.bulk_insert(entries).unwrap();
        assert_eq!(s.delete_before(old as i64).unwrap(), old as u64);
        assert_eq!(s.count().unwrap(), 500);
        assert_eq!(s.count_before(old as i64).unwrap(), 0);
        assert_eq!(s.count_before(old as i64 + 1).unwrap(), 1);
        assert_eq!(s.delete_before(old as i64 + DELETE_BATCH as i64).unwrap(), 500);
        assert_eq!(s.count().unwrap(), 0);
        assert_eq!(s.delete_before(i64::MAX).unwrap(), 0);
        // Emptied, the log still never gives an id twice.
        let last = (old + 500) as i64;
        let n = s.write(|t| t.insert(&NewEntry { time: 1, user: b"v", ..Default::default() })).unwrap();
        assert_eq!(n, last + 1);
        assert_eq!(s.last_id().unwrap(), last + 1);
        assert_eq!(s.count().unwrap(), 1, "the held id is not left behind");
        s.write(|t| t.insert(&NewEntry { time: 2, user: b"v", ..Default::default() })).unwrap();
        assert_eq!(s.entries_after(last, 10).unwrap().iter().map(|e| e.id).collect::<Vec<_>>(), [last + 1, last + 2]);
    }

    #[test]
    fn spool_is_merged_once_with_method_corrections() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        assert_eq!(s.merge_spool().unwrap(), Merged::default());
        let e = |user: &'static [u8], time: i64| NewEntry {
            time,
            success: true,
            user,
            auth_method: Some(b"pam"),
            ..Default::default()
        };
        spool::append(&p, &e(b"alice", 10)).unwrap();
        spool::append(&p, &e(b"bob", 10)).unwrap();
        spool::append_set_method(&p, 10, b"alice", b"publickey").unwrap();
        // the same spool generation met twice (a merge whose file removal
        // did not happen): the second pass adds only what came after
        let copy = std::fs::read(spool::path_for(&p)).unwrap();
        assert_eq!(s.merge_spool().unwrap(), Merged { entries: 2, ..Default::default() });
        assert!(!spool::path_for(&p).exists());
        assert!(spool::set_aside_files(&p).unwrap().is_empty());
        let again = useraudit_core::files::beside(&spool::path_for(&p), ".merging-00000000000000000001-1");
        std::fs::write(&again, &copy).unwrap();
        spool::append(&p, &e(b"carol", 11)).unwrap();
        assert_eq!(s.merge_spool().unwrap(), Merged { entries: 1, ..Default::default() });
        let all = s.query(&LogQuery::default()).unwrap();
        let got: Vec<(&[u8], Option<&[u8]>)> = all.iter().map(|e| (&e.user[..], e.auth_method.as_deref())).collect();
        assert_eq!(
            got,
            vec![(&b"carol"[..], Some(&b"pam"[..])), (b"bob", Some(b"pam")), (b"alice", Some(b"publickey"))]
        );
    }

    fn times(s: &Store) -> Vec<i64> {
        let mut t: Vec<i64> = s.query(&LogQuery::default()).unwrap().iter().map(|e| e.time).collect();
        t.sort();
        t
    }

    /// The merge streams the spool in batches: a spool of many batches
    /// arrives whole, each entry once; a merge stopped between batches (as
    /// a crash would stop it) leaves the file, and the next merge adds only
    /// what the first did not, also when it runs with another batch size.
    #[test]
    fn merge_streams_in_batches_and_resumes_without_duplicates() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let e = |i: i64| NewEntry { time: i, success: true, user: b"u", ..Default::default() };
        for i in 0..1000 {
            spool::append(&p, &e(i)).unwrap();
        }
        let m = s.merge_spool_batched(7, &mut usize::MAX.clone()).unwrap();
        assert_eq!(m, Merged { entries: 1000, ..Default::default() });
        assert_eq!(times(&s), (0..1000).collect::<Vec<_>>());
        assert!(spool::set_aside_files(&p).unwrap().is_empty());

        for i in 1000..2000 {
            spool::append(&p, &e(i)).unwrap();
        }
        // stopped after 3 batches of 100
        let m = s.merge_spool_batched(100, &mut 3).unwrap();
        assert_eq!(m.entries, 300);
        assert_eq!(spool::set_aside_files(&p).unwrap().len(), 1, "left for the next merge");
        // more logins meanwhile, then a merge stopped again, with another size
        for i in 2000..2100 {
            spool::append(&p, &e(i)).unwrap();
        }
        let m = s.merge_spool_batched(33, &mut 5).unwrap();
        assert_eq!(m.entries, 165);
        // two merges meeting the same file: the first one's upto is honoured
        let mut s2 = open(&p);
        let m = s2.merge_spool_batched(50, &mut 2).unwrap();
        assert_eq!(m.entries, 100);
        assert_eq!(s.merge_spool().unwrap().entries, 1000 - 565 + 100);
        assert!(spool::set_aside_files(&p).unwrap().is_empty());
        assert_eq!(times(&s), (0..2100).collect::<Vec<_>>());
        assert_eq!(s.merge_spool().unwrap(), Merged::default());
    }

    /// A spool whose header is damaged: its intact records are recovered
    /// once, however many merges meet the file, which is kept; entries
    /// dropped at the bound become one `dropped` entry, once.
    #[test]
    fn damaged_header_recovered_once_and_drops_counted_once() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let e = |i: i64| NewEntry { time: i, success: false, user: b"alice", ..Default::default() };
        for i in 0..50 {
            spool::append(&p, &e(i)).unwrap();
        }
        let path = spool::path_for(&p);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"garbage!", 0).unwrap();
        drop(f);
        let a = spool::append_bounded(&p, &e(50), spool::Bound { max_bytes: 1 << 20, account: true }).unwrap();
        assert!(a.damaged_aside.is_some());
        // stopped half-way through the damaged file, then completed
        let m = s.merge_spool_batched(10, &mut 3).unwrap();
        assert_eq!(m.entries, 1 + 20, "the new spool (first), then two batches of the damaged one");
        assert_eq!(m.damaged, 32, "the header's bytes");
        let m = s.merge_spool().unwrap();
        assert_eq!(m.entries, 30);
        assert_eq!(m.damaged, 0, "counted where the reading started");
        for _ in 0..2 {
            assert_eq!(s.merge_spool().unwrap().entries, 0, "merged once");
        }
        assert_eq!(times(&s), (0..51).collect::<Vec<_>>());
        assert_eq!(spool::damaged_files(&p).unwrap().len(), 1, "kept for the administrator");

        // drops: counted once, as one entry
        let unknown = spool::Bound { max_bytes: 65536, account: false };
        let mut i = 100;
        while spool::append_bounded(&p, &NewEntry { time: i, user: b"nosuch", ..Default::default() }, unknown)
            .unwrap()
            .dropped
            .is_none()
        {
            i += 1;
        }
        spool::append_bounded(&p, &NewEntry { time: i, user: b"nosuch", ..Default::default() }, unknown).unwrap();
        let m = s.merge_spool_batched(500, &mut usize::MAX.clone()).unwrap();
        assert_eq!(m.dropped, 2);
        let dropped: Vec<Entry> = s
            .query(&LogQuery::default())
            .unwrap()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("dropped"))
            .collect();
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].user, b"[2 entries dropped at the spool bound]");
        assert_eq!(s.merge_spool().unwrap().dropped, 0);
    }

    /// A file set aside whose merge stopped half-way, then whose header
    /// magic was damaged: the merge goes on under the generation that
    /// survived in the header, adding nothing twice.
    #[test]
    fn damaged_magic_of_a_half_merged_file_adds_nothing_twice() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        for i in 0..100 {
            spool::append(&p, &NewEntry { time: i, user: b"u", ..Default::default() }).unwrap();
        }
        assert_eq!(s.merge_spool_batched(10, &mut 4).unwrap().entries, 40);
        let file = spool::set_aside_files(&p).unwrap().remove(0);
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, b"garbage!", 0).unwrap();
        drop(f);
        assert_eq!(s.merge_spool().unwrap().entries, 60);
        assert_eq!(times(&s), (0..100).collect::<Vec<_>>());
        assert_eq!(spool::damaged_files(&p).unwrap().len(), 1);
        assert_eq!(s.merge_spool().unwrap().entries, 0);
    }

    /// Merges running at once while logins append: every entry lands in
    /// the log exactly once, and no merge fails.
    #[test]
    fn concurrent_merges_add_each_entry_once() {
        let (_d, p) = tmp();
        drop(open(&p));
        let e = |i: i64| NewEntry { time: i, success: true, user: b"u", ..Default::default() };
        let writer = {
            let p = p.clone();
            std::thread::spawn(move || {
                for i in 0..2000 {
                    spool::append(&p, &e(i)).unwrap();
                }
            })
        };
        let mergers: Vec<_> = (0..3)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    let mut s = open(&p);
                    for _ in 0..30 {
                        s.merge_spool().unwrap();
                    }
                })
            })
            .collect();
        writer.join().unwrap();
        for m in mergers {
            m.join().unwrap();
        }
        let mut s = open(&p);
        s.merge_spool().unwrap();
        assert_eq!(s.count().unwrap(), 2000);
        let times: std::collections::BTreeSet<i64> =
            s.query(&LogQuery::default()).unwrap().iter().map(|e| e.time).collect();
        assert_eq!(times.len(), 2000);
    }

    /// Commands that meet a brand-new database at once (the sweep timer and
    /// an administrator, say) all open it; none may fail.
    #[test]
    fn a_new_database_opened_by_many_at_once() {
        for _ in 0..300 {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("new.db");
            let gate = std::sync::Arc::new(std::sync::Barrier::new(4));
            let opens: Vec<_> = (0..4)
                .map(|_| {
                    let (p, gate) = (p.clone(), gate.clone());
                    std::thread::spawn(move || {
                        gate.wait();
                        Store::open(&p, OpenOptions { create: true, require_root_owned: false }).map(|_| ())
                    })
                })
                .collect();
            for o in opens {
                if let Err(e) = o.join().unwrap() {
                    panic!("{e}");
                }
            }
            assert_eq!(
                Store::open(&p, OpenOptions { create: false, require_root_owned: false }).unwrap().version().unwrap(),
                SCHEMA_VERSION
            );
        }
    }

    /// The attempt counters count every entry inserted or merged, stay
    /// when retention deletes the entries, keep at most SERVICE_CAP
    /// services apart, and a merge records its time and the drops.
    #[test]
    fn counters_survive_retention_and_cap_services() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let names: Vec<Vec<u8>> = (0..SERVICE_CAP + 5).map(|i| format!("svc{i}").into_bytes()).collect();
        for (i, svc) in names.iter().enumerate() {
            s.insert(&NewEntry { time: i as i64, user: b"u", service: Some(svc), ..Default::default() }).unwrap();
        }
        s.insert(&NewEntry { time: 100, success: true, user: b"u", service: Some(&names[0]), ..Default::default() })
            .unwrap();
        s.insert(&NewEntry { time: 101, user: b"u", reason: Some(LogReason::Auth), ..Default::default() }).unwrap();
        let before = s.attempt_counts().unwrap();
        let get = |c: &[AttemptCount], svc: &[u8], outcome: &str, reason: &str| {
            c.iter().find(|a| a.service == svc && a.outcome == outcome && a.reason == reason).map(|a| a.n)
        };
        assert_eq!(get(&before, b"svc0", "failure", ""), Some(1));
        assert_eq!(get(&before, b"svc0", "success", ""), Some(1));
        assert_eq!(get(&before, OTHER_SERVICE, "failure", ""), Some(5), "the services past the cap");
        assert_eq!(get(&before, OTHER_SERVICE, "failure", "auth"), Some(1), "no service, met past the cap");
        let services: std::collections::BTreeSet<&[u8]> = before.iter().map(|a| &a.service[..]).collect();
        assert_eq!(services.len() as i64, SERVICE_CAP + 1);
        assert_eq!(before.iter().map(|a| a.n).sum::<u64>(), SERVICE_CAP as u64 + 7);
        s.delete_before(1000).unwrap();
        assert_eq!(s.count().unwrap(), 0);
        assert_eq!(s.attempt_counts().unwrap(), before, "retention does not lower the counters");

        assert_eq!(s.merge_stats().unwrap(), MergeStats::default());
        spool::append(&p, &NewEntry { time: 5, success: true, user: b"v", ..Default::default() }).unwrap();
        let t0 = useraudit_core::text::now_micros();
        s.merge_spool().unwrap();
        let m = s.merge_stats().unwrap();
        assert!(m.last_merge.is_some_and(|t| t >= t0), "{m:?}");
        assert_eq!(get(&s.attempt_counts().unwrap(), OTHER_SERVICE, "success", ""), Some(1));
    }

    /// Migration 3 seeds the counters from the log kept so far.
    #[test]
    fn migration_3_seeds_the_counters_from_the_log() {
        let (_d, p) = tmp();
        {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let c = Connection::open(&p).unwrap();
            c.execute_batch(SCHEMA).unwrap();
            c.execute_batch("PRAGMA user_version=2").unwrap();
            for (ok, svc, reason) in
                [(1, "sshd", None), (0, "sshd", Some("auth")), (0, "sshd", Some("auth")), (0, "su", Some("dropped"))]
            {
                c.execute(
                    "INSERT INTO log (time, success, user, service, reason) VALUES (1, ?1, x'75', ?2, ?3)",
                    params![ok, svc.as_bytes(), reason],
                )
                .unwrap();
            }
        }
        let s = open(&p);
        let c = s.attempt_counts().unwrap();
        let got: Vec<(&[u8], &str, &str, u64)> =
            c.iter().map(|a| (&a.service[..], a.outcome.as_str(), a.reason.as_str(), a.n)).collect();
        assert_eq!(got, vec![(&b"sshd"[..], "failure", "auth", 2), (b"sshd", "success", "", 1)]);
    }

    #[test]
    fn a_failed_closure_rolls_back() {
        let (_d, p) = tmp();
        let mut s = open(&p);
        let r: Result<()> = s.write(|t| {
            t.insert(&NewEntry { time: 1, user: b"x", ..Default::default() })?;
            Err(StoreError::Newer { path: "x".into(), found: 9 })
        });
        assert!(r.is_err());
        assert_eq!(s.count().unwrap(), 0);
    }
}
