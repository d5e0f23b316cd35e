//! A throwaway PAM sandbox for integration tests: real libpam through
//! pam_wrapper, users from nss_wrapper, passwords from pam_matrix, the
//! built module loaded by absolute path. Nothing on the host changes.
#![allow(dead_code)]

pub mod faults;
pub mod pg;
pub mod policy;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const MATRIX: &str = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so";
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
pub const PASSWORD: &str = "secret";
/// Users in the sandbox: name, uid, groups. `dave` is in `wheel`.
pub const USERS: &[(&str, u32)] =
    &[("root", 0), ("alice", 1000), ("bob", 1001), ("carol", 1002), ("dave", 1003), ("erin", 1004)];
pub const SERVICES: &[&str] = &["login", "sshd", "su", "cron", "passwd"];

/// The built module: next to the test's `useraudit-admin` (same profile),
/// or `USERAUDIT_SO`. The module is a crate of its own (src/module), which
/// `cargo test` does not link into anything, so the first call in each test
/// process builds it (a no-op when it is up to date): a stale module is
/// never tested.
pub fn module_path() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Ok(p) = std::env::var("USERAUDIT_SO") {
        return PathBuf::from(p);
    }
    BUILT
        .get_or_init(|| {
            let admin = PathBuf::from(env!("CARGO_BIN_EXE_useraudit-admin"));
            let dir = admin.parent().unwrap();
            let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            cargo.args(["build", "--quiet", "-p", "pam_useraudit"]).current_dir(env!("CARGO_MANIFEST_DIR"));
            if dir.file_name().is_some_and(|n| n == "release") {
                cargo.arg("--release");
            }
            let out = cargo.output().expect("cannot run cargo to build the module");
            assert!(
                out.status.success(),
                "cargo build -p pam_useraudit failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let so = dir.join("libpam_useraudit.so");
            assert!(so.exists(), "{} is missing after cargo build -p pam_useraudit", so.display());
            so
        })
        .clone()
}

/// pam_wrapper copies the service directory to /tmp/pam.X, choosing X by
/// "exists? else create" without retry: two processes starting together can
/// pick the same one. One pam_wrapper process at a time per test binary.
static PAM_WRAPPER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Hold while a pam_wrapper process runs.
pub fn pam_wrapper_lock() -> std::sync::MutexGuard<'static, ()> {
    PAM_WRAPPER.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn admin_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_useraudit-admin"))
}

/// Skip (return true) when the PAM test tools are not installed.
pub fn missing_tools() -> bool {
    let need = [
        "/usr/bin/pamtester",
        "/usr/lib/x86_64-linux-gnu/libpam_wrapper.so",
        "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
        MATRIX,
    ];
    for n in need {
        if !Path::new(n).exists() {
            if std::env::var_os("CI").is_some() {
                panic!("{n} is missing: run `make deps`");
            }
            eprintln!("SKIP: {n} is missing (make deps installs it)");
            return true;
        }
    }
    false
}

/// The result of one pamtester run.
#[derive(Debug)]
pub struct Pam {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Pam {
    /// Everything the user was shown.
    pub fn shown(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub so: PathBuf,
    pub db: PathBuf,
    pub conf: PathBuf,
    /// Extra `key=value` arguments on every useraudit line.
    pub args: String,
    /// Environment for every run (e.g. FAKETIME).
    pub faketime: Option<String>,
}

impl Sandbox {
    /// A sandbox whose module lines carry `args` (e.g. "login_failure_limit=3"),
    /// with an empty configuration file.
    pub fn new(args: &str) -> Sandbox {
        Self::with_config(args, "")
    }

