//! Account state: one small file per account in `DATABASE.accounts/`,
//! changed under a `flock`, as pam_faillock keeps its tallies, but on
//! persistent storage beside the database (not a tmpfs).
//!
//! The PAM module decides every login from these files without opening
//! SQLite; `useraudit-admin` reads and changes them through the same
//! functions. A change is read, decided and written while the file is
//! locked exclusively, so concurrent failures count one by one and the
//! lock falls at exactly the Nth. Reads take no lock: a decision that
//! writes nothing (a refusal, `preauth`, `status`) is made from the last
//! committed record even while another process holds the file's lock.
//!
//! # File format (version 2)
//!
//! A state file holds up to two records ("slots"), and the one with the
//! highest sequence number whose checksum holds is the account's state.
//! A writer never touches the newest record: it writes the new one
//! (sequence + 1) beside it with one `pwrite`, so a write cut short (a
//! full disk, a file size limit, a crash) can only damage the record being
//! written, and readers keep the last committed one. The file is never
//! replaced (the `flock` lives on its inode) and never empty: a new file
//! is written whole under a temporary name (`.new-` and 16 hex digits)
//! and then linked into place, which fails rather than replace a file
//! another process created first.
//!
//! Slots start at offset 0 ("A") and at a power of two of at least 512
//! ("B"). A record that does not fit before B moves B to a larger power
//! of two past the newest record; a file that grew large is cut back once
//! its newest record is in A again. A record, all integers little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `UAas` |
//! | 4 | format version, 2 |
//! | 5..8 | zero |
//! | 8..16 | sequence number (u64) |
//! | 16..24 | the record's own offset in the file (u64) |
//! | 24..28 | payload length (u32) |
//! | 28..32 | CRC-32 (IEEE) of bytes 0..28 and the payload |
//! | 32.. | payload |
//!
//! Readers try offset 0 and every power of two from 512 below the file's
//! length, skipping offsets inside a record already found intact. The
//! payload ([`crate::files::Enc`]): name, state, reason (byte strings),
//! failures (u32), the failure times (u32 count, then i64 each), last
//! failure, last login, locked at, activated at (optional i64), first
//! seen (i64), password changed (optional i64), password grace (u8),
//! note (byte string); times in microseconds since the epoch.
//!
//! Version 1 files (magic `UAac`, version byte 1, payload length u32,
//! CRC-32 of the payload, then the same payload, at offset 0) are read as
//! a record with sequence number 0; the first write puts a version 2
//! record beside it.
//!
//! A file that holds no intact record (also an empty one) is damaged: an
//! error (answered with `on_error` by the module), never read as a fresh
//! account. `useraudit-admin activate` starts such an account afresh.
//!
//! A write that locks or unlocks the account (its state changes between
//! active, locked and disabled) is flushed to disk (`fdatasync`), and so
//! is the directory when such a write creates the file; other writes
//! (counting failures, recording logins) are not.
//!
//! File names are the account name with bytes other than `A-Za-z0-9_-`
//! (and a leading `.`) written `%XX`. A name longer than 200 bytes so
//! written is cut to 135 bytes followed by `~` and the SHA-256 of the
//! whole name in hex. The full name is stored inside: a file whose name
//! differs from the one asked for is an error, never state to overwrite.
//! Files written by version 1 under the older long-name form (183 bytes,
//! `~`, 64-bit FNV-1a in hex) are still read and updated when no file of
//! the new form exists and the name inside matches.
//!
//! A payload may end with one more byte, written since remote hosts were
//! added: 1 when a failure from a trusted host (`trusted_hosts`) is among
//! those counted, which makes a lock from `login_failure_limit` apply to
//! trusted hosts too ("lock scope all"). Files without it read as 0.
//!
//! The directory is opened once per handle (`O_PATH`, the state
//! directory with `O_NOFOLLOW`), checked on the open descriptor, and
//! files are opened relative to it.
//!
//! The same machinery, [`Records`], keeps any small per-key state: it is
//! parameterised by a [`Codec`] (its directory, record magic and payload).
//! Remote-host state ([`crate::hosts`]) is the other user.
#![forbid(unsafe_code)]

use std::fs::File;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::files::{Dec, Enc, FileError, beside, busy, check_owner, lock, lock_within, parent, prepare_dir};
use crate::policy::{Account, Reason, State};
use crate::sys::{self, FileLock};
use crate::text::escape;

const SLOT_MAGIC: &[u8; 4] = b"UAas";

/// What one kind of record file holds: where its files live, how its
/// records are marked and how its payload is written and read.
pub trait Codec {
    type Item: Clone;
    /// The directory beside the database (e.g. `.accounts`).
    const SUFFIX: &'static str;
    /// The first four bytes of every record.
    const MAGIC: &'static [u8; 4];
    /// What a damaged file's error tells the administrator to do.
    const REPAIR: &'static str;
    /// What the files hold, for errors ("account", "host").
    const WHAT: &'static str;
    /// Whether version 1 files (accounts only) are read.
    const V1: bool = false;
    /// The key the item is stored under (its name, stored inside too).
    fn key(item: &Self::Item) -> &[u8];
    fn encode(item: &Self::Item) -> Vec<u8>;
    fn decode(payload: &[u8]) -> Result<Self::Item, String>;
    /// 0 when nothing is held against the item; a write that changes this
    /// (a lock, an unlock, a block) is flushed to disk.
    fn tag(item: &Self::Item) -> u8;
    /// The long-name form of version 1, for files written before.
    fn legacy_name(_key: &[u8]) -> Option<String> {
        None
    }
}

/// Account state files (`DATABASE.accounts/`).
#[derive(Debug, Clone, Copy)]
pub struct AccountCodec;

