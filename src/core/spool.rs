//! The log spool: where the PAM module writes login attempts, and from
//! where `useraudit-admin` moves them into the SQLite log.
//!
//! A login is a new process, and opening SQLite (reading the schema,
//! rebuilding the WAL index, a write transaction) costs several times what
//! pam_faillock does in all. So the module only appends one record to
//! `DATABASE.spool` with one `write(2)`, and every `useraudit-admin`
//! command that opens the database first merges the spool into it
//! (`Store::merge_spool` in useraudit-admin); the sweep timer does so daily.
//!
//! File: a 32-byte header (`UASPOOL2`, a random 16-byte generation id,
//! and a u64 count of entries dropped at the bound), then records: `UAr1`,
//! payload length (u32), CRC-32 of the payload, the payload. Writers append
//! under a shared `flock`, after checking the header: a spool whose header
//! is damaged is set aside as `DATABASE.spool.damaged-TIME-PID` and a new
//! one started, so no entry is written behind it. The spool is bounded
//! (`spool_max_bytes`): past three quarters of it, entries for names that
//! are not accounts are dropped, at the bound all entries; each drop adds
//! one to the header's count, rewritten in place under the exclusive lock.
//!
//! The merger takes the lock exclusively only to rename the file aside (a
//! writer that then gets its lock sees that the name leads elsewhere and
//! starts a new spool), so logins never wait for a merge. It then reads
//! the file in chunks and copies its records into SQLite in batches; each
//! batch's transaction also records (generation, end offset of its last
//! record), and the next batch, or a later merge, skips what is recorded.
//! The last transaction records the file's whole length and adds the
//! dropped count as one log entry; then the file is removed. A merge cut
//! short at any point is therefore never applied twice. A damaged record
//! (a short write on a full disk, a power cut) is skipped up to the next
//! record mark and counted, never misread. A damaged header costs only the
//! header: the file is scanned for records from its first byte, under a
//! generation derived from its content, and kept for the administrator.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::files::{BUSY_TIMEOUT, Dec, Enc, FileError, beside, lock};
use crate::policy::LogReason;
use crate::sys::{self, FileLock};
use crate::text::cap;

const HEADER_MAGIC: &[u8; 8] = b"UASPOOL2";
const HEADER_LEN: usize = 32;
/// Where the header keeps the count of dropped entries.
const DROPPED_AT: u64 = 24;
/// The first version's header (no dropped count): still read, never
/// appended to.
const HEADER_MAGIC_V1: &[u8; 8] = b"UASPOOL1";
const HEADER_LEN_V1: usize = 24;
const RECORD_MAGIC: &[u8; 4] = b"UAr1";
/// Record mark, length, CRC.
const FRAME_LEN: usize = 12;
/// No honest record is longer (six fields of at most FIELD_CAP bytes).
const MAX_PAYLOAD: usize = 64 * 1024;

const KIND_ENTRY: u8 = 1;
const KIND_SET_METHOD: u8 = 2;

/// The spool file of a database.
pub fn path_for(db: &Path) -> PathBuf {
    beside(db, ".spool")
}

/// One login attempt to record.
#[derive(Debug, Clone, Default)]
pub struct NewEntry<'a> {
    pub time: i64,
    pub success: bool,
    pub user: &'a [u8],
    pub service: Option<&'a [u8]>,
    pub rhost: Option<&'a [u8]>,
    pub ruser: Option<&'a [u8]>,
    pub tty: Option<&'a [u8]>,
    pub auth_method: Option<&'a [u8]>,
    pub reason: Option<LogReason>,
}

/// A login attempt read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpooledEntry {
    pub time: i64,
    pub success: bool,
    pub user: Vec<u8>,
    pub service: Option<Vec<u8>>,
    pub rhost: Option<Vec<u8>>,
    pub ruser: Option<Vec<u8>>,
    pub tty: Option<Vec<u8>>,
    pub auth_method: Option<Vec<u8>>,
    pub reason: Option<LogReason>,
}

impl SpooledEntry {
    pub fn as_new(&self) -> NewEntry<'_> {
        NewEntry {
            time: self.time,
            success: self.success,
            user: &self.user,
            service: self.service.as_deref(),
            rhost: self.rhost.as_deref(),
            ruser: self.ruser.as_deref(),
            tty: self.tty.as_deref(),
            auth_method: self.auth_method.as_deref(),
            reason: self.reason,
        }
    }
}

/// What the spool holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Entry(SpooledEntry),
    /// The auth method of the entry of (time, user) became known later in
    /// the same login (sshd tells it to the account stack only).
    SetMethod {
        time: i64,
        user: Vec<u8>,
        method: Vec<u8>,
    },
}

