//! The core behind `useraudit-admin`: status, activate, lock, sweep and
//! check, over the same configuration, policy, account state files and
//! store as the module.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::store::{Merged, OpenOptions, Store, StoreError};
use useraudit_core::audit::{announce, exempt, password_change};
use useraudit_core::config::{Config, ConfigError, DEFAULT_CONF, PasswordSource};
use useraudit_core::files::FileError;
use useraudit_core::notify::{Event, Notice};
use useraudit_core::policy::{self, Account, PasswordChange, Reason, Standing};
use useraudit_core::state::Accounts;
use useraudit_core::sys::{self, Lookup, Priority, UserInfo};
use useraudit_core::text::{DAY_MICROS, escape, format_duration, plural};

/// A failed admin operation: what went wrong, shown as one line on stderr.
/// The binary maps each to its exit code (2 for [`AdminError::Usage`], 1
/// for the rest).
#[derive(Debug)]
pub enum AdminError {
    /// The configuration cannot be used.
    Config(ConfigError),
    /// The database cannot be used.
    Store(StoreError),
    /// A file cannot be used (the message names it).
    File(FileError),
    /// An account state file, or their directory, cannot be used.
    AccountState(FileError),
    /// The database (or its state files) could not be opened because the
    /// caller is not root.
    NeedsRoot(Box<AdminError>),
    /// An I/O error on a file or resource of the command itself (standard
    /// output, the daemon's lock file, the metrics file), with what was
    /// being done ("daemon lock PATH: cannot open"); empty when the error
    /// says it all.
    Io { doing: String, source: std::io::Error },
    /// No account by that name (as given on the command line).
    NotFound { user: Vec<u8> },
    /// A request the command does not carry out: locking an exempt account,
    /// a time span it cannot show.
    Refused(String),
    /// A problem found in what the command works on: a missing database
    /// directory, a log that is not complete, a failed integrity check,
    /// damaged spool files, a notify_command that cannot run, another
    /// daemon running.
    Problem(String),
    /// Wrong usage: a value an option cannot take.
    Usage(String),
}

impl AdminError {
    /// An I/O error with what was being done.
    pub fn io(doing: impl Into<String>, source: std::io::Error) -> AdminError {
        AdminError::Io { doing: doing.into(), source }
    }
}

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AdminError::Config(e) => write!(f, "{e}"),
            AdminError::Store(e) => write!(f, "{e}"),
            AdminError::File(e) => write!(f, "{e}"),
            AdminError::AccountState(e) => write!(f, "account state {e}"),
            AdminError::NeedsRoot(e) => write!(f, "{e} (the database is readable by root only; run as root)"),
            AdminError::Io { doing, source } if doing.is_empty() => write!(f, "{source}"),
            AdminError::Io { doing, source } => write!(f, "{doing}: {source}"),
            AdminError::NotFound { user } => write!(f, "no such account: {}", escape(user)),
            AdminError::Refused(m) | AdminError::Problem(m) | AdminError::Usage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AdminError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AdminError::Config(e) => Some(e),
            AdminError::Store(e) => Some(e),
            AdminError::File(e) | AdminError::AccountState(e) => Some(e),
            AdminError::NeedsRoot(e) => e.source(),
            AdminError::Io { source, .. } => Some(source),
            AdminError::NotFound { .. } | AdminError::Refused(_) | AdminError::Problem(_) | AdminError::Usage(_) => {
                None
            }
        }
    }
}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> Self {
        AdminError::Config(e)
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Store(e)
    }
}

impl From<FileError> for AdminError {
    fn from(e: FileError) -> Self {
        AdminError::File(e)
    }
}

impl From<std::io::Error> for AdminError {
    fn from(e: std::io::Error) -> Self {
        AdminError::io("", e)
    }
}

pub type Result<T> = std::result::Result<T, AdminError>;

/// Load the configuration (`--conf` or the default) and apply `--db`.
pub fn load_config(conf: Option<&Path>, db: Option<&Path>) -> Result<Config> {
    let root = sys::euid() == 0;
    let mut cfg = match conf {
        Some(p) => Config::load(p, true, root)?,
        None => Config::load(Path::new(DEFAULT_CONF), false, root)?,
    };
    if let Some(d) = db {
        cfg.database = d.to_path_buf();
    }
    Ok(cfg)
}

