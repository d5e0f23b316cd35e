//! Remote hosts: one small file per host in `DATABASE.hosts/`, kept by the
//! same record-file machinery as account state ([`crate::state::Records`]):
//! two records with sequence numbers and a CRC, reads without a lock, every
//! change under the file's exclusive `flock`, so the Nth failure from a
//! host blocks it also when many attempts arrive at once.
//!
//! # Which host
//!
//! The host is PAM_RHOST. An IP address (IPv4, IPv6; an IPv4-mapped IPv6
//! address is taken as IPv4) is matched against `trusted_hosts`; IPv6
//! addresses are counted and blocked by their `host_ipv6_prefix` network
//! (key `2001:db8:1:2::/64`). Anything else (a name, when sshd runs with
//! `UseDNS yes`; an address with a zone) is matched by its exact text and
//! is never trusted by a network. An attempt without PAM_RHOST, or with an
//! empty one, is never counted or blocked by host.
//!
//! # File format
//!
//! Records as in [`crate::state`] with the magic `UAhs` (format version 2);
//! file names as for accounts (bytes other than `A-Za-z0-9_-.` written
//! `%XX`, long keys cut and ended by a SHA-256). The payload
//! ([`crate::files::Enc`]): key (byte string), blocked (u8 0/1); when
//! blocked: reason (u8: 1 `host_failure_limit`, 2 `admin`, 3
//! `fleet_host_failure_limit`), blocked at (i64), unblocks at (optional
//! i64), note (byte string); then the failure times (u32 count, i64 each,
//! oldest first, at most `host_failure_limit`), the last failure (optional
//! i64) and when `unblock` last lifted it here (optional i64; written since
//! the fleet counts hosts, absent in older files: none); times in
//! microseconds since the epoch. A file without an intact record is
//! damaged: an error (answered with `on_error` by the module), never read
//! as a host with no failures.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::files::{Dec, Enc};
use crate::state::{Codec, Records};
use crate::text::MICROS;

/// An address or network of `trusted_hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub addr: IpAddr,
    pub prefix: u8,
}

fn v4_of(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(a: IpAddr, prefix: u8) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            IpAddr::V4(Ipv4Addr::from(u32::from(v) & m))
        }
        IpAddr::V6(v) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            IpAddr::V6(Ipv6Addr::from(u128::from(v) & m))
        }
    }
}

impl Net {
    /// `10.0.0.0/8`, `2001:db8::/32`, `::1`, `192.0.2.7`. An IPv4-mapped
    /// IPv6 network (`::ffff:10.0.0.0/104`) is taken as the IPv4 one.
    pub fn parse(s: &str) -> Result<Net, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| {
            format!("{s:?} is not an IP address or network (such as \"192.0.2.0/24\" or \"2001:db8::/32\")")
        })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(format!("{s:?}: the prefix length must be a number from 0 to {max}")),
            },
        };
        if mask(addr, prefix) != addr {
            return Err(format!(
                "{s:?} has address bits set past the prefix; write the network, {}/{prefix}",
                mask(addr, prefix)
            ));
        }
        let v4 = v4_of(addr);
        if v4 != addr && prefix >= 96 {
            return Ok(Net { addr: v4, prefix: prefix - 96 });
        }
        Ok(Net { addr, prefix })
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        a.is_ipv4() == self.addr.is_ipv4() && mask(a, self.prefix) == self.addr
    }

    /// As written in the configuration (`check` prints it).
    pub fn render(&self) -> String {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max { self.addr.to_string() } else { format!("{}/{}", self.addr, self.prefix) }
    }
}

/// The remote host of an attempt, as it is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// What its state is stored under: an IPv4 address, an IPv6 network
    /// (`2001:db8:1:2::/64`), or a name's exact text.
    pub key: Vec<u8>,
    /// In `trusted_hosts`.
    pub trusted: bool,
}

