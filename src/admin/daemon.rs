//! The live log: `useraudit-admin daemon`, the single writer kept running,
//! and what `log --follow` shares with it.
//!
//! The daemon merges the log spool into the database as entries arrive. It
//! sleeps in the kernel until the spool's directory changes (inotify on
//! the directory, filtered on the spool's name), so it uses no CPU while
//! nothing happens; without inotify it looks at most 4 times a second. One
//! daemon per database: it holds `DATABASE.daemon.lock` (an `flock`, with
//! its pid inside). A database that cannot be opened or merged (damaged,
//! locked, a full disk) does not stop it: each distinct problem goes to
//! syslog once, the merge is retried with backoff, and the spool stays
//! until a merge succeeds. SIGTERM and SIGINT end it after the merge in
//! progress; SIGHUP re-reads the configuration and retries at once.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use useraudit_core::config::Config;
use useraudit_core::files::{beside, parent};
use useraudit_core::state::Accounts;
use useraudit_core::sys::{self, FileLock, Priority};
use useraudit_core::text::escape;

use crate::commands::{self, AdminError, Result};
use crate::metrics;
use crate::store::{Merged, OpenOptions, Store};

/// How often to look without inotify: no faster than 4 Hz.
pub const POLL: Duration = Duration::from_millis(250);
/// How long after a change `log --follow` looks once more.
pub const SETTLE: Duration = Duration::from_millis(100);
/// The first wait before retrying a failed merge; it doubles up to
/// [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The daemon's lock file beside the database.
pub fn lock_path(db: &Path) -> PathBuf {
    beside(db, ".daemon.lock")
}

/// The pid of the daemon that holds the database's lock, if one does
/// (Some(None): one does, its pid unreadable).
pub fn running(db: &Path) -> Option<Option<u32>> {
    let path = lock_path(db);
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path).ok()?;
    match sys::try_flock(&f, FileLock::Shared) {
        Ok(true) | Err(_) => None,
        Ok(false) => {
            let mut s = String::new();
            let _ = f.read_to_string(&mut s);
            Some(s.trim().parse().ok())
        }
    }
}

/// The held lock: one daemon per database. Released when dropped (closed).
pub struct DaemonLock {
    _file: File,
    path: PathBuf,
}

impl DaemonLock {
    /// Take the lock of `db`'s daemon, or say which daemon holds it.
    pub fn take(db: &Path) -> Result<DaemonLock> {
        let path = lock_path(db);
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| AdminError::io(format!("daemon lock {}: cannot open", path.display()), e))?;
        match sys::try_flock(&f, FileLock::Exclusive) {
            Ok(true) => {}
            Ok(false) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                let who = match s.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "another process".into(),
                };
                return Err(AdminError::Problem(format!(
                    "another daemon ({who}) is already running for database {} (it holds {})",
                    db.display(),
                    path.display()
                )));
            }
            Err(e) => return Err(AdminError::io(format!("daemon lock {}: cannot lock", path.display()), e)),
        }
        let pid = std::process::id();
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| writeln!(f, "{pid}"))
            .map_err(|e| AdminError::io(format!("daemon lock {}: cannot write", path.display()), e))?;
        Ok(DaemonLock { _file: f, path })
    }
}

impl Drop for DaemonLock {
    fn drop(&mut self) {
        // Empty it, so that nobody reads a stale pid; the lock goes with
        // the close.
        let _ = std::fs::OpenOptions::new().write(true).truncate(true).open(&self.path);
    }
}

/// What woke a [`Watch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Wake {
    /// The time asked for passed (or the 4 Hz poll without inotify).
    Tick,
    /// The database (or its WAL) changed: someone merged.
    Log,
    /// The spool changed: a login wrote to it.
    Spool,
    /// SIGHUP.
    Reload,
    /// SIGTERM or SIGINT, or the output was closed.
    Stop,
}

enum Msg {
    Fs(WatchDescriptor, OsString),
    /// The kernel's event queue overflowed: events were lost.
    Overflow,
    Signal(i32),
    Closed,
}

/// Waits for the spool or the database to change, or for a signal.
pub struct Watch {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    watches: Option<Watches>,
    wd: Option<WatchDescriptor>,
    spool: OsString,
    log: [OsString; 2],
}