/// What an administrator's command works on: the log database and the
/// account state files.
pub struct Db {
    /// None when the database cannot be opened (see `problem`).
    store: Option<Store>,
    pub accounts: Accounts,
    /// What opening merged from the log spool.
    pub merged: Merged,
    /// Why the log is not complete: the database cannot be opened, or the
    /// spool cannot be merged into it.
    problem: Option<String>,
    /// Spool files set aside with a damaged header, one line each: their
    /// intact records are in the log, but they may hold more.
    damaged_spools: Vec<String>,
}

impl Db {
    /// The log, complete: the database with the spool merged. Commands
    /// that show or trim the log need that; the others go on without it.
    pub fn log(&self) -> Result<&Store> {
        match (&self.problem, &self.store) {
            (None, Some(s)) => Ok(s),
            (Some(p), _) => Err(AdminError::Problem(p.clone())),
            (None, None) => Err(AdminError::Problem("the database is not open".into())),
        }
    }

    pub fn log_mut(&mut self) -> Result<&mut Store> {
        self.log()?;
        self.store.as_mut().ok_or_else(|| AdminError::Problem("the database is not open".into()))
    }

    /// Why the log is not complete, if it is not.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// Spool files with a damaged header that still exist, one line each.
    /// Every command reports them until the administrator removes them.
    pub fn damaged_spools(&self) -> &[String] {
        &self.damaged_spools
    }
}

/// The spool files with a damaged header beside `db`, as lines for stderr
/// and syslog (each also goes to syslog here).
fn damaged_spools(db: &Path) -> Vec<String> {
    let lines: Vec<String> = match useraudit_core::spool::damaged_files(db) {
        Ok(files) => files
            .iter()
            .map(|f| {
                format!(
                    "damaged log spool {}: its header was damaged; the intact records it holds are in the log, the rest could not be read; inspect it and remove it",
                    f.display()
                )
            })
            .collect(),
        Err(e) => vec![format!("cannot look for damaged log spools: {e}")],
    };
    for l in &lines {
        sys::syslog(Priority::Err, &format!("useraudit-admin (uid {}): {l}", sys::euid()));
    }
    lines
}

/// Open the configured database and account state (created if missing),
/// and merge the log spool that the PAM module writes. A database that cannot
/// be opened or merged is not an error here (accounts can still be shown,
/// activated and locked: their state is in the state files); it is one
/// for whatever needs the log ([`Db::log`]).
///
/// The database's directory must exist: a typo in `--db` is an error
/// naming the missing directory, never a new, empty store. Only the files
/// inside it (the database, the spool, the state directory) are created.
pub fn open_store(cfg: &Config) -> Result<Db> {
    let root = sys::euid() == 0;
    let dir = useraudit_core::files::parent(&cfg.database);
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(AdminError::Problem(format!(
                "database {}: its directory {} does not exist (check --db or `database`, or create the directory, mode 0700)",
                cfg.database.display(),
                dir.display()
            )));
        }
        // Anything else (not a directory, no permission) is reported below.
        _ => {}
    }
    let hint = |e: AdminError, denied: bool| if !root && denied { AdminError::NeedsRoot(Box::new(e)) } else { e };
    let accounts = Accounts::open(&cfg.database, true, root).map_err(|e| {
        let denied = e.denied();
        hint(AdminError::AccountState(e), denied)
    })?;
    let mut store = match Store::open(&cfg.database, OpenOptions { create: true, require_root_owned: root }) {
        Ok(s) => s,
        Err(e) if !root && e.permission_denied() => return Err(hint(AdminError::Store(e), true)),
        Err(e) => {
            let problem = e.to_string();
            sys::syslog(Priority::Err, &format!("useraudit-admin (uid {}): {problem}", sys::euid()));
            let damaged_spools = damaged_spools(&cfg.database);
            return Ok(Db { store: None, accounts, merged: Merged::default(), problem: Some(problem), damaged_spools });
        }
    };
    let (merged, problem) = match store.merge_spool() {
        Ok(m) => (m, None),
        Err(e) => (Merged::default(), Some(e.to_string())),
    };
    say_merge_faults(cfg, &merged, &format!("useraudit-admin (uid {})", sys::euid()), Priority::Notice);
    if let Some(p) = &problem {
        sys::syslog(Priority::Err, &format!("useraudit-admin (uid {}): {p}", sys::euid()));
    }
    let damaged_spools = damaged_spools(&cfg.database);
    Ok(Db { store: Some(store), accounts, merged, problem, damaged_spools })
}

