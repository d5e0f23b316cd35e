//! `useraudit-admin report`: the picture of a span of the login log —
//! totals, a chart of successes and failures per day (or hour), the top
//! remote hosts and names by failures, the accounts locked or disabled
//! now, and successful logins from a host new for the user.
//!
//! [`build`] gathers the data in one pass over the span (streamed from
//! the store, aggregated here), plus one indexed look-up per (user, host)
//! pair that logged in during the span; [`chart`] draws the chart for a
//! terminal. Tables and JSON are written by `main.rs`, like every other
//! command's output.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use useraudit_core::config::Config;
use useraudit_core::policy::{self, Standing};
use useraudit_core::state::{self, Accounts};
use useraudit_core::sys::{self, Lookup};
use useraudit_core::text::{DAY_MICROS, MICROS};

use crate::commands::{AdminError, Result};
use crate::store::Store;

/// Rows of each "top" table.
pub const TOP: usize = 10;
/// New-host logins listed (the total is given beside them).
pub const NEW_HOSTS_MAX: usize = 50;
/// Spans up to this long are charted per hour, longer ones per day.
pub const HOURLY_SPAN: i64 = 48 * 3600 * MICROS;
/// NSS look-ups at most, for names that have no account state file (see
/// [`build`]): a brute-force attack can bring thousands of distinct
/// names, and each look-up may ask a directory server.
pub const NSS_LOOKUPS_MAX: usize = 2000;

/// Longest span reported, in days (a hundred years): one chart line each.
pub const MAX_BUCKETS: i64 = 36_600;

const HOUR_MICROS: i64 = 3600 * MICROS;

/// The chart's time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Hour,
    Day,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Hour => "hour",
            Unit::Day => "day",
        }
    }
    fn micros(self) -> i64 {
        match self {
            Unit::Hour => HOUR_MICROS,
            Unit::Day => DAY_MICROS,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    /// Distinct names tried in the span that are not accounts.
    pub unknown_names: u64,
    /// Distinct remote hosts (PAM_RHOST set and not empty) in the span.
    pub remote_hosts: u64,
}

/// One bar of the chart: the attempts in [start, start + unit), UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub successes: u64,
    pub failures: u64,
}

/// A remote host of the top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub host: Vec<u8>,
    pub failures: u64,
    pub successes: u64,
    /// "blocked" or "trusted": see [`host_mark`].
    pub mark: Option<&'static str>,
}

/// A name of the top list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRow {
    pub user: Vec<u8>,
    pub failures: u64,
    pub successes: u64,
    /// False: not an account (see [`build`]).
    pub account: bool,
}

/// An account locked or disabled now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub user: Vec<u8>,
    /// "locked" or "disabled".
    pub state: &'static str,
    pub reason: &'static str,
    /// When it was locked or disabled.
    pub since: Option<i64>,
    /// When a lock ends by itself (`unlock_after`).
    pub until: Option<i64>,
}

/// A user's successful login(s) in the span from a remote host that the
/// user had not logged in from before the span (in the log kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewHost {
    pub user: Vec<u8>,
    pub rhost: Vec<u8>,
    /// The first such login in the span.
    pub first: i64,
    /// Successful logins of this user from this host in the span.
    pub logins: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub since: i64,
    pub until: i64,
    pub unit: Unit,
    pub totals: Totals,
    pub buckets: Vec<Bucket>,
    pub top_hosts: Vec<HostRow>,
    pub top_names: Vec<NameRow>,
    pub accounts: Vec<AccountRow>,
    /// Newest first, at most [`NEW_HOSTS_MAX`].
    pub new_hosts: Vec<NewHost>,
    pub new_hosts_total: u64,
}

/// The mark of `host` in the top list: "blocked" (blocked now by
/// `host_failure_limit` or `block`) or "trusted" (in `trusted_hosts`).
pub fn host_mark(marks: &crate::hosts::Marks, host: &[u8]) -> Option<&'static str> {
    marks.of(host)
}

/// The chart's unit for a span.
pub fn unit_for(since: i64, until: i64) -> Unit {
    if until.saturating_sub(since) <= HOURLY_SPAN { Unit::Hour } else { Unit::Day }
}