/// The host of an attempt from its PAM_RHOST; None without one.
pub fn host_of(rhost: Option<&[u8]>, trusted: &[Net], ipv6_prefix: u8) -> Option<Host> {
    let r = rhost.filter(|r| !r.is_empty())?;
    let ip = std::str::from_utf8(r).ok().and_then(|s| s.parse::<IpAddr>().ok()).map(v4_of);
    let Some(ip) = ip else { return Some(Host { key: r.to_vec(), trusted: false }) };
    let trusted = trusted.iter().any(|n| n.contains(ip));
    Some(Host { key: key_of(ip, ipv6_prefix).into_bytes(), trusted })
}

/// The key an address is counted under.
pub fn key_of(ip: IpAddr, ipv6_prefix: u8) -> String {
    match v4_of(ip) {
        IpAddr::V6(_) if ipv6_prefix < 128 => format!("{}/{ipv6_prefix}", mask(ip, ipv6_prefix)),
        a => a.to_string(),
    }
}

/// The key for a host named by the administrator (`block`, `unblock`):
/// an address becomes the key it is counted under; anything else is the
/// text as given.
pub fn key_for_admin(text: &[u8], ipv6_prefix: u8) -> Vec<u8> {
    let s = std::str::from_utf8(text).ok();
    if let Some(ip) = s.and_then(|s| s.parse::<IpAddr>().ok()) {
        return key_of(ip, ipv6_prefix).into_bytes();
    }
    if let Some(n) = s.and_then(|s| Net::parse(s).ok()) {
        if n.addr.is_ipv6() && n.prefix == ipv6_prefix {
            return key_of(n.addr, ipv6_prefix).into_bytes();
        }
    }
    text.to_vec()
}

/// Why a host is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    HostFailureLimit,
    Admin,
    /// The fleet's count: failures from the host on all hosts of the fleet
    /// together reached `host_failure_limit` (written by the fleet sync).
    FleetHostFailureLimit,
}

impl BlockReason {
    pub fn as_str(self) -> &'static str {
        match self {
            BlockReason::HostFailureLimit => "host_failure_limit",
            BlockReason::Admin => "admin",
            BlockReason::FleetHostFailureLimit => "fleet_host_failure_limit",
        }
    }
    /// Its code in the host file.
    fn code(self) -> u8 {
        match self {
            BlockReason::HostFailureLimit => 1,
            BlockReason::Admin => 2,
            BlockReason::FleetHostFailureLimit => 3,
        }
    }
    fn from_code(c: u8) -> Option<BlockReason> {
        [BlockReason::HostFailureLimit, BlockReason::Admin, BlockReason::FleetHostFailureLimit]
            .into_iter()
            .find(|r| r.code() == c)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub reason: BlockReason,
    pub at: i64,
    /// None: until `useraudit-admin unblock`.
    pub until: Option<i64>,
    /// The administrator's words (`block --reason`).
    pub note: Option<Vec<u8>>,
}

/// What is kept per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub key: Vec<u8>,
    pub block: Option<Block>,
    /// Times of the failures that count, oldest first.
    pub fail_times: Vec<i64>,
    pub last_failure: Option<i64>,
    /// When `unblock` last lifted the host here: the fleet's count of it,
    /// here, starts after this time.
    pub unblocked_at: Option<i64>,
}

impl HostState {
    pub fn new(key: &[u8]) -> HostState {
        HostState { key: key.to_vec(), block: None, fail_times: Vec::new(), last_failure: None, unblocked_at: None }
    }
}

fn secs(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX / MICROS).saturating_mul(MICROS)
}

/// The block in force at `now`, if any (a timed block lapses by itself).
pub fn block_at(h: &HostState, now: i64) -> Option<&Block> {
    h.block.as_ref().filter(|b| b.until.is_none_or(|u| now < u))
}

/// The earliest failure time that still counts at `now` (a window of 0:
/// every failure counts until the host is blocked or unblocked).
fn window_start(window: u64, now: i64) -> i64 {
    if window == 0 { i64::MIN } else { now.saturating_sub(secs(window)) }
}

/// The failures that count at `now`.
pub fn failures_at(h: &HostState, window: u64, now: i64) -> usize {
    let from = window_start(window, now);
    h.fail_times.iter().filter(|&&t| t > from).count()
}

