//! The log spool: where the PAM module writes login attempts, and from
//! where `useraudit-admin` moves them into the SQLite log.
//!
//! A login is a new process, and opening SQLite (reading the schema,
//! rebuilding the WAL index, a write transaction) costs several times what
//! pam_faillock does in all. So the module only appends one record to
//! `DATABASE.spool` with one `write(2)`, and every `useraudit-admin`
//! command that opens the database first merges the spool into it
//! ([`crate::store::Store::merge_spool`]); the sweep timer does so daily.
//!
//! File: a 24-byte header (`UASPOOL1` and a random 16-byte generation id),
//! then records: `UAr1`, payload length (u32), CRC-32 of the payload, the
//! payload. Writers append under a shared `flock`. The merger takes the
//! lock exclusively only to rename the file aside (a writer that then gets
//! its lock sees that the name leads elsewhere and starts a new spool), so
//! logins never wait for a merge; it then copies every record into SQLite
//! in one transaction that also records (generation, end offset), and
//! removes the file. A merge cut short after its commit is therefore never
//! applied twice, and one cut short before it leaves the file set aside for
//! the next. A damaged record (a short write on a full disk, a power cut)
//! is skipped up to the next record mark and counted, never misread.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::files::{BUSY_TIMEOUT, Dec, Enc, FileError, beside, lock};
use crate::policy::LogReason;
use crate::sys::{self, FileLock};
use crate::text::cap;

const HEADER_MAGIC: &[u8; 8] = b"UASPOOL1";
const HEADER_LEN: usize = 24;
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

/// Append a login attempt to the spool of `db`.
pub fn append(db: &Path, e: &NewEntry<'_>) -> Result<(), FileError> {
    write_record(db, &encode_entry(e))
}

/// Append a correction of the auth method of the entry (time, user).
pub fn append_set_method(db: &Path, time: i64, user: &[u8], method: &[u8]) -> Result<(), FileError> {
    write_record(db, &encode_set_method(time, user, method))
}

fn write_record(db: &Path, rec: &[u8]) -> Result<(), FileError> {
    let path = path_for(db);
    // A merge may remove the file between our open and our lock; then the
    // next round creates a new one. Each lost round means a whole merge
    // happened, so rounds are few; the wait is bounded all the same.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    while std::time::Instant::now() < deadline {
        let f = match std::fs::OpenOptions::new().append(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create(&path)?;
                continue;
            }
            Err(e) => return Err(FileError::io(&path, "cannot open", &e)),
        };
        lock(&f, &path, FileLock::Shared)?;
        if !still_named(&f, &path)? {
            // Set aside for a merge between our open and our lock.
            continue;
        }
        // One write(2) with O_APPEND: concurrent writers never interleave
        // within a record. A short write (a full disk) leaves a partial
        // record, which the merge skips; it is reported here as a failure.
        return match (&f).write(rec) {
            Ok(n) if n == rec.len() => Ok(()),
            Ok(n) => Err(FileError::new(&path, format!("short write ({n} of {} bytes; disk full?)", rec.len()))),
            Err(e) => Err(FileError::io(&path, "cannot write", &e)),
        };
    }
    Err(FileError::new(
        &path,
        format!("the spool kept being replaced for {} s while writing; giving up", BUSY_TIMEOUT.as_secs()),
    ))
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

/// A spool file set aside for merging, read.
#[derive(Debug)]
pub struct Pending {
    path: PathBuf,
    /// The generation id from the header.
    pub generation: [u8; 16],
    /// Every intact record with the file offset just past it.
    pub records: Vec<(u64, Record)>,
    /// Bytes that were not part of an intact record.
    pub damaged: u64,
    /// The file's length when read.
    pub len: u64,
}