    pub fn with_config(args: &str, config: &str) -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut passwd = String::new();
        let mut group = String::from("wheel:x:10:dave\n");
        for (u, id) in USERS {
            passwd.push_str(&format!("{u}:x:{id}:{id}:{u}:/home/{u}:/bin/sh\n"));
            group.push_str(&format!("{u}:x:{id}:\n"));
        }
        // pam_matrix reads only a user's first line, whose service must
        // match: one passdb per service.
        for s in SERVICES {
            let passdb: String = USERS.iter().map(|(u, _)| format!("{u}:{PASSWORD}:{s}\n")).collect();
            std::fs::write(d.join(format!("passdb-{s}")), passdb).unwrap();
        }
        std::fs::write(d.join("passwd"), passwd).unwrap();
        std::fs::write(d.join("group"), group).unwrap();
        std::fs::create_dir(d.join("pam.d")).unwrap();
        let conf = d.join("useraudit.toml");
        std::fs::write(&conf, config).unwrap();
        let mut sb = Sandbox {
            so: module_path(),
            db: d.join("state/useraudit.db"),
            conf,
            args: args.to_string(),
            faketime: None,
            dir,
        };
        sb.use_module_copy();
        sb
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Create the database's directory (0700), as the packages do for the
    /// default one. The module creates it at the first login; useraudit-admin
    /// never does (a typo in `--db` must not make a new, empty store).
    pub fn create_db_dir(&self) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().mode(0o700).create(self.db.parent().unwrap()).unwrap();
    }

    /// Load a copy of the module that lives in the sandbox itself, so that a
    /// caller who is not root, or root without CAP_DAC_OVERRIDE, can open
    /// it: the build tree may sit below a directory only root can enter (a
    /// clone under /root, or in a `mktemp -d` directory). Every sandbox does
    /// this when it is made; a hard link where the filesystem allows one.
    pub fn use_module_copy(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let copy = self.path().join("pam_useraudit.so");
        if copy != self.so {
            let _ = std::fs::remove_file(&copy);
            if std::fs::hard_link(&self.so, &copy).is_err() {
                std::fs::copy(&self.so, &copy).unwrap();
            }
            let mode = std::fs::metadata(&copy).unwrap().permissions().mode();
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(mode | 0o444)).unwrap();
            self.so = copy;
        }
        for s in SERVICES {
            self.write_service(s, &self.stack(""));
        }
    }

    /// A copy of `useraudit-admin` in the sandbox, for runs as a user who
    /// may not enter the build tree (see [`Sandbox::use_module_copy`]).
    pub fn admin_copy(&self) -> PathBuf {
        let copy = self.path().join("useraudit-admin");
        if !copy.exists() && std::fs::hard_link(admin_path(), &copy).is_err() {
            std::fs::copy(admin_path(), &copy).unwrap();
        }
        copy
    }

    /// The module arguments common to every line.
    pub fn common(&self, extra: &str) -> String {
        format!("conf={} db={} {} {}", self.conf.display(), self.db.display(), self.args, extra)
    }

    /// The documented stack (README, "Wiring PAM by hand"), with pam_matrix standing in for pam_unix.
    pub fn stack(&self, extra: &str) -> String {
        let so = self.so.display();
        let c = self.common(extra);
        let pdb = format!("{}/passdb-@SERVICE@", self.path().display());
        format!(
            "auth     requisite                   {so} preauth {c}
auth     [success=1 default=ignore]  {MATRIX} passdb={pdb}
auth     [default=die]               {so} authfail {c}
auth     sufficient                  {so} authsucc {c}
auth     required                    pam_deny.so
account  required                    {so} {c}
account  required                    {MATRIX} passdb={pdb}
password required                    {MATRIX} passdb={pdb}
password optional                    {so} {c}
"
        )
    }

    /// Write a service file; `@SERVICE@` in `text` becomes `name`.
    pub fn write_service(&self, name: &str, text: &str) {
        std::fs::write(self.path().join("pam.d").join(name), text.replace("@SERVICE@", name)).unwrap();
    }

    fn env(&self, cmd: &mut Command) {
        let mut preload = String::from("libpam_wrapper.so libnss_wrapper.so");
        if let Some(ft) = &self.faketime {
            preload.push(' ');
            preload.push_str(FAKETIME_LIB);
            cmd.env("FAKETIME", ft).env("FAKETIME_DONT_RESET", "1").env("FAKETIME_NO_CACHE", "1");
        }
        cmd.env("LD_PRELOAD", preload)
            .env("PAM_WRAPPER", "1")
            .env("PAM_WRAPPER_SERVICE_DIR", self.path().join("pam.d"))
            .env("NSS_WRAPPER_PASSWD", self.path().join("passwd"))
            .env("NSS_WRAPPER_GROUP", self.path().join("group"))
            .env_remove("PAM_WRAPPER_DEBUGLEVEL");
    }

