//! useraudit-admin: read the login log, see each account's state,
//! re-activate accounts, sweep inactive ones. A thin shell over the
//! library: parsing, output formats and exit codes live here, the rest in
//! `useraudit_admin::commands`.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{OsStringValueParser, PathBufValueParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use useraudit_admin::commands::{self, Activated, AdminError, StatusRow};
use useraudit_admin::hosts::HostRow;
use useraudit_admin::report;
use useraudit_admin::store::{Entry, LogQuery};
use useraudit_core::config::Config;
use useraudit_core::text::{
    DAY_MICROS, date, escape, escape_visible, is_invisible, now_micros, parse_time, plural, rfc3339, unescape, width,
};

#[derive(Parser)]
#[command(name = "useraudit-admin", version, about = "Read the useraudit login log and manage account states")]
struct Cli {
    /// Configuration file [default: /etc/security/useraudit.toml]
    #[arg(long, global = true, value_name = "PATH")]
    conf: Option<PathBuf>,
    /// Database file, an absolute path in an existing directory (overrides the configuration's `database`)
    #[arg(long, global = true, value_name = "PATH", value_parser = PathBufValueParser::new().try_map(absolute))]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusFormat {
    Table,
    Json,
}

/// A name, host or service to select by: the escaped form that the output
/// shows (`\xff`, `\n`, `\\`), or the raw bytes.
#[derive(Clone)]
struct Text(Vec<u8>);

fn text_arg() -> impl TypedValueParser<Value = Text> {
    OsStringValueParser::new().try_map(|s: OsString| unescape(s.as_bytes()).map(Text))
}

/// `--since`/`--until`: checked here, so that a bad value is a usage
/// error; resolved against the command's clock later.
fn time_arg(s: &str) -> Result<String, String> {
    parse_time(s, 0).map(|_| s.to_string())
}

fn limit_arg(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number of entries; expected a whole number (e.g. 100)"))
}

fn absolute(p: PathBuf) -> Result<PathBuf, String> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err("the database must be an absolute path (as the configuration's `database` must)".into())
    }
}

#[derive(Args)]
struct LogArgs {
    /// Only failed attempts
    #[arg(long, conflicts_with = "succeeded")]
    failed: bool,
    /// Only successful logins
    #[arg(long)]
    succeeded: bool,
    /// Only this user (as typed; written as the output shows it, or raw)
    #[arg(long, value_name = "U", value_parser = text_arg())]
    user: Option<Text>,
    /// Only this remote host (written as the output shows it, or raw)
    #[arg(long, value_name = "H", value_parser = text_arg())]
    rhost: Option<Text>,
    /// Only this PAM service (written as the output shows it, or raw)
    #[arg(long, value_name = "S", value_parser = text_arg())]
    service: Option<Text>,
    /// From this time: RFC 3339, a date, or a span back from now (3d, 12h)
    #[arg(long, value_name = "T", value_parser = time_arg)]
    since: Option<String>,
    /// Before this time
    #[arg(long, value_name = "T", value_parser = time_arg)]
    until: Option<String>,
    /// At most N entries
    #[arg(long, value_name = "N", value_parser = limit_arg, allow_negative_numbers = true)]
    limit: Option<u64>,
    #[arg(long, value_enum, default_value = "table")]
    format: LogFormat,
    /// Show the last --limit entries (default 10), oldest first, then each new one as it arrives, until interrupted
    #[arg(short = 'f', long)]
    follow: bool,
    /// Read the fleet log in PostgreSQL (every host's entries, each with its host)
    #[arg(long, conflicts_with = "follow")]
    fleet: bool,
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Create or migrate the PostgreSQL schema, its roles and GRANTs (idempotent)
    Init,
    /// One sync round now: push waiting entries, apply fleet actions and the fleet lockout
    Sync,
    /// Last sync, entries waiting, whether PostgreSQL is reachable
    Status {
        #[arg(long, value_enum, default_value = "table")]
        format: StatusFormat,
    },
}