/// The name prefix of spool files set aside for merging.
fn merging_prefix(db: &Path) -> String {
    format!("{}.merging-", path_for(db).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
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
        if !still_named(&f, &path)? {
            // Another merge set it aside while we waited.
            continue;
        }
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let aside = beside(&path, &format!(".merging-{nanos:020}-{}", std::process::id()));
        std::fs::rename(&path, &aside)
            .map_err(|e| FileError::io(&path, "cannot set the spool aside for merging", &e))?;
        return Ok(true);
    }
    Err(FileError::new(&path, format!("the spool kept being replaced for {} s; giving up", BUSY_TIMEOUT.as_secs())))
}

/// Whether `path` still names the open file `f` (a merge renames it).
fn still_named(f: &File, path: &Path) -> Result<bool, FileError> {
    let md = f.metadata().map_err(|e| FileError::io(path, "cannot stat", &e))?;
    if !md.is_file() {
        return Err(FileError::new(path, "not a regular file"));
    }
    Ok(match std::fs::symlink_metadata(path) {
        Ok(cur) => cur.ino() == md.ino() && cur.dev() == md.dev(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(FileError::io(path, "cannot stat", &e)),
    })
}

/// The spool files set aside and not yet merged (a merge that stopped
/// half-way leaves one), oldest first.
pub fn set_aside_files(db: &Path) -> Result<Vec<PathBuf>, FileError> {
    let dir = crate::files::parent(db);
    let prefix = merging_prefix(db);
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

/// Read a spool file set aside. One whose header is not a spool's is
/// renamed `DATABASE.spool.damaged-...` and reported as the error.
pub fn read(path: &Path) -> Result<Pending, FileError> {
    let buf = std::fs::read(path).map_err(|e| FileError::io(path, "cannot read", &e))?;
    if buf.len() < HEADER_LEN || &buf[..8] != HEADER_MAGIC {
        // DATABASE.spool.merging-T-P becomes DATABASE.spool.damaged-T-P,
        // which the next merge does not pick up again.
        let name =
            path.file_name().map(|n| n.to_string_lossy().replacen(".merging-", ".damaged-", 1)).unwrap_or_default();
        let aside = path.with_file_name(name);
        let moved = std::fs::rename(path, &aside);
        return Err(FileError::new(
            path,
            match moved {
                Ok(()) => format!("not a useraudit spool (bad header); moved aside to {}", aside.display()),
                Err(e) => format!("not a useraudit spool (bad header), and cannot move it aside: {e}"),
            },
        ));
    }
    let generation: [u8; 16] = buf[8..HEADER_LEN].try_into().unwrap_or_default();
    let (records, damaged) = parse(&buf[HEADER_LEN..], HEADER_LEN as u64);
    Ok(Pending { path: path.into(), generation, records, damaged, len: buf.len() as u64 })
}

/// Intact records after the header (offsets counted from `base`), and the
/// number of bytes skipped.
fn parse(b: &[u8], base: u64) -> (Vec<(u64, Record)>, u64) {
    let mut out = Vec::new();
    let mut damaged = 0u64;
    let mut pos = 0usize;
    while pos < b.len() {
        if let Some((len, rec)) = record_at(&b[pos..]) {
            pos += len;
            out.push((base + pos as u64, rec));
        } else {
            // Skip to the next record mark.
            let next = b[pos + 1..].windows(4).position(|w| w == RECORD_MAGIC).map_or(b.len(), |i| pos + 1 + i);
            damaged += (next - pos) as u64;
            pos = next;
        }
    }
    (out, damaged)
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

impl Pending {
    /// Remove the merged file.
    pub fn remove(self) -> Result<(), FileError> {
        std::fs::remove_file(&self.path).map_err(|e| FileError::io(&self.path, "cannot remove merged spool", &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn a_bad_header_is_moved_aside() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("ua.db");
        std::fs::write(path_for(&db), b"not a spool at all, just text").unwrap();
        let e = take(&db).unwrap_err();
        assert!(e.to_string().contains("moved aside"), "{e}");
        assert!(!path_for(&db).exists());
        append(&db, &entry(b"alice", 1)).unwrap();
        assert_eq!(take(&db).unwrap().unwrap().records.len(), 1);
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
