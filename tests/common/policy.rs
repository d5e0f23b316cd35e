//! Helpers for the policy tests through real libpam (`expiry.rs`,
//! `policy_fixes.rs`): a clock at noon UTC for libfaketime, pamtester run
//! again when pam_wrapper raced, the log's newest entry, and a bubblewrap
//! jail with a test file bound over `/etc/shadow`
//! (`password_change_source = "shadow"`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::*;

pub const DAY: i64 = 86_400;
pub const RHOST: &str = "203.0.113.9";
/// What pamtester shows for PAM_NEW_AUTHTOK_REQD.
pub const NEW_AUTHTOK_REQD: &str = "Authentication token is no longer valid; new one required";

/// A fake clock for libfaketime: `at(n)` is noon UTC, n days from today,
/// so whole-day arithmetic (pam_unix's `time / 86400`) never straddles a
/// midnight while a test runs.
pub struct Clock {
    shift: i64,
    today: i64,
}

impl Clock {
    pub fn new() -> Clock {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        let today = now.div_euclid(DAY);
        Clock { shift: today * DAY + 12 * 3600 - now, today }
    }
    /// FAKETIME value for noon, `days` from today.
    pub fn at(&self, days: i64) -> String {
        format!("{:+}", self.shift + days * DAY)
    }
    /// The day number (days since the epoch) `days` from today.
    pub fn day(&self, days: i64) -> i64 {
        self.today + days
    }
    /// `YYYY-MM-DD` of `days` from today.
    pub fn date(&self, days: i64) -> String {
        chrono::DateTime::from_timestamp(self.day(days) * DAY, 0).unwrap().format("%Y-%m-%d").to_string()
    }
    /// Midnight UTC of `days` from today, as status shows a day.
    pub fn midnight(&self, days: i64) -> String {
        format!("{}T00:00:00Z", self.date(days))
    }
}

/// pam_wrapper picks its per-process directory `/tmp/pam.X` with lstat
/// then mkdir: two processes starting at once can pick the same one; the
/// loser then fails in pam_start ("Initialization failure"), or copies its
/// service files into the winner's directory, or removes it on exit. Each
/// test binary runs one pam_wrapper process at a time (`pam_wrapper_lock`);
/// another process using pam_wrapper at the same time (another test binary)
/// can still collide, so a run that failed in exactly the first way
/// (pam_start failed: no module was called, nothing happened) runs again.
pub fn retry(run: impl Fn() -> Pam) -> Pam {
    let mut r = run();
    for _ in 0..3 {
        // pam_start failed, or pamtester never got that far
        let never_ran = r.stderr.contains("pamtester: Initialization failure") || !r.shown().contains("pamtester: ");
        let raced = !r.ok
            && never_ran
            && (r.stderr.contains("Failed to create pam_wrapper config dir")
                || r.stderr.contains("error reading PAM configuration file"));
        if !raced {
            return r;
        }
        r = run();
    }
    r
}

/// `Sandbox::pamtester`, run again when pam_wrapper raced (see [`retry`]).
pub fn pt(sb: &Sandbox, service: &str, user: &str, input: &str, items: &[(&str, &str)], ops: &[&str]) -> Pam {
    retry(|| sb.pamtester(service, user, input, items, ops))
}

/// A whole login (authenticate, then account) on `login` from `RHOST`.
pub fn login(sb: &Sandbox, user: &str, pw: &str) -> Pam {
    pt(sb, "login", user, &format!("{pw}\n"), &[("rhost", RHOST)], &["authenticate", "acct_mgmt"])
}

/// The newest log entry for `user`.
pub fn last(sb: &Sandbox, user: &str) -> Value {
    let l = sb.log(&["--user", user, "--limit", "1"]);
    assert_eq!(l.len(), 1, "no log entry for {user}");
    l[0].clone()
}

/// Whether `bwrap` can bind a file over /etc/shadow here (root, and
/// bubblewrap works); prints why not.
pub fn shadow_jail_works() -> bool {
    if faults::euid() != 0 {
        eprintln!("SKIP: the shadow tests bind a test file over /etc/shadow with bwrap, which needs root");
        return false;
    }
    let ok = Command::new("bwrap")
        .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind", "/dev/null", "/etc/shadow", "true"])
        .stdin(Stdio::null())
        .output()
        .map(|o| o.status.success());
    if ok.as_ref().is_ok_and(|s| *s) {
        return true;
    }
    eprintln!(
        "SKIP: bwrap cannot run here ({ok:?}); install bubblewrap and run as root to test password_change_source = \"shadow\""
    );
    false
}