fn reason_code(r: Option<LogReason>) -> u8 {
    match r {
        None => 0,
        Some(LogReason::Auth) => 1,
        Some(LogReason::Locked) => 2,
        Some(LogReason::Disabled) => 3,
        Some(LogReason::AccountExpired) => 4,
        Some(LogReason::PasswordExpired) => 5,
        Some(LogReason::HostBlocked) => 6,
    }
}

fn reason_of(c: u8) -> Option<Option<LogReason>> {
    Some(match c {
        0 => None,
        1 => Some(LogReason::Auth),
        2 => Some(LogReason::Locked),
        3 => Some(LogReason::Disabled),
        4 => Some(LogReason::AccountExpired),
        5 => Some(LogReason::PasswordExpired),
        6 => Some(LogReason::HostBlocked),
        _ => return None,
    })
}

/// A framed record, ready for one `write(2)`.
fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_LEN + payload.len());
    out.extend_from_slice(RECORD_MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn encode_entry(e: &NewEntry<'_>) -> Vec<u8> {
    let mut p = Enc::default();
    p.u8(KIND_ENTRY);
    p.i64(e.time);
    p.u8(u8::from(e.success));
    p.u8(reason_code(e.reason));
    p.bytes(Some(cap(e.user)));
    for f in [e.service, e.rhost, e.ruser, e.tty, e.auth_method] {
        p.bytes(f.map(cap));
    }
    frame(&p.0)
}

fn encode_set_method(time: i64, user: &[u8], method: &[u8]) -> Vec<u8> {
    let mut p = Enc::default();
    p.u8(KIND_SET_METHOD);
    p.i64(time);
    p.bytes(Some(cap(user)));
    p.bytes(Some(cap(method)));
    frame(&p.0)
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut d = Dec::new(payload);
    let r = match d.u8()? {
        KIND_ENTRY => {
            let time = d.i64()?;
            let success = match d.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            };
            let reason = reason_of(d.u8()?)?;
            let user = d.bytes()??;
            Record::Entry(SpooledEntry {
                time,
                success,
                user,
                service: d.bytes()?,
                rhost: d.bytes()?,
                ruser: d.bytes()?,
                tty: d.bytes()?,
                auth_method: d.bytes()?,
                reason,
            })
        }
        KIND_SET_METHOD => Record::SetMethod { time: d.i64()?, user: d.bytes()??, method: d.bytes()?? },
        _ => return None,
    };
    d.is_empty().then_some(r)
}

/// How far the spool may grow for one append: `max_bytes` for an
/// account's entry, three quarters of it for a name that is not an account
/// (so an attacker who sprays unknown names leaves room for the accounts'
/// entries).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub max_bytes: u64,
    /// The entry is for an account (not a name NSS does not know).
    pub account: bool,
}

impl Bound {
    fn limit(self) -> u64 {
        if self.account { self.max_bytes } else { self.max_bytes / 4 * 3 }
    }
}

/// What an append did besides writing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Appended {
    /// The entry was dropped at the spool's bound; the spool's count of
    /// dropped entries is now this.
    pub dropped: Option<u64>,
    /// The spool's header was damaged: it was set aside under this name
    /// (for the merge to recover) and a new spool started.
    pub damaged_aside: Option<PathBuf>,
}

/// Append a login attempt to the spool of `db`, with the default bound.
pub fn append(db: &Path, e: &NewEntry<'_>) -> Result<(), FileError> {
    append_bounded(db, e, Bound { max_bytes: crate::config::SPOOL_MAX_DEFAULT, account: true }).map(|_| ())
}

/// Append a login attempt to the spool of `db`, unless the spool is at
/// its bound: then the entry is dropped and counted in the header.
pub fn append_bounded(db: &Path, e: &NewEntry<'_>, bound: Bound) -> Result<Appended, FileError> {
    write_record(db, &encode_entry(e), Some(bound))
}

/// Append a correction of the auth method of the entry (time, user). Only
/// a successful login makes one, so it is not bounded.
pub fn append_set_method(db: &Path, time: i64, user: &[u8], method: &[u8]) -> Result<(), FileError> {
    write_record(db, &encode_set_method(time, user, method), None).map(|_| ())
}

/// The header length of a file that starts with `h`, if it is a spool's.
fn header_len(h: &[u8]) -> Option<usize> {
    if h.len() >= HEADER_LEN && &h[..8] == HEADER_MAGIC {
        Some(HEADER_LEN)
    } else if h.len() >= HEADER_LEN_V1 && &h[..8] == HEADER_MAGIC_V1 {
        Some(HEADER_LEN_V1)
    } else {
        None
    }
}

/// `pread` until `buf` is full or the file ends; the bytes read.
fn read_full_at(f: &File, buf: &mut [u8], at: u64, path: &Path) -> Result<usize, FileError> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], at + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FileError::io(path, "cannot read", &e)),
        }
    }
    Ok(n)
}