/// Count a failed attempt from the host. True when this failure reached
/// the limit and blocked it (the failures that did so are then cleared:
/// after the block the host starts from none).
pub fn record_failure(h: &mut HostState, limit: u32, window: u64, block_time: u64, now: i64) -> bool {
    if h.block.as_ref().is_some_and(|b| b.until.is_some_and(|u| now >= u)) {
        h.block = None;
    }
    h.last_failure = Some(now);
    if h.block.is_some() || limit == 0 {
        return false;
    }
    let from = window_start(window, now);
    h.fail_times.retain(|&t| t > from);
    h.fail_times.push(now);
    let keep = limit as usize;
    if h.fail_times.len() > keep {
        h.fail_times.drain(..h.fail_times.len() - keep);
    }
    if h.fail_times.len() < keep {
        return false;
    }
    h.fail_times.clear();
    let until = (block_time > 0).then(|| now.saturating_add(secs(block_time)));
    h.block = Some(Block { reason: BlockReason::HostFailureLimit, at: now, until, note: None });
    true
}

/// The fleet's count of one remote host: its failures on every host of the
/// fleet (times in order, oldest first) replayed through
/// [`record_failure`], as if one host had seen them all. The result holds
/// the block in force (see [`block_at`]; its reason is
/// [`BlockReason::FleetHostFailureLimit`]) and the failures that count, so
/// the fleet follows the local rules exactly: the Nth failure within the
/// window blocks from its own time for `block_time`, the failures that did
/// so are cleared, and failures during a block neither count nor extend it.
pub fn replay(key: &[u8], times: &[i64], limit: u32, window: u64, block_time: u64) -> HostState {
    let mut h = HostState::new(key);
    for &t in times {
        record_failure(&mut h, limit, window, block_time, t);
    }
    if let Some(b) = &mut h.block {
        b.reason = BlockReason::FleetHostFailureLimit;
    }
    h
}

/// Host state files (`DATABASE.hosts/`).
#[derive(Debug, Clone, Copy)]
pub struct HostCodec;

impl Codec for HostCodec {
    type Item = HostState;
    const SUFFIX: &'static str = ".hosts";
    const MAGIC: &'static [u8; 4] = b"UAhs";
    const REPAIR: &'static str = "`useraudit-admin unblock HOST` starts the host afresh";
    const WHAT: &'static str = "host";
    fn key(h: &HostState) -> &[u8] {
        &h.key
    }
    fn encode(h: &HostState) -> Vec<u8> {
        let mut p = Enc::default();
        p.bytes(Some(&h.key));
        match &h.block {
            None => p.u8(0),
            Some(b) => {
                p.u8(1);
                p.u8(b.reason.code());
                p.i64(b.at);
                p.opt_i64(b.until);
                p.bytes(b.note.as_deref());
            }
        }
        p.u32(h.fail_times.len() as u32);
        for t in &h.fail_times {
            p.i64(*t);
        }
        p.opt_i64(h.last_failure);
        p.opt_i64(h.unblocked_at);
        p.0
    }
    fn decode(b: &[u8]) -> Result<HostState, String> {
        let mut d = Dec::new(b);
        let h = (|| {
            let key = d.bytes()??;
            let block = match d.u8()? {
                0 => None,
                1 => Some(Block {
                    reason: BlockReason::from_code(d.u8()?)?,
                    at: d.i64()?,
                    until: d.opt_i64()?,
                    note: d.bytes()?,
                }),
                _ => return None,
            };
            let n = d.u32()? as usize;
            let mut fail_times = Vec::with_capacity(n.min(4096));
            for _ in 0..n {
                fail_times.push(d.i64()?);
            }
            let last_failure = d.opt_i64()?;
            // Written since the fleet counts hosts; absent before.
            let unblocked_at = if d.is_empty() { None } else { d.opt_i64()? };
            Some(HostState { key, block, fail_times, last_failure, unblocked_at })
        })();
        match h {
            Some(h) if d.is_empty() => Ok(h),
            _ => Err("damaged (cannot be decoded)".into()),
        }
    }
    fn tag(h: &HostState) -> u8 {
        u8::from(h.block.is_some())
    }
}

