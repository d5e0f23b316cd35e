//! What the log spool ([`crate::spool`]) and the account state files
//! ([`crate::state`]) share: their error, bounded lock waits, the checks on
//! the directories they live in, and a small binary codec.
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, FileLock};

/// Longest a login waits for a lock (another login's, or an
/// administrator's command) before giving up and answering `on_error`.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(3000);

/// Microseconds slept before retry `n` (0-based): 25, 50, 100 ... 800, then 1000.
pub fn busy_step_us(n: u64) -> u64 {
    (25u64 << n.min(6)).min(1000)
}

/// Microseconds slept in the first `n` retries.
pub fn busy_spent_us(n: u64) -> u64 {
    if n <= 6 { 25 * ((1u64 << n) - 1) } else { 1575 + (n - 6) * 1000 }
}

/// Sleep before retry `n` unless `budget_us` would be exceeded; false
/// when the budget is spent. Short sleeps growing to 1 ms: a login holds
/// a lock for tens of microseconds, so long sleeps would only leave the
/// lock idle. A little per-process jitter keeps waiters from waking in
/// lockstep.
pub fn busy_wait(n: u64, budget_us: u64) -> bool {
    if busy_spent_us(n) >= budget_us {
        return false;
    }
    let jitter = u64::from(std::process::id() % 8) * 5;
    std::thread::sleep(Duration::from_micros(busy_step_us(n) + jitter));
    true
}

/// A file or directory of the log spool or the account state that cannot
/// be used: its path, what was being done, and the I/O error (its
/// [`source`](std::error::Error::source)) when there was one.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    /// What was being done ("cannot lock"), or the whole problem when no
    /// I/O error caused it.
    pub message: String,
    source: Option<std::io::Error>,
}

