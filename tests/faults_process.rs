//! Faults in the process that runs the module, through real libpam: a
//! panic inside the module is caught at the PAM entry and answered as
//! `on_error` says; the module carries its own unwinder; processes killed
//! with SIGKILL in the middle of logging, many at once, lose nothing that
//! was returned and leave at most a partial spool record.
//!
//! Syslog capture and the other helpers: `tests/common/faults.rs`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;

/// A panic inside the module, loaded by libpam with dlopen, unwinds through
/// the module's own (statically linked) unwinder, is caught at the
/// `pam_sm_*` entry and answered as `on_error` says, every time, without
/// harm to the application. The panic comes from the module argument
/// `debug_panic`, which exists only in debug builds of the module.
#[test]
fn panic_in_the_module_is_caught_and_answered_as_on_error() {
    if missing_tools() {
        return;
    }
    if !cfg!(debug_assertions) || std::env::var_os("USERAUDIT_SO").is_some() {
        eprintln!("SKIP: `debug_panic` needs the debug build of the module from this target directory");
        return;
    }
    let sb = sandbox_with_db("");
    let r = Runner::new(&sb);
    sb.write_service("login", &sb.stack("debug_panic"));
    sb.write_service("su", &sb.stack("debug_panic on_error=deny"));
    const NEEDLE: &str = "internal error (panic: debug_panic module argument) caught";
    // `hooks` module hooks ran, each panicked and was caught: nothing on
    // the application's stderr, one AUTHPRIV error line each with the
    // usual prefix; exit code `code` (pamtester: 0 all succeeded, 1 an
    // operation failed; None: a signal).
    let check = |what: &str, run: &Run, code: i32, hooks: usize| {
        assert_eq!(run.code, Some(code), "{what}: pamtester exit code: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{what}: the panic reached stderr: {run:?}");
        if let Some(log) = &run.syslog {
            let caught: Vec<_> = log
                .iter()
                .filter(|d| pri(d) == Some(LOG_AUTHPRIV | LOG_ERR))
                .map(|d| String::from_utf8_lossy(d).into_owned())
                .filter(|l| l.contains(NEEDLE))
                .collect();
            let all: Vec<_> = log.iter().map(|d| String::from_utf8_lossy(d)).collect();
            assert_eq!(caught.len(), hooks, "{what}: syslog lines {NEEDLE:?}: {all:#?}");
            assert!(
                caught.iter().all(|l| l.contains("pam_useraudit(login:") || l.contains("pam_useraudit(su:")),
                "{what}: prefix: {caught:#?}"
            );
        }
    };
    // allow: preauth, authsucc and account each panic and answer success
    let ok = r.login("login", b"alice", PASSWORD);
    check("allow, right password", &ok, 0, 3);
    assert!(format!("{}{}", ok.stdout, ok.stderr).contains("successfully"), "{ok:?}");
    // authfail still refuses
    let bad = r.login("login", b"alice", "wrong");
    check("allow, wrong password", &bad, 1, 2);
    // an account hook alone (an SSH key login)
    let acct = r.run("login", b"alice", "", &[], &["acct_mgmt"]);
    check("allow, account hook", &acct, 0, 1);
    // deny: preauth refuses, and so does the account hook
    let deny = r.login("su", b"alice", PASSWORD);
    check("deny", &deny, 1, 1);
    let deny_acct = r.run("su", b"alice", "", &[], &["acct_mgmt"]);
    check("deny, account hook", &deny_acct, 1, 1);
    // the core never ran: nothing was logged beyond the first login
    assert_eq!(rows(&sb.db), 1);
    // and without the argument the module works as before
    sb.write_service("login", &sb.stack(""));
    let again = r.login("login", b"alice", PASSWORD);
    assert_eq!(again.code, Some(0), "{again:?}");
    assert!(!again.stderr.contains("panicked"), "{again:?}");
    assert_eq!(rows(&sb.db), 2);
}

