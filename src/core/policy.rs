//! Policy: pure functions of (account state, configuration, now). Nothing
//! here reads a clock, a file or the database, so every rule is unit-tested
//! on its own.
#![forbid(unsafe_code)]

use crate::config::{Config, ExpiredAction};
use crate::text::{DAY_MICROS, MICROS};

/// Stored state of an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Locked,
    Disabled,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Active => "active",
            State::Locked => "locked",
            State::Disabled => "disabled",
        }
    }
    pub fn parse(s: &str) -> Option<State> {
        [State::Active, State::Locked, State::Disabled].into_iter().find(|x| x.as_str() == s)
    }
}

/// Why an account is locked or disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    LoginFailureLimit,
    AccountExpired,
    PasswordExpired,
    Admin,
    /// Locked by the fleet lockout: failures of the name on all hosts
    /// together reached `fleet.failure_limit` (written by useraudit-admin's
    /// fleet sync, lifted by `activate`).
    FleetFailureLimit,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LoginFailureLimit => "login_failure_limit",
            Reason::AccountExpired => "account_expired",
            Reason::PasswordExpired => "password_expired",
            Reason::Admin => "admin",
            Reason::FleetFailureLimit => "fleet_failure_limit",
        }
    }
    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::LoginFailureLimit,
            Reason::AccountExpired,
            Reason::PasswordExpired,
            Reason::Admin,
            Reason::FleetFailureLimit,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
    /// The log reason of an attempt refused because of this.
    pub fn refusal(self) -> LogReason {
        match self {
            Reason::LoginFailureLimit => LogReason::Locked,
            Reason::AccountExpired => LogReason::AccountExpired,
            Reason::PasswordExpired => LogReason::PasswordExpired,
            Reason::Admin => LogReason::Disabled,
            Reason::FleetFailureLimit => LogReason::Locked,
        }
    }
}

/// Why a logged attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogReason {
    Auth,
    Locked,
    Disabled,
    AccountExpired,
    PasswordExpired,
    /// Refused because the remote host is blocked.
    HostBlocked,
}

impl LogReason {
    pub fn as_str(self) -> &'static str {
        match self {
            LogReason::Auth => "auth",
            LogReason::Locked => "locked",
            LogReason::Disabled => "disabled",
            LogReason::AccountExpired => "account_expired",
            LogReason::PasswordExpired => "password_expired",
            LogReason::HostBlocked => "host_blocked",
        }
    }
    pub fn parse(s: &str) -> Option<LogReason> {
        [
            LogReason::Auth,
            LogReason::Locked,
            LogReason::Disabled,
            LogReason::AccountExpired,
            LogReason::PasswordExpired,
            LogReason::HostBlocked,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// What the store keeps per account (known accounts only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: Vec<u8>,
    pub state: State,
    pub reason: Option<Reason>,
    /// Consecutive counted failures.
    pub failures: u32,
    /// Times of the counted failures, newest last; kept only while
    /// `failure_window` is set, and at most `login_failure_limit` of them.
    pub fail_times: Vec<i64>,
    pub last_failure: Option<i64>,
    pub last_login: Option<i64>,
    pub locked_at: Option<i64>,
    pub activated_at: Option<i64>,
    pub first_seen: i64,
    /// Recorded by the password hook after a successful change.
    pub password_changed: Option<i64>,
    /// Set by `activate` on an account disabled for an expired password: the
    /// next good login is let in once, to change the password.
    pub pw_grace: bool,
    /// The administrator's words for a hand-made lock (`lock --reason`).
    pub note: Option<Vec<u8>>,
    /// A failure from a trusted host (`trusted_hosts`) is among those
    /// counted: a lock from `login_failure_limit` then refuses trusted
    /// hosts too (lock scope "all"); without one, only untrusted hosts.
    pub trusted_failure: bool,
}

impl Account {
    pub fn new(user: &[u8], now: i64) -> Account {
        Account {
            user: user.to_vec(),
            state: State::Active,
            reason: None,
            failures: 0,
            fail_times: Vec::new(),
            last_failure: None,
            last_login: None,
            locked_at: None,
            activated_at: None,
            first_seen: now,
            password_changed: None,
            pw_grace: false,
            note: None,
            trusted_failure: false,
        }
    }

    fn clear_lock(&mut self) {
        self.state = State::Active;
        self.reason = None;
        self.locked_at = None;
        self.note = None;
        self.failures = 0;
        self.fail_times.clear();
        self.trusted_failure = false;
    }
}

/// Whom a lock refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// Every host.
    All,
    /// Only hosts outside `trusted_hosts`: a lock from `login_failure_limit`
    /// whose failures all came from untrusted hosts.
    Untrusted,
}

impl LockScope {
    pub fn as_str(self) -> &'static str {
        match self {
            LockScope::All => "all",
            LockScope::Untrusted => "untrusted",
        }
    }
}