/// Syslog what a merge skipped (damaged bytes, at `damaged`) and what the
/// module dropped at the spool's bound, each line starting with `who`.
pub fn say_merge_faults(cfg: &Config, m: &Merged, who: &str, damaged: Priority) {
    if m.damaged > 0 {
        sys::syslog(
            damaged,
            &format!(
                "{who}: log spool of {}: skipped {} damaged byte(s) (a short write on a full disk, or a crash); {} entries merged",
                cfg.database.display(),
                m.damaged,
                m.entries
            ),
        );
    }
    if m.dropped > 0 {
        sys::syslog(
            Priority::Warning,
            &format!(
                "{who}: log spool of {}: {} entries were dropped at its bound (spool_max_bytes = {}); counted in the log with reason \"dropped\"",
                cfg.database.display(),
                m.dropped,
                cfg.spool_max_bytes
            ),
        );
    }
}

fn syslog_admin(msg: &str) {
    sys::syslog(Priority::Notice, &format!("useraudit-admin (uid {}): {msg}", sys::euid()));
}

/// An account named on the command line: through NSS, else as stored.
pub fn resolve(accounts: &Accounts, name: &str) -> Result<(Vec<u8>, Option<UserInfo>)> {
    match sys::lookup_user(name.as_bytes()) {
        Lookup::Found(u) => Ok((u.name.clone(), Some(u))),
        Lookup::NotFound | Lookup::Error(_) => {
            // A damaged state file still names an account (activate repairs it).
            if accounts.get(name.as_bytes()).map_or(true, |a| a.is_some()) {
                Ok((name.as_bytes().to_vec(), None))
            } else {
                Err(AdminError::NotFound { user: name.as_bytes().to_vec() })
            }
        }
    }
}

pub fn is_exempt(cfg: &Config, user: &[u8], info: Option<&UserInfo>) -> bool {
    match info {
        Some(u) => exempt(cfg, u),
        None => cfg.exempt_users.iter().any(|n| n.as_bytes() == user),
    }
}

/// One account as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub user: Vec<u8>,
    pub state: &'static str,
    pub reason: Option<&'static str>,
    pub note: Option<Vec<u8>>,
    pub failures: u32,
    pub last_login: Option<i64>,
    pub last_failure: Option<i64>,
    pub locked_at: Option<i64>,
    pub unlocks_at: Option<i64>,
    /// The last password change (µs; a day boundary when from shadow).
    pub password_changed: Option<i64>,
    /// The day the password expires (µs at midnight UTC).
    pub password_expires: Option<i64>,
    /// Days until the password expires (negative: expired).
    pub password_days_left: Option<i64>,
    pub exempt: bool,
    /// May this account log in now, as far as useraudit is concerned.
    pub may_login: bool,
    /// Whom the lock or disable refuses: "all", "untrusted" (a lock from
    /// failures on untrusted hosts only: trusted hosts get in), or None.
    pub lock_scope: Option<&'static str>,
}

fn status_row(cfg: &Config, a: &Account, is_exempt: bool, now: i64) -> StatusRow {
    let standing = policy::standing(a, cfg, now);
    let (state, reason, unlocks_at) = match standing {
        Standing::Active => ("active", None, None),
        Standing::Locked { until, .. } => ("locked", Some(Reason::LoginFailureLimit.as_str()), until),
        Standing::Disabled(r) => ("disabled", Some(r.as_str()), None),
    };
    let (change, _) = password_change(cfg, a);
    // From shadow: the day of the change; else what the password line recorded.
    let password_changed = match (cfg.password_change_source, change) {
        (PasswordSource::Shadow, PasswordChange::Day(d)) => Some(d * DAY_MICROS),
        _ => a.password_changed,
    };
    let expires = if is_exempt { None } else { policy::password_expires(change, cfg) };
    StatusRow {
        user: a.user.clone(),
        state,
        reason,
        note: a.note.clone(),
        failures: if standing == Standing::Active && a.state == policy::State::Locked { 0 } else { a.failures },
        last_login: a.last_login,
        last_failure: a.last_failure,
        locked_at: if standing == Standing::Active { None } else { a.locked_at },
        unlocks_at,
        password_changed,
        password_expires: expires.map(|d| d * DAY_MICROS),
        password_days_left: expires.map(|d| d - policy::day_of(now)),
        exempt: is_exempt,
        may_login: is_exempt || standing == Standing::Active,
        lock_scope: if standing == Standing::Active { None } else { policy::lock_scope(a).map(|s| s.as_str()) },
    }
}