/// A user's successful logins from remote hosts in the span: per host,
/// the first one's time and how many.
type Logins = HashMap<Vec<u8>, (i64, u64)>;

/// Counts per key; the key allocated only when new.
#[derive(Default)]
struct Tally(HashMap<Vec<u8>, (u64, u64)>);

impl Tally {
    fn add(&mut self, key: &[u8], success: bool) {
        let c = match self.0.get_mut(key) {
            Some(c) => c,
            None => self.0.entry(key.to_vec()).or_default(),
        };
        if success {
            c.1 += 1;
        } else {
            c.0 += 1;
        }
    }

    /// The `n` keys with most failures (ties: the byte order of the key),
    /// only keys with failures.
    fn top(&self, n: usize) -> Vec<(&[u8], u64, u64)> {
        let mut v: Vec<(&[u8], u64, u64)> =
            self.0.iter().filter(|(_, c)| c.0 > 0).map(|(k, c)| (&k[..], c.0, c.1)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        v.truncate(n);
        v
    }
}

/// Gather the report of [since, until).
///
/// A name is **not an account** when it has no account state file and
/// NSS does not know it: the module writes a state file for every account
/// that an attempt reaches, and none for other names, so the state files
/// answer for nearly every name; NSS is asked only about names without a
/// state file (a name typed in another case, say), at most
/// [`NSS_LOOKUPS_MAX`] of them; past that, such names count as not
/// accounts. An NSS error counts as an account (never marks a real one).
pub fn build(store: &Store, accounts: &Accounts, cfg: &Config, since: i64, until: i64, now: i64) -> Result<Report> {
    let unit = unit_for(since, until);
    let step = unit.micros();
    let first = since.div_euclid(step) * step;
    let n_buckets = if until > since { ((until - 1).div_euclid(step) * step - first) / step + 1 } else { 0 };
    if n_buckets > MAX_BUCKETS {
        return Err(AdminError::Refused(format!(
            "the span from {} to {} is too long for the chart: at most {MAX_BUCKETS} days",
            useraudit_core::text::rfc3339(since),
            useraudit_core::text::rfc3339(until)
        )));
    }
    let mut buckets: Vec<Bucket> =
        (0..n_buckets).map(|i| Bucket { start: first + i * step, successes: 0, failures: 0 }).collect();
    let mut totals = Totals::default();
    let mut hosts = Tally::default();
    let mut names = Tally::default();
    let mut logins: HashMap<Vec<u8>, Logins> = HashMap::new();
    store.scan_attempts(since, until, |r| {
        totals.attempts += 1;
        let i = usize::try_from((r.time - first).div_euclid(step)).unwrap_or(0);
        if let Some(b) = buckets.get_mut(i) {
            if r.success {
                b.successes += 1;
            } else {
                b.failures += 1;
            }
        }
        if r.success {
            totals.successes += 1;
        } else {
            totals.failures += 1;
        }
        names.add(r.user, r.success);
        if let Some(h) = r.rhost.filter(|h| !h.is_empty()) {
            hosts.add(h, r.success);
            if r.success {
                let per_user = match logins.get_mut(r.user) {
                    Some(m) => m,
                    None => logins.entry(r.user.to_vec()).or_default(),
                };
                let e = match per_user.get_mut(h) {
                    Some(e) => e,
                    None => per_user.entry(h.to_vec()).or_insert((r.time, 0)),
                };
                e.0 = e.0.min(r.time);
                e.1 += 1;
            }
        }
    })?;
    totals.remote_hosts = hosts.0.len() as u64;

    // Account state: the names that are accounts, and those locked or disabled now.
    let (all, _damaged) = accounts.list().map_err(AdminError::AccountState)?;
    let with_state: HashSet<&[u8]> = all.iter().map(|a| &a.user[..]).collect();
    let mut lookups = 0usize;
    let mut is_account = |user: &[u8]| -> bool {
        // A damaged state file still names an account.
        if with_state.contains(user) || accounts.dir().join(state::file_name(user)).exists() {
            return true;
        }
        if lookups >= NSS_LOOKUPS_MAX {
            return false;
        }
        lookups += 1;
        !matches!(sys::lookup_user(user), Lookup::NotFound)
    };
    // The top names first, so that they are always looked up.
    let top_names: Vec<NameRow> = names
        .top(TOP)
        .into_iter()
        .map(|(user, failures, successes)| NameRow { user: user.to_vec(), failures, successes, account: true })
        .collect();
    let mut known: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for r in &top_names {
        known.insert(r.user.clone(), is_account(&r.user));
    }
    let top_names = top_names.into_iter().map(|r| NameRow { account: known[&r.user], ..r }).collect();
    let mut sorted: Vec<&Vec<u8>> = names.0.keys().collect();
    sorted.sort();
    for user in sorted {
        let account = match known.get(user) {
            Some(&k) => k,
            None => is_account(user),
        };
        if !account {
            totals.unknown_names += 1;
        }
    }

    let mut locked: Vec<AccountRow> = all
        .iter()
        .filter_map(|a| {
            let (state, reason, until) = match policy::standing(a, cfg, now) {
                Standing::Active => return None,
                Standing::Locked { until, .. } => ("locked", policy::Reason::LoginFailureLimit.as_str(), until),
                Standing::Disabled(r) => ("disabled", r.as_str(), None),
            };
            Some(AccountRow { user: a.user.clone(), state, reason, since: a.locked_at, until })
        })
        .collect();
    locked.sort_by(|a, b| a.user.cmp(&b.user));

    let mut new_hosts = Vec::new();
    for (user, per_host) in &logins {
        for (rhost, &(first, n)) in per_host {
            if !store.logged_in_before(user, rhost, since)? {
                new_hosts.push(NewHost { user: user.clone(), rhost: rhost.clone(), first, logins: n });
            }
        }
    }
    new_hosts
        .sort_by(|a, b| b.first.cmp(&a.first).then_with(|| a.user.cmp(&b.user)).then_with(|| a.rhost.cmp(&b.rhost)));
    let new_hosts_total = new_hosts.len() as u64;
    new_hosts.truncate(NEW_HOSTS_MAX);

    let marks = crate::hosts::Marks::new(cfg, now);
    let top_hosts = hosts
        .top(TOP)
        .into_iter()
        .map(|(host, failures, successes)| HostRow {
            host: host.to_vec(),
            failures,
            successes,
            mark: host_mark(&marks, host),
        })
        .collect();
    Ok(Report {
        since,
        until,
        unit,
        totals,
        buckets,
        top_hosts,
        top_names,
        accounts: locked,
        new_hosts,
        new_hosts_total,
    })
}

/// Whether the locale's character set is UTF-8, from the first of
/// `LC_ALL`, `LC_CTYPE` and `LANG` that is set and not empty (as
/// setlocale(3) chooses); none set is the C locale, ASCII.
pub fn utf8_locale(var: impl Fn(&str) -> Option<String>) -> bool {
    ["LC_ALL", "LC_CTYPE", "LANG"]
        .iter()
        .find_map(|k| var(k).filter(|v| !v.is_empty()))
        .map(|v| {
            let v = v.to_ascii_lowercase();
            v.contains("utf-8") || v.contains("utf8")
        })
        .unwrap_or(false)
}

/// The width to draw for: `COLUMNS` when it is a number, else the
/// terminal's width when standard output is one, else 80.
pub fn terminal_width(var: impl Fn(&str) -> Option<String>) -> usize {
    if let Some(n) = var("COLUMNS").and_then(|c| c.trim().parse::<usize>().ok()).filter(|&n| n > 0) {
        return n;
    }
    match terminal_size::terminal_size_of(std::io::stdout()) {
        Some((terminal_size::Width(w), _)) if w > 0 => usize::from(w),
        _ => 80,
    }
}

/// Narrowest bar drawn, whatever the width.
const BAR_MIN: usize = 10;

/// The chart of the report's buckets, one line per bucket, each at most
/// `width` characters (unless even a bar of [`BAR_MIN`] does not fit):
/// the bucket's start (UTC), a bar of failures then successes scaled to
/// the largest bucket, and the counts. `unicode`: block characters (█
/// failures, ░ successes), else `#` and `=`.
pub fn chart(r: &Report, width: usize, unicode: bool) -> Vec<String> {
    let (fail, ok) = if unicode { ('█', '░') } else { ('#', '=') };
    let label = |t: i64| match r.unit {
        Unit::Day => useraudit_core::text::date(t),
        // "2026-11-25 14:00"
        Unit::Hour => {
            let s = useraudit_core::text::rfc3339(t);
            format!("{} {}", &s[..10], &s[11..16])
        }
    };
    let max = r.buckets.iter().map(|b| b.failures + b.successes).max().unwrap_or(0);
    let wf = r.buckets.iter().map(|b| b.failures.to_string().len()).max().unwrap_or(1);
    let ws = r.buckets.iter().map(|b| b.successes.to_string().len()).max().unwrap_or(1);
    let lw = match r.unit {
        Unit::Day => 10,
        Unit::Hour => 16,
    };
    // label, 2 spaces, bar, 2 spaces, "F failed  S ok"
    let fixed = lw + 2 + 2 + wf + " failed  ".len() + ws + " ok".len();
    let bw = width.saturating_sub(fixed).max(BAR_MIN);
    let mut out = vec![format!(
        "Attempts per {} (UTC): {fail} failed, {ok} succeeded; the longest bar is {}",
        r.unit.as_str(),
        useraudit_core::text::plural(i64::try_from(max).unwrap_or(i64::MAX), "attempt")
    )];
    for b in &r.buckets {
        let (f, s) = cells(b.failures, b.successes, max, bw);
        let bar: String = std::iter::repeat_n(fail, f).chain(std::iter::repeat_n(ok, s)).collect();
        out.push(format!(
            "{:<lw$}  {bar}{}  {:>wf$} failed  {:>ws$} ok",
            label(b.start),
            " ".repeat(bw - f - s),
            b.failures,
            b.successes
        ));
    }
    out
}

/// Cells of failures and successes in a bar of `bw` for the largest
/// bucket `max`: rounded to the nearest cell, a count above 0 gets at
/// least one.
fn cells(failures: u64, successes: u64, max: u64, bw: usize) -> (usize, usize) {
    if max == 0 {
        return (0, 0);
    }
    let bw64 = bw as u64;
    let scale = |n: u64| -> usize {
        let c = (u128::from(n) * u128::from(bw64) + u128::from(max) / 2) / u128::from(max);
        usize::try_from(c).unwrap_or(bw)
    };
    let total = scale(failures + successes).max(usize::from(failures > 0) + usize::from(successes > 0));
    let mut f = scale(failures).max(usize::from(failures > 0));
    if successes > 0 && f >= total {
        f = total - 1;
    }
    (f, total - f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_round_and_never_hide_a_count() {
        assert_eq!(cells(0, 0, 0, 10), (0, 0));
        assert_eq!(cells(5, 5, 10, 10), (5, 5));
        assert_eq!(cells(1, 0, 1000, 10), (1, 0));
        assert_eq!(cells(0, 1, 1000, 10), (0, 1));
        assert_eq!(cells(1, 1, 1000, 10), (1, 1));
        assert_eq!(cells(999, 1, 1000, 10), (9, 1));
        assert_eq!(cells(1000, 0, 1000, 10), (10, 0));
    }

    #[test]
    fn locale() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert!(!utf8_locale(env(&[])));
        assert!(utf8_locale(env(&[("LANG", "en_US.UTF-8")])));
        assert!(utf8_locale(env(&[("LANG", "C"), ("LC_CTYPE", "de_DE.utf8")])));
        assert!(!utf8_locale(env(&[("LANG", "en_US.UTF-8"), ("LC_ALL", "C")])));
        assert!(utf8_locale(env(&[("LC_ALL", ""), ("LANG", "C.UTF-8")])));
        assert_eq!(terminal_width(env(&[("COLUMNS", "132")])), 132);
    }

    #[test]
    fn units() {
        assert_eq!(unit_for(0, HOURLY_SPAN), Unit::Hour);
        assert_eq!(unit_for(0, HOURLY_SPAN + 1), Unit::Day);
    }
}
