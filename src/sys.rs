//! The operating-system edge: NSS and shadow lookups, syslog, identity and
//! the detached notifier. The only module besides the PAM glue that may use
//! `unsafe`; every block says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::c_char;

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// An account as NSS knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// The canonical name (`pw_name`).
    pub name: Vec<u8>,
    pub uid: u32,
    pub gid: u32,
}

/// Result of an NSS lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(UserInfo),
    NotFound,
    /// NSS failed (e.g. a directory server is down): neither known nor unknown.
    Error(i32),
}

/// Run a `get*_r` style call with a growing buffer.
fn with_buffer<T>(mut call: impl FnMut(&mut Vec<c_char>) -> Result<Option<T>, i32>) -> Result<Option<T>, i32> {
    let mut buf: Vec<c_char> = vec![0; 1024];
    loop {
        match call(&mut buf) {
            Err(libc::ERANGE) if buf.len() < (1 << 20) => {
                let n = buf.len() * 4;
                buf.resize(n, 0);
            }
            other => return other,
        }
    }
}

/// Look a name up through NSS (`getpwnam_r`).
pub fn lookup_user(name: &[u8]) -> Lookup {
    let Ok(cname) = CString::new(name) else { return Lookup::NotFound };
    let r = with_buffer(|buf| {
        // SAFETY: a zeroed passwd is a valid value of a plain C struct.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; buf.len() is the size of buf.
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        if out.is_null() {
            return if rc == 0 || rc == libc::ENOENT || rc == libc::ESRCH { Ok(None) } else { Err(rc) };
        }
        // SAFETY: on success pw_name points to a NUL-terminated string inside buf.
        let n = unsafe { CStr::from_ptr(pw.pw_name) }.to_bytes().to_vec();
        Ok(Some(UserInfo { name: n, uid: pw.pw_uid, gid: pw.pw_gid }))
    });
    match r {
        Ok(Some(u)) => Lookup::Found(u),
        Ok(None) => Lookup::NotFound,
        Err(e) => Lookup::Error(e),
    }
}

/// Whether `user` (primary group `gid`) is a member of the group named `group`.
pub fn in_group(user: &[u8], gid: u32, group: &str) -> bool {
    let Ok(cgroup) = CString::new(group) else { return false };
    let r = with_buffer(|buf| {
        // SAFETY: a zeroed group is a valid value of a plain C struct.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; buf.len() is the size of buf.
        let rc = unsafe { libc::getgrnam_r(cgroup.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        if out.is_null() {
            return if rc == 0 || rc == libc::ENOENT { Ok(None) } else { Err(rc) };
        }
        if gr.gr_gid == gid {
            return Ok(Some(true));
        }
        let mut p = gr.gr_mem;
        // SAFETY: gr_mem is a NULL-terminated array of NUL-terminated strings inside buf.
        unsafe {
            while !p.is_null() && !(*p).is_null() {
                if CStr::from_ptr(*p).to_bytes() == user {
                    return Ok(Some(true));
                }
                p = p.add(1);
            }
        }
        Ok(Some(false))
    });
    matches!(r, Ok(Some(true)))
}

/// The password's last-change day from the shadow database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShadowChange {
    /// Days since the epoch; 0 means "change at next login".
    Day(i64),
    /// The field is empty: no password aging.
    NoAging,
    /// Not in the shadow database.
    NotFound,
    /// Cannot be read (not root).
    Unreadable(i32),
}

/// `getspnam_r` for the last-change field.
pub fn shadow_change(name: &[u8]) -> ShadowChange {
    let Ok(cname) = CString::new(name) else { return ShadowChange::NotFound };
    let r = with_buffer(|buf| {
        // SAFETY: a zeroed spwd is a valid value of a plain C struct.
        let mut sp: libc::spwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::spwd = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; buf.len() is the size of buf.
        let rc = unsafe { libc::getspnam_r(cname.as_ptr(), &mut sp, buf.as_mut_ptr(), buf.len(), &mut out) };
        if out.is_null() {
            return if rc == 0 || rc == libc::ENOENT { Ok(None) } else { Err(rc) };
        }
        Ok(Some(sp.sp_lstchg))
    });
    match r {
        Ok(Some(d)) if d < 0 => ShadowChange::NoAging,
        // c_long is 32 bits on some targets.
        #[allow(clippy::useless_conversion)]
        Ok(Some(d)) => ShadowChange::Day(i64::from(d)),
        Ok(None) if euid() != 0 => ShadowChange::Unreadable(libc::EACCES),
        Ok(None) => ShadowChange::NotFound,
        Err(e) => ShadowChange::Unreadable(e),
    }
}

/// Syslog priorities used by useraudit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Err,
    Warning,
    Notice,
    Info,
    Debug,
}

/// Write one line to syslog, facility AUTHPRIV, with a constant format
/// string. `line` must already be escaped by the caller.
pub fn syslog(p: Priority, line: &str) {
    let prio = match p {
        Priority::Err => libc::LOG_ERR,
        Priority::Warning => libc::LOG_WARNING,
        Priority::Notice => libc::LOG_NOTICE,
        Priority::Info => libc::LOG_INFO,
        Priority::Debug => libc::LOG_DEBUG,
    };
    let Ok(msg) = CString::new(line.replace('\0', "\\x00")) else { return };
    // SAFETY: the format is a constant "%s" and msg is a valid C string.
    unsafe { libc::syslog(libc::LOG_AUTHPRIV | prio, c"%s".as_ptr(), msg.as_ptr()) };
}

/// Name the program in syslog lines (the CLI; the module keeps the
/// application's own ident).
pub fn openlog(ident: &'static CStr) {
    // SAFETY: ident is 'static, as openlog requires.
    unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_AUTHPRIV) };
}

