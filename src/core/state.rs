//! Account state: one small file per account in `DATABASE.accounts/`,
//! read and changed under a `flock`, as pam_faillock keeps its tallies,
//! but on persistent storage beside the database (not a tmpfs).
//!
//! The PAM module decides every login from these files without opening
//! SQLite; `useraudit-admin` reads and changes them through the same
//! functions. A change is read, decided and written while the file is
//! locked exclusively, so concurrent failures count one by one and the
//! lock falls at exactly the Nth.
//!
//! File names are the account name with bytes other than `A-Za-z0-9_-`
//! (and a leading `.`) written `%XX`; very long names end in a hash. The
//! full name is stored inside, with a CRC-32 over the contents: a damaged
//! file is an error (answered with `on_error` by the module), never misread.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::files::{Dec, Enc, FileError, beside, lock, parent, prepare_dir};
use crate::policy::{Account, Reason, State};
use crate::sys::FileLock;

const MAGIC: &[u8; 4] = b"UAac";
const VERSION: u8 = 1;
/// Magic, version, payload length, CRC.
const HEADER_LEN: usize = 13;
/// Longest file name used as it is; longer ones end in a hash.
const NAME_MAX: usize = 200;

/// The account state directory of a database.
pub fn dir_for(db: &Path) -> PathBuf {
    beside(db, ".accounts")
}

/// The file name for an account.
pub fn file_name(user: &[u8]) -> String {
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
    if s.len() > NAME_MAX {
        // FNV-1a over the whole name; the name inside the file decides.
        let h = user.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        s.truncate(NAME_MAX - 17);
        s.push_str(&format!("~{h:016x}"));
    }
    s
}

fn encode(a: &Account) -> Vec<u8> {
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
    let mut out = Vec::with_capacity(HEADER_LEN + p.0.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&(p.0.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&p.0).to_le_bytes());
    out.extend_from_slice(&p.0);
    out
}

/// None: empty (no state yet). Err: damaged.
fn decode(b: &[u8]) -> Result<Option<Account>, String> {
    if b.is_empty() {
        return Ok(None);
    }
    if b.len() < HEADER_LEN || &b[..4] != MAGIC {
        return Err("not a useraudit account file".into());
    }
    if b[4] != VERSION {
        return Err(format!(
            "format version {} is not one this useraudit understands ({VERSION}); upgrade useraudit",
            b[4]
        ));
    }
    let len = u32::from_le_bytes(b[5..9].try_into().unwrap_or_default()) as usize;
    let crc = u32::from_le_bytes(b[9..13].try_into().unwrap_or_default());
    let Some(payload) = b.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err("damaged (shorter than it says)".into());
    };
    if crc32fast::hash(payload) != crc {
        return Err("damaged (checksum mismatch)".into());
    }
    let mut d = Dec::new(payload);
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
        })
    })();
    match a {
        Some(a) if d.is_empty() => Ok(Some(a)),
        _ => Err("damaged (cannot be decoded)".into()),
    }
}

/// The account state directory of one database.
#[derive(Debug, Clone)]
pub struct Accounts {
    dir: PathBuf,
}

impl Accounts {
    /// Check (and if asked create, 0700) the database's directory and the
    /// state directory in it. As root, both must be root's alone.
    pub fn open(db: &Path, create: bool, require_root_owned: bool) -> Result<Accounts, FileError> {
        prepare_dir(parent(db), create, require_root_owned)?;
        let dir = dir_for(db);
        prepare_dir(&dir, create, require_root_owned)?;
        Ok(Accounts { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, user: &[u8]) -> PathBuf {
        self.dir.join(file_name(user))
    }

    /// One account's state; None when nothing is recorded.
    pub fn get(&self, user: &[u8]) -> Result<Option<Account>, FileError> {
        let path = self.path(user);
        let f = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FileError::io(&path, "cannot open", &e)),
        };
        lock(&f, &path, FileLock::Shared)?;
        Ok(read(&f, &path)?.filter(|a| a.user == user))
    }