fn write_record(db: &Path, rec: &[u8], bound: Option<Bound>) -> Result<Appended, FileError> {
    let path = path_for(db);
    let mut out = Appended::default();
    // A merge may remove the file between our open and our lock; then the
    // next round creates a new one. Each lost round means a whole merge
    // happened, so rounds are few; the wait is bounded all the same.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let f = match std::fs::OpenOptions::new().read(true).append(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create(&path)?;
                continue;
            }
            Err(e) => return Err(FileError::io(&path, "cannot open", &e)),
        };
        lock(&f, &path, FileLock::Shared)?;
        let Some(len) = named_len(&f, &path)? else {
            // Set aside for a merge between our open and our lock.
            continue;
        };
        // Never append behind a header that is not this version's: a
        // damaged one is set aside for the merge to recover what it can,
        // an older version's is set aside for merging as it is.
        let mut h = [0u8; HEADER_LEN];
        let n = read_full_at(&f, &mut h, 0, &path)?;
        match header_len(&h[..n]) {
            Some(HEADER_LEN) => {}
            Some(_) => {
                set_aside_locked(&f, &path, ".merging-")?;
                continue;
            }
            None => {
                if let Some(aside) = set_aside_locked(&f, &path, ".damaged-")? {
                    out.damaged_aside = Some(aside);
                }
                continue;
            }
        }
        if let Some(b) = bound {
            if len.saturating_add(rec.len() as u64) > b.limit() {
                // At the bound: count the drop in the header, under the
                // exclusive lock (appends wait a moment; only at the bound).
                lock(&f, &path, FileLock::Exclusive)?;
                if named_len(&f, &path)?.is_none() {
                    // Set aside meanwhile: the new spool has room.
                    continue;
                }
                out.dropped = Some(count_drop(&f, &path)?);
                return Ok(out);
            }
        }
        // One write(2) with O_APPEND: concurrent writers never interleave
        // within a record. A short write (a full disk) leaves a partial
        // record, which the merge skips; it is reported here as a failure.
        return match (&f).write(rec) {
            Ok(n) if n == rec.len() => Ok(out),
            Ok(n) => Err(FileError::new(&path, format!("short write ({n} of {} bytes; disk full?)", rec.len()))),
            Err(e) => Err(FileError::io(&path, "cannot write", &e)),
        };
    }
    Err(FileError::new(
        &path,
        format!("the spool kept being replaced for {} s while writing; giving up", BUSY_TIMEOUT.as_secs()),
    ))
}

/// Add one to the dropped count in the header of the spool `f` (locked
/// exclusively); the new count. Rewritten in place: no new disk space.
fn count_drop(f: &File, path: &Path) -> Result<u64, FileError> {
    // `f` is opened O_APPEND, where pwrite(2) appends; write through a
    // second descriptor of the same file.
    let w = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| FileError::io(path, "cannot open", &e))?;
    let (a, b) = (f.metadata(), w.metadata());
    if !matches!((&a, &b), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev()) {
        return Err(FileError::new(path, "the spool was replaced while counting a dropped entry"));
    }
    let mut c = [0u8; 8];
    if read_full_at(&w, &mut c, DROPPED_AT, path)? != 8 {
        return Err(FileError::new(path, "the spool's header is cut short"));
    }
    let n = u64::from_le_bytes(c).saturating_add(1);
    w.write_all_at(&n.to_le_bytes(), DROPPED_AT)
        .map_err(|e| FileError::io(path, "cannot count a dropped entry", &e))?;
    Ok(n)
}

/// Set the spool `f` (locked shared by us) aside as `DATABASE.spool` +
/// `kind` + `TIME-PID`, under its exclusive lock, if `path` still names
/// it and its header still needs it; the new name when we moved it.
fn set_aside_locked(f: &File, path: &Path, kind: &str) -> Result<Option<PathBuf>, FileError> {
    lock(f, path, FileLock::Exclusive)?;
    if named_len(f, path)?.is_none() {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_LEN];
    let n = read_full_at(f, &mut h, 0, path)?;
    if header_len(&h[..n]) == Some(HEADER_LEN) {
        return Ok(None);
    }
    let aside = aside_name(path, kind);
    std::fs::rename(path, &aside).map_err(|e| FileError::io(path, "cannot set the spool aside", &e))?;
    Ok(Some(aside))
}

/// `DATABASE.spool` + `kind` + `TIME-PID`.
fn aside_name(path: &Path, kind: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    beside(path, &format!("{kind}{nanos:020}-{}", std::process::id()))
}

