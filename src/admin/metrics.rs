//! `useraudit-admin metrics`: the Prometheus text format, for
//! node_exporter's textfile collector.
//!
//! The attempt counters come from the store's merge-time counters (kept in
//! the same transaction as the entries they count), never from counting
//! log rows, so they do not go down when `retention_days` deletes old
//! entries. [`render`] makes the text; [`write_file`] replaces a file
//! atomically; [`update_file`] does both for the configuration's
//! `metrics_file`, for the daemon to call after each merge.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use useraudit_core::config::Config;
use useraudit_core::policy::{self, Standing};
use useraudit_core::text::{MICROS, escape};

use crate::commands::{AdminError, Db, Result};
use crate::store::{AttemptCount, MergeStats, OTHER_SERVICE, SERVICE_CAP, Store};
use useraudit_core::state::Accounts;

/// The label value of the services past the store's cap.
pub const OTHER_SERVICE_LABEL: &str = "(other)";

/// Everything the metrics show, gathered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// None when the log cannot be read (the spool was not merged).
    pub attempts: Option<Vec<AttemptCount>>,
    pub merge: Option<MergeStats>,
    /// Whether this run merged the spool.
    pub merged: bool,
    /// Accounts with a state file, by state now: active, locked, disabled.
    pub accounts: [u64; 3],
    /// Bytes and entries waiting in the spool; None when it cannot be read.
    pub backlog: Option<(u64, u64)>,
    /// Remote hosts blocked now; None when hosts are not counted.
    pub blocked_hosts: Option<u64>,
    /// With a `[fleet]` table and a readable log: when a fleet sync last
    /// completed, and the entries not yet in the fleet log.
    pub fleet: Option<(Option<i64>, i64)>,
}

/// Gather the metrics of an opened database (its spool already merged,
/// or not: see [`Db::problem`]).
pub fn snapshot(cfg: &Config, db: &Db, now: i64) -> Result<Snapshot> {
    snapshot_of(cfg, db.log().ok(), &db.accounts, db.problem().is_none(), now)
}

/// The same from its parts: the store when it could be opened, and
/// whether the spool was merged (the daemon keeps these itself).
pub fn snapshot_of(cfg: &Config, store: Option<&Store>, accts: &Accounts, merged: bool, now: i64) -> Result<Snapshot> {
    let (attempts, merge) = match store {
        Some(store) => (Some(store.attempt_counts()?), Some(store.merge_stats()?)),
        None => (None, None),
    };
    let fleet = match (store, &cfg.fleet) {
        (Some(store), Some(_)) => Some(crate::fleet::progress(cfg, store)?),
        _ => None,
    };
    let (all, _damaged) = accts.list().map_err(AdminError::AccountState)?;
    let mut accounts = [0u64; 3];
    for a in &all {
        let i = match policy::standing(a, cfg, now) {
            Standing::Active => 0,
            Standing::Locked { .. } => 1,
            Standing::Disabled(_) => 2,
        };
        accounts[i] += 1;
    }
    let backlog = useraudit_core::spool::backlog(&cfg.database).ok();
    let blocked_hosts = (cfg.host_failure_limit > 0).then(|| crate::hosts::Marks::new(cfg, now).blocked());
    Ok(Snapshot { attempts, merge, merged, accounts, backlog, blocked_hosts, fleet })
}

/// A label value in the exposition format: the stored bytes escaped as
/// the tables show them (`\xff`, `\\`, control characters), then `\`,
/// `"` and newline escaped as the format wants.
pub fn label_value(b: &[u8]) -> String {
    let s = escape(b);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
}

