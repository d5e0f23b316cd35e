//! `hosts`, `block` and `unblock`: the remote-host state files
//! (`DATABASE.hosts/`, see `useraudit_core::hosts`) seen and changed by
//! the administrator, through the same functions as the module.
#![forbid(unsafe_code)]

use useraudit_core::config::Config;
use useraudit_core::hosts::{self, Block, BlockReason, HostState, Hosts, Net};
use useraudit_core::sys;
use useraudit_core::text::escape;

use crate::commands::{AdminError, Result};

/// One host as `hosts` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub host: Vec<u8>,
    /// "active" or "blocked".
    pub state: &'static str,
    /// "host_failure_limit" or "admin" while blocked.
    pub reason: Option<&'static str>,
    /// The administrator's words (`block --reason`).
    pub note: Option<Vec<u8>>,
    /// Failures within `host_failure_window`.
    pub failures: u64,
    pub last_failure: Option<i64>,
    pub blocked_at: Option<i64>,
    pub unblocks_at: Option<i64>,
}

/// The host state directory; None when no host was ever recorded (it is
/// made only by the module's first counted failure, or by `block`).
pub fn open(cfg: &Config, create: bool) -> Result<Option<Hosts>> {
    let dir = useraudit_core::files::beside(&cfg.database, ".hosts");
    if !create && std::fs::symlink_metadata(&dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(None);
    }
    Ok(Some(Hosts::open(&cfg.database, create, sys::euid() == 0)?))
}

fn row(cfg: &Config, h: &HostState, now: i64) -> HostRow {
    let b = hosts::block_at(h, now);
    HostRow {
        host: h.key.clone(),
        state: if b.is_some() { "blocked" } else { "active" },
        reason: b.map(|b| b.reason.as_str()),
        note: b.and_then(|b| b.note.clone()),
        failures: hosts::failures_at(h, cfg.host_failure_window, now) as u64,
        last_failure: h.last_failure,
        blocked_at: b.map(|b| b.at),
        unblocks_at: b.and_then(|b| b.until),
    }
}

/// `hosts [--blocked]`: every recorded host, by key; files that cannot be
/// read come back as problems beside the rows.
pub fn list(cfg: &Config, blocked_only: bool, now: i64) -> Result<(Vec<HostRow>, Vec<AdminError>)> {
    let Some(hs) = open(cfg, false)? else { return Ok((Vec::new(), Vec::new())) };
    let (all, bad) = hs.list()?;
    let rows = all.iter().map(|h| row(cfg, h, now)).filter(|r| !blocked_only || r.state == "blocked").collect();
    Ok((rows, bad.iter().map(|e| AdminError::Problem(format!("host state {e}"))).collect()))
}

/// The key a host given on the command line is stored under; refused when
/// it is empty.
fn key(cfg: &Config, host: &[u8]) -> Result<Vec<u8>> {
    if host.is_empty() {
        return Err(AdminError::Refused("an empty host name is not a host".into()));
    }
    Ok(hosts::key_for_admin(host, cfg.host_ipv6_prefix))
}

/// Whether the host is in `trusted_hosts` (an address or a network given
/// by its key).
pub fn trusted(cfg: &Config, key: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(key) else { return false };
    let addr = s.parse().ok().or_else(|| Net::parse(s).ok().map(|n| n.addr));
    addr.is_some_and(|a| cfg.trusted_hosts.iter().any(|n| n.contains(a)))
}

/// `block HOST [--reason TEXT]`: until `unblock`. The key, and whether it
/// was not blocked before.
pub fn block(cfg: &Config, host: &[u8], reason: Option<&str>, now: i64) -> Result<(Vec<u8>, bool)> {
    let key = key(cfg, host)?;
    if trusted(cfg, &key) {
        return Err(AdminError::Refused(format!("{} is in trusted_hosts and is never blocked", escape(&key))));
    }
    let hs = open(cfg, true)?.expect("created");
    let newly = hs.update(&key, true, |cur| {
        let mut h = cur.unwrap_or_else(|| HostState::new(&key));
        let was = hosts::block_at(&h, now).is_none();
        h.block = Some(Block {
            reason: BlockReason::Admin,
            at: now,
            until: None,
            note: reason.map(|r| r.as_bytes().to_vec()),
        });
        Ok((Some(h), was))
    })?;
    Ok((key, newly))
}