    /// Run pamtester: `ops` such as ["authenticate", "acct_mgmt"], `input`
    /// the lines typed at prompts, `items` like ("rhost", "203.0.113.9").
    pub fn pamtester(&self, service: &str, user: &str, input: &str, items: &[(&str, &str)], ops: &[&str]) -> Pam {
        let _one_at_a_time = pam_wrapper_lock();
        let mut cmd = Command::new("pamtester");
        for (k, v) in items {
            cmd.arg("-I").arg(format!("{k}={v}"));
        }
        cmd.arg(service).arg(user).args(ops);
        self.env(&mut cmd);
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // pamtester may exit before reading (a refusal before any prompt).
        if let Err(e) = child.stdin.take().unwrap().write_all(input.as_bytes()) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        let out = child.wait_with_output().unwrap();
        Pam {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// A whole login (authenticate, then account) on `login` from `rhost`.
    pub fn login(&self, user: &str, password: &str, rhost: &str) -> Pam {
        self.pamtester("login", user, &format!("{password}\n"), &[("rhost", rhost)], &["authenticate", "acct_mgmt"])
    }

    /// useraudit-admin with this sandbox's users (and clock, under
    /// `faketime`), no arguments yet; not started.
    pub fn admin_users(&self) -> Command {
        let mut cmd = Command::new(admin_path());
        // Same users as the module sees.
        cmd.env(
            "LD_PRELOAD",
            match &self.faketime {
                Some(_) => format!("libnss_wrapper.so {FAKETIME_LIB}"),
                None => "libnss_wrapper.so".into(),
            },
        )
        .env("NSS_WRAPPER_PASSWD", self.path().join("passwd"))
        .env("NSS_WRAPPER_GROUP", self.path().join("group"));
        if let Some(ft) = &self.faketime {
            cmd.env("FAKETIME", ft).env("FAKETIME_DONT_RESET", "1");
        }
        cmd
    }

    /// useraudit-admin against this sandbox's configuration and database,
    /// with `args`; not started.
    pub fn admin_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.admin_users();
        cmd.arg("--conf").arg(&self.conf).arg("--db").arg(&self.db).args(args);
        cmd
    }

    /// Run useraudit-admin against this sandbox's configuration and database.
    pub fn admin(&self, args: &[&str]) -> Output {
        self.admin_command(args).output().unwrap()
    }

    /// useraudit-admin, asserting success; stdout.
    pub fn admin_ok(&self, args: &[&str]) -> String {
        let o = self.admin(args);
        assert!(o.status.success(), "useraudit-admin {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    }

    /// `log --format json`, newest first.
    pub fn log(&self, extra: &[&str]) -> Vec<Value> {
        let mut a = vec!["log", "--format", "json"];
        a.extend_from_slice(extra);
        let v: Value = serde_json::from_str(&self.admin_ok(&a)).unwrap();
        v.as_array().unwrap().clone()
    }

    /// `status USER --format json`, the one row.
    pub fn status(&self, user: &str) -> Value {
        let o = self.admin(&["status", user, "--format", "json"]);
        assert!(matches!(o.status.code(), Some(0 | 3)), "status failed: {}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0].clone()
    }
}

/// `target/pam_drive`, built from tests/driver/pam_drive.c when missing or
/// older than its source.
pub fn pam_drive() -> PathBuf {
    let target = admin_path().parent().unwrap().parent().unwrap().to_path_buf();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/driver/pam_drive.c");
    let bin = target.join("pam_drive");
    let fresh = |b: &Path| {
        let (Ok(bm), Ok(sm)) = (std::fs::metadata(b), std::fs::metadata(&src)) else { return false };
        bm.modified().unwrap() >= sm.modified().unwrap()
    };
    if !fresh(&bin) {
        // Built under a private name and renamed, so parallel tests never
        // run a half-written file.
        let tmp = target.join(format!("pam_drive.tmp.{}.{:?}", std::process::id(), std::thread::current().id()));
        let o = Command::new("cc").args(["-O2", "-o"]).arg(&tmp).arg(&src).arg("-lpam").output().unwrap();
        assert!(o.status.success(), "building pam_drive failed: {}", String::from_utf8_lossy(&o.stderr));
        std::fs::rename(&tmp, &bin).unwrap();
    }
    bin
}
