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

/// Whether this process runs for another user than the one who started
/// it: a set-user-ID or set-group-ID program such as `su`, whose caller
/// chose the resource limits, signal dispositions and umask it inherited.
/// That is: its real and effective ids differ, or the kernel started it in
/// secure mode (`AT_SECURE`: set-id or file-capability programs, also
/// those, like sudo, that make their real uid root before calling PAM).
pub fn setuid_context() -> bool {
    // SAFETY: getauxval only reads the auxiliary vector kept by the C
    // library.
    if unsafe { libc::getauxval(libc::AT_SECURE) } != 0 {
        return true;
    }
    // Two system calls (not four): getresuid and getresgid.
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are valid out-pointers; the call cannot
    // fail with them.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } == 0 && r != e {
        return true;
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: as above.
    unsafe { libc::getresgid(&mut r, &mut e, &mut s) == 0 && r != e }
}

/// Keeps what a set-user-ID caller chose for this process from reaching
/// the module's work, and puts it back when dropped (also while a panic
/// unwinds). In such a process the caller may have set `ulimit -f 0` and
/// ignored SIGXFSZ (every write fails with EFBIG), lowered the open-file
/// limit, or set a umask that makes new files unusable; the module's
/// writes must not fail because of its caller. In any other process it
/// does nothing beyond one comparison of ids.
#[must_use]
pub struct CallerShield {
    saved: Option<Saved>,
    /// The caller's limits could not all be lifted (no CAP_SYS_RESOURCE
    /// and a low hard limit): a write error may be the caller's doing.
    limited: bool,
}

struct Saved {
    fsize: libc::rlimit,
    nofile: libc::rlimit,
    xfsz: libc::sigaction,
    umask: libc::mode_t,
}

/// The fewest open files the module may have while it works.
const MIN_NOFILE: libc::rlim_t = 1024;

fn getrlimit(res: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut r = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: r is a valid out-pointer; on failure it keeps the value above.
    unsafe { libc::getrlimit(res, &mut r) };
    r
}

fn setrlimit(res: libc::__rlimit_resource_t, r: libc::rlimit) -> bool {
    // SAFETY: r is a valid rlimit value passed by pointer.
    unsafe { libc::setrlimit(res, &r) == 0 }
}

/// Raise a limit's soft value to at least `want`. Raising the hard limit
/// needs CAP_SYS_RESOURCE, which a set-user-ID root program has; without
/// it, the soft limit is raised as far as the hard one allows. True when
/// the soft limit is now at least `want`.
fn raise(res: libc::__rlimit_resource_t, old: libc::rlimit, want: libc::rlim_t) -> bool {
    if old.rlim_cur >= want {
        return true;
    }
    if setrlimit(res, libc::rlimit { rlim_cur: want, rlim_max: old.rlim_max.max(want) }) {
        return true;
    }
    let cur = old.rlim_max.min(want);
    if cur > old.rlim_cur {
        setrlimit(res, libc::rlimit { rlim_cur: cur, rlim_max: old.rlim_max });
    }
    false
}

impl CallerShield {
    /// Shield the module's work from a set-user-ID caller, if this is one.
    pub fn engage() -> CallerShield {
        if !setuid_context() {
            return CallerShield { saved: None, limited: false };
        }
        let fsize = getrlimit(libc::RLIMIT_FSIZE);
        let nofile = getrlimit(libc::RLIMIT_NOFILE);
        let lifted =
            raise(libc::RLIMIT_FSIZE, fsize, libc::RLIM_INFINITY) & raise(libc::RLIMIT_NOFILE, nofile, MIN_NOFILE);
        // SAFETY: a zeroed sigaction is a valid value of a plain C struct.
        let mut xfsz: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above; sa_handler SIG_IGN with an empty mask.
        let mut ign: libc::sigaction = unsafe { std::mem::zeroed() };
        ign.sa_sigaction = libc::SIG_IGN;
        // SAFETY: both pointers are valid; SIGXFSZ may be ignored.
        unsafe { libc::sigaction(libc::SIGXFSZ, &ign, &mut xfsz) };
        // SAFETY: umask cannot fail.
        let umask = unsafe { libc::umask(0o077) };
        CallerShield { saved: Some(Saved { fsize, nofile, xfsz, umask }), limited: !lifted }
    }

    /// True when this is a set-user-ID process whose caller set a hard
    /// file-size or open-file limit that could not be lifted: a storage
    /// error may then be the caller's doing, not the administrator's.
    pub fn caller_limited(&self) -> bool {
        self.limited
    }
}

impl Drop for CallerShield {
    fn drop(&mut self) {
        let Some(s) = self.saved.take() else { return };
        // SAFETY: umask cannot fail; the sigaction was returned by the
        // kernel above and is valid to install again.
        unsafe {
            libc::umask(s.umask);
            libc::sigaction(libc::SIGXFSZ, &s.xfsz, std::ptr::null_mut());
        }
        // Lowering a limit needs no privilege.
        setrlimit(libc::RLIMIT_NOFILE, s.nofile);
        setrlimit(libc::RLIMIT_FSIZE, s.fsize);
    }
}