impl Codec for AccountCodec {
    type Item = Account;
    const SUFFIX: &'static str = ".accounts";
    const MAGIC: &'static [u8; 4] = SLOT_MAGIC;
    const REPAIR: &'static str = "`useraudit-admin activate USER` starts the account afresh";
    const WHAT: &'static str = "account";
    const V1: bool = true;
    fn key(a: &Account) -> &[u8] {
        &a.user
    }
    fn encode(a: &Account) -> Vec<u8> {
        payload(a)
    }
    fn decode(p: &[u8]) -> Result<Account, String> {
        decode(p)
    }
    fn tag(a: &Account) -> u8 {
        match a.state {
            State::Active => 0,
            State::Locked => 1,
            State::Disabled => 2,
        }
    }
    fn legacy_name(user: &[u8]) -> Option<String> {
        legacy_file_name(user)
    }
}
const SLOT_VERSION: u8 = 2;
const SLOT_HEADER: usize = 32;
const V1_MAGIC: &[u8; 4] = b"UAac";
const V1_VERSION: u8 = 1;
const V1_HEADER: usize = 13;
/// The lowest offset of slot B.
const SPLIT_MIN: u64 = 512;
/// A file longer than this (and four times its newest record) is cut
/// back when that record is written to slot A.
const SHRINK_OVER: u64 = 64 * 1024;
/// Longest file name used as it is; longer ones end in a hash.
const NAME_MAX: usize = 200;

/// The account state directory of a database.
pub fn dir_for(db: &Path) -> PathBuf {
    beside(db, AccountCodec::SUFFIX)
}

fn escaped(user: &[u8]) -> String {
    let mut s = String::with_capacity(user.len());
    for (i, &b) in user.iter().enumerate() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && i > 0) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    if s.is_empty() {
        s.push('%');
    }
    s
}