/// Whom the account's lock or disable refuses; None when it is active.
/// Locks by hand and expiry apply everywhere.
pub fn lock_scope(a: &Account) -> Option<LockScope> {
    match a.state {
        State::Active => None,
        State::Locked if !a.trusted_failure && a.reason != Some(Reason::Admin) => Some(LockScope::Untrusted),
        _ => Some(LockScope::All),
    }
}

/// Whether a lock from `login_failure_limit` spares this attempt: from a
/// trusted host while no failure that caused the lock came from one.
pub fn lock_spares(a: &Account, trusted: bool) -> bool {
    trusted && lock_scope(a) == Some(LockScope::Untrusted)
}

/// Where an account stands at a moment, after a timed lock has lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Active,
    /// Locked by the failure limit; `until` when `unlock_after` is set.
    Locked {
        since: i64,
        until: Option<i64>,
    },
    Disabled(Reason),
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / MICROS).saturating_mul(MICROS)
}

/// The account's standing at `now`.
pub fn standing(a: &Account, cfg: &Config, now: i64) -> Standing {
    match a.state {
        State::Active => Standing::Active,
        State::Locked => {
            // A lock time in the future (taken while the clock was ahead)
            // counts as now; `settle` writes that down at the next change.
            let since = a.locked_at.unwrap_or(now).min(now);
            let until = (cfg.unlock_after > 0).then(|| since.saturating_add(secs(cfg.unlock_after)));
            match until {
                Some(u) if now >= u => Standing::Active,
                _ => Standing::Locked { since, until },
            }
        }
        State::Disabled => Standing::Disabled(a.reason.unwrap_or(Reason::Admin)),
    }
}

/// The log reason for an attempt on an account in this standing, if refused.
pub fn refusal(s: Standing) -> Option<LogReason> {
    match s {
        Standing::Active => None,
        Standing::Locked { .. } => Some(LogReason::Locked),
        Standing::Disabled(r) => Some(r.refusal()),
    }
}

/// Whether any stored time of the account lies after `now` (recorded while
/// the clock was ahead).
pub fn has_future_times(a: &Account, now: i64) -> bool {
    let after = |t: Option<i64>| t.is_some_and(|t| t > now);
    after(a.locked_at)
        || after(a.last_failure)
        || after(a.last_login)
        || after(a.activated_at)
        || after(a.password_changed)
        || a.first_seen > now
        || a.fail_times.iter().any(|&t| t > now)
}

/// Take every stored time that lies in the future as now: a lock taken
/// while the clock was ahead then lasts `unlock_after` from now, not until
/// that future moment; failures in a `failure_window` count from now; the
/// inactivity and password clocks run from now. Returns whether anything
/// changed.
pub fn clamp_future_times(a: &mut Account, now: i64) -> bool {
    if !has_future_times(a, now) {
        return false;
    }
    for t in [&mut a.locked_at, &mut a.last_failure, &mut a.last_login, &mut a.activated_at, &mut a.password_changed] {
        if let Some(v) = t.as_mut() {
            *v = (*v).min(now);
        }
    }
    a.first_seen = a.first_seen.min(now);
    for t in &mut a.fail_times {
        *t = (*t).min(now);
    }
    true
}

/// Bring the account up to date before changing it: stored times in the
/// future become now, and a lapsed timed lock is lifted.
fn settle(a: &mut Account, cfg: &Config, now: i64) {
    clamp_future_times(a, now);
    if a.state == State::Locked && standing(a, cfg, now) == Standing::Active {
        a.clear_lock();
    }
}

/// Result of a counted failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailureOutcome {
    /// The failure was counted (the account was not already locked or disabled).
    pub counted: bool,
    /// This failure reached the limit and locked the account.
    pub locked_now: bool,
}

/// Record a failed password for a known account, from a trusted host
/// (`trusted_hosts`) or not. A failure from a trusted host during a lock
/// from untrusted ones makes the lock apply to trusted hosts too.
pub fn record_failure(a: &mut Account, cfg: &Config, now: i64, exempt: bool, trusted: bool) -> FailureOutcome {
    settle(a, cfg, now);
    a.last_failure = Some(now);
    if a.state != State::Active {
        if trusted && a.state == State::Locked {
            a.trusted_failure = true;
        }
        return FailureOutcome { counted: false, locked_now: false };
    }
    if cfg.failure_window > 0 {
        let from = now.saturating_sub(secs(cfg.failure_window));
        a.fail_times.retain(|&t| t > from && t <= now);
        if a.fail_times.is_empty() {
            // The failures counted before have all left the window.
            a.trusted_failure = false;
        }
        a.fail_times.push(now);
        let keep = if cfg.login_failure_limit > 0 { cfg.login_failure_limit as usize } else { 100 };
        if a.fail_times.len() > keep {
            a.fail_times.drain(..a.fail_times.len() - keep);
        }
        a.failures = a.fail_times.len() as u32;
    } else {
        a.fail_times.clear();
        a.failures = a.failures.saturating_add(1);
    }
    if trusted {
        a.trusted_failure = true;
    }
    let locked_now = cfg.login_failure_limit > 0 && !exempt && a.failures >= cfg.login_failure_limit;
    if locked_now {
        a.state = State::Locked;
        a.reason = Some(Reason::LoginFailureLimit);
        a.locked_at = Some(now);
    }
    FailureOutcome { counted: true, locked_now }
}