/// The host state directory of one database.
pub type Hosts = Records<HostCodec>;

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_match() {
        let n = Net::parse("10.0.0.0/8").unwrap();
        assert!(n.contains(ip("10.1.2.3")) && !n.contains(ip("11.0.0.1")));
        let n6 = Net::parse("2001:db8::/32").unwrap();
        assert!(n6.contains(ip("2001:db8:ffff::1")) && !n6.contains(ip("2001:db9::1")));
        assert!(!n6.contains(ip("10.0.0.1")));
        assert_eq!(Net::parse("::1").unwrap(), Net { addr: ip("::1"), prefix: 128 });
        assert_eq!(Net::parse("::ffff:10.0.0.0/104").unwrap(), Net::parse("10.0.0.0/8").unwrap());
        assert_eq!(Net::parse("0.0.0.0/0").unwrap().render(), "0.0.0.0/0");
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "host.example", "10.0.0.0/", "10.0.0.0/+8", "", "::/129"] {
            assert!(Net::parse(bad).is_err(), "{bad}");
        }
        assert!(Net::parse("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn hosts_are_keyed_by_address_network_or_exact_name() {
        let t = [Net::parse("192.0.2.0/24").unwrap()];
        assert_eq!(host_of(None, &t, 64), None);
        assert_eq!(host_of(Some(b""), &t, 64), None);
        let h = host_of(Some(b"192.0.2.9"), &t, 64).unwrap();
        assert_eq!((h.key.as_slice(), h.trusted), (&b"192.0.2.9"[..], true));
        let m = host_of(Some(b"::ffff:192.0.2.9"), &t, 64).unwrap();
        assert_eq!(m, h, "IPv4-mapped IPv6 is the IPv4 address");
        let a = host_of(Some(b"2001:db8:1:2::5"), &t, 64).unwrap();
        let b = host_of(Some(b"2001:db8:1:2:ffff::9"), &t, 64).unwrap();
        assert_eq!(a.key, b"2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a.key, host_of(Some(b"2001:db8:1:3::5"), &t, 64).unwrap().key);
        assert_eq!(host_of(Some(b"2001:db8::5"), &t, 128).unwrap().key, b"2001:db8::5");
        // a name is its text, never trusted by a network
        let n = host_of(Some(b"192.0.2.9.example"), &t, 64).unwrap();
        assert_eq!((n.key.as_slice(), n.trusted), (&b"192.0.2.9.example"[..], false));
        assert_eq!(key_for_admin(b"2001:db8:1:2::7", 64), b"2001:db8:1:2::/64");
        assert_eq!(key_for_admin(b"2001:db8:1:2::/64", 64), b"2001:db8:1:2::/64");
        assert_eq!(key_for_admin(b"::ffff:198.51.100.1", 64), b"198.51.100.1");
        assert_eq!(key_for_admin(b"bad\x1b", 64), b"bad\x1b");
    }

    #[test]
    fn the_nth_failure_in_the_window_blocks() {
        let m = MICROS;
        let mut h = HostState::new(b"198.51.100.7");
        assert!(!record_failure(&mut h, 3, 60, 600, 0));
        assert!(!record_failure(&mut h, 3, 60, 600, 10 * m));
        // the first one has left the window
        assert!(!record_failure(&mut h, 3, 60, 600, 61 * m));
        assert!(record_failure(&mut h, 3, 60, 600, 62 * m));
        let b = block_at(&h, 62 * m).unwrap();
        assert_eq!((b.reason, b.at, b.until), (BlockReason::HostFailureLimit, 62 * m, Some(662 * m)));
        // refused attempts do not extend it
        assert!(!record_failure(&mut h, 3, 60, 600, 100 * m));
        assert_eq!(block_at(&h, 100 * m).unwrap().until, Some(662 * m));
        assert!(block_at(&h, 662 * m).is_none());
        assert!(!record_failure(&mut h, 3, 60, 600, 700 * m));
        assert_eq!(failures_at(&h, 60, 700 * m), 1);
        // a window of 0: failures count however old
        let mut h = HostState::new(b"198.51.100.8");
        assert!(!record_failure(&mut h, 2, 0, 0, 0));
        assert_eq!(failures_at(&h, 0, 1_000_000 * m), 1);
        assert!(record_failure(&mut h, 2, 0, 0, 1_000_000 * m));
        assert_eq!(block_at(&h, i64::MAX).map(|b| b.until), Some(None), "0: until unblocked");
    }

    #[test]
    fn the_fleet_replays_the_local_rule_over_every_hosts_failures() {
        let m = MICROS;
        // 5 failures (limit 5, window 60 s, blocked for 600 s): blocked
        // from the 5th, whichever hosts saw them.
        let h = replay(b"k", &[0, m, 2 * m, 3 * m, 4 * m], 5, 60, 600);
        let b = block_at(&h, 5 * m).unwrap();
        assert_eq!((b.reason, b.at, b.until), (BlockReason::FleetHostFailureLimit, 4 * m, Some(604 * m)));
        assert_eq!(failures_at(&h, 60, 5 * m), 0, "cleared by the block");
        // Failures during the block (hosts that had not synced yet) neither
        // count nor extend it; after it, the count starts from none.
        let h = replay(b"k", &[0, m, 2 * m, 3 * m, 4 * m, 5 * m, 6 * m, 700 * m], 5, 60, 600);
        assert!(block_at(&h, 604 * m).is_none());
        assert_eq!(failures_at(&h, 60, 701 * m), 1);
        // Too few within the window: no block.
        let h = replay(b"k", &[0, 100 * m, 200 * m, 300 * m, 400 * m], 5, 60, 600);
        assert!(h.block.is_none());
        assert_eq!(failures_at(&h, 60, 400 * m), 1);
        // A block time of 0: until unblocked.
        let h = replay(b"k", &[1, 2], 2, 0, 0);
        assert_eq!(block_at(&h, i64::MAX).map(|b| b.until), Some(None));
        assert!(replay(b"k", &[], 2, 0, 0).block.is_none());
    }

    #[test]
    fn records_round_trip() {
        let mut h = HostState::new(b"\x00../%x");
        h.fail_times = vec![1, 2];
        h.last_failure = Some(2);
        h.block = Some(Block { reason: BlockReason::Admin, at: 5, until: None, note: Some(b"n".to_vec()) });
        assert_eq!(HostCodec::decode(&HostCodec::encode(&h)).unwrap(), h);
        h.unblocked_at = Some(9);
        h.block = Some(Block { reason: BlockReason::FleetHostFailureLimit, at: 5, until: Some(7), note: None });
        assert_eq!(HostCodec::decode(&HostCodec::encode(&h)).unwrap(), h);
        let mut e = HostCodec::encode(&h);
        e.push(0);
        assert!(HostCodec::decode(&e).is_err());
    }

    #[test]
    fn files_written_before_the_fleet_counted_hosts_are_read() {
        // The payload as it was: no `unblocked_at` at the end.
        let mut p = Enc::default();
        p.bytes(Some(b"192.0.2.1"));
        p.u8(1);
        p.u8(1);
        p.i64(5);
        p.opt_i64(Some(6));
        p.bytes(None);
        p.u32(1);
        p.i64(4);
        p.opt_i64(Some(4));
        let h = HostCodec::decode(&p.0).unwrap();
        assert_eq!(
            h.block.as_ref().map(|b| (b.reason, b.at, b.until)),
            Some((BlockReason::HostFailureLimit, 5, Some(6)))
        );
        assert_eq!((h.fail_times, h.last_failure, h.unblocked_at), (vec![4], Some(4), None));
        // An unknown reason code is damage, never a host without a block.
        let mut bad = p.0.clone();
        bad[4 + 9 + 1] = 9;
        assert!(HostCodec::decode(&bad).is_err());
    }
}
