//! The module inside its hosts (issue 13): set-user-ID callers such as `su`,
//! whose caller chose the process's resource limits, signal dispositions,
//! umask and ids; the notifier they start; group exemption; what a refusal
//! after the password module tells.
//!
//! A set-user-ID caller is made with `setpriv --ruid=nobody --euid=0` (real
//! ids nobody's, effective uid root's, as in `su`). Such a process runs in
//! the kernel's secure mode, where the dynamic loader ignores LD_PRELOAD, so
//! neither pam_wrapper nor nss_wrapper can be used: the caller runs inside
//! bubblewrap with the sandbox's passwd, group and pam.d bound over /etc's
//! (a private mount namespace; the host's files are untouched), and is a
//! small PAM application (`tests/setuid/caller.c`) that also reports the
//! state the module must leave as it found it. These tests need root,
//! bubblewrap, setpriv and a C compiler, and skip without them.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Skip (true) unless the PAM tools are there and this runs as root with
/// bubblewrap, setpriv and cc.
fn cannot_run() -> bool {
    if missing_tools() {
        return true;
    }
    static WHY: OnceLock<Option<&'static str>> = OnceLock::new();
    let why = *WHY.get_or_init(|| {
        if euid() != 0 {
            return Some("root (a set-user-ID caller is made from root)");
        }
        let bwrap = Command::new("bwrap")
            .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !bwrap {
            return Some("bubblewrap");
        }
        if !Path::new("/usr/bin/setpriv").exists() {
            return Some("setpriv");
        }
        if Command::new("cc").arg("--version").stdout(Stdio::null()).status().is_err() {
            return Some("cc");
        }
        None
    });
    if let Some(w) = why {
        if std::env::var_os("CI").is_some() {
            panic!("these tests need {w}");
        }
        eprintln!("SKIP: needs {w}");
        return true;
    }
    false
}