/// The last password change, as pam_unix sees days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordChange {
    /// Days since the epoch of the last change.
    Day(i64),
    /// The source demands a change now (shadow's last-change field is 0).
    MustChange,
    /// Nothing known (no aging, or the source cannot be read): never expired.
    Unknown,
}

/// Days since the epoch of a time in microseconds (pam_unix's `time / 86400`).
pub fn day_of(micros: i64) -> i64 {
    micros.div_euclid(DAY_MICROS)
}

/// The change day from the useraudit record: the recorded change, or the
/// first time the module saw the account (so turning the feature on never
/// expires everyone at once).
pub fn recorded_change(a: &Account) -> PasswordChange {
    PasswordChange::Day(day_of(a.password_changed.unwrap_or(a.first_seen)))
}

/// Where a password stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordStanding {
    Off,
    Fine { days_left: i64 },
    Warn { days_left: i64 },
    Expired,
}

/// pam_unix's arithmetic: expired when `today - changed > max`; warned
/// when `today - changed > max - warn`, with `changed + max - today` days left.
pub fn password_standing(change: PasswordChange, cfg: &Config, now: i64) -> PasswordStanding {
    let max = i64::from(cfg.password_expiry_days);
    if max == 0 {
        return PasswordStanding::Off;
    }
    let changed = match change {
        PasswordChange::Unknown => return PasswordStanding::Off,
        PasswordChange::MustChange => return PasswordStanding::Expired,
        PasswordChange::Day(d) => d,
    };
    let today = day_of(now);
    let age = today - changed;
    let days_left = changed + max - today;
    let warn = i64::from(cfg.password_expiry_warning_days);
    if age > max {
        PasswordStanding::Expired
    } else if warn > 0 && age > max - warn {
        PasswordStanding::Warn { days_left }
    } else {
        PasswordStanding::Fine { days_left }
    }
}

/// The day a password expires (chage's "Password expires").
pub fn password_expires(change: PasswordChange, cfg: &Config) -> Option<i64> {
    match (cfg.password_expiry_days, change) {
        (0, _) | (_, PasswordChange::Unknown) => None,
        (_, PasswordChange::MustChange) => Some(0),
        (max, PasswordChange::Day(d)) => Some(d + i64::from(max)),
    }
}

/// Whether an account has not been used for longer than `account_expiry_days`.
/// Measured from the last successful login or re-activation; an account
/// never seen logging in is never inactive.
pub fn inactive(a: &Account, cfg: &Config, now: i64) -> bool {
    if cfg.account_expiry_days == 0 {
        return false;
    }
    let last = match (a.last_login, a.activated_at) {
        (Some(l), Some(r)) => l.max(r),
        (Some(t), None) | (None, Some(t)) => t,
        (None, None) => return false,
    };
    now.saturating_sub(last) > i64::from(cfg.account_expiry_days) * DAY_MICROS
}

/// Whether the login is asked for by root on this machine: the real uid
/// of the process is 0, PAM_RUSER is `root` and there is no PAM_RHOST.
/// That is how `su` and `runuser` run by root set them (util-linux sets
/// PAM_RUSER to the name of the real uid); sshd and other daemons also run
/// as root but set PAM_RHOST, or no PAM_RUSER.
pub fn root_caller(real_uid: Option<u32>, ruser: Option<&[u8]>, rhost: Option<&[u8]>) -> bool {
    real_uid == Some(0) && ruser == Some(&b"root"[..]) && rhost.is_none()
}

/// The log reason when an attempt in this standing is refused, for this
/// caller: a lock from `login_failure_limit` stops guessing, and root on
/// this machine needs no password, so it does not refuse root's `su`.
/// Disables (by hand, inactivity, password) refuse everyone.
pub fn refusal_for(s: Standing, root_caller: bool) -> Option<LogReason> {
    match s {
        Standing::Locked { .. } if root_caller => None,
        _ => refusal(s),
    }
}

/// The verdict on a login whose credentials were right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginCheck {
    /// Let in; warn that the password expires in this many days.
    Allow { warn_days: Option<i64> },
    /// Already locked or disabled: refuse.
    Refuse(LogReason),
    /// Disable now for this reason, and refuse.
    Disable(Reason),
    /// Let in only after a new password has been chosen
    /// (PAM_NEW_AUTHTOK_REQD). Not a completed login: the count and the
    /// last login stay until the password hook sees the change.
    ChangePassword,
}