/// `status`: every stored account, or the named ones. Accounts that
/// cannot be shown (a damaged state file, an unknown name) do not hide the
/// others: they come back as problems beside the rows, in order.
pub fn status(
    cfg: &Config,
    accounts: &Accounts,
    users: &[String],
    now: i64,
) -> Result<(Vec<StatusRow>, Vec<AdminError>)> {
    if users.is_empty() {
        let (all, bad) = accounts.list()?;
        let problems = bad.into_iter().map(AdminError::AccountState).collect();
        let rows = all
            .iter()
            .map(|a| {
                let info = match sys::lookup_user(&a.user) {
                    Lookup::Found(u) => Some(u),
                    _ => None,
                };
                status_row(cfg, a, is_exempt(cfg, &a.user, info.as_ref()), now)
            })
            .collect();
        return Ok((rows, problems));
    }
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for u in users {
        let (name, info) = match resolve(accounts, u) {
            Ok(r) => r,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        // An account known to the system but never seen by the module is
        // shown as it would start: active, nothing recorded.
        match accounts.get(&name) {
            Ok(acc) => {
                let acc = acc.unwrap_or_else(|| Account::new(&name, now));
                rows.push(status_row(cfg, &acc, is_exempt(cfg, &name, info.as_ref()), now));
            }
            Err(e) => problems.push(AdminError::AccountState(e)),
        }
    }
    Ok((rows, problems))
}

/// What `activate` did to one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Activated {
    /// It was locked or disabled (state, reason) or had failures; now active.
    Reactivated { was_state: &'static str, was_reason: Option<&'static str>, failures: u32 },
    /// It was already active with no failures; its inactivity clock restarted.
    AlreadyActive,
    /// Its state file was damaged and has been replaced by a fresh one.
    Repaired,
}

/// `activate USER`: clear lock, disable and count; restart the inactivity clock.
pub fn activate(cfg: &Config, accounts: &Accounts, user: &str, now: i64) -> Result<(Vec<u8>, Activated)> {
    let (name, _) = resolve(accounts, user)?;
    // A damaged state file is replaced: activation starts the account afresh.
    let damaged = accounts.get(&name).is_err();
    let result = accounts.update(&name, true, |cur| {
        let mut acc = cur.unwrap_or_else(|| Account::new(&name, now));
        let standing = policy::standing(&acc, cfg, now);
        let (was_state, was_reason) = match standing {
            Standing::Active => ("active", None),
            Standing::Locked { .. } => ("locked", Some(Reason::LoginFailureLimit.as_str())),
            Standing::Disabled(r) => ("disabled", Some(r.as_str())),
        };
        let failures =
            if standing == Standing::Active && acc.state == policy::State::Locked { 0 } else { acc.failures };
        let changed = policy::activate(&mut acc, cfg, now);
        Ok((
            Some(acc),
            if damaged {
                Activated::Repaired
            } else if changed && (was_state != "active" || failures > 0) {
                Activated::Reactivated { was_state, was_reason, failures }
            } else {
                Activated::AlreadyActive
            },
        ))
    })?;
    syslog_admin(&format!(
        "activate {}: {}",
        escape(&name),
        match &result {
            Activated::Reactivated { was_state, .. } => format!("was {was_state}, now active"),
            Activated::AlreadyActive => "already active; inactivity clock restarted".into(),
            Activated::Repaired => "its damaged state file was replaced; now active".into(),
        }
    ));
    Ok((name, result))
}

/// `lock USER [--reason TEXT]`: disable by hand.
pub fn lock(cfg: &Config, accounts: &Accounts, user: &str, reason: Option<&str>, now: i64) -> Result<(Vec<u8>, bool)> {
    let (name, info) = resolve(accounts, user)?;
    if is_exempt(cfg, &name, info.as_ref()) {
        return Err(AdminError::Refused(format!(
            "{} is exempt (exempt_users or exempt_groups) and is never locked; remove it from there first",
            escape(&name)
        )));
    }
    let newly = accounts.update(&name, false, |cur| {
        let mut acc = cur.unwrap_or_else(|| Account::new(&name, now));
        let was = policy::standing(&acc, cfg, now);
        policy::admin_lock(&mut acc, now, reason.map(str::as_bytes));
        Ok((Some(acc), was == Standing::Active))
    })?;
    syslog_admin(&format!(
        "lock {}: disabled by hand{}",
        escape(&name),
        reason.map(|r| format!(" ({})", escape(r.as_bytes()))).unwrap_or_default()
    ));
    Ok((name, newly))
}