/// A sandbox for set-user-ID runs: the module copied in, `nobody` known,
/// the caller program built.
fn sandbox(args: &str, config: &str) -> Sandbox {
    let mut sb = Sandbox::with_config(args, config);
    sb.use_module_copy();
    let p = sb.path();
    let add = |f: &str, line: &str| {
        let mut t = std::fs::read_to_string(p.join(f)).unwrap();
        t.push_str(line);
        std::fs::write(p.join(f), t).unwrap();
    };
    add("passwd", "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
    add("group", "nogroup:x:65534:\n");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/setuid/caller.c");
    let st = Command::new("cc").args(["-Wall", "-Wextra", "-o"]).arg(p.join("caller")).arg(&src).arg("-lpam").status();
    assert!(st.unwrap().success(), "cc {}", src.display());
    sb
}

/// One login through the caller program.
#[derive(Debug)]
#[allow(dead_code)] // raw is for failure messages
struct Login {
    auth: i32,
    acct: i32,
    /// Messages the module sent to the user.
    messages: Vec<String>,
    /// The caller's state afterwards, e.g. `fsize=0/0 nofile=... xfsz=ign umask=0000`.
    after: String,
    raw: String,
}

impl Login {
    fn ok(&self) -> bool {
        self.auth == 0 && self.acct == 0
    }
}

/// `pre` (shell commands: limits, traps, umask) is run by the caller's
/// shell, which then becomes a set-user-ID-like process: real uid and gid
/// nobody's, supplementary group nogroup, effective uid root's, like `su`
/// started by nobody.
fn setuid_login(sb: &Sandbox, pre: &str, service: &str, user: &str, password: &str) -> Login {
    let p = sb.path();
    let script = format!("{pre}\nexec setpriv --regid=65534 --groups=65534 --ruid=65534 --euid=0 \"$@\"\n");
    let out = Command::new("bwrap")
        .args(["--bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--bind"])
        .arg(p.join("passwd"))
        .arg("/etc/passwd")
        .arg("--bind")
        .arg(p.join("group"))
        .arg("/etc/group")
        .arg("--bind")
        .arg(p.join("pam.d"))
        .arg("/etc/pam.d")
        .args(["--", "sh", "-c", &script, "sh"])
        .arg(p.join("caller"))
        .args([service, user, password, "203.0.113.9"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let raw = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let last = raw.lines().find(|l| l.starts_with("auth=")).unwrap_or_else(|| panic!("caller failed: {raw}"));
    let field = |k: &str| -> i32 {
        last.split(' ').find_map(|w| w.strip_prefix(k)).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{raw}"))
    };
    Login {
        auth: field("auth="),
        acct: field("acct="),
        messages: raw.lines().filter_map(|l| l.strip_prefix("message: ")).map(String::from).collect(),
        after: last.splitn(3, ' ').nth(2).unwrap_or_default().to_string(),
        raw,
    }
}

/// What a caller does to make every write of the module fail: a file size
/// limit of 0 with SIGXFSZ ignored, so a write gets EFBIG instead of
/// killing the process. `-S`: the soft limit only, which the module can
/// lift without privilege.
const NO_WRITES_SOFT: &str = "ulimit -S -f 0; trap '' XFSZ";
/// The same with the hard limit too (`ulimit -f 0` sets both), which only
/// a process with CAP_SYS_RESOURCE (a set-user-ID root program has it) can
/// lift.
const NO_WRITES: &str = "ulimit -f 0; trap '' XFSZ";

/// Whether root here has CAP_SYS_RESOURCE (some containers drop it): then a
/// hard limit set by the caller can be lifted, as on an ordinary system.
fn has_cap_sys_resource() -> bool {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = st.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    const CAP_SYS_RESOURCE: u32 = 24;
    u64::from_str_radix(eff, 16).unwrap() & (1 << CAP_SYS_RESOURCE) != 0
}

/// The log, oldest first, as `user outcome reason`.
fn log_lines(sb: &Sandbox) -> Vec<String> {
    sb.log(&[])
        .iter()
        .rev()
        .map(|e| {
            format!(
                "{} {} {}",
                e["user"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["reason"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

/// Through a caller whose writes all fail (`pre`), `disabled` (locked by
/// hand) is refused with the right password, `guessed` is locked by two
/// counted failures and then refused too, and every attempt is logged.
fn assert_refusals_hold(sb: &Sandbox, pre: &str, disabled: &str, guessed: &str) {
    sb.admin_ok(&["lock", disabled]);
    let before = log_lines(sb).len();
    let d = setuid_login(sb, pre, "su", disabled, PASSWORD);
    assert!(!d.ok(), "a disabled account got in through a caller without writes: {d:?}");
    assert_eq!(d.auth, 7, "PAM_AUTH_ERR from preauth: {d:?}");
    assert_eq!(d.messages, ["Your account has been disabled by an administrator."], "{d:?}");
    for i in 1..=2 {
        let g = setuid_login(sb, pre, "su", guessed, "wrong");
        assert!(!g.ok(), "{g:?}");
        assert_eq!(sb.status(guessed)["failures"], i, "failure {i} was counted");
    }
    assert_eq!(sb.status(guessed)["state"], "locked");
    let g = setuid_login(sb, pre, "su", guessed, PASSWORD);
    assert!(!g.ok(), "a locked account got in through a caller without writes: {g:?}");
    let want: Vec<String> = [
        format!("{disabled} failure disabled"),
        format!("{guessed} failure auth"),
        format!("{guessed} failure auth"),
        format!("{guessed} failure locked"),
    ]
    .into();
    assert_eq!(log_lines(sb)[before..], want[..], "every attempt was logged");
}

/// With `on_error = "allow"` (the default), a write error lets the right
/// password in. A caller's limits must not be such an error: through a
/// set-user-ID caller with `ulimit -f 0` and SIGXFSZ ignored, an account
/// disabled by hand and one locked by failures are refused, failures are
/// counted (up to the lock) and every attempt is logged. Where the hard
/// limit cannot be lifted (root without CAP_SYS_RESOURCE, as in some
/// containers), the write errors are answered as `on_error = deny`: the
/// refusals hold, and nobody gets in through such a caller.
#[test]
fn caller_limits_and_signals_cannot_turn_a_refusal_into_success() {
    if cannot_run() {
        return;
    }
    let sb = sandbox("login_failure_limit=2", "");
    // the harness itself: an ordinary caller gets in
    let carol = setuid_login(&sb, "", "su", "carol", PASSWORD);
    assert!(carol.ok(), "{carol:?}");
    assert_refusals_hold(&sb, NO_WRITES_SOFT, "alice", "bob");
    let after = setuid_login(&sb, NO_WRITES_SOFT, "su", "bob", PASSWORD);
    assert!(after.after.starts_with("fsize=0/inf ") && after.after.contains(" xfsz=ign "), "{after:?}");
    if has_cap_sys_resource() {
        assert_refusals_hold(&sb, NO_WRITES, "dave", "erin");
        let c = setuid_login(&sb, NO_WRITES, "su", "carol", PASSWORD);
        assert!(c.ok(), "an active account still gets in: {c:?}");
        assert!(c.after.starts_with("fsize=0/0 "), "{c:?}");
    } else {
        eprintln!("no CAP_SYS_RESOURCE here: a hard file-size limit cannot be lifted; checking the deny answer");
        sb.admin_ok(&["lock", "dave"]);
        let d = setuid_login(&sb, NO_WRITES, "su", "dave", PASSWORD);
        assert!(!d.ok(), "a disabled account got in through a caller without writes: {d:?}");
        let c = setuid_login(&sb, NO_WRITES, "su", "carol", PASSWORD);
        assert!(!c.ok(), "the write errors are answered as on_error = deny: {c:?}");
        assert!(c.after.starts_with("fsize=0/0 "), "{c:?}");
    }
}

/// The module changes the process's limits, SIGXFSZ and umask only while
/// it works, and puts back what the caller had after every hook, also when
/// the hook panics (debug builds take a `debug_panic` argument for that).
#[test]
fn caller_state_is_put_back_after_each_hook_and_after_a_panic() {
    if cannot_run() {
        return;
    }
    let sb = sandbox("", "");
    let pre = "ulimit -f 7; ulimit -n 64; trap '' XFSZ; umask 0";
    let ok = setuid_login(&sb, pre, "su", "alice", PASSWORD);
    assert!(ok.ok(), "{ok:?}");
    assert_eq!(ok.after, "fsize=3584/3584 nofile=64/64 xfsz=ign umask=0000", "{ok:?}");
    // a caller that left SIGXFSZ alone gets its default back
    let dfl = setuid_login(&sb, "ulimit -f 7; umask 027", "su", "alice", PASSWORD);
    assert!(dfl.ok(), "{dfl:?}");
    assert_eq!(dfl.after, format!("fsize=3584/3584 nofile={} xfsz=dfl umask=0027", nofile_here()), "{dfl:?}");
    if cfg!(debug_assertions) {
        sb.write_service("su", &sb.stack("debug_panic"));
        let p = setuid_login(&sb, pre, "su", "alice", PASSWORD);
        assert!(p.ok(), "a caught panic is answered as on_error = allow: {p:?}");
        assert_eq!(p.after, "fsize=3584/3584 nofile=64/64 xfsz=ign umask=0000", "{p:?}");
    }
}

/// The open-file limits a shell started here has, as the caller prints them.
fn nofile_here() -> String {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: r is a valid out-pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    let f = |v: libc::rlim_t| if v == libc::RLIM_INFINITY { "inf".to_string() } else { v.to_string() };
    format!("{}/{}", f(r.rlim_cur), f(r.rlim_max))
}

/// Wait (bounded) for a file that ends with `END\n`.
fn wait_for(p: &Path, limit: Duration) -> Option<String> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(s) = std::fs::read_to_string(p) {
            if s.ends_with("END\n") {
                return Some(s);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// A notify script that records who it runs as and what it inherited.
fn notify_script(sb: &Sandbox) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let out = sb.path().join("notify.out");
    let script = sb.path().join("notify.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec >{o}.tmp 2>&1\nid\necho \"umask $(umask)\"\necho \"fsize $(ulimit -f)\"\n\
             echo \"nofile $(ulimit -n)\"\necho \"core $(ulimit -c)\"\necho \"nice $(nice)\"\n\
             grep -E '^(Uid|Gid|Groups|SigIgn|SigBlk):' /proc/self/status\necho \"fds $(ls /proc/self/fd | sort -n | tr '\\n' ' ')\"\n\
             echo END\nmv {o}.tmp {o}\n",
            o = out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, out)
}

/// Started by a lock that a set-user-ID caller reached, the notify command
/// runs as root (real, effective, saved and file-system ids, group root
/// alone: the caller can no longer signal it, and /bin/sh does not drop to
/// the caller's uid), with fresh limits, umask, niceness and signal
/// dispositions and no inherited descriptor, whatever the caller had set.
#[test]
fn notifier_started_by_a_setuid_caller_runs_as_root_with_a_fresh_state() {
    if cannot_run() {
        return;
    }
    let sb = sandbox("login_failure_limit=1", "");
    let (script, out) = notify_script(&sb);
    sb.write_service("su", &sb.stack(&format!("notify_command={}", script.display())));
    // Hard limits too where they can be lifted (see has_cap_sys_resource).
    let hard = if has_cap_sys_resource() { "" } else { "-S" };
    let pre = format!(
        "ulimit {hard} -f 100; ulimit {hard} -n 40; ulimit -c 0; umask 0; \
         trap '' HUP INT QUIT USR1 USR2 TERM PIPE XFSZ ALRM; exec 7</dev/null 8>/dev/null; renice -n 7 -p $$ >/dev/null"
    );
    let l = setuid_login(&sb, &pre, "su", "alice", "wrong");
    assert!(!l.ok());
    assert_eq!(sb.status("alice")["state"], "locked");
    let got =
        wait_for(&out, Duration::from_secs(20)).unwrap_or_else(|| panic!("the notify command wrote nothing: {l:?}"));
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], "uid=0(root) gid=0(root) groups=0(root)", "{got}");
    for want in [
        "umask 0022",
        "fsize unlimited",
        "nofile 1024",
        "core 0",
        "nice 0",
        "Uid:\t0\t0\t0\t0",
        "Gid:\t0\t0\t0\t0",
        "Groups:\t0 ",
        "SigIgn:\t0000000000000000",
        "SigBlk:\t0000000000000000",
        // ls itself: its standard streams and the directory it reads
        "fds 0 1 2 3 ",
        "END",
    ] {
        assert!(lines.contains(&want), "{want:?} not in:\n{got}");
    }
}

/// `exempt_groups` goes by the groups NSS lists for a login
/// (`getgrouplist`), not only by a group's member list: a directory that
/// does not fill member lists (SSSD with `ignore_group_members`) reports a
/// membership only there. Here erin's membership is recorded under another
/// entry with the exempt group's id, which a member-list check of `admins`
/// does not see; carol's is her primary group. Both stay unlocked at the
/// failure limit; bob, in neither, is locked.
#[test]
fn exempt_group_membership_as_nss_lists_it_for_a_login() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::with_config("login_failure_limit=1", "exempt_groups = [\"admins\"]\n");
    let p = sb.path();
    let passwd = std::fs::read_to_string(p.join("passwd")).unwrap().replace("carol:x:1002:1002:", "carol:x:1002:2000:");
    std::fs::write(p.join("passwd"), passwd).unwrap();
    let mut group = std::fs::read_to_string(p.join("group")).unwrap();
    group.push_str("admins:x:2000:\nadmins-by-id:x:2000:erin\n");
    std::fs::write(p.join("group"), group).unwrap();
    for user in ["erin", "carol", "bob"] {
        assert!(!sb.login(user, "wrong", "192.0.2.1").ok);
        assert!(!sb.login(user, "wrong", "192.0.2.1").ok);
    }
    for user in ["erin", "carol"] {
        assert_eq!(sb.status(user)["state"], "active", "{user} is exempt");
        assert!(sb.login(user, PASSWORD, "192.0.2.1").ok, "{user} gets in");
    }
    assert_eq!(sb.status("bob")["state"], "locked");
}

/// An attempt that passed `preauth` before a lock landed (another login
/// locked the account meanwhile) meets the lock after the password module:
/// the right password and a wrong one get the same answer, so the answer
/// is no password oracle. The stack without its `preauth` line stands in
/// for that moment.
#[test]
fn refusal_after_the_password_module_is_the_same_for_right_and_wrong() {
    if missing_tools() {
        return;
    }
    let sb = Sandbox::new("login_failure_limit=2 unlock_after=1h");
    for _ in 0..2 {
        assert!(!sb.login("alice", "wrong", "192.0.2.1").ok);
    }
    assert_eq!(sb.status("alice")["state"], "locked");
    sb.admin_ok(&["lock", "bob"]);
    let stack = sb.stack("");
    let (preauth, rest) = stack.split_once('\n').unwrap();
    assert!(preauth.contains(" preauth "), "{preauth}");
    sb.write_service("login", rest);
    for (user, text) in
        [("alice", "The account is locked due to 2 failed logins."), ("bob", "disabled by an administrator")]
    {
        let right = sb.login(user, PASSWORD, "192.0.2.1");
        let wrong = sb.login(user, "wrong", "192.0.2.1");
        assert!(!right.ok && !wrong.ok);
        assert!(right.shown().contains(text), "{user}: {right:?}");
        // pam_wrapper's own lines carry the process id
        let shown = |p: &Pam| p.shown().lines().filter(|l| !l.starts_with("PWRAP_")).collect::<Vec<_>>().join("\n");
        assert_eq!(shown(&right), shown(&wrong), "{user}: the right password and a wrong one are told apart");
    }
    // failures after the lock do not extend or count
    assert_eq!(sb.status("alice")["failures"], 2);
}