/// Decide a login whose credentials were right. `root_caller`: see
/// [`root_caller`].
pub fn check_login(
    a: &Account,
    cfg: &Config,
    now: i64,
    change: PasswordChange,
    exempt: bool,
    root_caller: bool,
) -> LoginCheck {
    if exempt {
        return LoginCheck::Allow { warn_days: None };
    }
    if let Some(r) = refusal_for(standing(a, cfg, now), root_caller) {
        return LoginCheck::Refuse(r);
    }
    if inactive(a, cfg, now) {
        return LoginCheck::Disable(Reason::AccountExpired);
    }
    match password_standing(change, cfg, now) {
        // shadow's last change 0 (`chage -d 0`, `passwd -e`) demands a
        // change, as pam_unix does, whatever the expired action says.
        PasswordStanding::Expired if change == PasswordChange::MustChange || a.pw_grace => LoginCheck::ChangePassword,
        PasswordStanding::Expired => match cfg.password_expired_action {
            ExpiredAction::Disable => LoginCheck::Disable(Reason::PasswordExpired),
            ExpiredAction::Change => LoginCheck::ChangePassword,
        },
        PasswordStanding::Warn { days_left } => LoginCheck::Allow { warn_days: Some(days_left) },
        PasswordStanding::Off | PasswordStanding::Fine { .. } => LoginCheck::Allow { warn_days: None },
    }
}

/// Apply a login verdict to the account.
pub fn apply_login(a: &mut Account, check: LoginCheck, cfg: &Config, now: i64) {
    settle(a, cfg, now);
    match check {
        LoginCheck::Allow { .. } => {
            a.last_login = Some(now);
            // Let in past a lock (root's su, an exempt user): the lock and
            // its count stay, so guessing stays stopped.
            if a.state != State::Locked {
                a.failures = 0;
                a.fail_times.clear();
                a.trusted_failure = false;
            }
            // The password is not expired (any more): the chance given by
            // `activate` is no longer needed.
            a.pw_grace = false;
        }
        // Not a completed login yet; `complete_change` follows when the
        // password has actually been changed. The chance given by
        // `activate` lasts until then.
        LoginCheck::ChangePassword => {}
        LoginCheck::Disable(r) => disable(a, r, now),
        LoginCheck::Refuse(_) => {}
    }
}

/// A login that was asked for a new password has changed it: it is now a
/// completed login (call after [`password_changed`]).
pub fn complete_change(a: &mut Account, cfg: &Config, now: i64) {
    apply_login(a, LoginCheck::Allow { warn_days: None }, cfg, now);
}

/// Disable for a reason (inactivity, password expiry).
pub fn disable(a: &mut Account, r: Reason, now: i64) {
    a.state = State::Disabled;
    a.reason = Some(r);
    a.locked_at = Some(now);
}

/// Re-activate: clear lock, disable and count, restart the inactivity clock.
/// Returns false when the account was already active and had no failures.
pub fn activate(a: &mut Account, cfg: &Config, now: i64) -> bool {
    settle(a, cfg, now);
    let was = a.state != State::Active || a.failures > 0;
    a.pw_grace = a.state == State::Disabled && a.reason == Some(Reason::PasswordExpired);
    a.clear_lock();
    a.activated_at = Some(now);
    was
}

/// Disable by hand, with the administrator's reason.
pub fn admin_lock(a: &mut Account, now: i64, note: Option<&[u8]>) {
    a.state = State::Disabled;
    a.reason = Some(Reason::Admin);
    a.locked_at = Some(now);
    a.note = note.map(<[u8]>::to_vec);
}

/// Record a successful password change.
pub fn password_changed(a: &mut Account, now: i64) {
    a.password_changed = Some(now);
    a.pw_grace = false;
}

/// The warning shown within `password_expiry_warning_days` of expiry.
pub fn warning_text(days: i64) -> String {
    match days {
        1 => "Warning: your password will expire in 1 day.".into(),
        n => format!("Warning: your password will expire in {n} days."),
    }
}