fn name_of(p: &Path) -> OsString {
    p.file_name().map(|n| n.to_os_string()).unwrap_or_default()
}

impl Watch {
    /// Watch `db`'s directory, and catch SIGTERM, SIGINT and SIGHUP (which
    /// then no longer end the process: they are answered by [`Watch::wait`]).
    pub fn new(db: &Path) -> Result<Watch> {
        let (tx, rx) = channel();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
            .map_err(|e| AdminError::io("cannot catch signals", e))?;
        let stx = tx.clone();
        std::thread::spawn(move || {
            for s in signals.forever() {
                if stx.send(Msg::Signal(s)).is_err() {
                    break;
                }
            }
        });
        let watches = match Inotify::init() {
            Ok(mut ino) => {
                let w = ino.watches();
                let itx = tx.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    loop {
                        let events = match ino.read_events_blocking(&mut buf) {
                            Ok(ev) => ev,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        };
                        for ev in events {
                            let msg = match ev.name {
                                Some(name) => Msg::Fs(ev.wd.clone(), name.to_os_string()),
                                None if ev.mask.contains(EventMask::Q_OVERFLOW) => Msg::Overflow,
                                None => continue,
                            };
                            if itx.send(msg).is_err() {
                                return;
                            }
                        }
                    }
                });
                Some(w)
            }
            Err(e) => {
                sys::syslog(Priority::Warning, &format!("useraudit-admin: no inotify ({e}); looking 4 times a second"));
                None
            }
        };
        let mut w = Watch { tx, rx, watches, wd: None, spool: OsString::new(), log: Default::default() };
        w.set_db(db);
        Ok(w)
    }

    /// Watch another database's directory.
    pub fn set_db(&mut self, db: &Path) {
        self.spool = name_of(&useraudit_core::spool::path_for(db));
        self.log = [name_of(db), name_of(&beside(db, "-wal"))];
        if let Some(w) = &mut self.watches {
            if let Some(old) = self.wd.take() {
                let _ = w.remove(old);
            }
            match w.add(parent(db), WatchMask::CREATE | WatchMask::MODIFY | WatchMask::MOVED_TO) {
                Ok(wd) => self.wd = Some(wd),
                Err(e) => sys::syslog(
                    Priority::Warning,
                    &format!("useraudit-admin: cannot watch {} ({e}); looking 4 times a second", parent(db).display()),
                ),
            }
        }
    }

    /// The longest wait that still notices a change: forever with inotify,
    /// [`POLL`] without.
    pub fn idle(&self) -> Option<Duration> {
        if self.wd.is_some() { None } else { Some(POLL) }
    }

    /// End [`Watch::wait`] with [`Wake::Stop`] once standard output is
    /// closed (the reader of a pipe went away), even while nothing is
    /// written to it.
    pub fn stop_when_output_closes(&self) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            use rustix::event::{PollFd, PollFlags, poll};
            let out = std::io::stdout();
            loop {
                let mut fds = [PollFd::new(&out, PollFlags::empty())];
                match poll(&mut fds, None) {
                    Ok(_) if fds[0].revents().intersects(PollFlags::ERR | PollFlags::HUP | PollFlags::NVAL) => {
                        let _ = tx.send(Msg::Closed);
                        return;
                    }
                    Ok(_) | Err(rustix::io::Errno::INTR) => {}
                    Err(_) => return,
                }
                // Nothing to tell (a file or terminal that reports ready).
                std::thread::sleep(Duration::from_secs(1));
            }
        });
    }

    /// Sleep until something happens or `timeout` passes; what happened
    /// (the most pressing, when several things did).
    pub fn wait(&self, timeout: Option<Duration>) -> Wake {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let msg = match deadline {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self.rx.recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            let first = match msg {
                Ok(m) => self.kind(m),
                Err(RecvTimeoutError::Timeout) => return Wake::Tick,
                Err(RecvTimeoutError::Disconnected) => return Wake::Stop,
            };
            // Coalesce a burst (a login writes several times).
            let most = self.rx.try_iter().filter_map(|m| self.kind(m)).fold(first, |a, b| a.max(Some(b)));
            if let Some(w) = most {
                return w;
            }
        }
    }

    fn kind(&self, m: Msg) -> Option<Wake> {
        match m {
            Msg::Signal(SIGHUP) => Some(Wake::Reload),
            Msg::Signal(_) | Msg::Closed => Some(Wake::Stop),
            // A lost event may have been the spool's.
            Msg::Overflow => Some(Wake::Spool),
            Msg::Fs(wd, _) if Some(&wd) != self.wd.as_ref() => None,
            Msg::Fs(_, n) if n == self.spool => Some(Wake::Spool),
            Msg::Fs(_, n) if self.log.contains(&n) => Some(Wake::Log),
            Msg::Fs(..) => None,
        }
    }
}

