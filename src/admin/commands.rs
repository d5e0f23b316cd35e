//! The core behind `useraudit-admin`: status, activate, lock, sweep and
//! check, over the same configuration, policy, account state files and
//! store as the module.
#![forbid(unsafe_code)]

use std::path::Path;

use useraudit_core::audit::{announce, exempt, password_change};
use useraudit_core::config::{Config, DEFAULT_CONF, PasswordSource};
use useraudit_core::notify::{Event, Notice};
use useraudit_core::policy::{self, Account, PasswordChange, Reason, Standing};
use useraudit_core::state::Accounts;
use crate::store::{Merged, OpenOptions, Store};
use useraudit_core::sys::{self, Lookup, Priority, UserInfo};
use useraudit_core::text::{DAY_MICROS, escape, format_duration, plural};

/// A failed admin operation: one line for stderr.
#[derive(Debug)]
pub struct AdminError(pub String);

impl std::fmt::Display for AdminError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error> From<E> for AdminError {
    fn from(e: E) -> Self {
        AdminError(e.to_string())
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
            (Some(p), _) => Err(AdminError(p.clone())),
            (None, None) => Err(AdminError("the database is not open".into())),
        }
    }

    pub fn log_mut(&mut self) -> Result<&mut Store> {
        self.log()?;
        self.store.as_mut().ok_or_else(|| AdminError("the database is not open".into()))
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
            return Err(AdminError(format!(
                "database {}: its directory {} does not exist (check --db or `database`, or create the directory, mode 0700)",
                cfg.database.display(),
                dir.display()
            )));
        }
        // Anything else (not a directory, no permission) is reported below.
        _ => {}
    }
    let hint = |e: String, denied: bool| {
        if !root && denied {
            AdminError(format!("{e} (the database is readable by root only; run as root)"))
        } else {
            AdminError(e)
        }
    };
    let accounts =
        Accounts::open(&cfg.database, true, root).map_err(|e| hint(format!("account state {e}"), e.denied))?;
    let mut store = match Store::open(&cfg.database, OpenOptions { create: true, require_root_owned: root }) {
        Ok(s) => s,
        Err(e) if !root && e.permission_denied() => return Err(hint(e.to_string(), true)),
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
    if merged.damaged > 0 {
        syslog_admin(&format!(
            "log spool of {}: skipped {} damaged byte(s) (a short write on a full disk, or a crash); {} entries merged",
            cfg.database.display(),
            merged.damaged,
            merged.entries
        ));
    }
    if merged.dropped > 0 {
        sys::syslog(
            Priority::Warning,
            &format!(
                "useraudit-admin (uid {}): log spool of {}: {} entries were dropped at its bound (spool_max_bytes = {}); counted in the log with reason \"dropped\"",
                sys::euid(),
                cfg.database.display(),
                merged.dropped,
                cfg.spool_max_bytes
            ),
        );
    }
    if let Some(p) = &problem {
        sys::syslog(Priority::Err, &format!("useraudit-admin (uid {}): {p}", sys::euid()));
    }
    let damaged_spools = damaged_spools(&cfg.database);
    Ok(Db { store: Some(store), accounts, merged, problem, damaged_spools })
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
                Err(AdminError(format!("no such account: {}", escape(name.as_bytes()))))
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
        let problems = bad.iter().map(|e| AdminError(format!("account state {e}"))).collect();
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
            Err(e) => problems.push(AdminError(format!("account state {e}"))),
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
        return Err(AdminError(format!(
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
}

/// `sweep [--dry-run]`: disable accounts inactive longer than
/// `account_expiry_days`, apply `retention_days` (only to a complete log:
/// when the spool was not merged, see [`Db::problem`], which the caller
/// must report as a failure).
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
        report.deleted = if dry_run {
            db.log()?.count_before(before)?
        } else {
            db.log_mut()?.delete_before(before)?
        };
    }
    Ok(report)
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
        return Err(AdminError(format!("database {}: integrity check failed: {qc}", store.path().display())));
    }
    let (accounts, bad) = db.accounts.list()?;
    if let Some(e) = bad.first() {
        return Err(AdminError(format!("account state {e}")));
    }
    if !db.damaged_spools.is_empty() {
        return Err(AdminError(db.damaged_spools.join("; ")));
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
            return Err(AdminError(e));
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