/// Create the spool with its header, atomically: the header is written to
/// a private file that is then linked into place, so no writer ever sees a
/// spool without one.
fn create(path: &Path) -> Result<(), FileError> {
    let id: [u8; 16] = sys::random_bytes().map_err(|e| FileError::io(path, "cannot get random bytes", &e))?;
    let tmp =
        beside(path, &format!(".new-{}-{:08x}", std::process::id(), u32::from_le_bytes([id[0], id[1], id[2], id[3]])));
    let r = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(|e| FileError::io(path, "cannot create", &e))?;
        let mut h = HEADER_MAGIC.to_vec();
        h.extend_from_slice(&id);
        h.extend_from_slice(&0u64.to_le_bytes());
        f.write_all(&h).map_err(|e| FileError::io(path, "cannot write header", &e))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(FileError::io(path, "cannot create", &e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    r
}

/// Set the spool aside for merging: under its exclusive lock (so no
/// append is half done), rename it to `DATABASE.spool.merging-TIME-PID`.
/// Logins that then take their lock on the old file see that the name no
/// longer leads to it and start a new spool, so they never wait for the
/// merge itself, however long it takes. Returns whether there was one.
pub fn set_aside(db: &Path) -> Result<bool, FileError> {
    let path = path_for(db);
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(FileError::io(&path, "cannot open", &e)),
        };
        lock(&f, &path, FileLock::Exclusive)?;
        if named_len(&f, &path)?.is_none() {
            // Another merge set it aside while we waited.
            continue;
        }
        std::fs::rename(&path, aside_name(&path, ".merging-"))
            .map_err(|e| FileError::io(&path, "cannot set the spool aside for merging", &e))?;
        return Ok(true);
    }
    Err(FileError::new(&path, format!("the spool kept being replaced for {} s; giving up", BUSY_TIMEOUT.as_secs())))
}