/// The real uid of the process (for `su`: the caller's).
pub fn uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
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

/// The id of the group named `name` (`getgrnam_r`); Ok(None) when there is
/// no such group, Err with the error number when NSS fails.
pub fn group_id(name: &str) -> Result<Option<u32>, i32> {
    let Ok(cname) = CString::new(name) else { return Ok(None) };
    with_buffer(|buf| {
        // SAFETY: a zeroed group is a valid value of a plain C struct.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the call; buf.len() is the size of buf.
        let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        if out.is_null() {
            return if rc == 0 || rc == libc::ENOENT || rc == libc::ESRCH { Ok(None) } else { Err(rc) };
        }
        Ok(Some(gr.gr_gid))
    })
}

/// Every group `user` (primary group `gid`) belongs to, as NSS reports it
/// for a login (`getgrouplist`, the list `initgroups` sets): the primary
/// group, and the others also from backends that do not fill in member
/// lists (SSSD with `ignore_group_members`, some LDAP setups).
pub fn group_list(user: &[u8], gid: u32) -> Vec<u32> {
    let Ok(cuser) = CString::new(user) else { return vec![gid] };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: groups has room for n entries; n is a valid in/out pointer.
        let rc = unsafe { libc::getgrouplist(cuser.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n.max(0) as usize);
            return groups;
        }
        // Too small: n now says how many there are (glibc); grow anyway.
        let want = (n.max(0) as usize).max(groups.len() * 2);
        if want > 1 << 20 {
            return vec![gid];
        }
        groups.resize(want, 0);
    }
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

/// The resource limits the notify command starts with, whatever its
/// caller had: those of a fresh process on a default Linux system (the
/// kernel's initial limits). A set-user-ID caller could otherwise hand it a
/// file-size limit of 0, no CPU time or a handful of descriptors.
const FRESH_LIMITS: [(libc::__rlimit_resource_t, libc::rlim_t, libc::rlim_t); 16] = {
    const INF: libc::rlim_t = libc::RLIM_INFINITY;
    [
        (libc::RLIMIT_CPU, INF, INF),
        (libc::RLIMIT_FSIZE, INF, INF),
        (libc::RLIMIT_DATA, INF, INF),
        (libc::RLIMIT_STACK, 8 << 20, INF),
        (libc::RLIMIT_CORE, 0, INF),
        (libc::RLIMIT_RSS, INF, INF),
        (libc::RLIMIT_NPROC, INF, INF),
        (libc::RLIMIT_NOFILE, 1024, 4096),
        (libc::RLIMIT_MEMLOCK, 8 << 20, 8 << 20),
        (libc::RLIMIT_AS, INF, INF),
        (libc::RLIMIT_LOCKS, INF, INF),
        (libc::RLIMIT_SIGPENDING, INF, INF),
        (libc::RLIMIT_MSGQUEUE, 819_200, 819_200),
        (libc::RLIMIT_NICE, 0, 0),
        (libc::RLIMIT_RTPRIO, 0, 0),
        (libc::RLIMIT_RTTIME, INF, INF),
    ]
};