/// Start `prog` with exactly `env`, without a shell, detached from this
/// process (double fork, new session, stdio on /dev/null, no inherited
/// descriptors) and killed by SIGALRM after `timeout_secs`. Returns once
/// the intermediate child has exited, which is immediate.
pub fn spawn_detached(prog: &CStr, env: &[CString], timeout_secs: u32) -> io::Result<()> {
    // Everything the children need is prepared before fork: after it, only
    // async-signal-safe calls are made.
    let argv: [*const c_char; 2] = [prog.as_ptr(), std::ptr::null()];
    let envp: Vec<*const c_char> = env.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let devnull = c"/dev/null";
    let root = c"/";
    // SAFETY: fork has no memory-safety preconditions; the child below only
    // makes async-signal-safe calls and always ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the intermediate child and the grandchild only
        // async-signal-safe functions are called, on pointers prepared
        // before fork that stay valid (the memory is copied by fork).
        unsafe {
            libc::setsid();
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                let mut f = 3;
                while f < 4096 {
                    libc::close(f);
                    f += 1;
                }
            }
            libc::chdir(root.as_ptr());
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            for sig in [libc::SIGALRM, libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGPIPE, libc::SIGCHLD] {
                libc::signal(sig, libc::SIG_DFL);
            }
            libc::alarm(timeout_secs);
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    Ok(())
}

/// Kinds of `flock(2)` lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileLock {
    Shared,
    Exclusive,
}

/// Try to take a `flock(2)` lock on an open file without waiting. Ok(false)
/// when another holder is in the way. The lock belongs to the open file
/// description and goes with its last close.
pub fn try_flock(file: &std::fs::File, kind: FileLock) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let op = match kind {
        FileLock::Shared => libc::LOCK_SH,
        FileLock::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: the descriptor is open for the life of `file`; flock
        // only takes an advisory lock on it.
        let r = unsafe { libc::flock(file.as_raw_fd(), op) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// `path` as a C string for the `*at` calls (a NUL byte cannot name a file).
fn c_path(path: &std::path::Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// The descriptor `*at` calls resolve relative to.
fn at_fd(dir: Option<&std::fs::File>) -> i32 {
    use std::os::fd::AsRawFd;
    dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd())
}

/// Retry a call interrupted by a signal.
fn retry(mut call: impl FnMut() -> i32) -> io::Result<i32> {
    loop {
        let r = call();
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Open a directory as a handle for `*at` calls only (`O_PATH`: no read
/// permission needed, nothing can be read or written through it), relative
/// to `dir` (None: the working directory). With `nofollow`, a symbolic link
/// in the last component is refused (`O_NOFOLLOW`).
pub fn open_dir(dir: Option<&std::fs::File>, path: &std::path::Path, nofollow: bool) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = c_path(path)?;
    let flags =
        libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | if nofollow { libc::O_NOFOLLOW } else { 0 };
    // SAFETY: c is a valid C string for the call; the descriptor is open or AT_FDCWD.
    let fd = retry(|| unsafe { libc::openat(at_fd(dir), c.as_ptr(), flags) })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Open `name` relative to the directory `dir` with `flags` (`O_CLOEXEC`
/// is added) and, when it creates, `mode`.
pub fn open_at(dir: &std::fs::File, name: &std::path::Path, flags: i32, mode: u32) -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    let c = c_path(name)?;
    // SAFETY: c is a valid C string for the call; dir is an open descriptor;
    // the mode is passed as the variadic argument openat reads with O_CREAT.
    let fd =
        retry(|| unsafe { libc::openat(at_fd(Some(dir)), c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: openat returned a new descriptor that nothing else owns.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Give the file `from` in `dir` the second name `to` in the same
/// directory; fails with `EEXIST` rather than replace a file.
pub fn link_at(dir: &std::fs::File, from: &std::path::Path, to: &std::path::Path) -> io::Result<()> {
    let (a, b) = (c_path(from)?, c_path(to)?);
    let d = at_fd(Some(dir));
    // SAFETY: a and b are valid C strings for the call; d is an open descriptor.
    retry(|| unsafe { libc::linkat(d, a.as_ptr(), d, b.as_ptr(), 0) }).map(drop)
}

/// Remove the name `name` from the directory `dir`.
pub fn unlink_at(dir: &std::fs::File, name: &std::path::Path) -> io::Result<()> {
    let c = c_path(name)?;
    // SAFETY: c is a valid C string for the call; dir is an open descriptor.
    retry(|| unsafe { libc::unlinkat(at_fd(Some(dir)), c.as_ptr(), 0) }).map(drop)
}

/// Bytes from the kernel's random source (`getrandom(2)`, no file to open).
pub fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    let mut got = 0;
    while got < N {
        // SAFETY: the pointer and length describe the unfilled tail of `out`.
        let r = unsafe { libc::getrandom(out[got..].as_mut_ptr().cast(), N - got, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        got += r as usize;
    }
    Ok(out)
}

// The unwinder (panics are caught at the FFI edge, so the module needs one)
// is linked in statically from gcc's libgcc_eh.a instead of loading
// libgcc_s.so.1 beside the module on every dlopen: one shared object less
// to map, relocate and unmap per PAM handle (about 50 us). `-lgcc_eh` comes
// before the standard library's `-lgcc_s` on the link line and
// `--as-needed` then drops libgcc_s. Panics never leave the module, so its
// unwinder never meets another unwinder's exceptions.
#[link(name = "gcc_eh", kind = "static", modifiers = "-bundle")]
unsafe extern "C" {}