/// The length of the open file `f` if `path` still names it (a merge
/// renames it).
fn named_len(f: &File, path: &Path) -> Result<Option<u64>, FileError> {
    let md = f.metadata().map_err(|e| FileError::io(path, "cannot stat", &e))?;
    if !md.is_file() {
        return Err(FileError::new(path, "not a regular file"));
    }
    Ok(match std::fs::symlink_metadata(path) {
        Ok(cur) => (cur.ino() == md.ino() && cur.dev() == md.dev()).then_some(md.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(FileError::io(path, "cannot stat", &e)),
    })
}

/// The files beside the spool whose names start with `DATABASE.spool` +
/// `kind`, oldest first.
fn files_of(db: &Path, kind: &str) -> Result<Vec<PathBuf>, FileError> {
    let dir = crate::files::parent(db);
    let prefix =
        format!("{}{kind}", path_for(db).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let rd = std::fs::read_dir(dir).map_err(|e| FileError::io(dir, "cannot list", &e))?;
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| FileError::io(dir, "cannot list", &e))?;
        if ent.file_name().to_string_lossy().starts_with(&prefix) && ent.file_type().is_ok_and(|t| t.is_file()) {
            out.push(ent.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The spool files set aside and not yet merged (a merge that stopped
/// half-way leaves one), oldest first.
pub fn set_aside_files(db: &Path) -> Result<Vec<PathBuf>, FileError> {
    files_of(db, ".merging-")
}

/// The spool files set aside because their header was damaged
/// (`DATABASE.spool.damaged-TIME-PID`), oldest first. The merge recovers
/// their intact records; they stay for the administrator to inspect and
/// remove, and every command reports them meanwhile.
pub fn damaged_files(db: &Path) -> Result<Vec<PathBuf>, FileError> {
    files_of(db, ".damaged-")
}

/// What waits to be merged beside `db`: the spool and the files set
/// aside (merging, or damaged), as (bytes, log entries). Read only:
/// nothing is locked, renamed or removed, so it may be called at any time
/// (a file being merged meanwhile may be counted whole, or not at all). A
/// file that vanishes while read counts as empty.
pub fn backlog(db: &Path) -> Result<(u64, u64), FileError> {
    let mut files = vec![path_for(db)];
    files.extend(set_aside_files(db)?);
    files.extend(damaged_files(db)?);
    let (mut bytes, mut entries) = (0u64, 0u64);
    for path in files {
        let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(FileError::io(&path, "cannot open", &e)),
        };
        let len = file.metadata().map_err(|e| FileError::io(&path, "cannot stat", &e))?.len();
        let mut h = [0u8; HEADER_LEN];
        let n = read_full_at(&file, &mut h, 0, &path)?;
        let start = header_len(&h[..n]).unwrap_or(0) as u64;
        let mut recs = Records { f: &file, path: &path, len, buf: Vec::new(), pos: 0, off: start, damaged: 0 };
        while let Some((_, rec)) = recs.next_record()? {
            if matches!(rec, Record::Entry(_)) {
                entries += 1;
            }
        }
        bytes += len;
    }
    Ok((bytes, entries))
}

/// A spool file set aside, open for merging.
#[derive(Debug)]
pub struct SpoolFile {
    path: PathBuf,
    file: File,
    /// The generation id: from the header, or for a damaged file one
    /// derived from its whole content (so merging it again adds nothing).
    pub generation: [u8; 16],
    /// The header was intact. A damaged file's records are found by
    /// scanning it from its first byte.
    pub intact: bool,
    /// For a damaged file, the generation bytes of its header, which may
    /// have survived the damage: if a merge already recorded progress for
    /// them, that progress applies (the offsets are the same).
    pub header_generation: Option<[u8; 16]>,
    /// Entries dropped at the bound (counted in the header).
    pub dropped: u64,
    /// The file's length when opened (it no longer changes: no writer
    /// appends to a file set aside).
    pub len: u64,
    /// Where the records start.
    start: u64,
}

/// Read size of the merge and of the content hash.
const READ_CHUNK: usize = 256 * 1024;

/// Open a spool file set aside for merging. A `.merging-` file whose
/// header is not a spool's is first renamed `.damaged-` (and then read as
/// one); a `.damaged-` file is always read as one.
pub fn open_set_aside(path: &Path) -> Result<SpoolFile, FileError> {
    let open = |p: &Path| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(p)
            .map_err(|e| FileError::io(p, "cannot open", &e))
    };
    let file = open(path)?;
    let len = file.metadata().map_err(|e| FileError::io(path, "cannot stat", &e))?.len();
    let mut h = [0u8; HEADER_LEN];
    let n = read_full_at(&file, &mut h, 0, path)?;
    let damaged_name = path.file_name().is_some_and(|n| n.to_string_lossy().contains(".damaged-"));
    if !damaged_name {
        if let Some(hlen) = header_len(&h[..n]) {
            let generation: [u8; 16] = h[8..24].try_into().unwrap_or_default();
            let dropped =
                if hlen == HEADER_LEN { u64::from_le_bytes(h[24..32].try_into().unwrap_or_default()) } else { 0 };
            let start = hlen as u64;
            let path = path.into();
            let intact = true;
            return Ok(SpoolFile { path, file, generation, intact, header_generation: None, dropped, len, start });
        }
    }
    let path = if damaged_name {
        path.to_path_buf()
    } else {
        // DATABASE.spool.merging-T-P becomes DATABASE.spool.damaged-T-P.
        let name =
            path.file_name().map(|n| n.to_string_lossy().replacen(".merging-", ".damaged-", 1)).unwrap_or_default();
        let aside = path.with_file_name(name);
        std::fs::rename(path, &aside)
            .map_err(|e| FileError::io(path, "damaged header, and cannot set it aside", &e))?;
        aside
    };
    let generation = content_id(&file, len, &path)?;
    let header_generation = (n >= 24).then(|| h[8..24].try_into().unwrap_or_default());
    Ok(SpoolFile { path, file, generation, intact: false, header_generation, dropped: 0, len, start: 0 })
}

/// A 16-byte id of a file's content: its length, CRC-32 and FNV-1a-32.
fn content_id(f: &File, len: u64, path: &Path) -> Result<[u8; 16], FileError> {
    let mut crc = crc32fast::Hasher::new();
    let mut fnv: u32 = 0x811c_9dc5;
    let mut buf = vec![0u8; READ_CHUNK];
    let mut at = 0u64;
    while at < len {
        let want = usize::try_from(len - at).unwrap_or(usize::MAX).min(READ_CHUNK);
        let n = read_full_at(f, &mut buf[..want], at, path)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        for &b in &buf[..n] {
            fnv = (fnv ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        at += n as u64;
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&len.to_le_bytes());
    id[8..12].copy_from_slice(&crc.finalize().to_le_bytes());
    id[12..].copy_from_slice(&fnv.to_le_bytes());
    Ok(id)
}

impl SpoolFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The records from file offset `from` (the end of a record, or 0),
    /// read in chunks: memory stays bounded however large the file.
    pub fn records_from(&self, from: u64) -> Records<'_> {
        let off = from.max(self.start).min(self.len);
        Records { f: &self.file, path: &self.path, len: self.len, buf: Vec::new(), pos: 0, off, damaged: 0 }
    }

    /// Remove the merged file.
    pub fn remove(self) -> Result<(), FileError> {
        std::fs::remove_file(&self.path).map_err(|e| FileError::io(&self.path, "cannot remove merged spool", &e))
    }
}

/// The intact records of a spool file, in order, each with the file
/// offset just past it; damaged bytes are skipped up to the next record
/// mark and counted.
pub struct Records<'a> {
    f: &'a File,
    path: &'a Path,
    len: u64,
    buf: Vec<u8>,
    /// Position in `buf`.
    pos: usize,
    /// File offset of `buf[0]`.
    off: u64,
    /// Bytes that were not part of an intact record.
    pub damaged: u64,
}

impl Records<'_> {
    /// Have at least `want` bytes from `pos` in the buffer, or all that
    /// is left of the file.
    fn fill(&mut self, want: usize) -> Result<(), FileError> {
        if self.buf.len() - self.pos >= want {
            return Ok(());
        }
        self.buf.drain(..self.pos);
        self.off += self.pos as u64;
        self.pos = 0;
        while self.buf.len() < want {
            let at = self.off + self.buf.len() as u64;
            if at >= self.len {
                break;
            }
            let chunk = usize::try_from(self.len - at).unwrap_or(usize::MAX).min(READ_CHUNK);
            let old = self.buf.len();
            self.buf.resize(old + chunk, 0);
            let n = read_full_at(self.f, &mut self.buf[old..], at, self.path)?;
            self.buf.truncate(old + n);
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The next intact record and the offset just past it.
    pub fn next_record(&mut self) -> Result<Option<(u64, Record)>, FileError> {
        loop {
            self.fill(FRAME_LEN + MAX_PAYLOAD)?;
            let b = &self.buf[self.pos..];
            if b.is_empty() {
                return Ok(None);
            }
            if let Some((n, rec)) = record_at(b) {
                self.pos += n;
                return Ok(Some((self.off + self.pos as u64, rec)));
            }
            // Skip to the next record mark; without one in the buffer, keep
            // its last three bytes (a mark may straddle the next read).
            let at_end = self.off + self.buf.len() as u64 >= self.len;
            let skip = match b[1..].windows(4).position(|w| w == RECORD_MAGIC) {
                Some(i) => 1 + i,
                None if at_end => b.len(),
                None => b.len().saturating_sub(3).max(1),
            };
            self.damaged += skip as u64;
            self.pos += skip;
        }
    }
}

/// The intact record at the start of `b`, with its framed length.
fn record_at(b: &[u8]) -> Option<(usize, Record)> {
    if b.len() < FRAME_LEN || &b[..4] != RECORD_MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
    if len > MAX_PAYLOAD || b.len() < FRAME_LEN + len {
        return None;
    }
    let payload = &b[FRAME_LEN..FRAME_LEN + len];
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((FRAME_LEN + len, decode(payload)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spool file set aside, read whole.
    struct Pending {
        file: SpoolFile,
        generation: [u8; 16],
        records: Vec<(u64, Record)>,
        damaged: u64,
        len: u64,
    }

    impl Pending {
        fn remove(self) -> Result<(), FileError> {
            self.file.remove()
        }
    }

    fn read(path: &Path) -> Result<Pending, FileError> {
        let file = open_set_aside(path)?;
        let mut r = file.records_from(0);
        let mut records = Vec::new();
        while let Some(x) = r.next_record()? {
            records.push(x);
        }
        let damaged = r.damaged;
        Ok(Pending { generation: file.generation, len: file.len, records, damaged, file })
    }

    /// Set the spool aside and read it (the merge's first steps).
    fn take(db: &Path) -> Result<Option<Pending>, FileError> {
        if !set_aside(db)? {
            return Ok(None);
        }
        let files = set_aside_files(db)?;
        assert_eq!(files.len(), 1, "{files:?}");
        read(&files[0]).map(Some)
    }

    fn entry(user: &[u8], t: i64) -> NewEntry<'_> {
        NewEntry {
            time: t,
            success: t % 2 == 0,
            user,
            service: Some(b"sshd"),
            rhost: Some(b"203.0.113.9"),
            ruser: None,
            tty: Some(b"ssh"),
            auth_method: Some(b"password"),
            reason: (t % 2 == 1).then_some(LogReason::Auth),
        }
    }

    /// The backlog counts the spool and the files set aside, entries
    /// only (not method corrections), and changes nothing.
    #[test]
    fn backlog_counts_without_touching() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        assert_eq!(backlog(&db).unwrap(), (0, 0));
        for t in 0..3 {
            append(&db, &entry(b"alice", t)).unwrap();
        }
        assert!(set_aside(&db).unwrap());
        append(&db, &entry(b"bob", 7)).unwrap();
        append_set_method(&db, 7, b"bob", b"publickey").unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len();
        let aside = set_aside_files(&db).unwrap();
        let bytes = size(&path_for(&db)) + size(&aside[0]);
        assert_eq!(backlog(&db).unwrap(), (bytes, 4));
        assert_eq!(backlog(&db).unwrap(), (bytes, 4));
        assert_eq!(set_aside_files(&db).unwrap(), aside);
    }

    fn spooled(e: &NewEntry<'_>) -> Record {
        Record::Entry(SpooledEntry {
            time: e.time,
            success: e.success,
            user: e.user.to_vec(),
            service: e.service.map(<[u8]>::to_vec),
            rhost: e.rhost.map(<[u8]>::to_vec),
            ruser: e.ruser.map(<[u8]>::to_vec),
            tty: e.tty.map(<[u8]>::to_vec),
            auth_method: e.auth_method.map(<[u8]>::to_vec),
            reason: e.reason,
        })
    }

    #[test]
    fn append_take_remove() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        assert!(take(&db).unwrap().is_none());
        let weird: &[u8] = b"\xff\x00al\nice";
        append(&db, &entry(b"alice", 1)).unwrap();
        append(&db, &entry(weird, 2)).unwrap();
        append_set_method(&db, 2, weird, b"publickey").unwrap();
        let md = std::fs::metadata(path_for(&db)).unwrap();
        assert_eq!(md.mode() & 0o777, 0o600);
        let p = take(&db).unwrap().unwrap();
        assert_eq!(p.damaged, 0);
        let recs: Vec<Record> = p.records.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(
            recs,
            vec![
                spooled(&entry(b"alice", 1)),
                spooled(&entry(weird, 2)),
                Record::SetMethod { time: 2, user: weird.to_vec(), method: b"publickey".to_vec() }
            ]
        );
        assert_eq!(p.records.last().unwrap().0, p.len);
        let gen1 = p.generation;
        p.remove().unwrap();
        assert!(!path_for(&db).exists());
        append(&db, &entry(b"bob", 3)).unwrap();
        let p = take(&db).unwrap().unwrap();
        assert_ne!(p.generation, gen1, "a new spool gets a new generation");
        assert_eq!(p.records.len(), 1);
    }

    #[test]
    fn huge_fields_are_capped() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        let big = vec![b'x'; 100_000];
        let mut e = entry(&big, 4);
        e.rhost = Some(&big);
        append(&db, &e).unwrap();
        let p = take(&db).unwrap().unwrap();
        let Record::Entry(s) = &p.records[0].1 else { panic!() };
        assert_eq!(s.user.len(), crate::text::FIELD_CAP);
        assert_eq!(s.rhost.as_ref().unwrap().len(), crate::text::FIELD_CAP);
    }

    /// Damage anywhere costs only the records it touches.
    #[test]
    fn damaged_records_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        for t in 0..5 {
            append(&db, &entry(b"alice", t)).unwrap();
        }
        let path = path_for(&db);
        let mut b = std::fs::read(&path).unwrap();
        let one = (b.len() - HEADER_LEN) / 5;
        // flip a payload byte of record 1, cut record 4 short, add garbage
        b[HEADER_LEN + one + FRAME_LEN + 3] ^= 0x40;
        b.truncate(b.len() - 5);
        b.extend_from_slice(b"UAr1garbage");
        std::fs::write(&path, &b).unwrap();
        let p = take(&db).unwrap().unwrap();
        let times: Vec<i64> = p
            .records
            .iter()
            .map(|(_, r)| match r {
                Record::Entry(e) => e.time,
                _ => -1,
            })
            .collect();
        assert_eq!(times, vec![0, 2, 3]);
        assert_eq!(p.damaged as usize, one + (one - 5) + 11);
    }

    /// A spool whose header is damaged: a writer sets it aside (never
    /// appends behind it) and starts a new one; the file set aside is read
    /// by scanning, under a generation derived from its content.
    #[test]
    fn a_damaged_header_is_set_aside_by_the_next_writer_and_scanned() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        append(&db, &entry(b"alice", 1)).unwrap();
        append(&db, &entry(b"alice", 3)).unwrap();
        let path = path_for(&db);
        let mut b = std::fs::read(&path).unwrap();
        b[..8].copy_from_slice(b"garbage!");
        std::fs::write(&path, &b).unwrap();
        let a = append_bounded(&db, &entry(b"bob", 4), Bound { max_bytes: 1 << 20, account: true }).unwrap();
        let aside = a.damaged_aside.expect("set aside");
        assert_eq!(damaged_files(&db).unwrap(), vec![aside.clone()]);
        assert_eq!(std::fs::read(&aside).unwrap(), b, "nothing appended behind the damaged header");
        let p = take(&db).unwrap().unwrap();
        assert_eq!(p.records.len(), 1, "the new spool holds bob's entry");
        p.remove().unwrap();
        let r = read(&aside).unwrap();
        assert!(!r.file.intact);
        let recs: Vec<Record> = r.records.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(recs, vec![spooled(&entry(b"alice", 1)), spooled(&entry(b"alice", 3))]);
        assert_eq!(r.damaged, HEADER_LEN as u64, "the header's bytes");
        assert_eq!(read(&aside).unwrap().generation, r.generation, "the same content, the same generation");
        // a merging file whose header is bad becomes a damaged one
        std::fs::write(path_for(&db), b"not a spool at all, just text").unwrap();
        assert!(set_aside(&db).unwrap());
        let files = set_aside_files(&db).unwrap();
        let r = read(&files[0]).unwrap();
        assert!(!r.file.intact && r.records.is_empty());
        assert!(r.file.path().to_string_lossy().contains(".damaged-"), "{:?}", r.file.path());
        assert!(set_aside_files(&db).unwrap().is_empty());
        assert_eq!(damaged_files(&db).unwrap().len(), 2);
    }

    /// At the bound: names that are not accounts are dropped from three
    /// quarters of it, accounts' entries at the bound; each drop is
    /// counted in the header, and nothing else changes.
    #[test]
    fn the_bound_drops_unknown_names_first_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        let max = 4096;
        let unknown = Bound { max_bytes: max, account: false };
        let known = Bound { max_bytes: max, account: true };
        let path = path_for(&db);
        let len = || std::fs::metadata(&path).unwrap().len();
        let mut t = 0;
        while append_bounded(&db, &entry(b"nosuch", t), unknown).unwrap().dropped.is_none() {
            t += 1;
        }
        assert!(len() <= max * 3 / 4);
        let before = std::fs::read(&path).unwrap();
        assert_eq!(append_bounded(&db, &entry(b"nosuch", 99), unknown).unwrap().dropped, Some(2));
        let after = std::fs::read(&path).unwrap();
        assert_eq!((&after[..24], &after[32..]), (&before[..24], &before[32..]));
        assert_eq!(append_bounded(&db, &entry(b"alice", 100), known).unwrap(), Appended::default());
        let mut n = 2;
        while append_bounded(&db, &entry(b"alice", t), known).unwrap().dropped.is_none() {
            t += 1;
        }
        n += 1;
        assert!(len() <= max);
        let p = take(&db).unwrap().unwrap();
        assert_eq!(p.file.dropped, n);
        assert_eq!(p.damaged, 0);
        p.remove().unwrap();
        // a new spool starts with nothing dropped
        append_bounded(&db, &entry(b"nosuch", 1), unknown).unwrap();
        assert_eq!(take(&db).unwrap().unwrap().file.dropped, 0);
    }

    /// A first-version spool (24-byte header, no dropped count) is still
    /// read; a writer sets it aside for merging instead of appending.
    #[test]
    fn a_version_1_spool_is_read_and_not_appended_to() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        let mut v1 = HEADER_MAGIC_V1.to_vec();
        v1.extend_from_slice(&[7u8; 16]);
        v1.extend_from_slice(&encode_entry(&entry(b"old", 1)));
        std::fs::write(path_for(&db), &v1).unwrap();
        append(&db, &entry(b"new", 2)).unwrap();
        let files = set_aside_files(&db).unwrap();
        assert_eq!(files.len(), 1);
        let old = read(&files[0]).unwrap();
        assert!(old.file.intact);
        assert_eq!(old.generation, [7u8; 16]);
        assert_eq!(old.records.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>(), vec![spooled(&entry(b"old", 1))]);
        old.remove().unwrap();
        assert_eq!(take(&db).unwrap().unwrap().records.len(), 1);
    }

    /// The reader keeps a bounded buffer: damage and records straddling
    /// its chunks are handled as in one piece.
    #[test]
    fn records_straddling_read_chunks() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        let big = vec![b'x'; 900];
        let mut want = Vec::new();
        for t in 0..1200 {
            let mut e = entry(b"alice", t);
            e.rhost = Some(&big);
            append(&db, &e).unwrap();
            want.push(spooled(&e));
        }
        let path = path_for(&db);
        let mut b = std::fs::read(&path).unwrap();
        assert!(b.len() > 3 * READ_CHUNK);
        // damage at a chunk boundary: the record around it is lost alone
        b[READ_CHUNK] ^= 1;
        std::fs::write(&path, &b).unwrap();
        let p = take(&db).unwrap().unwrap();
        let got: Vec<Record> = p.records.iter().map(|(_, r)| r.clone()).collect();
        assert_eq!(got.len(), 1199);
        let lost = want.iter().position(|r| !got.contains(r)).unwrap();
        want.remove(lost);
        assert_eq!(got, want);
        assert!(p.damaged > 900 && p.damaged < 1100, "{}", p.damaged);
        assert_eq!(p.records.last().unwrap().0, p.len);
    }

    /// Many writers at once, with merges in between: every record arrives
    /// exactly once.
    #[test]
    fn concurrent_writers_and_merges_lose_nothing() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let db = db.clone();
                std::thread::spawn(move || {
                    for i in 0..300 {
                        append(&db, &entry(format!("u{w}").as_bytes(), i)).unwrap();
                    }
                })
            })
            .collect();
        let mut got = Vec::new();
        let mut gens = std::collections::HashSet::new();
        while writers.iter().any(|w| !w.is_finished()) {
            if let Some(p) = take(&db).unwrap() {
                assert_eq!(p.damaged, 0);
                assert!(gens.insert(p.generation));
                got.extend(p.records.iter().map(|(_, r)| r.clone()));
                p.remove().unwrap();
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        if let Some(p) = take(&db).unwrap() {
            got.extend(p.records.iter().map(|(_, r)| r.clone()));
        }
        assert_eq!(got.len(), 1200);
        let distinct: std::collections::HashSet<String> = got.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(distinct.len(), 1200);
    }
}