impl FileError {
    pub fn new(path: &Path, message: impl Into<String>) -> FileError {
        FileError { path: path.into(), message: message.into(), source: None }
    }
    /// From an I/O error, with what was being done. The error is kept as
    /// the source: `io::Error` is not `Clone`, so a borrowed one is copied
    /// (its OS error code, or its kind and text).
    pub fn io(path: &Path, doing: &str, e: &std::io::Error) -> FileError {
        let copy = match e.raw_os_error() {
            Some(code) => std::io::Error::from_raw_os_error(code),
            None => std::io::Error::new(e.kind(), e.to_string()),
        };
        FileError::from_io(path, doing, copy)
    }
    /// From an owned I/O error, with what was being done.
    pub fn from_io(path: &Path, doing: &str, e: std::io::Error) -> FileError {
        FileError { path: path.into(), message: doing.into(), source: Some(e) }
    }
    /// The caller lacks permission (a program that is not root meeting the
    /// root-only files): derived from the I/O error.
    pub fn denied(&self) -> bool {
        self.source.as_ref().is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    }
    /// The I/O error behind this one, if any.
    pub fn io_error(&self) -> Option<&std::io::Error> {
        self.source.as_ref()
    }
    /// Take the I/O error out (to keep it as the source of another error).
    pub fn into_io_error(self) -> Option<std::io::Error> {
        self.source
    }
    /// The problem without the path: what was being done and the I/O error.
    pub fn detail(&self) -> String {
        match &self.source {
            Some(e) => format!("{}: {e}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Take a `flock` lock, waiting at most [`BUSY_TIMEOUT`].
pub fn lock(file: &File, path: &Path, kind: FileLock) -> Result<(), FileError> {
    if lock_within(file, path, kind)? {
        return Ok(());
    }
    Err(busy(path))
}

/// Take a `flock` lock, waiting at most [`BUSY_TIMEOUT`]; Ok(false) when
/// another process held it all that time.
pub fn lock_within(file: &File, path: &Path, kind: FileLock) -> Result<bool, FileError> {
    let budget = BUSY_TIMEOUT.as_micros() as u64;
    let mut n = 0;
    loop {
        match sys::try_flock(file, kind) {
            Ok(true) => return Ok(true),
            Ok(false) if busy_wait(n, budget) => n += 1,
            Ok(false) => return Ok(false),
            Err(e) => return Err(FileError::io(path, "cannot lock", &e)),
        }
    }
}

/// The error for a lock another process held longer than [`BUSY_TIMEOUT`].
pub fn busy(path: &Path) -> FileError {
    FileError::new(path, format!("still locked by another process after {} s", BUSY_TIMEOUT.as_secs()))
}

/// Refuse a file or directory that is not owned by root or that group or
/// others could write (when running as root).
pub fn check_owner(path: &Path, md: &std::fs::Metadata, what: &str) -> Result<(), FileError> {
    if md.uid() != 0 || md.mode() & 0o022 != 0 {
        return Err(FileError::new(
            path,
            format!(
                "refusing {what} that others could write (owner uid {}, mode {:04o}); it must be owned by root and not writable by group or others",
                md.uid(),
                md.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Make sure a directory exists (created 0700 when `create`), and, when
/// `require_root_owned`, that only root can write it.
pub fn prepare_dir(dir: &Path, create: bool, require_root_owned: bool) -> Result<(), FileError> {
    match std::fs::metadata(dir) {
        Ok(md) if !md.is_dir() => Err(FileError::new(dir, "not a directory")),
        Ok(md) => {
            if require_root_owned {
                check_owner(dir, &md, "directory")?;
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| FileError::io(dir, "cannot create directory", &e))?;
            // The mode is masked by the umask; make it exact.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            Ok(())
        }
        Err(e) => Err(FileError::io(dir, "directory", &e)),
    }
}

/// The directory a path lives in (`.` for a bare name).
pub fn parent(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// `PATH` + `suffix`, for the files that live beside the database.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    p.into()
}

/// Little-endian binary encoding: integers, and byte strings as a u32
/// length (`u32::MAX` for none) followed by the bytes.
#[derive(Default)]
pub struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    pub fn bytes(&mut self, v: Option<&[u8]>) {
        match v {
            Some(b) => {
                // Callers cap what they store (text::FIELD_CAP); a length
                // that does not fit a u32 cannot arise.
                self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX - 1));
                self.0.extend_from_slice(&b[..b.len().min(u32::MAX as usize - 1)]);
            }
            None => self.u32(u32::MAX),
        }
    }
}

/// The reading side of [`Enc`]; every getter is None past the end.
pub struct Dec<'a> {
    b: &'a [u8],
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Dec<'a> {
        Dec { b }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    pub fn i64(&mut self) -> Option<i64> {
        self.take(8).map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()))
    }
    pub fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            1 => self.i64().map(Some),
            _ => None,
        }
    }
    pub fn bytes(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u32()? {
            u32::MAX => Some(None),
            n => self.take(n as usize).map(|b| Some(b.to_vec())),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn file_error_keeps_its_io_error_as_the_source() {
        let io = std::io::Error::from_raw_os_error(EACCES);
        let e = FileError::io(Path::new("/x/y"), "cannot open", &io);
        assert!(e.denied());
        let src = e.source().expect("a source");
        let src = src.downcast_ref::<std::io::Error>().expect("an io::Error");
        assert_eq!(src.kind(), std::io::ErrorKind::PermissionDenied);
        assert_eq!(src.raw_os_error(), io.raw_os_error());
        assert_eq!(e.to_string(), format!("/x/y: cannot open: {io}"));
        assert_eq!(e.detail(), format!("cannot open: {io}"));

        let owned = FileError::from_io(Path::new("/x"), "cannot read", std::io::ErrorKind::NotFound.into());
        assert!(!owned.denied());
        assert_eq!(owned.io_error().map(|e| e.kind()), Some(std::io::ErrorKind::NotFound));

        let plain = FileError::new(Path::new("/x"), "not a directory");
        assert!(!plain.denied());
        assert!(plain.source().is_none());
        assert_eq!(plain.to_string(), "/x: not a directory");
    }

    /// EACCES on Linux, whose kind is PermissionDenied.
    const EACCES: i32 = 13;

    #[test]
    fn codec_round_trip_and_short_input() {
        let mut e = Enc::default();
        e.u8(7);
        e.u32(70000);
        e.i64(-5);
        e.opt_i64(Some(9));
        e.opt_i64(None);
        e.bytes(Some(b"a\xffb"));
        e.bytes(None);
        e.bytes(Some(b""));
        let mut d = Dec::new(&e.0);
        assert_eq!(d.u8(), Some(7));
        assert_eq!(d.u32(), Some(70000));
        assert_eq!(d.i64(), Some(-5));
        assert_eq!(d.opt_i64(), Some(Some(9)));
        assert_eq!(d.opt_i64(), Some(None));
        assert_eq!(d.bytes(), Some(Some(b"a\xffb".to_vec())));
        assert_eq!(d.bytes(), Some(None));
        assert_eq!(d.bytes(), Some(Some(vec![])));
        assert!(d.is_empty());
        assert_eq!(d.u8(), None);
        // a length past the end is no value, not a panic
        let mut d = Dec::new(&[5, 0, 0, 0, b'x']);
        assert_eq!(d.bytes(), None);
    }

    #[test]
    fn busy_waits_are_short_and_bounded() {
        let mut sum = 0;
        for n in 0..5000 {
            assert_eq!(busy_spent_us(n), sum, "retry {n}");
            assert!((25..=1000).contains(&busy_step_us(n)));
            sum += busy_step_us(n);
        }
        // the 3 s budget runs out after about three thousand retries
        let last = (0..).find(|&n| busy_spent_us(n) >= BUSY_TIMEOUT.as_micros() as u64).unwrap();
        assert!((2900..3100).contains(&last), "{last}");
    }

    #[test]
    fn an_exclusive_lock_keeps_others_out_until_closed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        let a = File::create(&p).unwrap();
        let b = File::open(&p).unwrap();
        lock(&a, &p, FileLock::Exclusive).unwrap();
        assert!(!sys::try_flock(&b, FileLock::Shared).unwrap());
        drop(a);
        lock(&b, &p, FileLock::Shared).unwrap();
    }
}
