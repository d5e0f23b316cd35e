//! `notify_command`: run once per lock or disable, without a shell, with the
//! event in environment variables, detached and bounded in time, as root
//! with a fresh process state even when a set-user-ID caller started the
//! login (see [`sys::spawn_detached`]).
#![forbid(unsafe_code)]

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::sys;

/// Seconds after which a notify command is killed (SIGALRM).
pub const NOTIFY_TIMEOUT_SECS: u32 = 30;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Locked,
    AccountExpired,
    PasswordExpired,
    /// A remote host reached `host_failure_limit` and is blocked.
    HostBlocked,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Locked => "locked",
            Event::AccountExpired => "account_expired",
            Event::PasswordExpired => "password_expired",
            Event::HostBlocked => "host_blocked",
        }
    }
}

/// The facts passed to the command.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    pub event: Event,
    pub user: &'a [u8],
    pub rhost: Option<&'a [u8]>,
    pub service: Option<&'a [u8]>,
    pub failures: u32,
}

/// Check that `cmd` may be run: an absolute path to a regular, executable
/// file owned by root (or by the caller when not root) and not writable by
/// group or others.
pub fn check_command(cmd: &Path) -> Result<(), String> {
    if !cmd.is_absolute() {
        return Err(format!("notify_command {} is not an absolute path", cmd.display()));
    }
    let md = std::fs::metadata(cmd).map_err(|e| format!("notify_command {}: {e}", cmd.display()))?;
    if !md.is_file() {
        return Err(format!("notify_command {} is not a regular file", cmd.display()));
    }
    let me = sys::euid();
    if md.uid() != 0 && md.uid() != me {
        return Err(format!("refusing notify_command {}: owned by uid {}, not root", cmd.display(), md.uid()));
    }
    if md.mode() & 0o022 != 0 {
        return Err(format!(
            "refusing notify_command {}: writable by group or others (mode {:04o})",
            cmd.display(),
            md.mode() & 0o7777
        ));
    }
    if md.mode() & 0o111 == 0 {
        return Err(format!("notify_command {} is not executable", cmd.display()));
    }
    // Whoever can write to a directory on the way can put another program
    // in the command's place: check the path as written and, through any
    // symbolic links, the path it resolves to.
    check_dirs(cmd, me)?;
    if let Ok(real) = std::fs::canonicalize(cmd) {
        if real != cmd {
            check_dirs(&real, me)?;
        }
    }
    Ok(())
}

/// Every directory above `cmd` must be owned by root (or the caller) and not
/// writable by group or others, unless it is sticky like /tmp (there others
/// cannot rename or remove what they do not own, and what lies below is
/// checked in turn).
fn check_dirs(cmd: &Path, me: u32) -> Result<(), String> {
    for dir in cmd.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
        let md = std::fs::metadata(dir)
            .map_err(|e| format!("notify_command {}: directory {}: {e}", cmd.display(), dir.display()))?;
        if md.uid() != 0 && md.uid() != me {
            return Err(format!(
                "refusing notify_command {}: directory {} is owned by uid {}, not root",
                cmd.display(),
                dir.display(),
                md.uid()
            ));
        }
        if md.mode() & 0o022 != 0 && md.mode() & 0o1000 == 0 {
            return Err(format!(
                "refusing notify_command {}: directory {} is writable by group or others (mode {:04o})",
                cmd.display(),
                dir.display(),
                md.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

/// Environment for the command: a fixed PATH and the event's variables.
/// Values are passed as raw bytes (NUL cannot occur in them).
pub fn environment(n: &Notice<'_>) -> Vec<CString> {
    let mut env = Vec::new();
    let mut add = |k: &str, v: &[u8]| {
        let mut b = k.as_bytes().to_vec();
        b.push(b'=');
        b.extend(v.iter().copied().filter(|&c| c != 0));
        if let Ok(c) = CString::new(b) {
            env.push(c);
        }
    };
    add("PATH", b"/usr/sbin:/usr/bin:/sbin:/bin");
    add("USERAUDIT_EVENT", n.event.as_str().as_bytes());
    add("USERAUDIT_USER", n.user);
    add("USERAUDIT_RHOST", n.rhost.unwrap_or_default());
    add("USERAUDIT_SERVICE", n.service.unwrap_or_default());
    add("USERAUDIT_FAILURES", n.failures.to_string().as_bytes());
    env
}

/// Run the command for this notice. Returns an error message to log when
/// it is refused or cannot be started; never waits for the command.
pub fn run(cmd: &Path, n: &Notice<'_>) -> Result<(), String> {
    check_command(cmd)?;
    let prog = CString::new(cmd.as_os_str().as_bytes()).map_err(|_| "notify_command contains NUL".to_string())?;
    sys::spawn_detached(&prog, &environment(n), NOTIFY_TIMEOUT_SECS)
        .map_err(|e| format!("cannot start notify_command {}: {e}", cmd.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_unsafe_commands() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("n.sh");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_command(&p), Ok(()));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_command(&p).unwrap_err().contains("writable by group or others"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(check_command(&p).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_command(&p).unwrap_err().contains("not executable"));
        assert!(check_command(Path::new("relative/n.sh")).is_err());
        assert!(check_command(d.path()).unwrap_err().contains("not a regular file"));
        assert!(check_command(&d.path().join("missing")).is_err());
    }

    #[test]
    fn refuses_commands_in_directories_others_can_write() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("bin");
        std::fs::create_dir(&dir).unwrap();
        let p = dir.join("n.sh");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mode = |m| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(m)).unwrap();
        mode(0o755);
        assert_eq!(check_command(&p), Ok(()));
        mode(0o775);
        let e = check_command(&p).unwrap_err();
        assert!(e.contains(&format!("directory {} is writable by group or others", dir.display())), "{e}");
        mode(0o777);
        assert!(check_command(&p).is_err());
        // sticky, like /tmp: others cannot replace what they do not own
        mode(0o1777);
        assert_eq!(check_command(&p), Ok(()));
        // a link from a safe place into an unsafe one is refused too
        mode(0o777);
        let link_dir = d.path().join("safe");
        std::fs::create_dir(&link_dir).unwrap();
        let link = link_dir.join("n.sh");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(check_command(&link).unwrap_err().contains("writable by group or others"));
        mode(0o755);
        assert_eq!(check_command(&link), Ok(()));
    }

    #[test]
    fn runs_detached_with_environment() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let p = d.path().join("n.sh");
        std::fs::write(
            &p,
            format!("#!/bin/sh\nenv | grep ^USERAUDIT_ | sort > {}.tmp\nmv {0}.tmp {0}\n", out.display()),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        let n = Notice {
            event: Event::Locked,
            user: b"alice",
            rhost: Some(b"203.0.113.9"),
            service: Some(b"sshd"),
            failures: 3,
        };
        run(&p, &n).unwrap();
        let mut text = String::new();
        for _ in 0..200 {
            if let Ok(t) = std::fs::read_to_string(&out) {
                text = t;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        assert_eq!(
            text,
            "USERAUDIT_EVENT=locked\nUSERAUDIT_FAILURES=3\nUSERAUDIT_RHOST=203.0.113.9\nUSERAUDIT_SERVICE=sshd\nUSERAUDIT_USER=alice\n"
        );
    }
}