    /// Read, change and write one account's state under its exclusive lock.
    /// `f` gets the current state (None: nothing recorded) and returns what
    /// to write (None: leave the file as it is) and a result. With
    /// `repair`, a damaged file counts as no state (for `activate`, which
    /// starts the account afresh).
    pub fn update<T>(
        &self,
        user: &[u8],
        repair: bool,
        f: impl FnOnce(Option<Account>) -> Result<(Option<Account>, T), FileError>,
    ) -> Result<T, FileError> {
        let path = self.path(user);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| FileError::io(&path, "cannot open", &e))?;
        lock(&file, &path, FileLock::Exclusive)?;
        let raw = read_bytes(&file, &path)?;
        let current = match parse(&raw, &path) {
            Ok(a) => a.filter(|a| a.user == user),
            Err(_) if repair => None,
            Err(e) => return Err(e),
        };
        let (new, out) = f(current)?;
        if let Some(a) = new {
            let b = encode(&a);
            // In place: the lock lives on this inode, so no rename. One
            // write of a few hundred bytes, then the length.
            file.write_all_at(&b, 0).map_err(|e| FileError::io(&path, "cannot write", &e))?;
            // Bytes past the record are never read; cut them only when the
            // record shrank (most writes keep its length: no extra call).
            if b.len() < raw.len() {
                file.set_len(b.len() as u64).map_err(|e| FileError::io(&path, "cannot write", &e))?;
            }
        }
        Ok(out)
    }

    /// Every account with recorded state, by name. Damaged files are
    /// returned as errors beside the others.
    pub fn list(&self) -> Result<(Vec<Account>, Vec<FileError>), FileError> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
        let mut out = Vec::new();
        let mut bad = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| FileError::io(&self.dir, "cannot list", &e))?;
            if !ent.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let path = ent.path();
            let r = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| FileError::io(&path, "cannot open", &e))
                .and_then(|f| {
                    lock(&f, &path, FileLock::Shared)?;
                    read(&f, &path)
                });
            match r {
                Ok(Some(a)) => out.push(a),
                Ok(None) => {}
                Err(e) => bad.push(e),
            }
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok((out, bad))
    }
}

fn read(f: &File, path: &Path) -> Result<Option<Account>, FileError> {
    parse(&read_bytes(f, path)?, path)
}

fn parse(b: &[u8], path: &Path) -> Result<Option<Account>, FileError> {
    decode(b).map_err(|m| FileError::new(path, format!("{m}; `useraudit-admin activate USER` starts the account afresh")))
}

/// The file's bytes, up to the end of the record its header announces:
/// one read(2) for a usual file (`read_to_end` would add a stat, a seek
/// and a read that finds the end, on every login).
fn read_bytes(mut f: &File, path: &Path) -> Result<Vec<u8>, FileError> {
    let mut b = vec![0u8; 1024];
    let mut len = 0;
    loop {
        match f.read(&mut b[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::io(path, "cannot read", &e)),
        }
        if len >= HEADER_LEN && &b[..4] == MAGIC {
            let want = HEADER_LEN + u32::from_le_bytes(b[5..9].try_into().unwrap_or_default()) as usize;
            if len >= want {
                break;
            }
        }
        if len == b.len() {
            b.resize(b.len() * 2, 0);
        }
    }
    b.truncate(len);
    Ok(b)
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
        s.update(b"alice", false, |_| Ok((Some(b.clone()), ()))).unwrap();
        assert_eq!(s.get(b"alice").unwrap(), Some(b.clone()));
        // None leaves the file alone; an opened but unwritten file is no state
        s.update(b"bob", false, |cur| Ok((None, assert_eq!(cur, None)))).unwrap();
        assert_eq!(s.get(b"bob").unwrap(), None);
        let (all, bad) = s.list().unwrap();
        assert_eq!(all, vec![b]);
        assert!(bad.is_empty());
    }

    /// Records longer than the first read, and records that shrink and grow
    /// again in place, read back exactly.
    #[test]
    fn long_and_shrinking_records() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        let mut big = sample();
        big.fail_times = (0..600).collect();
        for a in [big.clone(), Account::new(b"alice", 1), big, sample()] {
            s.update(b"alice", false, |_| Ok((Some(a.clone()), ()))).unwrap();
            assert_eq!(s.get(b"alice").unwrap(), Some(a.clone()));
            assert_eq!(s.list().unwrap().0, vec![a]);
        }
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
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        for n in [&b"a/b"[..], b"\xff\n", &long1, &long2] {
            s.update(n, false, |_| Ok((Some(Account::new(n, 1)), ()))).unwrap();
            assert_eq!(s.get(n).unwrap().unwrap().user, n);
        }
        assert_eq!(s.list().unwrap().0.len(), 4);
    }

    #[test]
    fn damage_is_an_error_and_activate_can_repair() {
        let d = tempfile::tempdir().unwrap();
        let s = open(&d);
        s.update(b"alice", false, |_| Ok((Some(sample()), ()))).unwrap();
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

    /// Failures from many processes at once are counted one by one.
    #[test]
    fn concurrent_updates_count_exactly() {
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
                    }
                })
            })
            .collect();
        for t in ts {
            t.join().unwrap();
        }
        assert_eq!(s.get(b"alice").unwrap().unwrap().failures, 1000);
    }
}