/// `unblock HOST`: lift the block and forget the failures (a damaged file
/// starts afresh). The key, and whether it was blocked.
pub fn unblock(cfg: &Config, host: &[u8], now: i64) -> Result<(Vec<u8>, bool)> {
    unblock_since(cfg, host, now, now)
}

/// As [`unblock`]; the fleet's count of the host, here, starts after
/// `since` (`unblock --fleet`: the time it was recorded). With a `[fleet]`
/// table the file is written also for a host not seen here yet, so that a
/// fleet block for failures before the unblock does not arrive after it.
pub fn unblock_since(cfg: &Config, host: &[u8], now: i64, since: i64) -> Result<(Vec<u8>, bool)> {
    let key = key(cfg, host)?;
    let fleet = cfg.fleet.is_some();
    let Some(hs) = open(cfg, fleet)? else { return Ok((key, false)) };
    if !fleet && matches!(hs.get(&key), Ok(None)) {
        return Ok((key, false));
    }
    let was = hs.update(&key, true, |cur| {
        let mut h = cur.unwrap_or_else(|| HostState::new(&key));
        let was = hosts::block_at(&h, now).is_some();
        h.block = None;
        h.fail_times.clear();
        h.unblocked_at = Some(h.unblocked_at.map_or(since, |t| t.max(since)));
        Ok((Some(h), was))
    })?;
    Ok((key, was))
}

/// Whether a host's file holds nothing that counts at `now`: no block in
/// force and no failure within `host_failure_window` (with a window of 0,
/// failures count until a block, so only a file without any goes).
fn spent(cfg: &Config, h: &HostState, now: i64) -> bool {
    hosts::block_at(h, now).is_none() && hosts::failures_at(h, cfg.host_failure_window, now) == 0
}

/// `sweep`: remove the files of hosts that hold nothing that counts (the
/// log keeps their history), each decided again under the file's lock.
/// How many were (with `dry_run`: would be) removed, and the files that
/// could not be read or removed.
pub fn sweep(cfg: &Config, dry_run: bool, now: i64) -> Result<(u64, Vec<AdminError>)> {
    let not_swept = |e: AdminError| AdminError::Problem(format!("host files were not swept: {e}"));
    let hs = match open(cfg, false) {
        Ok(Some(hs)) => hs,
        Ok(None) => return Ok((0, Vec::new())),
        Err(e) => return Ok((0, vec![not_swept(e)])),
    };
    let (all, bad) = hs.list().map_err(|e| not_swept(e.into()))?;
    let mut problems: Vec<AdminError> = bad.iter().map(|e| AdminError::Problem(format!("host state {e}"))).collect();
    let mut n = 0;
    for h in all.iter().filter(|h| spent(cfg, h, now)) {
        if dry_run {
            n += 1;
            continue;
        }
        match hs.remove_if(&h.key, |cur| spent(cfg, cur, now)) {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => problems.push(AdminError::Problem(format!("host state {e}"))),
        }
    }
    Ok((n, problems))
}

/// The marks of the report's host list: "blocked" (blocked now) or
/// "trusted" (in `trusted_hosts`).
pub struct Marks {
    hosts: Option<Hosts>,
    cfg: Config,
    now: i64,
}

impl Marks {
    pub fn new(cfg: &Config, now: i64) -> Marks {
        let hosts = if cfg.host_failure_limit > 0 { open(cfg, false).ok().flatten() } else { None };
        Marks { hosts, cfg: cfg.clone(), now }
    }
    /// The mark of a host as logged (PAM_RHOST).
    pub fn of(&self, rhost: &[u8]) -> Option<&'static str> {
        let h = hosts::host_of(Some(rhost), &self.cfg.trusted_hosts, self.cfg.host_ipv6_prefix)?;
        if h.trusted {
            return Some("trusted");
        }
        let st = self.hosts.as_ref()?.get(&h.key).ok().flatten()?;
        hosts::block_at(&st, self.now).map(|_| "blocked")
    }
    /// Hosts blocked now.
    pub fn blocked(&self) -> u64 {
        let Some(hs) = &self.hosts else { return 0 };
        hs.list()
            .map(|(all, _)| all.iter().filter(|h| hosts::block_at(h, self.now).is_some()).count() as u64)
            .unwrap_or(0)
    }
}