/// The module carries its own unwinder (gcc's libgcc_eh, linked in
/// statically): libgcc_s is not NEEDED, and no `_Unwind_*` symbol is left
/// for the dynamic linker to resolve from whatever the application loaded.
/// Checks the module under test and, if built, the release module.
#[test]
fn module_links_its_unwinder_statically() {
    if !Path::new("/usr/bin/readelf").exists() {
        eprintln!("SKIP: readelf (binutils) is missing");
        return;
    }
    let mut modules = vec![module_path()];
    let release = admin_path().parent().unwrap().parent().unwrap().join("release/libpam_useraudit.so");
    if release.exists() && !modules.contains(&release) {
        modules.push(release);
    }
    for so in modules {
        let out = Command::new("readelf").arg("--wide").arg("--dynamic").arg("--dyn-syms").arg(&so).output().unwrap();
        assert!(out.status.success(), "readelf {}: {}", so.display(), String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let needed: Vec<&str> = text.lines().filter(|l| l.contains("(NEEDED)")).collect();
        assert!(!needed.is_empty(), "{}: no NEEDED entries?\n{text}", so.display());
        assert!(!needed.iter().any(|l| l.contains("libgcc_s")), "{}: {needed:#?}", so.display());
        let unresolved: Vec<&str> = text.lines().filter(|l| l.contains(" UND ") && l.contains("_Unwind_")).collect();
        assert!(
            unresolved.is_empty(),
            "{}: unwinder symbols left to the dynamic linker: {unresolved:#?}",
            so.display()
        );
    }
}

const KILL_DRIVER: &str = r#"
/* One process, COUNT attempts in a row through the real libpam. Writes
   "s\n" before each attempt and "r\n" as soon as pam_authenticate has
   returned (the attempt's log entry must then be committed). */
#include <security/pam_appl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static const char *pw;
static int conv(int n, const struct pam_message **m, struct pam_response **r, void *d) {
    struct pam_response *a = calloc((size_t)n, sizeof *a);
    (void)d;
    if (!a) return PAM_BUF_ERR;
    for (int i = 0; i < n; i++)
        if (m[i]->msg_style == PAM_PROMPT_ECHO_OFF || m[i]->msg_style == PAM_PROMPT_ECHO_ON)
            a[i].resp = strdup(pw);
    *r = a;
    return PAM_SUCCESS;
}
static void nodelay(int r, unsigned u, void *d) { (void)r; (void)u; (void)d; }
int main(int argc, char **argv) {
    if (argc != 6) return 2;
    const char *dir = argv[1], *svc = argv[2], *user = argv[3];
    long n = atol(argv[5]);
    struct pam_conv c = {conv, NULL};
    pw = argv[4];
    for (long i = 0; i < n; i++) {
        pam_handle_t *h = NULL;
        if (write(1, "s\n", 2) != 2) return 1;
        if (pam_start_confdir(svc, user, &c, dir, &h) != PAM_SUCCESS) return 1;
        pam_set_item(h, PAM_RHOST, "192.0.2.77");
        pam_set_item(h, PAM_FAIL_DELAY, (const void *)nodelay);
        int rc = pam_authenticate(h, 0);
        if (write(1, "r\n", 2) != 2) return 1;
        if (rc == PAM_SUCCESS) rc = pam_acct_mgmt(h, 0);
        pam_end(h, rc);
    }
    return 0;
}
"#;

/// Build the driver above once per test run.
fn kill_driver() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hardening");
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("kill_driver.c");
        let bin = dir.join("kill_driver");
        std::fs::write(&src, KILL_DRIVER).unwrap();
        let out = Command::new("cc").args(["-O2", "-Wall", "-o"]).arg(&bin).arg(&src).arg("-lpam").output();
        match out {
            Ok(o) if o.status.success() => Some(bin),
            Ok(o) => {
                if std::env::var_os("CI").is_some() {
                    panic!("cannot build the kill driver: {}", String::from_utf8_lossy(&o.stderr));
                }
                eprintln!("SKIP: cannot build the kill driver: {}", String::from_utf8_lossy(&o.stderr));
                None
            }
            Err(e) => {
                eprintln!("SKIP: no C compiler: {e}");
                None
            }
        }
    })
    .clone()
}