/// What the user is told when refused.
pub fn refusal_text(a: &Account, s: Standing, now: i64) -> Vec<String> {
    match s {
        Standing::Active => vec![],
        Standing::Locked { until, .. } => {
            let mut v = vec![format!("The account is locked due to {} failed logins.", a.failures)];
            if let Some(u) = until {
                let mins = ((u - now).max(0) + 60 * MICROS - 1) / (60 * MICROS);
                v.push(format!("({mins} minutes left to unlock)"));
            }
            v
        }
        Standing::Disabled(Reason::AccountExpired) => {
            vec!["Your account has been disabled because it was not used for too long; ask an administrator to re-activate it.".into()]
        }
        Standing::Disabled(Reason::PasswordExpired) => {
            vec![
                "Your password has expired and your account has been disabled; ask an administrator to re-activate it."
                    .into(),
            ]
        }
        Standing::Disabled(Reason::FleetFailureLimit) => vec![format!(
            "The account is locked due to {} failed logins on this and other hosts; ask an administrator to re-activate it.",
            a.failures
        )],
        Standing::Disabled(_) => vec!["Your account has been disabled by an administrator.".into()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000 * MICROS;

    fn cfg() -> Config {
        Config { login_failure_limit: 3, ..Config::default() }
    }

    #[test]
    fn locks_at_exactly_n() {
        let c = cfg();
        let mut a = Account::new(b"alice", T0);
        assert!(!record_failure(&mut a, &c, T0, false, false).locked_now);
        assert!(!record_failure(&mut a, &c, T0 + 1, false, false).locked_now);
        assert_eq!(standing(&a, &c, T0 + 2), Standing::Active);
        let o = record_failure(&mut a, &c, T0 + 2, false, false);
        assert!(o.counted && o.locked_now);
        assert_eq!(a.failures, 3);
        assert_eq!(standing(&a, &c, T0 + 3), Standing::Locked { since: T0 + 2, until: None });
        // further failures do not extend or re-lock
        let o = record_failure(&mut a, &c, T0 + 10, false, false);
        assert!(!o.counted && !o.locked_now);
        assert_eq!(a.locked_at, Some(T0 + 2));
        assert_eq!(a.failures, 3);
    }

    #[test]
    fn limit_zero_never_locks_and_exempt_never_locks() {
        let mut c = cfg();
        let mut a = Account::new(b"root", T0);
        for i in 0..10 {
            assert!(!record_failure(&mut a, &c, T0 + i, true, false).locked_now);
        }
        assert_eq!(a.failures, 10);
        c.login_failure_limit = 0;
        let mut b = Account::new(b"bob", T0);
        for i in 0..10 {
            assert!(!record_failure(&mut b, &c, T0 + i, false, false).locked_now);
        }
        assert_eq!(b.state, State::Active);
    }

    #[test]
    fn success_resets_count() {
        let c = cfg();
        let mut a = Account::new(b"alice", T0);
        record_failure(&mut a, &c, T0, false, false);
        record_failure(&mut a, &c, T0 + 1, false, false);
        let chk = check_login(&a, &c, T0 + 2, PasswordChange::Unknown, false, false);
        assert_eq!(chk, LoginCheck::Allow { warn_days: None });
        apply_login(&mut a, chk, &c, T0 + 2);
        assert_eq!(a.failures, 0);
        assert_eq!(a.last_login, Some(T0 + 2));
        record_failure(&mut a, &c, T0 + 3, false, false);
        assert_eq!(a.state, State::Active);
    }

    #[test]
    fn failure_window_is_sliding() {
        let c = Config { failure_window: 60, ..cfg() };
        let mut a = Account::new(b"alice", T0);
        record_failure(&mut a, &c, T0, false, false);
        record_failure(&mut a, &c, T0 + 30 * MICROS, false, false);
        // the first has left the window by now
        let o = record_failure(&mut a, &c, T0 + 61 * MICROS, false, false);
        assert!(!o.locked_now);
        assert_eq!(a.failures, 2);
        let o = record_failure(&mut a, &c, T0 + 62 * MICROS, false, false);
        assert!(o.locked_now);
    }

    #[test]
    fn unlock_after_lapses() {
        let c = Config { unlock_after: 600, ..cfg() };
        let mut a = Account::new(b"alice", T0);
        for i in 0..3 {
            record_failure(&mut a, &c, T0 + i, false, false);
        }
        let until = T0 + 2 + 600 * MICROS;
        assert_eq!(standing(&a, &c, until - 1), Standing::Locked { since: T0 + 2, until: Some(until) });
        assert_eq!(
            refusal_text(&a, standing(&a, &c, until - 60 * MICROS), until - 60 * MICROS)[1],
            "(1 minutes left to unlock)"
        );
        assert_eq!(standing(&a, &c, until), Standing::Active);
        // a failure after the lapse starts a new count
        let o = record_failure(&mut a, &c, until + 1, false, false);
        assert!(o.counted && !o.locked_now);
        assert_eq!(a.failures, 1);
        assert_eq!(a.state, State::Active);
    }

    #[test]
    fn refused_while_locked() {
        let c = cfg();
        let mut a = Account::new(b"alice", T0);
        for i in 0..3 {
            record_failure(&mut a, &c, T0 + i, false, false);
        }
        assert_eq!(
            check_login(&a, &c, T0 + 5, PasswordChange::Unknown, false, false),
            LoginCheck::Refuse(LogReason::Locked)
        );
        assert_eq!(
            refusal_text(&a, standing(&a, &c, T0 + 5), T0 + 5),
            vec!["The account is locked due to 3 failed logins."]
        );
        // exempt users are let in even if a lock is on record
        assert_eq!(
            check_login(&a, &c, T0 + 5, PasswordChange::Unknown, true, false),
            LoginCheck::Allow { warn_days: None }
        );
        assert!(activate(&mut a, &c, T0 + 6));
        assert_eq!(a.state, State::Active);
        assert_eq!(a.failures, 0);
        assert!(!activate(&mut a, &c, T0 + 7));
        // A fleet lock is a lock by failures, not an administrator's act.
        disable(&mut a, Reason::FleetFailureLimit, T0 + 8);
        a.failures = 6;
        assert_eq!(
            refusal_text(&a, standing(&a, &c, T0 + 9), T0 + 9),
            vec![
                "The account is locked due to 6 failed logins on this and other hosts; ask an administrator to re-activate it."
            ]
        );
    }

    #[test]
    fn inactivity() {
        let c = Config { account_expiry_days: 30, ..Config::default() };
        let mut a = Account::new(b"alice", T0);
        // never logged in: never inactive
        assert!(!inactive(&a, &c, T0 + 400 * DAY_MICROS));
        a.last_login = Some(T0);
        assert!(!inactive(&a, &c, T0 + 29 * DAY_MICROS));
        assert!(!inactive(&a, &c, T0 + 30 * DAY_MICROS));
        assert!(inactive(&a, &c, T0 + 31 * DAY_MICROS));
        let chk = check_login(&a, &c, T0 + 31 * DAY_MICROS, PasswordChange::Unknown, false, false);
        assert_eq!(chk, LoginCheck::Disable(Reason::AccountExpired));
        apply_login(&mut a, chk, &c, T0 + 31 * DAY_MICROS);
        assert_eq!(standing(&a, &c, T0 + 31 * DAY_MICROS), Standing::Disabled(Reason::AccountExpired));
        // activation restarts the clock
        activate(&mut a, &c, T0 + 40 * DAY_MICROS);
        assert!(!inactive(&a, &c, T0 + 41 * DAY_MICROS));
        assert!(inactive(&a, &c, T0 + 71 * DAY_MICROS));
        // exempt never
        assert_eq!(
            check_login(&a, &c, T0 + 71 * DAY_MICROS, PasswordChange::Unknown, true, false),
            LoginCheck::Allow { warn_days: None }
        );
    }

    #[test]
    fn password_days_like_pam_unix() {
        let c = Config { password_expiry_days: 10, password_expiry_warning_days: 3, ..Config::default() };
        let day = |d: i64| d * DAY_MICROS + 3600 * MICROS;
        let ch = PasswordChange::Day(20_000);
        assert_eq!(password_standing(ch, &c, day(20_007)), PasswordStanding::Fine { days_left: 3 });
        assert_eq!(password_standing(ch, &c, day(20_008)), PasswordStanding::Warn { days_left: 2 });
        assert_eq!(password_standing(ch, &c, day(20_010)), PasswordStanding::Warn { days_left: 0 });
        assert_eq!(password_standing(ch, &c, day(20_011)), PasswordStanding::Expired);
        assert_eq!(password_standing(PasswordChange::Unknown, &c, day(30_000)), PasswordStanding::Off);
        assert_eq!(password_standing(PasswordChange::MustChange, &c, day(1)), PasswordStanding::Expired);
        assert_eq!(password_expires(ch, &c), Some(20_010));
        let off = Config::default();
        assert_eq!(password_standing(ch, &off, day(99_999)), PasswordStanding::Off);
        assert_eq!(warning_text(1), "Warning: your password will expire in 1 day.");
        assert_eq!(warning_text(5), "Warning: your password will expire in 5 days.");
    }

    #[test]
    fn password_expiry_actions_and_grace() {
        let mut c = Config { password_expiry_days: 10, ..Config::default() };
        let mut a = Account::new(b"alice", 0);
        let now = 11 * DAY_MICROS;
        assert_eq!(
            check_login(&a, &c, now, recorded_change(&a), false, false),
            LoginCheck::Disable(Reason::PasswordExpired)
        );
        apply_login(&mut a, LoginCheck::Disable(Reason::PasswordExpired), &c, now);
        assert!(activate(&mut a, &c, now + 1));
        assert!(a.pw_grace);
        // let in once, to change it
        let chk = check_login(&a, &c, now + 2, recorded_change(&a), false, false);
        assert_eq!(chk, LoginCheck::ChangePassword);
        apply_login(&mut a, chk, &c, now + 2);
        // not used up by a login that has not changed it yet
        assert!(a.pw_grace);
        assert_eq!(check_login(&a, &c, now + 3, recorded_change(&a), false, false), LoginCheck::ChangePassword);
        password_changed(&mut a, now + 3);
        assert!(!a.pw_grace);
        assert_eq!(
            check_login(&a, &c, now + 4, recorded_change(&a), false, false),
            LoginCheck::Allow { warn_days: None }
        );
        c.password_expired_action = ExpiredAction::Change;
        let b = Account::new(b"bob", 0);
        assert_eq!(check_login(&b, &c, now, recorded_change(&b), false, false), LoginCheck::ChangePassword);
    }

    #[test]
    fn recorded_change_counts_from_first_seen() {
        let c = Config { password_expiry_days: 10, ..Config::default() };
        let a = Account::new(b"alice", 100 * DAY_MICROS);
        assert_eq!(
            password_standing(recorded_change(&a), &c, 105 * DAY_MICROS),
            PasswordStanding::Fine { days_left: 5 }
        );
    }

    #[test]
    fn root_caller_is_real_uid_0_ruser_root_and_no_rhost() {
        assert!(root_caller(Some(0), Some(b"root"), None));
        assert!(!root_caller(Some(0), Some(b"root"), Some(b"203.0.113.9")), "sshd sets PAM_RHOST");
        assert!(!root_caller(Some(0), Some(b"root"), Some(b"")));
        assert!(!root_caller(Some(0), None, None), "login on a console sets no PAM_RUSER");
        assert!(!root_caller(Some(0), Some(b"alice"), None));
        assert!(!root_caller(Some(1000), Some(b"root"), None), "PAM_RUSER is only a claim");
        assert!(!root_caller(None, Some(b"root"), None));
        assert!(!root_caller(Some(0), Some(b"root "), None));
    }

    #[test]
    fn a_lock_does_not_refuse_root_but_disables_do() {
        let c = cfg();
        let mut a = Account::new(b"svc", T0);
        for i in 0..3 {
            record_failure(&mut a, &c, T0 + i, false, false);
        }
        let now = T0 + 10;
        assert_eq!(
            check_login(&a, &c, now, PasswordChange::Unknown, false, false),
            LoginCheck::Refuse(LogReason::Locked)
        );
        let chk = check_login(&a, &c, now, PasswordChange::Unknown, false, true);
        assert_eq!(chk, LoginCheck::Allow { warn_days: None });
        apply_login(&mut a, chk, &c, now);
        // let in without lifting the lock: guessing stays stopped
        assert_eq!((a.state, a.failures, a.locked_at), (State::Locked, 3, Some(T0 + 2)));
        assert_eq!(a.last_login, Some(now));
        assert_eq!(
            check_login(&a, &c, now + 1, PasswordChange::Unknown, false, false),
            LoginCheck::Refuse(LogReason::Locked)
        );
        // disabled by hand, and expiry, refuse root too
        admin_lock(&mut a, now, None);
        assert_eq!(
            check_login(&a, &c, now + 2, PasswordChange::Unknown, false, true),
            LoginCheck::Refuse(LogReason::Disabled)
        );
        let mut b = Account::new(b"old", T0);
        disable(&mut b, Reason::AccountExpired, T0);
        assert_eq!(
            check_login(&b, &c, now, PasswordChange::Unknown, false, true),
            LoginCheck::Refuse(LogReason::AccountExpired)
        );
        let ce = Config { account_expiry_days: 30, ..cfg() };
        let mut d = Account::new(b"idle", T0);
        d.last_login = Some(T0);
        assert_eq!(
            check_login(&d, &ce, T0 + 31 * DAY_MICROS, PasswordChange::Unknown, false, true),
            LoginCheck::Disable(Reason::AccountExpired)
        );
        assert_eq!(refusal_for(Standing::Locked { since: T0, until: None }, true), None);
        assert_eq!(refusal_for(Standing::Disabled(Reason::Admin), true), Some(LogReason::Disabled));
    }

    #[test]
    fn a_lock_taken_with_the_clock_ahead_counts_from_now() {
        let c = Config { unlock_after: 900, ..cfg() };
        let ahead = T0 + 365 * DAY_MICROS;
        let mut a = Account::new(b"alice", ahead);
        for i in 0..3 {
            record_failure(&mut a, &c, ahead + i, false, false);
        }
        assert_eq!(a.state, State::Locked);
        // back at the real time: 15 minutes, not a year
        let until = T0 + 900 * MICROS;
        assert_eq!(standing(&a, &c, T0), Standing::Locked { since: T0, until: Some(until) });
        assert_eq!(refusal_text(&a, standing(&a, &c, T0), T0)[1], "(15 minutes left to unlock)");
        assert!(has_future_times(&a, T0));
        assert!(clamp_future_times(&mut a, T0));
        assert!(!has_future_times(&a, T0) && !clamp_future_times(&mut a, T0));
        assert_eq!((a.locked_at, a.last_failure, a.first_seen), (Some(T0), Some(T0), T0));
        assert_eq!(standing(&a, &c, until - 1), Standing::Locked { since: T0, until: Some(until) });
        assert_eq!(standing(&a, &c, until), Standing::Active);
    }

    #[test]
    fn other_future_times_count_from_now() {
        // failures in a window, recorded ahead, count from now
        let c = Config { failure_window: 60, ..cfg() };
        let ahead = T0 + 365 * DAY_MICROS;
        let mut a = Account::new(b"alice", T0);
        record_failure(&mut a, &c, ahead, false, false);
        record_failure(&mut a, &c, ahead + 1, false, false);
        let o = record_failure(&mut a, &c, T0, false, false);
        assert!(o.locked_now, "the two from the future count: {a:?}");
        assert_eq!(a.fail_times, vec![T0, T0, T0]);
        // a last login ahead: inactivity counts from when it is next seen
        let ce = Config { account_expiry_days: 30, ..Config::default() };
        let mut b = Account::new(b"bob", T0);
        b.last_login = Some(ahead);
        b.password_changed = Some(ahead);
        record_failure(&mut b, &ce, T0, false, false);
        assert_eq!((b.last_login, b.password_changed), (Some(T0), Some(T0)));
        assert!(inactive(&b, &ce, T0 + 31 * DAY_MICROS));
    }

    #[test]
    fn shadow_last_change_0_demands_a_change_whatever_the_action() {
        let mut c = Config { password_expiry_days: 10, ..Config::default() };
        assert_eq!(c.password_expired_action, ExpiredAction::Disable);
        let a = Account::new(b"alice", T0);
        assert_eq!(check_login(&a, &c, T0, PasswordChange::MustChange, false, false), LoginCheck::ChangePassword);
        c.password_expired_action = ExpiredAction::Change;
        assert_eq!(check_login(&a, &c, T0, PasswordChange::MustChange, false, false), LoginCheck::ChangePassword);
        // an old password still follows the action
        c.password_expired_action = ExpiredAction::Disable;
        assert_eq!(
            check_login(&a, &c, T0, PasswordChange::Day(day_of(T0) - 11), false, false),
            LoginCheck::Disable(Reason::PasswordExpired)
        );
    }

    #[test]
    fn a_demanded_change_is_not_a_completed_login() {
        let c = Config { password_expiry_days: 10, password_expired_action: ExpiredAction::Change, ..cfg() };
        let mut a = Account::new(b"alice", 0);
        a.last_login = Some(DAY_MICROS);
        let now = 11 * DAY_MICROS;
        record_failure(&mut a, &c, now, false, false);
        let chk = check_login(&a, &c, now + 1, recorded_change(&a), false, false);
        assert_eq!(chk, LoginCheck::ChangePassword);
        apply_login(&mut a, chk, &c, now + 1);
        assert_eq!((a.failures, a.last_login), (1, Some(DAY_MICROS)), "nothing moves yet");
        password_changed(&mut a, now + 2);
        complete_change(&mut a, &c, now + 2);
        assert_eq!((a.failures, a.last_login), (0, Some(now + 2)));
        assert_eq!(
            check_login(&a, &c, now + 3, recorded_change(&a), false, false),
            LoginCheck::Allow { warn_days: None }
        );
    }

    #[test]
    fn lock_scope_follows_where_the_failures_came_from() {
        let c = cfg();
        let mut a = Account::new(b"alice", T0);
        for i in 0..3 {
            record_failure(&mut a, &c, T0 + i, false, false);
        }
        assert_eq!(lock_scope(&a), Some(LockScope::Untrusted));
        assert!(lock_spares(&a, true) && !lock_spares(&a, false));
        // the owner from a trusted host gets in; the lock and its count stay
        let chk = check_login(&a, &c, T0 + 5, PasswordChange::Unknown, false, lock_spares(&a, true));
        assert_eq!(chk, LoginCheck::Allow { warn_days: None });
        apply_login(&mut a, chk, &c, T0 + 5);
        assert_eq!((a.state, a.failures), (State::Locked, 3));
        assert!(matches!(check_login(&a, &c, T0 + 6, PasswordChange::Unknown, false, false), LoginCheck::Refuse(_)));
        // one failure from a trusted host: the lock applies everywhere
        record_failure(&mut a, &c, T0 + 7, false, true);
        assert_eq!(lock_scope(&a), Some(LockScope::All));
        assert!(!lock_spares(&a, true));
        // a trusted failure among those that lock: "all" from the start
        let mut b = Account::new(b"bob", T0);
        record_failure(&mut b, &c, T0, false, true);
        activate(&mut b, &c, T0 + 1);
        assert!(!b.trusted_failure, "activate starts afresh");
        record_failure(&mut b, &c, T0 + 2, false, true);
        record_failure(&mut b, &c, T0 + 3, false, false);
        record_failure(&mut b, &c, T0 + 4, false, false);
        assert_eq!(lock_scope(&b), Some(LockScope::All));
        // locks by hand apply everywhere
        let mut d = Account::new(b"dave", T0);
        admin_lock(&mut d, T0, None);
        assert_eq!(lock_scope(&d), Some(LockScope::All));
        assert_eq!(lock_scope(&Account::new(b"erin", T0)), None);
    }
}