/// Start `prog` with exactly `env`, without a shell, detached from this
/// process (double fork, new session, stdio on /dev/null, no inherited
/// descriptors) and killed by SIGALRM after `timeout_secs`. Returns once
/// the intermediate child has exited, which is immediate.
///
/// Nothing of the process that starts it reaches the command but the
/// effective ids: started from a set-user-ID program (su), whose caller
/// chose the real ids, groups, limits, umask, niceness and signal
/// dispositions, it runs with every user and group id set to the effective
/// ones (for root: uid 0, gid 0 and group root alone), fresh resource
/// limits ([`FRESH_LIMITS`]), umask 022, niceness 0, every signal at its
/// default and none blocked. The caller can then neither signal it nor
/// make a shell script drop to its own uid.
///
/// Safe from a multi-threaded host (gdm, polkit): everything is prepared
/// before `fork`, and the children make only async-signal-safe calls (the
/// second fork is a raw `clone`, which runs no `pthread_atfork` handlers).
pub fn spawn_detached(prog: &CStr, env: &[CString], timeout_secs: u32) -> io::Result<()> {
    let argv: [*const c_char; 2] = [prog.as_ptr(), std::ptr::null()];
    let envp: Vec<*const c_char> = env.iter().map(|c| c.as_ptr()).chain(std::iter::once(std::ptr::null())).collect();
    let devnull = c"/dev/null";
    let root = c"/";
    // SAFETY: geteuid and getegid have no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    // Root's group for root (su keeps its caller's effective gid).
    // SAFETY: as above.
    let gid = if uid == 0 { 0 } else { unsafe { libc::getegid() } };
    let groups: [libc::gid_t; 1] = [0];
    // How far a close loop goes when close_range is missing (Linux before
    // 5.9): the hard limit, as descriptors opened before a lower soft limit
    // was set stay open.
    let nofile = getrlimit(libc::RLIMIT_NOFILE).rlim_max.min(1 << 16) as libc::c_int;
    // The kernel's struct sigaction (rt_sigaction(2)) all zero: SIG_DFL, no
    // flags, an empty mask. Its sigset is 8 bytes on x86-64 and arm64.
    let dfl = [0u64; 4];
    let sigset_size: libc::c_long = 8;
    let (uid_l, gid_l) = (libc::c_long::from(uid), libc::c_long::from(gid));
    const Z: libc::c_long = 0;
    // SAFETY: fork has no memory-safety preconditions; the child below only
    // makes async-signal-safe calls and always ends in execve or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: in the intermediate child and the grandchild only
        // async-signal-safe functions and raw system calls are made, on
        // values prepared before fork that stay valid (the memory is
        // copied by fork).
        unsafe {
            // The ids first: until they change, a caller with the same
            // real uid could stop or kill this child. Raw system calls:
            // glibc's wrappers make every thread of a process change ids
            // together, which is not async-signal-safe. Never run the
            // command with ids half changed (exit 127, reported below).
            if uid == 0 && libc::syscall(libc::SYS_setgroups, 1 as libc::c_long, groups.as_ptr()) != 0 {
                libc::_exit(127);
            }
            if libc::syscall(libc::SYS_setresgid, gid_l, gid_l, gid_l) != 0
                || libc::syscall(libc::SYS_setresuid, uid_l, uid_l, uid_l) != 0
            {
                libc::_exit(127);
            }
            libc::setsid();
            // A plain fork: the same as fork(2) without the host's
            // pthread_atfork handlers. Every argument but the flags is 0,
            // so their order (which differs between architectures) does
            // not matter.
            let child = libc::syscall(libc::SYS_clone, libc::c_long::from(libc::SIGCHLD), Z, Z, Z, Z);
            if child != 0 {
                libc::_exit(if child < 0 { 127 } else { 0 });
            }
            let fd = libc::open(devnull.as_ptr(), libc::O_RDWR);
            if fd >= 0 {
                libc::dup2(fd, 0);
                libc::dup2(fd, 1);
                libc::dup2(fd, 2);
            }
            if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
                let mut f = 3;
                while f < nofile {
                    libc::close(f);
                    f += 1;
                }
            }
            libc::chdir(root.as_ptr());
            libc::umask(0o022);
            for (res, cur, max) in FRESH_LIMITS {
                if libc::setrlimit(res, &libc::rlimit { rlim_cur: cur, rlim_max: max }) != 0 {
                    // Without CAP_SYS_RESOURCE a lower hard limit stays;
                    // the soft one goes as near as it allows.
                    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                    if libc::getrlimit(res, &mut old) == 0 {
                        let r = libc::rlimit { rlim_cur: cur.min(old.rlim_max), rlim_max: old.rlim_max };
                        libc::setrlimit(res, &r);
                    }
                }
            }
            libc::setpriority(libc::PRIO_PROCESS, 0, 0);
            // Every signal, the C library's own too (its sigaction wrapper
            // refuses those); SIGKILL and SIGSTOP refuse, and need not.
            let mut sig: libc::c_long = 1;
            while sig < 65 {
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), std::ptr::null_mut::<u64>(), sigset_size);
                sig += 1;
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::alarm(timeout_secs);
            libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child; status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            // The intermediate child exits 0 once the command's process is
            // started, 127 when its ids could not be set or clone failed.
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 0 {
                return Err(io::Error::other("cannot set its user and group ids, or fork"));
            }
            break;
        }
        // ECHILD: the caller ignores SIGCHLD and the child was reaped.
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
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
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC | if nofollow { libc::O_NOFOLLOW } else { 0 };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn umask_now() -> String {
        let st = std::fs::read_to_string("/proc/self/status").unwrap();
        st.lines().find(|l| l.starts_with("Umask:")).unwrap().to_string()
    }

    /// Outside a set-user-ID process (the test runner) the shield is a
    /// comparison of ids and nothing else: limits and umask stay.
    #[test]
    fn shield_does_nothing_in_an_ordinary_process() {
        if setuid_context() {
            return;
        }
        let (fsize, nofile, umask) = (getrlimit(libc::RLIMIT_FSIZE), getrlimit(libc::RLIMIT_NOFILE), umask_now());
        let s = CallerShield::engage();
        assert!(!s.caller_limited());
        assert!(s.saved.is_none());
        let same = |a: libc::rlimit, b: libc::rlimit| (a.rlim_cur, a.rlim_max) == (b.rlim_cur, b.rlim_max);
        assert!(same(getrlimit(libc::RLIMIT_FSIZE), fsize) && same(getrlimit(libc::RLIMIT_NOFILE), nofile));
        assert_eq!(umask_now(), umask);
    }
}