/// What a sweep did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Accounts disabled for inactivity, with their last activity (µs).
    pub disabled: Vec<(Vec<u8>, i64)>,
    /// Log entries deleted under `retention_days`.
    pub deleted: u64,
    /// The cut-off for deletion, when `retention_days` is set.
    pub retention_before: Option<i64>,
    /// Stale temporary files removed from the account and host state
    /// directories (see [`STALE_TEMPORARY_AGE`]).
    pub temporaries: u64,
    /// Why a state directory could not be cleared of them, one line each;
    /// the caller reports these and fails.
    pub temporary_problems: Vec<String>,
}

/// How old a state directory's temporary file (`.new-` and 16 hex digits)
/// must be for `sweep` to remove it, in µs: one hour. Writing one and
/// linking it into place takes milliseconds, so an older one was left by a
/// process killed in between, and removing it never races a live writer.
pub const STALE_TEMPORARY_AGE: i64 = 3600 * 1_000_000;

/// `sweep [--dry-run]`: disable accounts inactive longer than
/// `account_expiry_days`, apply `retention_days` (only to a complete log:
/// when the spool was not merged, see [`Db::problem`], which the caller
/// must report as a failure), and remove stale temporary files from the
/// account and host state directories (a problem there is reported in
/// [`SweepReport::temporary_problems`], after the rest is done).
pub fn sweep(cfg: &Config, db: &mut Db, dry_run: bool, now: i64) -> Result<SweepReport> {
    let mut report = SweepReport::default();
    if cfg.account_expiry_days > 0 {
        // Damaged state files are reported by `status`; the sweep goes on
        // with the others. Exemptions need NSS, which is not done under a lock.
        let (all, _bad) = db.accounts.list()?;
        let candidates: Vec<Vec<u8>> = all
            .into_iter()
            .filter(|a| policy::standing(a, cfg, now) == Standing::Active && policy::inactive(a, cfg, now))
            .filter(|a| {
                let info = match sys::lookup_user(&a.user) {
                    Lookup::Found(u) => Some(u),
                    _ => None,
                };
                !is_exempt(cfg, &a.user, info.as_ref())
            })
            .map(|a| a.user)
            .collect();
        for name in &candidates {
            // Re-check under the account's lock: a login may have come in since.
            let done = db.accounts.update(name, false, |cur| {
                let Some(mut acc) = cur else {
                    return Ok((None, None));
                };
                if policy::standing(&acc, cfg, now) != Standing::Active || !policy::inactive(&acc, cfg, now) {
                    return Ok((None, None));
                }
                let last = acc.last_login.unwrap_or(0).max(acc.activated_at.unwrap_or(0));
                if dry_run {
                    return Ok((None, Some(last)));
                }
                policy::disable(&mut acc, Reason::AccountExpired, now);
                Ok((Some(acc), Some(last)))
            })?;
            if let Some(last) = done {
                report.disabled.push((name.clone(), last));
            }
        }
        if !dry_run {
            let log = |p: Priority, m: &str| sys::syslog(p, &format!("useraudit-admin sweep: {m}"));
            for (name, _) in &report.disabled {
                let n = Notice {
                    event: Event::AccountExpired,
                    user: name,
                    rhost: None,
                    service: Some(b"sweep"),
                    failures: 0,
                };
                let days = plural(i64::from(cfg.account_expiry_days), "day");
                announce(cfg, &log, &n, &format!("disabled: not used for more than {days}"));
            }
        }
    }
    // Entries still in the spool cannot be trimmed; the caller reports the
    // unmerged spool (`Db::problem`) and fails.
    if cfg.retention_days > 0 && db.problem().is_none() {
        let before = now - i64::from(cfg.retention_days) * DAY_MICROS;
        report.retention_before = Some(before);
        report.deleted = if dry_run { db.log()?.count_before(before)? } else { db.log_mut()?.delete_before(before)? };
    }
    remove_stale_temporaries(cfg, db, dry_run, now, &mut report);
    Ok(report)
}