#[derive(Subcommand)]
enum Command {
    /// The login log, newest first
    Log(LogArgs),
    /// Per account: state, reason, failures, last login, password expiry.
    /// With one USER, exit 0 if it may log in and 3 if it may not.
    Status {
        users: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: StatusFormat,
        /// The fleet's view: per name, its fleet state and the host it was last seen on
        #[arg(long)]
        fleet: bool,
    },
    /// Re-enable accounts: clear lock, disable and failure count; restart the inactivity clock
    Activate {
        #[arg(required = true)]
        users: Vec<String>,
        /// On every host of the fleet (recorded in PostgreSQL; hosts apply it at their next sync)
        #[arg(long)]
        fleet: bool,
    },
    /// Disable an account by hand
    Lock {
        user: String,
        /// Why (shown by status)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// On every host of the fleet (recorded in PostgreSQL; hosts apply it at their next sync)
        #[arg(long)]
        fleet: bool,
    },
    /// The fleet store on PostgreSQL (the [fleet] table)
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Disable accounts inactive longer than account_expiry_days; delete log entries older than retention_days
    Sweep {
        /// Show what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the configuration and the database; print the effective settings
    Check,
    /// Totals, a chart per day (per hour up to 48 h), top hosts and names by
    /// failures, locked and disabled accounts, logins from new hosts
    Report {
        /// From this time [default: 7 days ago]: RFC 3339, a date, or a span back from now (3d, 12h)
        #[arg(long, value_name = "T", value_parser = time_arg)]
        since: Option<String>,
        /// Before this time [default: now]
        #[arg(long, value_name = "T", value_parser = time_arg)]
        until: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: StatusFormat,
        /// Draw the chart in plain ASCII (the default when the locale is not UTF-8)
        #[arg(long)]
        ascii: bool,
    },
    /// Prometheus metrics (text format, for node_exporter's textfile collector)
    Metrics {
        /// Replace FILE atomically (mode 0644) instead of writing to standard output
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Merge the log spool into the database as entries arrive, in the foreground, until SIGTERM (for systemd)
    Daemon,
    /// Remote hosts with recorded failures or blocks, and their state
    Hosts {
        /// Only hosts blocked now
        #[arg(long)]
        blocked: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: LogFormat,
        /// The fleet's view: failures counted across hosts, blocks, where each was last seen
        #[arg(long)]
        fleet: bool,
    },
    /// Block a remote host (an address, an IPv6 network of host_ipv6_prefix, or a name) until unblock
    Block {
        #[arg(value_parser = text_arg())]
        host: Text,
        /// Why (shown by hosts)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
        /// On every host of the fleet (recorded in PostgreSQL; hosts apply it at their next sync)
        #[arg(long)]
        fleet: bool,
    },
    /// Lift the block of remote hosts and forget their failures
    Unblock {
        #[arg(required = true, value_parser = text_arg())]
        hosts: Vec<Text>,
        /// On every host of the fleet, and reset the fleet's count (recorded in PostgreSQL; hosts apply it at their next sync)
        #[arg(long)]
        fleet: bool,
    },
}

/// How a run ends: the documented exit codes, in one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exit {
    /// 0: done.
    Success,
    /// 1: an error; each one was reported on stderr, one line each.
    Error,
    /// 2: a usage error: an unknown option, or a value an option cannot take.
    Usage,
    /// 3: `status USER`: that account may not log in.
    NotAllowed,
}

impl From<&AdminError> for Exit {
    /// The exit code of a failed command.
    fn from(e: &AdminError) -> Exit {
        match e {
            AdminError::Usage(_) => Exit::Usage,
            _ => Exit::Error,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(match e {
            Exit::Success => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::NotAllowed => 3,
        })
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let exit = if e.use_stderr() { Exit::Usage } else { Exit::Success };
            let _ = e.print();
            return exit.into();
        }
    };
    useraudit_core::sys::openlog(c"useraudit-admin");
    match run(cli) {
        Ok(exit) => exit,
        Err(e) => {
            report(&e);
            Exit::from(&e)
        }
    }
    .into()
}

/// Whether stderr is the systemd journal's stream (`JOURNAL_STREAM` names
/// its device and inode, as systemd.exec(5) says to check).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else { return false };
    let Ok(md) = std::fs::metadata("/proc/self/fd/2") else { return false };
    v.to_str() == Some(&format!("{}:{}", md.dev(), md.ino()))
}

/// One problem on stderr, one line.
fn report(e: &AdminError) {
    let _ = writeln!(io::stderr(), "useraudit-admin: {}", e.to_string().replace('\n', " "));
}

/// Writes to stdout; a closed pipe (`| head`) ends the program quietly.
struct Out(io::BufWriter<io::StdoutLock<'static>>);

impl Out {
    fn new() -> Out {
        Out(io::BufWriter::new(io::stdout().lock()))
    }
    fn line(&mut self, s: &str) -> Result<(), AdminError> {
        match writeln!(self.0, "{s}") {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            r => r.map_err(AdminError::from),
        }
    }
    /// Send what is buffered (`log --follow`, after each batch).
    fn flush(&mut self) -> Result<(), AdminError> {
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(0),
            r => r.map_err(AdminError::from),
        }
    }
    fn done(mut self) -> Result<(), AdminError> {
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(AdminError::from),
        }
    }
}

fn run(cli: Cli) -> Result<Exit, AdminError> {
    if let Command::Daemon = cli.command {
        // Under systemd, stderr is the journal, which has the syslog lines
        // already: say each thing once.
        let journal = stderr_is_journal();
        let mut say = |l: &str| {
            if !journal {
                eprintln!("useraudit-admin daemon: {l}");
            }
        };
        useraudit_admin::daemon::run(cli.conf.as_deref(), cli.db.as_deref(), &mut say)?;
        return Ok(Exit::Success);
    }
    let cfg = commands::load_config(cli.conf.as_deref(), cli.db.as_deref())?;
    let now = now_micros();
    let mut out = Out::new();
    let exit = match cli.command {
        Command::Log(args) => log(&cfg, &mut out, args, now)?,
        Command::Status { users, format, fleet: true } => fleet_status(&cfg, &mut out, &users, format, now)?,
        Command::Status { users, format, fleet: false } => status(&cfg, &mut out, &users, format, now)?,
        Command::Activate { users, fleet } => {
            if fleet {
                let here = fleet_action(&cfg, &mut out, &users, "activate", None, now)?;
                if here.is_empty() { Exit::Success } else { activate(&cfg, &mut out, &here, now)? }
            } else {
                activate(&cfg, &mut out, &users, now)?
            }
        }
        Command::Lock { user, reason, fleet } => {
            if fleet
                && fleet_action(&cfg, &mut out, std::slice::from_ref(&user), "lock", reason.as_deref(), now)?.is_empty()
            {
                Exit::Success
            } else {
                lock(&cfg, &mut out, &user, reason.as_deref(), now)?
            }
        }
        Command::Fleet { command } => fleet(&cfg, &mut out, command, now)?,
        Command::Sweep { dry_run } => sweep(&cfg, &mut out, dry_run, now)?,
        Command::Check => check(&cfg, &mut out)?,
        Command::Report { since, until, format, ascii } => {
            report_cmd(&cfg, &mut out, since, until, format, ascii, now)?
        }
        Command::Metrics { output } => metrics(&cfg, &mut out, output, now)?,
        Command::Hosts { blocked, format, fleet: true } => fleet_hosts(&cfg, &mut out, blocked, format, now)?,
        Command::Hosts { blocked, format, fleet: false } => hosts_cmd(&cfg, &mut out, blocked, format, now)?,
        Command::Block { host, reason, fleet } => {
            if fleet
                && !fleet_host_action(&cfg, &mut out, std::slice::from_ref(&host), "block", reason.as_deref(), now)?
            {
                Exit::Success
            } else {
                block(&cfg, &mut out, &host.0, reason.as_deref(), now)?
            }
        }
        Command::Unblock { hosts, fleet } => {
            if fleet {
                fleet_host_action(&cfg, &mut out, &hosts, "unblock", None, now)?;
            }
            unblock(&cfg, &mut out, &hosts, now)?
        }
        Command::Daemon => unreachable!("handled above"),
    };
    out.done()?;
    Ok(exit)
}