/// Runs commands inside bwrap with `shadow` as /etc/shadow, with the
/// sandbox's environment (pam_wrapper, nss_wrapper, libfaketime).
pub struct Jail<'a> {
    pub sb: &'a Sandbox,
    pub shadow: PathBuf,
    /// Extra bwrap arguments (e.g. dropped capabilities).
    pub bwrap: Vec<String>,
    /// A command that runs the program as another user (e.g. setpriv).
    pub runas: Vec<String>,
}

impl<'a> Jail<'a> {
    /// A jail that only binds `shadow` over /etc/shadow.
    pub fn new(sb: &'a Sandbox, shadow: &Path) -> Jail<'a> {
        Jail { sb, shadow: shadow.to_path_buf(), bwrap: vec![], runas: vec![] }
    }

    fn command(&self, preload: &str, env: &[(&str, String)], prog: &str, args: &[String]) -> Command {
        let mut cmd = Command::new("bwrap");
        cmd.args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
            .arg(&self.shadow)
            .arg("/etc/shadow")
            .args(&self.bwrap)
            .arg("--")
            .args(&self.runas)
            .args(["/usr/bin/env", "-u", "PAM_WRAPPER_DEBUGLEVEL"]);
        let mut preload = preload.to_string();
        if let Some(ft) = &self.sb.faketime {
            preload = format!("{preload} {FAKETIME_LIB}");
            cmd.arg(format!("FAKETIME={ft}")).arg("FAKETIME_DONT_RESET=1").arg("FAKETIME_NO_CACHE=1");
        }
        cmd.arg(format!("LD_PRELOAD={preload}"))
            .arg(format!("NSS_WRAPPER_PASSWD={}", self.sb.path().join("passwd").display()))
            .arg(format!("NSS_WRAPPER_GROUP={}", self.sb.path().join("group").display()));
        for (k, v) in env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(prog).args(args);
        cmd
    }

    /// pamtester `ops` for `user` on `login` from `RHOST`, run again when
    /// pam_wrapper raced (see [`retry`]).
    pub fn pamtester(&self, user: &str, input: &str, ops: &[&str]) -> Pam {
        retry(|| self.pamtester_once(user, input, ops))
    }

    fn pamtester_once(&self, user: &str, input: &str, ops: &[&str]) -> Pam {
        // bwrap shares /tmp, where pam_wrapper copies service files.
        let _one_at_a_time = pam_wrapper_lock();
        let mut args = vec!["-I".to_string(), format!("rhost={RHOST}"), "login".into(), user.into()];
        args.extend(ops.iter().map(|s| s.to_string()));
        let env = [
            ("PAM_WRAPPER", "1".to_string()),
            ("PAM_WRAPPER_SERVICE_DIR", self.sb.path().join("pam.d").display().to_string()),
        ];
        let mut child = self
            .command("libpam_wrapper.so libnss_wrapper.so", &env, "pamtester", &args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), input.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        Pam {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// A whole login (authenticate, then account) with the right password.
    pub fn login(&self, user: &str) -> Pam {
        self.pamtester(user, &format!("{PASSWORD}\n"), &["authenticate", "acct_mgmt"])
    }

    /// useraudit-admin (a copy in the sandbox, for `runas`) inside the jail.
    pub fn admin(&self, db: &Path, args: &[&str]) -> Output {
        let mut a =
            vec!["--conf".to_string(), self.sb.conf.display().to_string(), "--db".into(), db.display().to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        self.command("libnss_wrapper.so", &[], &self.sb.admin_copy().display().to_string(), &a).output().unwrap()
    }

    /// `status USER --format json` as seen inside the jail (it reads shadow too).
    pub fn status(&self, user: &str) -> Value {
        let o = self.admin(&self.sb.db, &["status", user, "--format", "json"]);
        assert!(matches!(o.status.code(), Some(0 | 3)), "status failed: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()[0].clone()
    }
}

/// A shadow file (0600): `(user, last change field)`; an empty field is
/// "no aging", `0` is "change it at the next login" (`chage -d 0`).
pub fn write_shadow<S: AsRef<str>>(path: &Path, entries: &[(&str, S)]) {
    let text: String = entries.iter().map(|(u, d)| format!("{u}:!:{}:0:99999:7:::\n", d.as_ref())).collect();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