/// The sweep's last step: temporary files left by processes killed while
/// creating a state file, in `DATABASE.accounts/` and `DATABASE.hosts/`.
fn remove_stale_temporaries(cfg: &Config, db: &Db, dry_run: bool, now: i64, report: &mut SweepReport) {
    let before = now.saturating_sub(STALE_TEMPORARY_AGE);
    match db.accounts.remove_stale_temporaries(before, dry_run) {
        Ok(n) => report.temporaries += n,
        Err(e) => report.temporary_problems.push(AdminError::AccountState(e).to_string()),
    }
    match crate::hosts::open(cfg, false) {
        Ok(None) => {}
        Ok(Some(hosts)) => match hosts.remove_stale_temporaries(before, dry_run) {
            Ok(n) => report.temporaries += n,
            Err(e) => report.temporary_problems.push(format!("host state {e}")),
        },
        Err(e) => report.temporary_problems.push(e.to_string()),
    }
    if !dry_run && report.temporaries > 0 {
        syslog_admin(&format!(
            "sweep: removed {} left by interrupted writes",
            plural(i64::try_from(report.temporaries).unwrap_or(i64::MAX), "stale temporary state file")
        ));
    }
}

/// `check`: the effective settings and the database's health, as lines.
pub fn check(cfg: &Config, db: &Db) -> Result<Vec<String>> {
    let store = db.log()?;
    let mut out = Vec::new();
    for (k, v) in cfg.render() {
        out.push(format!("{k} = {v}"));
    }
    let qc = store.quick_check()?;
    if qc != "ok" {
        return Err(AdminError::Problem(format!("database {}: integrity check failed: {qc}", store.path().display())));
    }
    let (accounts, bad) = db.accounts.list()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(AdminError::AccountState(e));
    }
    if !db.damaged_spools.is_empty() {
        return Err(AdminError::Problem(db.damaged_spools.join("; ")));
    }
    out.push(format!(
        "# database {}: schema version {}, {} log entries, integrity ok",
        store.path().display(),
        crate::store::SCHEMA_VERSION,
        store.count()?,
    ));
    out.push(format!("# account state {}: {} accounts", db.accounts.dir().display(), accounts.len()));
    if db.merged.damaged > 0 {
        out.push(format!("# warning: the log spool had {} damaged byte(s), skipped", db.merged.damaged));
    }
    if db.merged.dropped > 0 {
        out.push(format!(
            "# warning: {} entries were dropped at the spool bound (spool_max_bytes); counted in the log",
            db.merged.dropped
        ));
    }
    if cfg.unlock_after > 0 {
        out.push(format!("# locks lift after {}", format_duration(cfg.unlock_after)));
    }
    if let Some(cmd) = &cfg.notify_command {
        if let Err(e) = useraudit_core::notify::check_command(cmd) {
            return Err(AdminError::Problem(e));
        }
    }
    if cfg.password_expiry_days > 0 && cfg.password_change_source == PasswordSource::Shadow {
        // Probe a name nss-systemd does not make up: it answers for root and
        // nobody ("root:!*:::::::") even when /etc/shadow cannot be read.
        // For a caller that is not root, "not found" means "cannot read".
        if let (_, Some(w)) = password_change(cfg, &Account::new(b"useraudit-shadow-probe", 0)) {
            out.push(format!("# warning: {w}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// EACCES on Linux, whose kind is PermissionDenied.
    const EACCES: i32 = 13;

    #[test]
    fn admin_errors_keep_their_source_and_their_message() {
        let io = std::io::Error::from_raw_os_error(EACCES);
        let file = FileError::io(Path::new("/db.accounts"), "cannot open", &io);
        let e = AdminError::NeedsRoot(Box::new(AdminError::AccountState(file)));
        assert_eq!(
            e.to_string(),
            format!(
                "account state /db.accounts: cannot open: {io} (the database is readable by root only; run as root)"
            )
        );
        let file = e.source().and_then(|s| s.downcast_ref::<FileError>()).expect("the FileError");
        assert!(file.denied());
        let io_src = file.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
        assert_eq!(io_src.raw_os_error(), Some(EACCES));

        let e = AdminError::from(std::io::Error::other("disk on fire"));
        assert_eq!(e.to_string(), "disk on fire");
        assert!(e.source().is_some_and(|s| s.is::<std::io::Error>()));
        let e = AdminError::io("daemon lock /x.lock: cannot lock", std::io::Error::from_raw_os_error(EACCES));
        assert!(e.to_string().starts_with("daemon lock /x.lock: cannot lock: "));

        let e = AdminError::NotFound { user: b"ev\x1bil".to_vec() };
        assert_eq!(e.to_string(), format!("no such account: {}", escape(b"ev\x1bil")));
        assert!(e.source().is_none());
    }
}