fn log(cfg: &Config, out: &mut Out, a: LogArgs, now: i64) -> Result<Exit, AdminError> {
    // Checked when parsed; a failure here cannot happen.
    let time = |opt: &str, t: Option<String>| {
        t.map(|t| parse_time(&t, now).map_err(|e| AdminError::Usage(format!("{opt}: {e}")))).transpose()
    };
    let q = LogQuery {
        success: if a.failed {
            Some(false)
        } else if a.succeeded {
            Some(true)
        } else {
            None
        },
        user: a.user.map(|t| t.0),
        rhost: a.rhost.map(|t| t.0),
        service: a.service.map(|t| t.0),
        since: time("--since", a.since)?,
        until: time("--until", a.until)?,
        limit: a.limit,
    };
    if a.follow {
        return follow(cfg, out, q, a.format);
    }
    if a.fleet {
        let rows = useraudit_admin::fleet::log(cfg, &q)?;
        match a.format {
            LogFormat::Table => {
                let mut header = vec!["HOST"];
                header.extend(LOG_HEADER);
                let rows = rows
                    .iter()
                    .map(|r| {
                        std::iter::once(escape_visible(r.host.as_bytes()))
                            .chain(log_fields(&r.entry, escape_visible, "-"))
                            .collect()
                    })
                    .collect();
                table(out, &header, rows)?
            }
            LogFormat::Csv => {
                out.line(&format!("host,{CSV_HEADER}"))?;
                for r in &rows {
                    out.line(&format!("{},{}", csv_cell(&escape(r.host.as_bytes())), csv_row(&r.entry)))?;
                }
            }
            LogFormat::Json => out.line(&json_text(&Value::Array(
                rows.iter()
                    .map(|r| {
                        let mut v = log_json(&r.entry);
                        v["host"] = jstr(r.host.as_bytes());
                        v
                    })
                    .collect(),
            )))?,
        }
        return Ok(Exit::Success);
    }
    let db = commands::open_store(cfg)?;
    warn_damaged(&db);
    let rows = db.log()?.query(&q)?;
    match a.format {
        LogFormat::Table => print_log_table(out, &rows)?,
        LogFormat::Csv => print_log_csv(out, &rows)?,
        LogFormat::Json => out.line(&json_text(&Value::Array(rows.iter().map(log_json).collect())))?,
    }
    Ok(Exit::Success)
}

/// `log --follow`: the last entries, oldest first, then each new one as it
/// is merged (by the daemon, or else by this command), until SIGINT,
/// SIGTERM or the output is closed.
fn follow(cfg: &Config, out: &mut Out, mut q: LogQuery, format: LogFormat) -> Result<Exit, AdminError> {
    use useraudit_admin::daemon::{self, Wake, Watch};
    let watch = Watch::new(&cfg.database)?;
    watch.stop_when_output_closes();
    let mut db = commands::open_store(cfg)?;
    warn_damaged(&db);
    q.limit = Some(q.limit.unwrap_or(10));
    let mut last = db.log()?.last_id()?;
    let mut rows = db.log()?.query(&q)?;
    rows.retain(|e| e.id <= last);
    rows.reverse();
    let mut widths: Vec<usize> = LOG_HEADER.iter().map(|h| h.len()).collect();
    let mut print = |out: &mut Out, rows: &[Entry], first: bool| -> Result<(), AdminError> {
        match format {
            LogFormat::Table => {
                let cells: Vec<Vec<String>> = rows.iter().map(|e| log_fields(e, escape_visible, "-")).collect();
                for r in &cells {
                    for (w, c) in widths.iter_mut().zip(r) {
                        *w = (*w).max(width(c));
                    }
                }
                if first {
                    out.line(&table_line(&widths, LOG_HEADER.iter().map(|s| s.to_string()).collect()))?;
                }
                for r in cells {
                    out.line(&table_line(&widths, r))?;
                }
            }
            LogFormat::Csv => {
                if first {
                    out.line(CSV_HEADER)?;
                }
                for e in rows {
                    out.line(&csv_row(e))?;
                }
            }
            LogFormat::Json => {
                for e in rows {
                    out.line(&json_text(&log_json(e)))?;
                }
            }
        }
        out.flush()
    };
    print(out, &rows, true)?;
    let mut problem: Option<String> = None;
    // A writer's last change to the WAL file comes just before it marks
    // the commit in the shared-memory index (which inotify does not see):
    // after a change, look once more a moment later.
    let mut again = false;
    loop {
        let wake = watch.wait(if again { Some(daemon::SETTLE) } else { watch.idle() });
        again = wake != Wake::Tick;
        match wake {
            Wake::Stop => break,
            Wake::Spool | Wake::Tick if daemon::running(&cfg.database).is_none() => {
                // No daemon: merge here, and say once why it cannot.
                match db.log_mut()?.merge_spool() {
                    Ok(_) => problem = None,
                    Err(e) => {
                        let e = e.to_string();
                        if problem.as_ref() != Some(&e) {
                            eprintln!("useraudit-admin: warning: the log spool was not merged: {e}");
                        }
                        problem = Some(e);
                    }
                }
            }
            _ => {}
        }
        let rows = db.log()?.query_after(&q, last)?;
        if let Some(e) = rows.last() {
            last = e.id;
        }
        print(out, &rows, false)?;
    }
    Ok(Exit::Success)
}