/// Problems already reported (to syslog and stderr), so that each distinct
/// one is reported once until the merge works again.
pub struct Problems {
    seen: BTreeSet<String>,
    /// What happens meanwhile, said after each problem.
    meanwhile: &'static str,
}

impl Problems {
    pub fn new(meanwhile: &'static str) -> Problems {
        Problems { seen: BTreeSet::new(), meanwhile }
    }

    /// Report `p` unless it was already.
    pub fn report(&mut self, p: &str, say: &mut dyn FnMut(&str)) {
        if self.seen.insert(p.to_string()) {
            let m = self.meanwhile;
            sys::syslog(Priority::Err, &format!("useraudit-admin daemon: {p}; {m}"));
            say(&format!("{p}; {m}"));
        }
    }

    /// The merge worked: say so once if it had not.
    pub fn clear(&mut self, what: &str, say: &mut dyn FnMut(&str)) {
        if !self.seen.is_empty() {
            self.seen.clear();
            sys::syslog(Priority::Notice, &format!("useraudit-admin daemon: {what}"));
            say(what);
        }
    }
}

/// An open database that follows its path: when the file is moved aside
/// or replaced, the next merge opens the new one.
struct Live {
    store: Option<(Store, u64, u64)>,
}

impl Live {
    fn merge(&mut self, cfg: &Config) -> Result<Merged> {
        let ident = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let moved = self.store.as_ref().is_some_and(|(_, dev, ino)| ident(&cfg.database) != Some((*dev, *ino)));
        if moved {
            self.store = None;
        }
        if self.store.is_none() {
            let s = Store::open(&cfg.database, OpenOptions { create: true, require_root_owned: sys::euid() == 0 })?;
            let (dev, ino) = ident(&cfg.database).unwrap_or_default();
            self.store = Some((s, dev, ino));
        }
        let r = match &mut self.store {
            Some((s, ..)) => s.merge_spool(),
            None => unreachable!("opened above"),
        };
        match r {
            Ok(m) => Ok(m),
            Err(e) => {
                // Open afresh next time: the file may be replaced or repaired.
                self.store = None;
                Err(e.into())
            }
        }
    }
}

/// `metrics_file` is rewritten at least this often while the daemon runs,
/// so that gauges (accounts by state, the spool's backlog) stay current
/// when nothing is merged; node_exporter reads it when it is scraped.
const METRICS_EVERY: Duration = Duration::from_secs(15);

/// After a merge it is rewritten at once, unless it was this recently:
/// a flood of logins does not rewrite it at every merge.
const METRICS_AFTER_MERGE: Duration = Duration::from_secs(1);

/// Rewrite `metrics_file` from the open store (if the database could be
/// opened) and the account state files.
fn write_metrics(cfg: &Config, live: &Live, merged_ok: bool) -> Result<()> {
    let Some(path) = &cfg.metrics_file else { return Ok(()) };
    let accts = useraudit_core::state::Accounts::open(&cfg.database, true, sys::euid() == 0)
        .map_err(|e| AdminError::Problem(format!("metrics file {}: account state {e}", path.display())))?;
    let store = live.store.as_ref().map(|(s, ..)| s);
    let snap = metrics::snapshot_of(cfg, store, &accts, merged_ok, useraudit_core::text::now_micros())?;
    metrics::write_file(path, &metrics::render(&snap))
        .map_err(|e| AdminError::io(format!("metrics file {}", path.display()), e))
}