/// A small xorshift generator; the seed is printed so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn sigkill_in_the_middle_of_logging_loses_nothing_returned() {
    if missing_tools() {
        return;
    }
    let Some(driver) = kill_driver() else { return };
    let sb = Sandbox::new("");
    let seed = std::env::var("HARDENING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("sigkill test seed: {seed} (HARDENING_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let outdir = tempfile::tempdir().unwrap();
    const ROUNDS: usize = 30;
    const PROCS: usize = 4;
    // more than a process gets through before it is killed
    const COUNT: &str = "1000";
    let (mut started_total, mut returned_total, mut completed_rounds, mut killed) = (0i64, 0i64, 0, 0);
    // users and passwords: failures (authfail: counted in the account's
    // state file, then logged to the spool) and successes (authsucc, then
    // the account hook) interleaved
    let who = [("alice", "wrong"), ("bob", PASSWORD), ("carol", "wrong"), ("nosuchuser", "x")];
    // A record in the spool here is under 100 bytes (short names, no tty or
    // ruser): a kill can cut short at most the one its process was writing.
    const MAX_RECORD: u64 = 128;
    sb.create_db_dir();
    sb.admin_ok(&["check"]); // the database, for merging after each round
    let mut alice_killed = 0i64;
    let mut damaged_total = 0u64;
    for round in 0..ROUNDS {
        let mut children = Vec::new();
        for (p, (user, pw)) in who.iter().enumerate().take(PROCS) {
            let out = outdir.path().join(format!("{round}-{p}"));
            let f = std::fs::File::create(&out).unwrap();
            let child = Command::new(&driver)
                .arg(sb.path().join("pam.d"))
                .arg("login")
                .arg(user)
                .arg(pw)
                .arg(COUNT)
                .env("LD_PRELOAD", "libnss_wrapper.so")
                .env("NSS_WRAPPER_PASSWD", sb.path().join("passwd"))
                .env("NSS_WRAPPER_GROUP", sb.path().join("group"))
                .stdout(f)
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            children.push((child, out, *user));
        }
        // kill at a random moment, each process at its own
        let t0 = Instant::now();
        let mut deadlines: Vec<Duration> = (0..PROCS).map(|_| Duration::from_micros(rng.next() % 250_000)).collect();
        deadlines.sort();
        let mut killed_now = 0u64;
        for (i, (child, _, user)) in children.iter_mut().enumerate() {
            let d = deadlines[i];
            if let Some(rest) = d.checked_sub(t0.elapsed()) {
                std::thread::sleep(rest);
            }
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL, this child only
                killed += 1;
                killed_now += 1;
                if *user == "alice" {
                    alice_killed += 1;
                }
            }
        }
        for (mut child, out, _) in children {
            let st = child.wait().unwrap();
            let mut text = String::new();
            std::fs::File::open(&out).unwrap().read_to_string(&mut text).unwrap();
            started_total += text.matches('s').count() as i64;
            returned_total += text.matches('r').count() as i64;
            if st.success() {
                completed_rounds += 1;
            }
        }
        // what useraudit-admin does first: merge the spool
        let (m, n) = merge(&sb.db);
        damaged_total += m.damaged;
        assert!(
            m.damaged <= killed_now * MAX_RECORD,
            "round {round} (seed {seed}): {} damaged bytes in the spool, {killed_now} processes killed",
            m.damaged
        );
        assert_eq!(integrity(&sb.db), "ok", "round {round} (seed {seed})");
        assert!(
            n >= returned_total && n <= started_total,
            "round {round} (seed {seed}): {n} log rows; {returned_total} attempts returned, {started_total} started"
        );
    }
    eprintln!(
        "sigkill: {ROUNDS} rounds, {killed} processes killed, {completed_rounds} ran to the end; \
         {started_total} attempts started, {returned_total} returned, {} logged, \
         {damaged_total} damaged spool bytes skipped",
        rows(&sb.db)
    );
    assert!(killed >= ROUNDS, "most processes were killed mid-run ({killed})");
    // The account state agrees with the log: each of alice's failures is
    // counted, then logged (a count must not wait for disk space), so her
    // logged failures are her count, less at most one per process of hers
    // killed between the two (nothing else reset it).
    let logged = sb.log(&["--user", "alice"]).len() as i64;
    let counted = sb.status("alice")["failures"].as_i64().unwrap();
    assert!(
        logged <= counted && counted - logged <= alice_killed,
        "alice: {counted} failures counted, {logged} logged, {alice_killed} of her processes killed (seed {seed})"
    );
    // and the module still works afterwards
    assert!(sb.login("erin", PASSWORD, "203.0.113.9").ok);
    assert_eq!(sb.log(&["--user", "erin"]).len(), 1);
}