/// Every account that can be shown is shown; each one that cannot is
/// reported on stderr, and the exit code is then 1.
fn status(cfg: &Config, out: &mut Out, users: &[String], format: StatusFormat, now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    let (rows, problems) = commands::status(cfg, &db.accounts, users, now)?;
    match format {
        // Nothing to show but problems: no table of no rows.
        StatusFormat::Table if rows.is_empty() && !problems.is_empty() => {}
        StatusFormat::Table => print_status_table(out, &rows)?,
        StatusFormat::Json => out.line(&json_text(&Value::Array(rows.iter().map(status_json).collect())))?,
    }
    for p in &problems {
        report(p);
    }
    Ok(if !problems.is_empty() {
        Exit::Error
    } else if users.len() == 1 && rows.first().is_some_and(|r| !r.may_login) {
        Exit::NotAllowed
    } else {
        Exit::Success
    })
}

fn activate(cfg: &Config, out: &mut Out, users: &[String], now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    // Check every name first, so a typo changes nothing.
    for u in users {
        commands::resolve(&db.accounts, u)?;
    }
    for u in users {
        let (name, what) = commands::activate(cfg, &db.accounts, u, now)?;
        let name = escape_visible(&name);
        out.line(&match what {
            Activated::Reactivated { was_state, was_reason, failures } => format!(
                "{name}: activated (was {was_state}{}, {})",
                was_reason.map(|r| format!(", {r}")).unwrap_or_default(),
                plural(i64::from(failures), "failure")
            ),
            Activated::AlreadyActive => format!("{name}: already active (inactivity clock restarted)"),
            Activated::Repaired => format!("{name}: activated (its damaged state file was replaced)"),
        })?;
    }
    Ok(Exit::Success)
}

fn lock(cfg: &Config, out: &mut Out, user: &str, reason: Option<&str>, now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    let (name, newly) = commands::lock(cfg, &db.accounts, user, reason, now)?;
    let name = escape_visible(&name);
    out.line(&if newly {
        format!("{name}: disabled")
    } else {
        format!("{name}: already locked or disabled; now disabled by hand")
    })?;
    Ok(Exit::Success)
}

/// `--fleet` on activate and lock: the admin action is recorded in
/// PostgreSQL first (every host applies it at its next sync); the names
/// that are accounts here are returned, to apply it here at once.
fn fleet_action(
    cfg: &Config,
    out: &mut Out,
    users: &[String],
    action: &str,
    note: Option<&str>,
    now: i64,
) -> Result<Vec<String>, AdminError> {
    let mut here = Vec::new();
    for u in users {
        useraudit_admin::fleet::record_action(cfg, u.as_bytes(), action, note.map(str::as_bytes), now)?;
        out.line(&format!("{}: {action} recorded for the fleet", escape_visible(u.as_bytes())))?;
        match useraudit_core::sys::lookup_user(u.as_bytes()) {
            useraudit_core::sys::Lookup::Found(_) => here.push(u.clone()),
            _ => out.line(&format!("{}: not an account on this host", escape_visible(u.as_bytes())))?,
        }
    }
    Ok(here)
}

/// `--fleet` on block and unblock: the action is recorded in PostgreSQL
/// under each host's key (every host applies it at its next sync), then
/// the caller applies it here at once. False when it must not be applied
/// here: a block of a host in this host's `trusted_hosts`.
fn fleet_host_action(
    cfg: &Config,
    out: &mut Out,
    hosts: &[Text],
    action: &str,
    note: Option<&str>,
    now: i64,
) -> Result<bool, AdminError> {
    let mut here = true;
    for h in hosts {
        if h.0.is_empty() {
            return Err(AdminError::Refused("an empty host name is not a host".into()));
        }
        let key = useraudit_core::hosts::key_for_admin(&h.0, cfg.host_ipv6_prefix);
        useraudit_admin::fleet::record_action(cfg, &key, action, note.map(str::as_bytes), now)?;
        out.line(&format!("{}: {action} recorded for the fleet", escape_visible(&key)))?;
        if action == "block" && useraudit_admin::hosts::trusted(cfg, &key) {
            out.line(&format!("{}: in trusted_hosts here, so not blocked on this host", escape_visible(&key)))?;
            here = false;
        }
    }
    Ok(here)
}

fn fleet(cfg: &Config, out: &mut Out, command: FleetCommand, now: i64) -> Result<Exit, AdminError> {
    use useraudit_admin::fleet;
    match command {
        FleetCommand::Init => {
            fleet::init(cfg)?;
            out.line("fleet schema ready (roles useraudit_host and useraudit_fleet_admin)")?;
        }
        FleetCommand::Sync => {
            let mut db = commands::open_store(cfg)?;
            warn_damaged(&db);
            let accounts = db.accounts.clone();
            let s = fleet::sync(cfg, db.log_mut()?, &accounts, now)?;
            out.line(&format!(
                "pushed {}, applied {}, locked by the fleet: {}, hosts blocked by the fleet: {}",
                plural(i64::try_from(s.pushed).unwrap_or(i64::MAX), "entry"),
                plural(s.actions as i64, "admin action"),
                names_or_none(&s.locked),
                names_or_none(&s.blocked),
            ))?;
        }
        FleetCommand::Status { format } => {
            let db = commands::open_store(cfg)?;
            warn_damaged(&db);
            let s = fleet::status(cfg, db.log()?)?;
            match format {
                StatusFormat::Table => {
                    out.line(&format!("host: {}", escape_visible(s.host.as_bytes())))?;
                    out.line(&format!("last sync: {}", time_or_dash(s.last_sync)))?;
                    out.line(&format!("entries waiting: {}", s.waiting))?;
                    out.line(&format!(
                        "postgresql: {}",
                        match &s.unreachable {
                            None => "reachable".to_string(),
                            Some(e) => format!("unreachable ({e})"),
                        }
                    ))?;
                }
                StatusFormat::Json => out.line(&json_text(&json!({
                    "host": jstr(s.host.as_bytes()),
                    "last_sync": jtime(s.last_sync),
                    "waiting": s.waiting,
                    "reachable": s.unreachable.is_none(),
                    "error": s.unreachable,
                })))?,
            }
            if s.unreachable.is_some() {
                return Ok(Exit::Error);
            }
        }
    }
    Ok(Exit::Success)
}

fn names_or_none(names: &[Vec<u8>]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names.iter().map(|u| escape_visible(u)).collect::<Vec<_>>().join(", ")
}