/// The file name for an account.
pub fn file_name(user: &[u8]) -> String {
    let mut s = escaped(user);
    if s.len() > NAME_MAX {
        s.truncate(NAME_MAX - 65);
        s.push('~');
        for b in Sha256::digest(user) {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

/// The name version 1 gave a long account name (64-bit FNV-1a), for
/// files written before; None for names that were never hashed.
fn legacy_file_name(user: &[u8]) -> Option<String> {
    let mut s = escaped(user);
    if s.len() <= NAME_MAX {
        return None;
    }
    let h = user.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    s.truncate(NAME_MAX - 17);
    s.push_str(&format!("~{h:016x}"));
    Some(s)
}

fn payload(a: &Account) -> Vec<u8> {
    let mut p = Enc::default();
    p.bytes(Some(&a.user));
    p.bytes(Some(a.state.as_str().as_bytes()));
    p.bytes(a.reason.map(|r| r.as_str().as_bytes()));
    p.u32(a.failures);
    p.u32(a.fail_times.len() as u32);
    for t in &a.fail_times {
        p.i64(*t);
    }
    p.opt_i64(a.last_failure);
    p.opt_i64(a.last_login);
    p.opt_i64(a.locked_at);
    p.opt_i64(a.activated_at);
    p.i64(a.first_seen);
    p.opt_i64(a.password_changed);
    p.u8(u8::from(a.pw_grace));
    p.bytes(a.note.as_deref());
    if a.trusted_failure {
        p.u8(1);
    }
    p.0
}

/// A payload framed as a record for offset `off`.
fn frame(magic: &[u8; 4], p: &[u8], seq: u64, off: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(SLOT_HEADER + p.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&[SLOT_VERSION, 0, 0, 0]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&off.to_le_bytes());
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    let mut h = crc32fast::Hasher::new();
    h.update(&out);
    h.update(p);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    out.extend_from_slice(p);
    out
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// An intact record found in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    seq: u64,
    off: usize,
    /// Where its payload starts, and where the record ends.
    body: usize,
    end: usize,
}

/// The record at `off`: Ok(None) when none starts there, Err when one
/// starts there but is not intact.
fn record_at(b: &[u8], off: usize, magic: &[u8; 4], v1: bool) -> Result<Option<Record>, String> {
    let h = &b[off..];
    if h.starts_with(magic) {
        if h.len() < SLOT_HEADER {
            return Err("damaged (shorter than it says)".into());
        }
        let len = le32(h, 24) as usize;
        let Some(p) = h.get(SLOT_HEADER..SLOT_HEADER + len) else {
            return Err("damaged (shorter than it says)".into());
        };
        let mut c = crc32fast::Hasher::new();
        c.update(&h[..28]);
        c.update(p);
        if c.finalize() != le32(h, 28) || le64(h, 16) != off as u64 {
            return Err("damaged (checksum mismatch)".into());
        }
        if h[4] != SLOT_VERSION {
            return Err(format!(
                "format version {} is not one this useraudit understands ({SLOT_VERSION}); upgrade useraudit",
                h[4]
            ));
        }
        return Ok(Some(Record { seq: le64(h, 8), off, body: off + SLOT_HEADER, end: off + SLOT_HEADER + len }));
    }
    if v1 && off == 0 && h.starts_with(V1_MAGIC) {
        if h.len() < V1_HEADER {
            return Err("damaged (shorter than it says)".into());
        }
        if h[4] != V1_VERSION {
            return Err(format!(
                "format version {} is not one this useraudit understands ({SLOT_VERSION}); upgrade useraudit",
                h[4]
            ));
        }
        let len = le32(h, 5) as usize;
        let Some(p) = h.get(V1_HEADER..V1_HEADER + len) else {
            return Err("damaged (shorter than it says)".into());
        };
        if crc32fast::hash(p) != le32(h, 9) {
            return Err("damaged (checksum mismatch)".into());
        }
        return Ok(Some(Record { seq: 0, off: 0, body: V1_HEADER, end: V1_HEADER + len }));
    }
    Ok(None)
}

/// The newest intact record of a file, or what is wrong with it.
fn scan(b: &[u8], magic: &[u8; 4], v1: bool, what: &str) -> Result<Record, String> {
    let mut best: Option<Record> = None;
    let mut first_err = None;
    let mut skip_to = 0;
    let mut off = 0usize;
    while off < b.len() {
        if off >= skip_to {
            match record_at(b, off, magic, v1) {
                Ok(Some(r)) => {
                    skip_to = r.end;
                    if best.is_none_or(|x| r.seq > x.seq) {
                        best = Some(r);
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        off = if off == 0 { SPLIT_MIN as usize } else { off * 2 };
    }
    best.ok_or_else(|| match first_err {
        _ if b.is_empty() => "damaged (empty: it holds no record)".to_string(),
        Some(e) => e,
        None => format!("not a useraudit {what} file"),
    })
}

fn decode(p: &[u8]) -> Result<Account, String> {
    let mut d = Dec::new(p);
    let a = (|| {
        let user = d.bytes()??;
        let state = State::parse(std::str::from_utf8(&d.bytes()??).ok()?)?;
        let reason = match d.bytes()? {
            Some(r) => Some(Reason::parse(std::str::from_utf8(&r).ok()?)?),
            None => None,
        };
        let failures = d.u32()?;
        let n = d.u32()? as usize;
        let mut fail_times = Vec::with_capacity(n.min(4096));
        for _ in 0..n {
            fail_times.push(d.i64()?);
        }
        Some(Account {
            user,
            state,
            reason,
            failures,
            fail_times,
            last_failure: d.opt_i64()?,
            last_login: d.opt_i64()?,
            locked_at: d.opt_i64()?,
            activated_at: d.opt_i64()?,
            first_seen: d.i64()?,
            password_changed: d.opt_i64()?,
            pw_grace: d.u8()? != 0,
            note: d.bytes()?,
            // Written since remote hosts were added; absent before.
            trusted_failure: if d.is_empty() { false } else { d.u8()? != 0 },
        })
    })();
    match a {
        Some(a) if d.is_empty() => Ok(a),
        _ => Err("damaged (cannot be decoded)".into()),
    }
}

fn damaged<C: Codec>(path: &Path, m: &str) -> FileError {
    FileError::new(path, format!("{m}; {}", C::REPAIR))
}

/// The item in a file's bytes and the record it came from.
fn parse<C: Codec>(b: &[u8], path: &Path) -> Result<(C::Item, Record), FileError> {
    let r = scan(b, C::MAGIC, C::V1, C::WHAT).map_err(|m| damaged::<C>(path, &m))?;
    let a = C::decode(&b[r.body..r.end]).map_err(|m| damaged::<C>(path, &m))?;
    Ok((a, r))
}

/// The error for a file that holds another name's state.
/// True when the open file no longer has a name (it was removed).
fn unlinked(f: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    f.metadata().is_ok_and(|m| m.nlink() == 0)
}

fn not_ours(path: &Path, stored: &[u8]) -> FileError {
    FileError::new(
        path,
        format!(
            "holds the state of another name (\"{}\"); left alone, and used for no account until removed by hand",
            escape(stored)
        ),
    )
}

/// Where the next record goes: beside the newest one, never over it.
fn place(cur: Option<&Record>, len: usize) -> u64 {
    let past = |end: usize| (end as u64).max(SPLIT_MIN).next_power_of_two();
    match cur {
        None => 0,
        Some(r) if r.off == 0 => past(r.end),
        Some(r) if len <= r.off => 0,
        Some(r) => past(r.end),
    }
}

/// A file's bytes (pread, so the file position does not matter): one call
/// for a usual file. A regular file's read comes back short only at its
/// end, so a short read ends the loop without a further call to find it.
fn read_all(f: &File, path: &Path) -> Result<Vec<u8>, FileError> {
    let mut b = vec![0u8; 2048];
    let mut len = 0;
    loop {
        if len == b.len() {
            b.resize(b.len() * 2, 0);
        }
        let want = b.len() - len;
        match f.read_at(&mut b[len..], len as u64) {
            Ok(0) => break,
            Ok(n) if n < want => {
                len += n;
                break;
            }
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::io(path, "cannot read", &e)),
        }
    }
    b.truncate(len);
    Ok(b)
}

/// Read without the lock: a write in progress can make the newest record
/// look torn for a moment (a record found torn is read again, twice at
/// most, before it is called damaged).
fn read_unlocked<C: Codec>(f: &File, path: &Path) -> Result<(C::Item, Record), FileError> {
    let mut n = 0;
    loop {
        let b = read_all(f, path)?;
        match parse::<C>(&b, path) {
            Err(_) if n < 2 && !b.is_empty() => n += 1,
            r => return r,
        }
    }
}

/// The current state under the exclusive lock, the record it came from
/// and the file's length. With `repair`, damage counts as no state.
#[allow(clippy::type_complexity)]
fn read_locked<C: Codec>(
    file: &File,
    path: &Path,
    user: &[u8],
    repair: bool,
) -> Result<(Option<C::Item>, Option<Record>, u64), FileError> {
    let b = read_all(file, path)?;
    let len = b.len() as u64;
    match parse::<C>(&b, path) {
        Ok((a, _)) if C::key(&a) != user => Err(not_ours(path, C::key(&a))),
        Ok((a, r)) => Ok((Some(a), Some(r), len)),
        Err(_) if repair => Ok((None, None, len)),
        Err(e) => Err(e),
    }
}

/// Write `a` as the newest record, beside `rec` (the newest so far), and
/// flush it when it locks or unlocks (its tag was `was` before).
fn write_record<C: Codec>(
    file: &File,
    path: &Path,
    rec: Option<Record>,
    file_len: u64,
    was: u8,
    a: &C::Item,
) -> Result<(), FileError> {
    let p = C::encode(a);
    let off = place(rec.as_ref(), SLOT_HEADER + p.len());
    let bytes = frame(C::MAGIC, &p, rec.map_or(1, |r| r.seq + 1), off);
    file.write_all_at(&bytes, off).map_err(|e| FileError::io(path, "cannot write", &e))?;
    if C::tag(a) != was {
        file.sync_data().map_err(|e| FileError::io(path, "cannot flush to disk", &e))?;
    }
    let end = bytes.len() as u64;
    if off == 0 && file_len > SHRINK_OVER && file_len > 4 * end {
        // The older records past this one are no longer needed.
        file.set_len(end).map_err(|e| FileError::io(path, "cannot write", &e))?;
    }
    Ok(())
}

/// A change that could not be written.
#[derive(Debug)]
pub enum Written<T> {
    /// Written (or nothing to write).
    Done(T),
    /// Another process held the file's lock longer than the busy timeout:
    /// the answer was decided from the last committed state, and the
    /// change it asked for was not written.
    Unwritten(T, FileError),
}

/// The temporary name a new record file is written under before it is
/// linked to its own ([`Records::create`]): `.new-` and 16 hex digits.
fn temporary_name(random: u64) -> String {
    format!(".new-{random:016x}")
}

/// Whether `name` is one that [`temporary_name`] gives.
pub fn is_temporary_name(name: &str) -> bool {
    name.len() == 21 && name.starts_with(".new-") && name[5..].bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A directory of record files of one kind beside a database.
pub struct Records<C: Codec> {
    dir: PathBuf,
    /// The directory, opened once (`O_PATH`); files are opened relative to it.
    fd: Arc<File>,
    kind: PhantomData<C>,
}

impl<C: Codec> Clone for Records<C> {
    fn clone(&self) -> Self {
        Records { dir: self.dir.clone(), fd: Arc::clone(&self.fd), kind: PhantomData }
    }
}

impl<C: Codec> std::fmt::Debug for Records<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records").field("dir", &self.dir).finish()
    }
}

/// The account state directory of one database.
pub type Accounts = Records<AccountCodec>;

/// Open and check a directory: by descriptor, so the directory checked is
/// the one used.
/// A directory that does not exist is created (0700, by path) when `create`.
fn open_checked(
    at: Option<&File>,
    name: &Path,
    path: &Path,
    nofollow: bool,
    root: bool,
    create: bool,
) -> Result<File, FileError> {
    let f = match sys::open_dir(at, name, nofollow) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            prepare_dir(path, true, false)?;
            sys::open_dir(at, name, nofollow)
        }
        r => r,
    };
    let f = f.map_err(|e| {
        if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) {
            FileError::new(path, "not a directory (a symbolic link is not followed here)")
        } else {
            FileError::io(path, "cannot open directory", &e)
        }
    })?;
    let md = f.metadata().map_err(|e| FileError::io(path, "cannot open directory", &e))?;
    if !md.is_dir() {
        return Err(FileError::new(path, "not a directory"));
    }
    if root {
        check_owner(path, &md, "directory")?;
    }
    Ok(f)
}

impl<C: Codec> Records<C> {
    /// Check (and if asked create, 0700) the database's directory and the
    /// state directory in it. As root, both must be root's alone. The state
    /// directory must not be a symbolic link.
    pub fn open(db: &Path, create: bool, require_root_owned: bool) -> Result<Records<C>, FileError> {
        let top = parent(db);
        let dir = beside(db, C::SUFFIX);
        let t = open_checked(None, top, top, false, require_root_owned, create)?;
        let name = dir.file_name().map(Path::new).unwrap_or(Path::new(C::SUFFIX));
        let fd = open_checked(Some(&t), name, &dir, true, require_root_owned, create)?;
        Ok(Records { dir, fd: Arc::new(fd), kind: PhantomData })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn open_file(&self, name: &str, write: bool) -> Result<Option<File>, FileError> {
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY } | libc::O_NOFOLLOW;
        match sys::open_at(&self.fd, Path::new(name), flags, 0) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::io(&self.dir.join(name), "cannot open", &e)),
        }
    }

    /// The file that holds an account's state, if any: by its name, or (a
    /// long name) by the name version 1 gave it when that file holds it.
    fn open_existing(&self, user: &[u8], write: bool) -> Result<Option<(File, PathBuf)>, FileError> {
        let name = file_name(user);
        if let Some(f) = self.open_file(&name, write)? {
            return Ok(Some((f, self.dir.join(name))));
        }
        let Some(old) = C::legacy_name(user) else { return Ok(None) };
        let Some(f) = self.open_file(&old, write)? else { return Ok(None) };
        let path = self.dir.join(old);
        // Another name's file (a collision of the old hash) is not ours.
        match read_unlocked::<C>(&f, &path) {
            Ok((a, _)) if C::key(&a) != user => Ok(None),
            _ => Ok(Some((f, path))),
        }
    }

    /// One key's state; None when nothing is recorded. Takes no lock.
    pub fn get(&self, user: &[u8]) -> Result<Option<C::Item>, FileError> {
        let Some((f, path)) = self.open_existing(user, false)? else { return Ok(None) };
        let (a, _) = read_unlocked::<C>(&f, &path)?;
        if C::key(&a) != user {
            return Err(not_ours(&path, C::key(&a)));
        }
        Ok(Some(a))
    }

    /// Read, change and write one account's state under its exclusive lock.
    /// `f` gets the current state (None: nothing recorded) and returns what
    /// to write (None: leave the file as it is) and a result; it may be
    /// called more than once (when another process creates the file at the
    /// same moment), and the last call's result is returned. With
    /// `repair`, a damaged file counts as no state (for `activate`, which
    /// starts the account afresh).
    pub fn update<T>(
        &self,
        user: &[u8],
        repair: bool,
        mut f: impl FnMut(Option<C::Item>) -> Result<(Option<C::Item>, T), FileError>,
    ) -> Result<T, FileError> {
        match self.change(user, repair, false, &mut f)? {
            Written::Done(t) => Ok(t),
            Written::Unwritten(_, e) => Err(e),
        }
    }

    /// As [`Accounts::update`], for a decision that can be made from the
    /// last committed state (a login): when another process holds the
    /// file's lock, `f` first decides from the state read without it; an
    /// answer that writes nothing is final at once; one that writes waits
    /// for the lock (at most the busy timeout, then it is decided again
    /// under the lock) and, when the lock stays held, comes back
    /// [`Written::Unwritten`].
    pub fn update_or_decide<T>(
        &self,
        user: &[u8],
        mut f: impl FnMut(Option<C::Item>) -> Result<(Option<C::Item>, T), FileError>,
    ) -> Result<Written<T>, FileError> {
        self.change(user, false, true, &mut f)
    }

    fn change<T>(
        &self,
        user: &[u8],
        repair: bool,
        decide_unlocked: bool,
        f: &mut impl FnMut(Option<C::Item>) -> Result<(Option<C::Item>, T), FileError>,
    ) -> Result<Written<T>, FileError> {
        // Creating races with another creator at most a few times in a row.
        for _ in 0..8 {
            let Some((file, path)) = self.open_existing(user, true)? else {
                let (new, out) = f(None)?;
                let Some(a) = new else { return Ok(Written::Done(out)) };
                if self.create(user, &a)? {
                    return Ok(Written::Done(out));
                }
                continue;
            };
            let got =
                sys::try_flock(&file, FileLock::Exclusive).map_err(|e| FileError::io(&path, "cannot lock", &e))?;
            if !got {
                if decide_unlocked {
                    let (a, _) = read_unlocked::<C>(&file, &path)?;
                    if C::key(&a) != user {
                        return Err(not_ours(&path, C::key(&a)));
                    }
                    let (new, out) = f(Some(a))?;
                    if new.is_none() {
                        return Ok(Written::Done(out));
                    }
                    if !lock_within(&file, &path, FileLock::Exclusive)? {
                        return Ok(Written::Unwritten(out, busy(&path)));
                    }
                } else {
                    lock(&file, &path, FileLock::Exclusive)?;
                }
            }
            // Removed (a host file swept) while this process waited for
            // its lock: start again from the name.
            if unlinked(&file) {
                continue;
            }
            return self.write_locked(&file, &path, user, repair, f).map(Written::Done);
        }
        Err(FileError::new(&self.dir.join(file_name(user)), "created and removed by other processes again and again"))
    }

    /// Remove the file of `key` when `dead` holds for its state, decided
    /// under the file's exclusive lock (waited for at most the busy
    /// timeout; Ok(false) when it stays held). A process that opened the
    /// file before finds it unlinked once it holds the lock and starts
    /// again from the name (see `change`), so no change is lost.
    pub fn remove_if(&self, key: &[u8], dead: impl FnOnce(&C::Item) -> bool) -> Result<bool, FileError> {
        let Some((file, path)) = self.open_existing(key, true)? else { return Ok(false) };
        if !lock_within(&file, &path, FileLock::Exclusive)? || unlinked(&file) {
            return Ok(false);
        }
        let (cur, _) = read_unlocked::<C>(&file, &path)?;
        if C::key(&cur) != key {
            return Err(not_ours(&path, C::key(&cur)));
        }
        if !dead(&cur) {
            return Ok(false);
        }
        let name = path.file_name().map(Path::new).unwrap_or(&path);
        sys::unlink_at(&self.fd, name).map_err(|e| FileError::io(&path, "cannot remove", &e))?;
        Ok(true)
    }

    /// Read, decide and write while holding the file's exclusive lock.
    fn write_locked<T>(
        &self,
        file: &File,
        path: &Path,
        user: &[u8],
        repair: bool,
        f: &mut impl FnMut(Option<C::Item>) -> Result<(Option<C::Item>, T), FileError>,
    ) -> Result<T, FileError> {
        let (cur, rec, file_len) = read_locked::<C>(file, path, user, repair)?;
        let was = cur.as_ref().map_or(0, C::tag);
        let (new, out) = f(cur)?;
        if let Some(a) = new {
            write_record::<C>(file, path, rec, file_len, was, &a)?;
        }
        Ok(out)
    }

    /// Create an account's file with its first record in place: written
    /// whole under a temporary name, then linked to its own. Ok(false) when
    /// another process created the file first (nothing is written then).
    fn create(&self, user: &[u8], a: &C::Item) -> Result<bool, FileError> {
        let name = file_name(user);
        let path = self.dir.join(&name);
        let r: [u8; 8] = sys::random_bytes().map_err(|e| FileError::io(&path, "cannot create", &e))?;
        let tmp = PathBuf::from(temporary_name(u64::from_le_bytes(r)));
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        let t = sys::open_at(&self.fd, &tmp, flags, 0o600).map_err(|e| FileError::io(&path, "cannot create", &e))?;
        let locks = C::tag(a) != 0;
        let written = t
            .write_all_at(&frame(C::MAGIC, &C::encode(a), 1, 0), 0)
            .and_then(|()| if locks { t.sync_data() } else { Ok(()) });
        drop(t);
        let linked = written.and_then(|()| sys::link_at(&self.fd, &tmp, Path::new(&name)));
        let _ = sys::unlink_at(&self.fd, &tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(FileError::io(&path, "cannot write", &e)),
        }
        if locks {
            sys::open_at(&self.fd, Path::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .and_then(|d| d.sync_all())
                .map_err(|e| FileError::io(&self.dir, "cannot flush to disk", &e))?;
        }
        Ok(true)
    }

    /// Remove the temporary files of creations that never finished (the
    /// process that wrote one was killed before it linked and removed it):
    /// regular files named as [`Records::create`] names them, last modified
    /// before `before` (µs since the epoch). A creation takes milliseconds,
    /// so a `before` well in the past never touches one in progress. With
    /// `dry_run` nothing is removed. Returns how many were (or would be)
    /// removed. Never called by the module.
    pub fn remove_stale_temporaries(&self, before: i64, dry_run: bool) -> Result<u64, FileError> {
        use std::os::unix::fs::MetadataExt;
        let rd = std::fs::read_dir(&self.dir).map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
        let mut n = 0;
        for ent in rd {
            let ent = ent.map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str().filter(|n| is_temporary_name(n)) else { continue };
            let path = self.dir.join(name);
            // Not followed: a symbolic link is not a temporary file.
            let md = match ent.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(FileError::io(&path, "cannot look at", &e)),
            };
            let modified = md.mtime().saturating_mul(1_000_000).saturating_add(md.mtime_nsec() / 1000);
            if !md.is_file() || modified >= before {
                continue;
            }
            if !dry_run {
                match sys::unlink_at(&self.fd, Path::new(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(FileError::io(&path, "cannot remove", &e)),
                }
            }
            n += 1;
        }
        Ok(n)
    }

    /// Every account with recorded state, by name. Damaged files (and
    /// files under a name that is not their account's) are returned as
    /// errors beside the others. Takes no lock.
    pub fn list(&self) -> Result<(Vec<C::Item>, Vec<FileError>), FileError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            // temporary files of a creation in progress
            if name.starts_with('.') || !ent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = self.dir.join(name);
            let r = self.open_file(name, false).and_then(|f| match f {
                Some(f) => read_unlocked::<C>(&f, &path).map(|(a, _)| Some(a)),
                None => Ok(None),
            });
            match r {
                Ok(Some(a)) if file_name(C::key(&a)) == name || C::legacy_name(C::key(&a)).as_deref() == Some(name) => {
                    out.push(a)
                }
                Ok(Some(a)) => bad.push(not_ours(&path, C::key(&a))),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        out.sort_by(|a, b| C::key(a).cmp(C::key(b)));
        Ok((out, bad))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn sample() -> Account {
        let mut a = Account::new(b"alice", 7);
        a.fail_times = vec![1, 2, 3];
        a.failures = 3;
        a.state = State::Locked;
        a.reason = Some(Reason::LoginFailureLimit);
        a.locked_at = Some(3);
        a.last_login = Some(-4);
        a.pw_grace = true;
        a.note = Some(b"by \xffhand".to_vec());
        a
    }

    fn open(d: &tempfile::TempDir) -> Accounts {
        Accounts::open(&d.path().join("sub/ua.db"), true, false).unwrap()
    }

    fn put(s: &Accounts, a: &Account) {
        s.update(&a.user, false, |_| Ok((Some(a.clone()), ()))).unwrap();
    }

    /// A version 1 file, as the previous release wrote it.
    fn v1_bytes(a: &Account) -> Vec<u8> {
        let p = payload(a);
        let mut out = b"UAac\x01".to_vec();
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&p).to_le_bytes());
        out.extend_from_slice(&p);
        out
    }

    /// Accounts and hosts share the record files but never read each
    /// other's: a record of another kind is damage, not state.
    #[test]
    fn a_file_of_another_kind_is_damage_not_state() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let hosts = crate::hosts::Hosts::open(&d.path().join("sub/ua.db"), true, false).unwrap();
        assert_eq!(std::fs::metadata(hosts.dir()).unwrap().mode() & 0o777, 0o700);
        let mut h = crate::hosts::HostState::new(b"alice");
        h.fail_times = vec![1, 2];
        hosts.update(b"alice", false, |_| Ok((Some(h.clone()), ()))).unwrap();
        hosts.update(b"alice", false, |cur| Ok((cur, ()))).unwrap();
        assert_eq!(hosts.get(b"alice").unwrap(), Some(h));
        std::fs::copy(hosts.dir().join("alice"), s.dir().join("alice")).unwrap();
        let e = s.get(b"alice").unwrap_err().to_string();
        assert!(e.contains("not a useraudit account file") && e.contains("activate"), "{e}");
        std::fs::remove_file(s.dir().join("alice")).unwrap();
        put(&s, &sample());
        std::fs::copy(s.dir().join("alice"), hosts.dir().join("alice")).unwrap();
        let e = hosts.get(b"alice").unwrap_err().to_string();
        assert!(e.contains("not a useraudit host file") && e.contains("unblock"), "{e}");
    }

    #[test]
    fn round_trip_modes_and_listing() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        assert_eq!(std::fs::metadata(s.dir()).unwrap().mode() & 0o777, 0o700);
        assert_eq!(s.get(b"alice").unwrap(), None);
        let a = sample();
        s.update(b"alice", false, |cur| {
            assert_eq!(cur, None);
            Ok((Some(a.clone()), ()))
        })
        .unwrap();
        assert_eq!(s.get(b"alice").unwrap(), Some(a.clone()));
        assert_eq!(std::fs::metadata(s.dir().join("alice")).unwrap().mode() & 0o777, 0o600);
        // a shorter record replaces a longer one exactly
        let b = Account::new(b"alice", 9);
        put(&s, &b);
        assert_eq!(s.get(b"alice").unwrap(), Some(b.clone()));
        // None creates no file; no temporary file is left behind
        s.update(b"bob", false, |cur| Ok((None, assert_eq!(cur, None)))).unwrap();
        assert_eq!(s.get(b"bob").unwrap(), None);
        let names: Vec<_> = std::fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["alice"]);
        let (all, bad) = s.list().unwrap();
        assert_eq!(all, vec![b]);
        assert!(bad.is_empty());
    }

    /// Records longer than the first read, and records that shrink and grow
    /// again, read back exactly; the file does not grow without end.
    #[test]
    fn long_and_shrinking_records() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let mut big = sample();
        big.fail_times = (0..600).collect();
        let mut huge = sample();
        huge.fail_times = (0..20_000).collect();
        let small = || Account::new(b"alice", 1);
        for a in [big.clone(), small(), big, sample(), huge.clone(), sample(), huge, sample(), small()] {
            put(&s, &a);
            assert_eq!(s.get(b"alice").unwrap(), Some(a.clone()));
            assert_eq!(s.list().unwrap().0, vec![a]);
        }
        // the huge records are gone once a small one is newest in slot A
        let len = std::fs::metadata(s.dir().join("alice")).unwrap().len();
        assert!(len <= 2 * SPLIT_MIN, "{len}");
    }

    /// The writer never touches the newest record: a write cut short at
    /// any byte leaves the last committed state readable.
    #[test]
    fn a_torn_write_keeps_the_last_committed_record() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let p = s.dir().join("alice");
        let mut a = sample();
        for i in 0..4u32 {
            let before = std::fs::read(&p).unwrap_or_default();
            let committed = s.get(b"alice").unwrap();
            a.failures = i;
            a.note = Some(vec![b'n'; 40 * i as usize]);
            put(&s, &a);
            let after = std::fs::read(&p).unwrap();
            let Some(committed) = committed else { continue };
            // the bytes the write changed, written in order and cut short
            let from = before.iter().zip(&after).position(|(x, y)| x != y).unwrap_or(before.len());
            let differs = |k: usize| before.get(k) != after.get(k);
            let last = (from..after.len().max(before.len())).rev().find(|&k| differs(k)).unwrap();
            // cut short: at least the last changed byte is not written
            for cut in from..=last {
                let mut torn = before.clone();
                torn.resize(torn.len().max(cut.min(after.len())), 0);
                torn[from..cut.min(after.len())].copy_from_slice(&after[from..cut.min(after.len())]);
                std::fs::write(&p, &torn).unwrap();
                assert_eq!(s.get(b"alice").unwrap().as_ref(), Some(&committed), "write {i} cut at {cut}");
            }
            std::fs::write(&p, &after).unwrap();
        }
    }

    /// An empty file, or one without an intact record, is damage, not a
    /// fresh account; only a repairing update writes it.
    #[test]
    fn an_empty_file_is_damage() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        put(&s, &sample());
        let p = s.dir().join("alice");
        std::fs::write(&p, b"").unwrap();
        let e = s.get(b"alice").unwrap_err().to_string();
        assert!(e.contains("alice: damaged (empty"), "{e}");
        assert!(s.update(b"alice", false, |_| Ok((Some(Account::new(b"alice", 1)), ()))).is_err());
        assert_eq!(s.list().unwrap().1.len(), 1);
        s.update(b"alice", true, |cur| Ok((Some(Account::new(b"alice", 2)), assert_eq!(cur, None)))).unwrap();
        assert_eq!(s.get(b"alice").unwrap().unwrap().first_seen, 2);
    }

    #[test]
    fn version_1_files_are_read_and_written_over() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let p = s.dir().join("alice");
        let old = sample();
        std::fs::write(&p, v1_bytes(&old)).unwrap();
        assert_eq!(s.get(b"alice").unwrap(), Some(old.clone()));
        assert_eq!(s.list().unwrap().0, vec![old.clone()]);
        let new = Account::new(b"alice", 5);
        s.update(b"alice", false, |cur| Ok((Some(new.clone()), assert_eq!(cur.as_ref(), Some(&old))))).unwrap();
        assert_eq!(s.get(b"alice").unwrap(), Some(new.clone()));
        // the version 1 record stays until the next write takes its place
        assert!(std::fs::read(&p).unwrap().starts_with(b"UAac\x01"));
        put(&s, &old);
        assert!(std::fs::read(&p).unwrap().starts_with(b"UAas\x02"));
        assert_eq!(s.get(b"alice").unwrap(), Some(old));
    }

    #[test]
    fn odd_and_long_names_get_safe_distinct_files() {
        assert_eq!(file_name(b"alice.smith-2_x"), "alice.smith-2_x");
        assert_eq!(file_name(b".hidden"), "%2Ehidden");
        assert_eq!(file_name(b"a/b"), "a%2Fb");
        assert_eq!(file_name(b".."), "%2E.");
        assert_eq!(file_name(b""), "%");
        let long1 = vec![b'x'; 300];
        let mut long2 = long1.clone();
        long2[299] = b'y';
        assert!(file_name(&long1).len() <= NAME_MAX);
        assert_ne!(file_name(&long1), file_name(&long2));
        // SHA-256 of the whole name, after 135 bytes of it
        let want: String = Sha256::digest(&long1).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(file_name(&long1), format!("{}~{want}", "x".repeat(135)));
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        for n in [&b"a/b"[..], b"\xff\n", &long1, &long2] {
            s.update(n, false, |_| Ok((Some(Account::new(n, 1)), ()))).unwrap();
            assert_eq!(s.get(n).unwrap().unwrap().user, n);
        }
        assert_eq!(s.list().unwrap().0.len(), 4);
    }

    /// A long name's file from version 1 (64-bit FNV-1a name) is still
    /// read and updated; one that holds another name is not this account's.
    #[test]
    fn long_names_of_version_1_are_still_found() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let long = vec![b'q'; 250];
        let old = legacy_file_name(&long).unwrap();
        assert_eq!(old.len(), NAME_MAX);
        assert!(old.starts_with(&"q".repeat(183)));
        let mut a = sample();
        a.user = long.clone();
        std::fs::write(s.dir().join(&old), v1_bytes(&a)).unwrap();
        assert_eq!(s.get(&long).unwrap(), Some(a.clone()));
        let b = Account::new(&long, 3);
        put(&s, &b);
        assert_eq!(s.get(&long).unwrap(), Some(b.clone()));
        assert!(!s.dir().join(file_name(&long)).exists(), "updated where it was");
        let (ok, bad) = s.list().unwrap();
        assert_eq!((ok, bad.len()), (vec![b], 0));
        // an old-form file holding another name (a collision) is not ours
        let other = vec![b'r'; 250];
        std::fs::rename(s.dir().join(&old), s.dir().join(legacy_file_name(&other).unwrap())).unwrap();
        assert_eq!(s.get(&other).unwrap(), None);
        put(&s, &Account::new(&other, 4));
        assert_eq!(s.get(&other).unwrap().unwrap().first_seen, 4);
        assert_eq!(s.get(&long).unwrap(), None);
    }

    /// A file that holds another name is an error, never state to
    /// overwrite (also not for `activate`).
    #[test]
    fn another_names_file_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        put(&s, &sample());
        std::fs::rename(s.dir().join("alice"), s.dir().join("bob")).unwrap();
        let bytes = std::fs::read(s.dir().join("bob")).unwrap();
        let e = s.get(b"bob").unwrap_err().to_string();
        assert!(e.contains("holds the state of another name (\"alice\")"), "{e}");
        for repair in [false, true] {
            assert!(s.update(b"bob", repair, |_| Ok((Some(Account::new(b"bob", 1)), ()))).is_err());
        }
        assert_eq!(std::fs::read(s.dir().join("bob")).unwrap(), bytes);
        let (ok, bad) = s.list().unwrap();
        assert!(ok.is_empty());
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn damage_is_an_error_and_activate_can_repair() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        put(&s, &sample());
        let p = s.dir().join("alice");
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n - 2] ^= 1;
        std::fs::write(&p, &b).unwrap();
        assert!(s.get(b"alice").unwrap_err().to_string().contains("checksum"));
        assert!(s.update(b"alice", false, |_| Ok((None, ()))).is_err());
        let (ok, bad) = s.list().unwrap();
        assert!(ok.is_empty());
        assert_eq!(bad.len(), 1);
        s.update(b"alice", true, |cur| Ok((Some(Account::new(b"alice", 2)), assert_eq!(cur, None)))).unwrap();
        assert_eq!(s.get(b"alice").unwrap().unwrap().first_seen, 2);
        std::fs::write(&p, b"garbage").unwrap();
        assert!(s.get(b"alice").unwrap_err().to_string().contains("not a useraudit account file"));
    }

    /// A swept file: removed only when the predicate holds; and a writer
    /// that opened it before and waited for its lock starts again from the
    /// name, so its change lands in a file that exists.
    #[test]
    fn a_removed_file_is_never_written_through_an_old_descriptor() {
        let d = tempfile::tempdir().unwrap();
        let s = Arc::new(open(&d));
        put(&s, &sample());
        assert!(!s.remove_if(b"alice", |a| a.failures == 0).unwrap());
        assert!(!s.remove_if(b"nobody", |_| true).unwrap());
        assert_eq!(s.get(b"alice").unwrap(), Some(sample()));
        // A sweeper holds the lock; a writer opens the file and waits.
        let p = s.dir().join("alice");
        let holder = File::open(&p).unwrap();
        assert!(sys::try_flock(&holder, FileLock::Exclusive).unwrap());
        let writer = {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                s.update(b"alice", false, |cur| {
                    let mut a = cur.unwrap_or_else(|| Account::new(b"alice", 7));
                    a.failures += 1;
                    Ok((Some(a), ()))
                })
            })
        };
        // Until the writer waits on the lock of the file it opened.
        let fd_of_file = |pid: &str| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
                .filter(|l| l == &p)
                .count()
        };
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fd_of_file("self") < 2 {
            assert!(std::time::Instant::now() < until, "the writer never opened the file");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::remove_file(&p).unwrap();
        drop(holder);
        writer.join().unwrap().unwrap();
        // The change is in a new file, from no state: not lost in the old inode.
        let a = s.get(b"alice").unwrap().unwrap();
        assert_eq!((a.failures, a.first_seen), (1, 7));
        assert!(s.remove_if(b"alice", |a| a.failures == 1).unwrap());
        assert_eq!(s.get(b"alice").unwrap(), None);
    }

    /// While another process holds the file's lock: reads go on; a decision
    /// that writes nothing is made at once; one that writes waits, then
    /// comes back unwritten; a plain update fails.
    #[test]
    fn a_held_lock_leaves_decisions_to_the_committed_state() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        put(&s, &sample());
        let holder = File::open(s.dir().join("alice")).unwrap();
        assert!(sys::try_flock(&holder, FileLock::Exclusive).unwrap());
        assert_eq!(s.get(b"alice").unwrap(), Some(sample()));
        let r = s.update_or_decide(b"alice", |cur| Ok((None, cur.map(|a| a.failures)))).unwrap();
        assert!(matches!(r, Written::Done(Some(3))), "{r:?}");
        let r = s.update_or_decide(b"alice", |cur| Ok((cur.clone(), cur.map(|a| a.failures)))).unwrap();
        match r {
            Written::Unwritten(Some(3), e) => assert!(e.to_string().contains("still locked"), "{e}"),
            r => panic!("{r:?}"),
        }
        assert!(s.update(b"alice", false, |cur| Ok((cur, ()))).is_err());
        drop(holder);
        let r = s.update_or_decide(b"alice", |cur| {
            let mut a = cur.unwrap();
            a.failures = 0;
            Ok((Some(a), ()))
        });
        assert!(matches!(r, Ok(Written::Done(()))));
        assert_eq!(s.get(b"alice").unwrap().unwrap().failures, 0);
    }

    #[test]
    fn temporary_names_are_what_create_writes() {
        for r in [0, 1, 0x0123_4567_89ab_cdef, u64::MAX] {
            assert!(is_temporary_name(&temporary_name(r)), "{}", temporary_name(r));
        }
        for n in [".new-", ".new-0123456789abcde", ".new-0123456789abcdef0", ".new-0123456789ABCDEF", ".new-xyz"] {
            assert!(!is_temporary_name(n), "{n}");
        }
        assert!(!is_temporary_name(&file_name(b".new-0123456789abcdef")), "an account's file is never one");
    }

    /// Only temporary files older than the cut-off go: not a creation in
    /// progress, not an account's file, not other names or kinds of file.
    #[test]
    fn stale_temporaries_are_removed_and_nothing_else() {
        use std::time::{Duration, SystemTime, UNIX_EPOCH};
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        put(&s, &sample());
        let hour_ago = SystemTime::now() - Duration::from_secs(3600);
        let old = |name: &str| {
            let f = File::create(s.dir().join(name)).unwrap();
            f.set_modified(hour_ago).unwrap();
        };
        old(".new-0123456789abcdef");
        old(".new-00000000000000ff");
        old(".new-zz");
        old(".newer");
        File::create(s.dir().join(".new-fedcba9876543210")).unwrap();
        std::fs::create_dir(s.dir().join(".new-1111111111111111")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", s.dir().join(".new-2222222222222222")).unwrap();
        let cut = |ago: u64| {
            (SystemTime::now() - Duration::from_secs(ago)).duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
        };
        let names = || {
            let mut v: Vec<String> =
                std::fs::read_dir(s.dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        let all = names();
        assert_eq!(s.remove_stale_temporaries(cut(1800), true).unwrap(), 2);
        assert_eq!(names(), all, "a dry run removes nothing");
        assert_eq!(s.remove_stale_temporaries(cut(7200), false).unwrap(), 0, "none is two hours old");
        assert_eq!(s.remove_stale_temporaries(cut(1800), false).unwrap(), 2);
        assert_eq!(
            names(),
            [".new-1111111111111111", ".new-2222222222222222", ".new-fedcba9876543210", ".new-zz", ".newer", "alice"]
        );
        assert_eq!(s.get(b"alice").unwrap(), Some(sample()));
        assert_eq!(s.remove_stale_temporaries(cut(1800), false).unwrap(), 0);
    }

    /// Failures from many threads at once, on a file created by them all at
    /// the same moment, are counted one by one.
    #[test]
    fn concurrent_updates_count_exactly() {
        for _ in 0..3 {
            let d = tempfile::tempdir().unwrap();
            let s = open(&d);
            let ts: Vec<_> = (0..4)
                .map(|_| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for _ in 0..250 {
                            s.update(b"alice", false, |cur| {
                                let mut a = cur.unwrap_or_else(|| Account::new(b"alice", 0));
                                a.failures += 1;
                                Ok((Some(a), ()))
                            })
                            .unwrap();
                            assert!(s.get(b"alice").unwrap().is_some());
                        }
                    })
                })
                .collect();
            for t in ts {
                t.join().unwrap();
            }
            assert_eq!(s.get(b"alice").unwrap().unwrap().failures, 1000);
            assert_eq!(std::fs::read_dir(s.dir()).unwrap().count(), 1, "no temporary file is left");
        }
    }
}