/// The text format of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    if let Some(counts) = &s.attempts {
        family(
            &mut out,
            "useraudit_attempts_total",
            "counter",
            &format!(
                "Login attempts merged into the log, by outcome, PAM service and reason (empty: none); at most {SERVICE_CAP} services apart, the rest as service=\"{OTHER_SERVICE_LABEL}\"."
            ),
        );
        // Summed by the rendered labels, so no series can appear twice.
        let mut series: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        for c in counts {
            let service =
                if c.service == OTHER_SERVICE { OTHER_SERVICE_LABEL.to_string() } else { label_value(&c.service) };
            let key = (label_value(c.outcome.as_bytes()), service, label_value(c.reason.as_bytes()));
            *series.entry(key).or_default() += c.n;
        }
        for ((outcome, service, reason), n) in series {
            out.push_str(&format!(
                "useraudit_attempts_total{{outcome=\"{outcome}\",service=\"{service}\",reason=\"{reason}\"}} {n}\n"
            ));
        }
    }
    if let Some(m) = &s.merge {
        family(
            &mut out,
            "useraudit_spool_dropped_entries_total",
            "counter",
            "Log entries the PAM module dropped at the spool's bound (spool_max_bytes).",
        );
        out.push_str(&format!("useraudit_spool_dropped_entries_total {}\n", m.dropped));
        if let Some(t) = m.last_merge {
            family(
                &mut out,
                "useraudit_last_merge_timestamp_seconds",
                "gauge",
                "When the log spool was last merged into the database, complete.",
            );
            out.push_str(&format!("useraudit_last_merge_timestamp_seconds {}\n", seconds(t)));
        }
    }
    family(
        &mut out,
        "useraudit_merge_ok",
        "gauge",
        "1 when this update merged the log spool, 0 when it could not (see syslog).",
    );
    out.push_str(&format!("useraudit_merge_ok {}\n", u8::from(s.merged)));
    family(&mut out, "useraudit_accounts", "gauge", "Accounts with recorded state, by their state now.");
    for (state, n) in ["active", "locked", "disabled"].iter().zip(s.accounts) {
        out.push_str(&format!("useraudit_accounts{{state=\"{state}\"}} {n}\n"));
    }
    if let Some(n) = s.blocked_hosts {
        family(&mut out, "useraudit_blocked_hosts", "gauge", "Remote hosts blocked now (host_failure_limit or block).");
        out.push_str(&format!("useraudit_blocked_hosts {n}\n"));
    }
    if let Some((bytes, entries)) = s.backlog {
        family(
            &mut out,
            "useraudit_spool_backlog_bytes",
            "gauge",
            "Bytes of log spool waiting to be merged into the database.",
        );
        out.push_str(&format!("useraudit_spool_backlog_bytes {bytes}\n"));
        family(
            &mut out,
            "useraudit_spool_backlog_entries",
            "gauge",
            "Log entries waiting in the spool to be merged into the database.",
        );
        out.push_str(&format!("useraudit_spool_backlog_entries {entries}\n"));
    }
    if let Some((last_sync, waiting)) = s.fleet {
        family(
            &mut out,
            "useraudit_fleet_waiting_entries",
            "gauge",
            "Log entries of this host not yet sent to the fleet log in PostgreSQL.",
        );
        out.push_str(&format!("useraudit_fleet_waiting_entries {waiting}\n"));
        if let Some(t) = last_sync {
            family(
                &mut out,
                "useraudit_fleet_last_sync_timestamp_seconds",
                "gauge",
                "When a fleet sync (push, admin actions, fleet lockout) last completed.",
            );
            out.push_str(&format!("useraudit_fleet_last_sync_timestamp_seconds {}\n", seconds(t)));
        }
    }
    out
}

/// Microseconds as seconds with a fraction.
fn seconds(t: i64) -> String {
    format!("{}.{:06}", t.div_euclid(MICROS), t.rem_euclid(MICROS))
}

/// Replace `path` with `text` atomically: a temporary file in the same
/// directory (never followed if it is a link, replaced if a crash left it),
/// mode 0644, written and synced, then renamed over `path`. A reader (the
/// collector) sees the old file or the new one, never a part.
pub fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let name =
        path.file_name().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"))?;
    // Not ending in .prom, so the collector never reads it.
    let tmp = path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let open = || {
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o644).custom_flags(libc::O_NOFOLLOW).open(&tmp)
    };
    let mut f = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp)?;
            open()?
        }
        r => r?,
    };
    let r = (|| {
        // The umask may have taken bits away.
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Write the metrics to the configuration's `metrics_file`, if set (for
/// `useraudit-admin daemon`, after each merge). Returns whether a file
/// was written.
pub fn update_file(cfg: &Config, db: &Db, now: i64) -> Result<bool> {
    let Some(path) = &cfg.metrics_file else {
        return Ok(false);
    };
    let text = render(&snapshot(cfg, db, now)?);
    write_file(path, &text).map_err(|e| AdminError::io(format!("metrics file {}", path.display()), e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value(b"ssh\"d"), "ssh\\\"d");
        assert_eq!(label_value(b"a\nb"), "a\\\\nb");
        assert_eq!(label_value(b"a\\b"), "a\\\\\\\\b");
        assert_eq!(label_value(b"\xff"), "\\\\xff");
    }

    #[test]
    fn render_sums_series_that_render_alike_and_marks_the_rest() {
        let c = |service: &[u8], n| AttemptCount {
            service: service.to_vec(),
            outcome: "failure".into(),
            reason: "auth".into(),
            n,
        };
        let s = Snapshot {
            attempts: Some(vec![c(OTHER_SERVICE, 2), c(b"(other)", 3), c(b"sshd", 4)]),
            merge: Some(MergeStats { last_merge: Some(1_500_000), dropped: 0 }),
            merged: true,
            accounts: [1, 2, 3],
            backlog: Some((0, 0)),
            blocked_hosts: Some(2),
            fleet: Some((Some(2_000_000), 7)),
        };
        let t = render(&s);
        assert!(
            t.contains("useraudit_attempts_total{outcome=\"failure\",service=\"(other)\",reason=\"auth\"} 5\n"),
            "{t}"
        );
        assert!(t.contains("service=\"sshd\",reason=\"auth\"} 4\n"), "{t}");
        assert!(t.contains("\nuseraudit_blocked_hosts 2\n"), "{t}");
        assert!(t.contains("useraudit_last_merge_timestamp_seconds 1.500000\n"), "{t}");
        assert!(t.contains("useraudit_accounts{state=\"disabled\"} 3\n"), "{t}");
        assert!(t.contains("\nuseraudit_fleet_waiting_entries 7\n"), "{t}");
        assert!(t.contains("\nuseraudit_fleet_last_sync_timestamp_seconds 2.000000\n"), "{t}");
    }

    #[test]
    fn write_file_replaces_with_mode_0644() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("useraudit.prom");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // a temporary file left by a crash
        std::fs::write(d.path().join(format!(".useraudit.prom.tmp-{}", std::process::id())), "x").unwrap();
        write_file(&p, "new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temporary file left");
    }
}