/// `hosts --fleet`: the fields of `hosts`, and `last_seen` / `last_seen_on`
/// (the fleet host of the remote host's latest entry).
fn fleet_hosts(cfg: &Config, out: &mut Out, blocked: bool, format: LogFormat, now: i64) -> Result<Exit, AdminError> {
    let rows = useraudit_admin::fleet::fleet_hosts(cfg, blocked, now)?;
    if cfg.host_failure_limit == 0 {
        eprintln!(
            "useraudit-admin: warning: host_failure_limit is 0 here: the fleet's count is decided with this host's settings, so only block --fleet shows as blocked"
        );
    }
    let seen: Vec<_> = rows.iter().map(|r| (r.last_seen, r.last_seen_on.as_deref())).collect();
    let hosts: Vec<HostRow> = rows.iter().map(|r| r.row.clone()).collect();
    write_hosts(out, format, &hosts, Some(&seen))?;
    Ok(Exit::Success)
}

fn fleet_status(
    cfg: &Config,
    out: &mut Out,
    users: &[String],
    format: StatusFormat,
    now: i64,
) -> Result<Exit, AdminError> {
    let rows = useraudit_admin::fleet::fleet_status(cfg, users, now)?;
    match format {
        StatusFormat::Table => table(
            out,
            &["USER", "STATE", "REASON", "FAILURES", "HOST", "LAST_SEEN"],
            rows.iter()
                .map(|r| {
                    vec![
                        escape_visible(&r.user),
                        r.state.into(),
                        r.reason.unwrap_or("-").into(),
                        r.failures.to_string(),
                        escape_visible(r.host.as_bytes()),
                        rfc3339(r.last_seen),
                    ]
                })
                .collect(),
        )?,
        StatusFormat::Json => out.line(&json_text(&Value::Array(
            rows.iter()
                .map(|r| {
                    json!({
                        "user": jstr(&r.user),
                        "state": r.state,
                        "reason": r.reason,
                        "failures": r.failures,
                        "host": jstr(r.host.as_bytes()),
                        "last_seen": rfc3339(r.last_seen),
                    })
                })
                .collect(),
        )))?,
    }
    Ok(if users.len() == 1 && rows.first().is_some_and(|r| r.state != "active") {
        Exit::NotAllowed
    } else {
        Exit::Success
    })
}

/// Run by a timer: accounts are swept even when the log spool cannot be
/// merged, but then the run fails (exit 1), so that the timer shows it.
fn sweep(cfg: &Config, out: &mut Out, dry_run: bool, now: i64) -> Result<Exit, AdminError> {
    let mut db = commands::open_store(cfg)?;
    warn_damaged(&db);
    let r = commands::sweep(cfg, &mut db, dry_run, now)?;
    let verb = if dry_run { "would disable" } else { "disabled" };
    if cfg.account_expiry_days == 0 {
        out.line("account_expiry_days is 0: no account is disabled for inactivity")?;
    }
    for (name, last) in &r.disabled {
        out.line(&format!(
            "{}: {verb} (inactive since {}, more than {})",
            escape_visible(name),
            rfc3339(*last),
            plural(i64::from(cfg.account_expiry_days), "day")
        ))?;
    }
    if let Some(before) = r.retention_before {
        out.line(&format!(
            "log: {} {} older than {}",
            if dry_run { "would delete" } else { "deleted" },
            plural(i64::try_from(r.deleted).unwrap_or(i64::MAX), "entry"),
            rfc3339(before)
        ))?;
    }
    out.line(&format!("{} account(s) {verb}", r.disabled.len()))?;
    let (swept, bad) = useraudit_admin::hosts::sweep(cfg, dry_run, now)?;
    if swept > 0 {
        let verb = if dry_run { "would remove" } else { "removed" };
        let files = plural(i64::try_from(swept).unwrap_or(i64::MAX), "host file");
        out.line(&format!("{verb} {files} with no block and no failure that counts"))?;
    }
    if r.temporaries > 0 {
        out.line(&format!(
            "{} {} (left by interrupted writes, older than an hour)",
            if dry_run { "would remove" } else { "removed" },
            plural(i64::try_from(r.temporaries).unwrap_or(i64::MAX), "stale temporary state file")
        ))?;
    }
    let mut failed = !bad.is_empty();
    for e in &bad {
        report(e);
    }
    if let Some(p) = db.problem() {
        let skipped = if cfg.retention_days > 0 { " (no log entries were deleted)" } else { "" };
        report(&AdminError::Problem(format!("the log spool was not merged{skipped}: {p}")));
        failed = true;
    }
    for p in &r.temporary_problems {
        report(&AdminError::Problem(format!("stale temporary files were not removed: {p}")));
        failed = true;
    }
    Ok(if failed { Exit::Error } else { Exit::Success })
}

fn check(cfg: &Config, out: &mut Out) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    for l in commands::check(cfg, &db)? {
        out.line(&l)?;
    }
    Ok(Exit::Success)
}

fn report_cmd(
    cfg: &Config,
    out: &mut Out,
    since: Option<String>,
    until: Option<String>,
    format: StatusFormat,
    ascii: bool,
    now: i64,
) -> Result<Exit, AdminError> {
    let time = |opt: &str, t: Option<String>| {
        t.map(|t| parse_time(&t, now).map_err(|e| AdminError::Usage(format!("{opt}: {e}")))).transpose()
    };
    let until = time("--until", until)?.unwrap_or(now + 1);
    let since = time("--since", since)?.unwrap_or(until - 7 * DAY_MICROS);
    if since >= until {
        return Err(AdminError::Refused(format!(
            "--since ({}) must be before --until ({})",
            rfc3339(since),
            rfc3339(until)
        )));
    }
    let db = commands::open_store(cfg)?;
    warn_damaged(&db);
    let r = report::build(db.log()?, &db.accounts, cfg, since, until, now)?;
    match format {
        StatusFormat::Json => out.line(&json_text(&report_json(&r)))?,
        StatusFormat::Table => {
            let var = |k: &str| std::env::var(k).ok();
            let unicode = !ascii && report::utf8_locale(var);
            print_report(out, &r, report::terminal_width(var), unicode)?
        }
    }
    Ok(Exit::Success)
}