/// Syslog what a merge skipped or counted, as every command does.
fn note_merged(cfg: &Config, m: &Merged) {
    commands::say_merge_faults(cfg, m, "useraudit-admin daemon", Priority::Err);
}

/// The longest wait between fleet syncs while PostgreSQL cannot be reached.
const FLEET_RETRY_MAX: Duration = Duration::from_secs(60);
/// A failed fleet sync that took this long or longer held the merge up (a
/// server that does not answer, a connect timeout): the next one waits
/// longer. One that failed sooner (refused: PostgreSQL stopped or
/// restarting) cost no more than a sync, and the next comes at the interval.
const FLEET_SLOW_FAILURE: Duration = Duration::from_secs(1);
/// After a merge that brought new entries, the fleet sync comes at once
/// (so a failure here counts fleet-wide without waiting for the interval),
/// but no sooner than this after the last one began.
const FLEET_EAGER_GAP: Duration = Duration::from_millis(250);

/// `useraudit-admin daemon`: run until SIGTERM or SIGINT. `conf` and `db`
/// are the global options, read again on SIGHUP; `say` prints one line on
/// stderr (the journal, under systemd). An error here (the lock is held,
/// the configuration is bad at start) ends it with exit 1.
pub fn run(conf: Option<&Path>, db: Option<&Path>, say: &mut dyn FnMut(&str)) -> Result<()> {
    let mut cfg = commands::load_config(conf, db)?;
    let dir = parent(&cfg.database);
    if !dir.is_dir() {
        return Err(AdminError::Problem(format!(
            "database {}: its directory {} does not exist (check --db or `database`, or create the directory, mode 0700)",
            cfg.database.display(),
            dir.display()
        )));
    }
    let mut lock = DaemonLock::take(&cfg.database)?;
    let mut watch = Watch::new(&cfg.database)?;
    let mut live = Live { store: None };
    let mut problems = Problems::new("the log spool is kept, retrying");
    let started =
        format!("merging the log spool into {} as entries arrive (pid {})", cfg.database.display(), std::process::id());
    tell(Priority::Info, &started, say);
    // Merge at once: what came while no daemon ran.
    let mut pending = true;
    let mut backoff = BACKOFF_MIN;
    let mut retry_at = Instant::now();
    // When `metrics_file` was last written (it is kept current while the
    // daemon runs: after merges, and at least every METRICS_EVERY).
    let mut metrics_at: Option<Instant> = None;
    let mut metrics_problem: Option<String> = None;
    let mut merged_ok = false;
    // The fleet sync, every fleet.interval when [fleet] is set; its faults
    // are reported once, as the merge's are (the entries wait locally).
    let mut next_sync = Instant::now();
    let mut fleet_problems = Problems::new("the entries wait in the local log, retrying");
    // While PostgreSQL does not answer, each try may wait up to its
    // connect_timeout, during which nothing is merged: retry less often
    // (doubling up to a minute), so that the live log stays live. A try
    // refused at once is retried at the interval: the entries that waited go
    // out as soon as PostgreSQL is back, not up to a minute later.
    let mut fleet_backoff = 1u32;
    // When the last sync began, and whether it worked (only then do new
    // entries bring the next one forward).
    let mut fleet_began: Option<Instant> = None;
    let mut fleet_ok = false;
    loop {
        let sync_due = cfg.fleet.as_ref().filter(|_| !pending && Instant::now() >= next_sync);
        if let Some(f) = sync_due {
            let interval = Duration::from_secs(f.interval);
            next_sync = Instant::now() + interval;
            if let Some((store, ..)) = &live.store {
                let began = Instant::now();
                fleet_began = Some(began);
                let r = Accounts::open(&cfg.database, true, sys::euid() == 0)
                    .map_err(AdminError::from)
                    .and_then(|a| crate::fleet::sync(&cfg, store, &a, useraudit_core::text::now_micros()));
                match r {
                    Ok(s) => {
                        for u in &s.locked {
                            tell(Priority::Notice, &format!("fleet lockout: {} locked", escape(u)), say);
                        }
                        for h in &s.blocked {
                            tell(Priority::Notice, &format!("fleet: host {} blocked", escape(h)), say);
                        }
                        fleet_problems.clear("fleet: syncing again; nothing was lost", say);
                        fleet_backoff = 1;
                        fleet_ok = true;
                    }
                    Err(e) => {
                        fleet_ok = false;
                        fleet_problems.report(&e.to_string(), say);
                        if began.elapsed() >= FLEET_SLOW_FAILURE {
                            fleet_backoff = (fleet_backoff * 2).min(64);
                            next_sync = Instant::now() + (interval * fleet_backoff).min(FLEET_RETRY_MAX.max(interval));
                        } else {
                            fleet_backoff = 1;
                        }
                    }
                }
            }
        }
        if pending && Instant::now() >= retry_at {
            match live.merge(&cfg) {
                Ok(m) => {
                    note_merged(&cfg, &m);
                    if m.entries > 0 && fleet_ok {
                        let soonest = fleet_began.map_or_else(Instant::now, |t| t + FLEET_EAGER_GAP);
                        next_sync = next_sync.min(soonest);
                    }
                    problems
                        .clear(&format!("database {}: merging again; nothing was lost", cfg.database.display()), say);
                    pending = false;
                    backoff = BACKOFF_MIN;
                    merged_ok = true;
                }
                Err(e) => {
                    problems.report(&e.to_string(), say);
                    retry_at = Instant::now() + backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    merged_ok = false;
                }
            }
            metrics_at = metrics_at.filter(|t| t.elapsed() < METRICS_AFTER_MERGE);
        }
        if cfg.metrics_file.is_some() && metrics_at.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
            // Reported once per distinct problem, and once when it is over.
            match write_metrics(&cfg, &live, merged_ok) {
                Err(e) if metrics_problem.as_deref() != Some(e.to_string().as_str()) => {
                    let e = e.to_string();
                    tell(Priority::Err, &e, say);
                    metrics_problem = Some(e);
                }
                Ok(()) if metrics_problem.take().is_some() => tell(Priority::Notice, "metrics file written again", say),
                _ => {}
            }
            metrics_at = Some(Instant::now());
        }
        let mut timeout = if pending { Some(retry_at.saturating_duration_since(Instant::now())) } else { watch.idle() };
        if let (Some(_), Some(at)) = (&cfg.metrics_file, metrics_at) {
            let next = METRICS_EVERY.saturating_sub(at.elapsed());
            timeout = Some(timeout.map_or(next, |t| t.min(next)));
        }
        if cfg.fleet.is_some() {
            let to_sync = next_sync.saturating_duration_since(Instant::now());
            timeout = Some(timeout.map_or(to_sync, |t| t.min(to_sync)));
        }
        match watch.wait(timeout) {
            Wake::Stop => break,
            Wake::Reload => {
                match commands::load_config(conf, db) {
                    Ok(new) => {
                        if new.database != cfg.database {
                            match DaemonLock::take(&new.database) {
                                Ok(l) => {
                                    lock = l;
                                    watch.set_db(&new.database);
                                    live.store = None;
                                }
                                Err(e) => {
                                    tell(
                                        Priority::Err,
                                        &format!("configuration not applied, the database stays: {e}"),
                                        say,
                                    );
                                    continue;
                                }
                            }
                        }
                        cfg = new;
                        tell(
                            Priority::Info,
                            &format!("configuration re-read; merging into {}", cfg.database.display()),
                            say,
                        );
                    }
                    // Each SIGHUP is asked for: each one is answered.
                    Err(e) => {
                        tell(Priority::Err, &format!("configuration not re-read, the previous one stays: {e}"), say)
                    }
                }
                pending = true;
                retry_at = Instant::now();
                next_sync = Instant::now();
                fleet_backoff = 1;
            }
            Wake::Spool => pending = true,
            Wake::Tick => pending |= watch.idle().is_some(),
            Wake::Log => {}
        }
    }
    drop(lock);
    tell(Priority::Info, "stopped", say);
    Ok(())
}

/// One line to syslog and to `say`.
fn tell(p: Priority, line: &str, say: &mut dyn FnMut(&str)) {
    sys::syslog(p, &format!("useraudit-admin daemon: {line}"));
    say(line);
}