fn print_report(out: &mut Out, r: &report::Report, width: usize, unicode: bool) -> Result<(), AdminError> {
    let t = &r.totals;
    out.line(&format!("Login report from {} to {} (UTC)", rfc3339(r.since), rfc3339(r.until)))?;
    out.line("")?;
    out.line("Totals")?;
    for (what, n) in [
        ("attempts", t.attempts),
        ("successes", t.successes),
        ("failures", t.failures),
        ("unknown names", t.unknown_names),
        ("remote hosts", t.remote_hosts),
    ] {
        out.line(&format!("  {what:<14} {n}"))?;
    }
    out.line("")?;
    for l in report::chart(r, width, unicode) {
        out.line(&l)?;
    }
    let none = |out: &mut Out, what: &str| out.line(&format!("({what})"));
    out.line("")?;
    out.line(&format!("Top {} remote hosts by failures", report::TOP))?;
    if r.top_hosts.is_empty() {
        none(out, "no failures from a remote host")?;
    } else {
        table(
            out,
            &["RHOST", "FAILURES", "SUCCESSES", "MARK"],
            r.top_hosts
                .iter()
                .map(|h| {
                    vec![
                        escape_visible(&h.host),
                        h.failures.to_string(),
                        h.successes.to_string(),
                        h.mark.unwrap_or("-").into(),
                    ]
                })
                .collect(),
        )?;
    }
    out.line("")?;
    out.line(&format!("Top {} names by failures", report::TOP))?;
    if r.top_names.is_empty() {
        none(out, "no failures")?;
    } else {
        table(
            out,
            &["USER", "FAILURES", "SUCCESSES", "ACCOUNT"],
            r.top_names
                .iter()
                .map(|n| {
                    vec![
                        escape_visible(&n.user),
                        n.failures.to_string(),
                        n.successes.to_string(),
                        if n.account { "yes" } else { "no (not an account)" }.into(),
                    ]
                })
                .collect(),
        )?;
    }
    out.line("")?;
    out.line("Accounts locked or disabled now")?;
    if r.accounts.is_empty() {
        none(out, "none")?;
    } else {
        table(
            out,
            &["USER", "STATE", "REASON", "SINCE", "UNLOCKS AT"],
            r.accounts
                .iter()
                .map(|a| {
                    vec![
                        escape_visible(&a.user),
                        a.state.into(),
                        a.reason.into(),
                        time_or_dash(a.since),
                        time_or_dash(a.until),
                    ]
                })
                .collect(),
        )?;
    }
    out.line("")?;
    out.line("Logins from a remote host new for the user")?;
    if r.new_hosts.is_empty() {
        none(out, "none")?;
    } else {
        table(
            out,
            &["FIRST", "USER", "RHOST", "LOGINS"],
            r.new_hosts
                .iter()
                .map(|n| {
                    vec![rfc3339(n.first), escape_visible(&n.user), escape_visible(&n.rhost), n.logins.to_string()]
                })
                .collect(),
        )?;
        if r.new_hosts_total > r.new_hosts.len() as u64 {
            out.line(&format!(
                "(and {} more; see --format json for the count)",
                r.new_hosts_total - r.new_hosts.len() as u64
            ))?;
        }
    }
    Ok(())
}

fn report_json(r: &report::Report) -> Value {
    let t = &r.totals;
    json!({
        "since": rfc3339(r.since),
        "until": rfc3339(r.until),
        "unit": r.unit.as_str(),
        "totals": {
            "attempts": t.attempts,
            "successes": t.successes,
            "failures": t.failures,
            "unknown_names": t.unknown_names,
            "remote_hosts": t.remote_hosts,
        },
        "buckets": r.buckets.iter().map(|b| json!({
            "start": rfc3339(b.start),
            "successes": b.successes,
            "failures": b.failures,
        })).collect::<Vec<_>>(),
        "top_hosts": r.top_hosts.iter().map(|h| json!({
            "rhost": jstr(&h.host),
            "failures": h.failures,
            "successes": h.successes,
            "mark": h.mark,
        })).collect::<Vec<_>>(),
        "top_names": r.top_names.iter().map(|n| json!({
            "user": jstr(&n.user),
            "failures": n.failures,
            "successes": n.successes,
            "account": n.account,
        })).collect::<Vec<_>>(),
        "accounts": r.accounts.iter().map(|a| json!({
            "user": jstr(&a.user),
            "state": a.state,
            "reason": a.reason,
            "since": jtime(a.since),
            "unlocks_at": jtime(a.until),
        })).collect::<Vec<_>>(),
        "new_hosts": r.new_hosts.iter().map(|n| json!({
            "user": jstr(&n.user),
            "rhost": jstr(&n.rhost),
            "first": rfc3339(n.first),
            "logins": n.logins,
        })).collect::<Vec<_>>(),
        "new_hosts_total": r.new_hosts_total,
    })
}

/// The metrics are written (to the file or standard output) also when the
/// spool cannot be merged: the file then says so (`useraudit_merge_ok 0`),
/// and the command exits 1.
fn metrics(cfg: &Config, out: &mut Out, output: Option<PathBuf>, now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_damaged(&db);
    let text = useraudit_admin::metrics::render(&useraudit_admin::metrics::snapshot(cfg, &db, now)?);
    match output {
        Some(p) => useraudit_admin::metrics::write_file(&p, &text)
            .map_err(|e| AdminError::io(format!("--output {}", p.display()), e))?,
        None => {
            for l in text.lines() {
                out.line(l)?;
            }
        }
    }
    if let Some(p) = db.problem() {
        report(&AdminError::Problem(format!("the log spool was not merged: {p}")));
        return Ok(Exit::Error);
    }
    Ok(Exit::Success)
}

/// The rows of `hosts`, and with `seen` (`hosts --fleet`) each one's
/// `last_seen` and `last_seen_on` after them.
fn write_hosts(
    out: &mut Out,
    format: LogFormat,
    rows: &[HostRow],
    seen: Option<&[(Option<i64>, Option<&str>)]>,
) -> Result<(), AdminError> {
    let fields = |i: usize, text: fn(&[u8]) -> String, absent: &str| -> Vec<String> {
        let r = &rows[i];
        let t = |v: Option<i64>| v.map(rfc3339).unwrap_or_else(|| absent.into());
        let reason = match (r.reason, &r.note) {
            (Some(x), Some(n)) if absent == "-" => format!("{x}: {}", text(n)),
            (Some(x), _) => x.into(),
            (None, _) => absent.into(),
        };
        let mut v = vec![
            text(&r.host),
            r.state.into(),
            reason,
            r.failures.to_string(),
            t(r.last_failure),
            t(r.blocked_at),
            t(r.unblocks_at),
        ];
        if let Some((at, on)) = seen.map(|s| s[i]) {
            v.push(t(at));
            v.push(on.map(|h| text(h.as_bytes())).unwrap_or_else(|| absent.into()));
        }
        v
    };
    let mut head = vec!["HOST", "STATE", "REASON", "FAILURES", "LAST FAILURE", "BLOCKED AT", "UNBLOCKS AT"];
    let mut csv_head = String::from("host,state,reason,failures,last_failure,blocked_at,unblocks_at");
    if seen.is_some() {
        head.extend(["LAST SEEN", "SEEN ON"]);
        csv_head.push_str(",last_seen,last_seen_on");
    }
    match format {
        LogFormat::Table => table(out, &head, (0..rows.len()).map(|i| fields(i, escape_visible, "-")).collect())?,
        LogFormat::Csv => {
            out.line(&csv_head)?;
            for i in 0..rows.len() {
                out.line(&fields(i, escape, "").iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","))?;
            }
        }
        LogFormat::Json => out.line(&json_text(&Value::Array(
            rows.iter()
                .enumerate()
                .map(|(i, r)| {
                    let mut v = json!({
                        "host": jstr(&r.host),
                        "state": r.state,
                        "reason": r.reason,
                        "note": jopt(&r.note),
                        "failures": r.failures,
                        "last_failure": jtime(r.last_failure),
                        "blocked_at": jtime(r.blocked_at),
                        "unblocks_at": jtime(r.unblocks_at),
                    });
                    if let Some((at, on)) = seen.map(|s| s[i]) {
                        v["last_seen"] = jtime(at);
                        v["last_seen_on"] = on.map_or(Value::Null, |h| jstr(h.as_bytes()));
                    }
                    v
                })
                .collect(),
        )))?,
    }
    Ok(())
}

/// `hosts`: every host with recorded state; hosts whose files cannot be
/// read are reported on stderr, and the exit code is then 1.
fn hosts_cmd(cfg: &Config, out: &mut Out, blocked: bool, format: LogFormat, now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    let (rows, problems) = useraudit_admin::hosts::list(cfg, blocked, now)?;
    write_hosts(out, format, &rows, None)?;
    for p in &problems {
        report(p);
    }
    Ok(if problems.is_empty() { Exit::Success } else { Exit::Error })
}

fn block(cfg: &Config, out: &mut Out, host: &[u8], reason: Option<&str>, now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    let (key, newly) = useraudit_admin::hosts::block(cfg, host, reason, now)?;
    let key = escape_visible(&key);
    out.line(&if newly { format!("{key}: blocked") } else { format!("{key}: already blocked; now blocked by hand") })?;
    if cfg.host_failure_limit == 0 {
        eprintln!(
            "useraudit-admin: warning: host_failure_limit is 0: the module does not look at hosts, so the block has no effect until it is set"
        );
    }
    Ok(Exit::Success)
}

fn unblock(cfg: &Config, out: &mut Out, hosts: &[Text], now: i64) -> Result<Exit, AdminError> {
    let db = commands::open_store(cfg)?;
    warn_unmerged(&db);
    for h in hosts {
        let (key, was) = useraudit_admin::hosts::unblock(cfg, &h.0, now)?;
        let key = escape_visible(&key);
        out.line(&if was {
            format!("{key}: unblocked")
        } else {
            format!("{key}: not blocked (its failures were forgotten)")
        })?;
    }
    Ok(Exit::Success)
}

/// Commands that do not show the log go on when the spool cannot be
/// merged (an administrator re-activating an account must not be stopped
/// by it), with a warning.
fn warn_unmerged(db: &commands::Db) {
    if let Some(e) = db.problem() {
        eprintln!("useraudit-admin: warning: the log spool was not merged: {e}");
    }
    warn_damaged(db);
}

/// Every command says so while a spool file with a damaged header exists
/// (`check` fails instead).
fn warn_damaged(db: &commands::Db) {
    for l in db.damaged_spools() {
        eprintln!("useraudit-admin: warning: {l}");
    }
}

fn time_or_dash(t: Option<i64>) -> String {
    t.map(rfc3339).unwrap_or_else(|| "-".into())
}

/// Print rows of cells with columns lined up.
fn table(out: &mut Out, header: &[&str], rows: Vec<Vec<String>>) -> Result<(), AdminError> {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(width(c));
        }
    }
    let fmt = |cells: Vec<String>| table_line(&w, cells);
    out.line(&fmt(header.iter().map(|s| s.to_string()).collect()))?;
    for r in rows {
        out.line(&fmt(r))?;
    }
    Ok(())
}

/// One line of a table whose columns are `w` wide.
fn table_line(w: &[usize], cells: Vec<String>) -> String {
    let n = cells.len();
    let mut line = String::new();
    for (i, c) in cells.into_iter().enumerate() {
        let pad = w[i].saturating_sub(width(&c));
        line.push_str(&c);
        if i + 1 < n {
            line.push_str(&" ".repeat(pad + 2));
        }
    }
    line
}

/// The log columns of one entry, in order, for the table and CSV: `text`
/// renders a stored text, `absent` stands for a missing one.
fn log_fields(e: &Entry, text: fn(&[u8]) -> String, absent: &str) -> Vec<String> {
    let field = |v: &Option<Vec<u8>>| v.as_deref().map(text).unwrap_or_else(|| absent.into());
    vec![
        rfc3339(e.time),
        if e.success { "success" } else { "failure" }.into(),
        text(&e.user),
        field(&e.service),
        field(&e.rhost),
        field(&e.ruser),
        field(&e.tty),
        field(&e.auth_method),
        e.reason.clone().unwrap_or_else(|| absent.into()),
    ]
}

const LOG_HEADER: [&str; 9] = ["TIME", "OUTCOME", "USER", "SERVICE", "RHOST", "RUSER", "TTY", "METHOD", "REASON"];

fn print_log_table(out: &mut Out, rows: &[Entry]) -> Result<(), AdminError> {
    table(out, &LOG_HEADER, rows.iter().map(|e| log_fields(e, escape_visible, "-")).collect())
}

/// One CSV cell (RFC 4180). A cell that a spreadsheet would take for a
/// formula (it begins with `=`, `+`, `-`, `@`, a tab or a carriage return)
/// gets a `'` in front, as OWASP advises; so does one that begins with `'`,
/// so that two different texts never give the same cell.
fn csv_cell(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r', '\'']) { format!("'{s}") } else { s.to_string() };
    if s.contains([',', ';', '"', ' ']) || s.is_empty() { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

const CSV_HEADER: &str = "id,time,outcome,user,service,rhost,ruser,tty,auth_method,reason";

fn csv_row(e: &Entry) -> String {
    let cells: Vec<String> = std::iter::once(e.id.to_string()).chain(log_fields(e, escape, "")).collect();
    cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
}

fn print_log_csv(out: &mut Out, rows: &[Entry]) -> Result<(), AdminError> {
    out.line(CSV_HEADER)?;
    for e in rows {
        out.line(&csv_row(e))?;
    }
    Ok(())
}

/// A stored text as a JSON string: the text itself when it is UTF-8 without
/// a backslash (JSON escapes control characters), else the escaped form of
/// the table (`\xff`, `\\`). A string with a backslash is therefore
/// always the escaped form, and two different stored texts never give the
/// same string.
fn jstr(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) if !s.contains('\\') => Value::String(s.into()),
        _ => Value::String(escape(b)),
    }
}

/// JSON text safe on a terminal: DEL, C1 controls and invisible or
/// bidirectional characters (raw in serde_json's output) as `\uXXXX`. They
/// can only occur inside strings, where the escape means the same.
fn json_text(v: &Value) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\u{7f}' || is_invisible(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn jopt(b: &Option<Vec<u8>>) -> Value {
    b.as_deref().map(jstr).unwrap_or(Value::Null)
}

fn jtime(t: Option<i64>) -> Value {
    t.map(|t| Value::String(rfc3339(t))).unwrap_or(Value::Null)
}

fn log_json(e: &Entry) -> Value {
    json!({
        "id": e.id,
        "time": rfc3339(e.time),
        "outcome": if e.success { "success" } else { "failure" },
        "user": jstr(&e.user),
        "service": jopt(&e.service),
        "rhost": jopt(&e.rhost),
        "ruser": jopt(&e.ruser),
        "tty": jopt(&e.tty),
        "auth_method": jopt(&e.auth_method),
        "reason": e.reason,
    })
}

fn status_json(r: &StatusRow) -> Value {
    json!({
        "user": jstr(&r.user),
        "state": r.state,
        "reason": r.reason,
        "failures": r.failures,
        "last_login": jtime(r.last_login),
        "last_failure": jtime(r.last_failure),
        "locked_at": jtime(r.locked_at),
        "note": jopt(&r.note),
        "password_changed": jtime(r.password_changed),
        "password_expires": jtime(r.password_expires),
        "unlocks_at": jtime(r.unlocks_at),
        "lock_scope": r.lock_scope,
    })
}

fn print_status_table(out: &mut Out, rows: &[StatusRow]) -> Result<(), AdminError> {
    let header = [
        "USER",
        "STATE",
        "REASON",
        "FAILURES",
        "LAST LOGIN",
        "LAST FAILURE",
        "LOCKED/DISABLED AT",
        "UNLOCKS AT",
        "PASSWORD CHANGED",
        "PASSWORD EXPIRES",
        "LOCK SCOPE",
    ];
    let cells = rows
        .iter()
        .map(|r| {
            let reason = match (&r.reason, &r.note) {
                (Some(x), Some(n)) => format!("{x}: {}", escape(n)),
                (Some(x), None) => x.to_string(),
                (None, _) if r.exempt => "(exempt)".into(),
                (None, _) => "-".into(),
            };
            let expires = match (r.password_expires, r.password_days_left) {
                (Some(t), Some(d)) if d < 0 => format!("{} (expired)", date(t)),
                (Some(t), Some(d)) => format!("{} ({} left)", date(t), plural(d, "day")),
                _ => "-".into(),
            };
            vec![
                escape_visible(&r.user),
                r.state.to_string(),
                reason,
                r.failures.to_string(),
                time_or_dash(r.last_login),
                time_or_dash(r.last_failure),
                time_or_dash(r.locked_at),
                time_or_dash(r.unlocks_at),
                r.password_changed.map(date).unwrap_or_else(|| "-".into()),
                expires,
                r.lock_scope.unwrap_or("-").into(),
            ]
        })
        .collect();
    table(out, &header, cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_exit_2_and_the_others_1() {
        assert_eq!(Exit::from(&AdminError::Usage("--since: no".into())), Exit::Usage);
        assert_eq!(Exit::from(&AdminError::Refused("exempt".into())), Exit::Error);
        assert_eq!(Exit::from(&AdminError::NotFound { user: b"x".to_vec() }), Exit::Error);
        assert_eq!(ExitCode::from(Exit::Usage), ExitCode::from(2));
    }
}
