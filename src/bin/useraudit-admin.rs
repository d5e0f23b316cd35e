//! useraudit-admin: read the login log, see each account's state,
//! re-activate accounts, sweep inactive ones. A thin shell over the
//! library: parsing, output formats and exit codes live here, the rest in
//! `pam_useraudit::admin`.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use pam_useraudit::admin::{self, Activated, AdminError, StatusRow};
use pam_useraudit::store::{Entry, LogQuery};
use pam_useraudit::text::{date, escape, escape_visible, is_invisible, now_micros, parse_time, rfc3339, width};

#[derive(Parser)]
#[command(name = "useraudit-admin", version, about = "Read the useraudit login log and manage account states")]
struct Cli {
    /// Configuration file [default: /etc/security/useraudit.toml]
    #[arg(long, global = true, value_name = "PATH")]
    conf: Option<PathBuf>,
    /// Database file (overrides the configuration's `database`)
    #[arg(long, global = true, value_name = "PATH")]
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

#[derive(Subcommand)]
enum Command {
    /// The login log, newest first
    Log {
        /// Only failed attempts
        #[arg(long, conflicts_with = "succeeded")]
        failed: bool,
        /// Only successful logins
        #[arg(long)]
        succeeded: bool,
        /// Only this user (as typed)
        #[arg(long, value_name = "U")]
        user: Option<String>,
        /// Only this remote host
        #[arg(long, value_name = "H")]
        rhost: Option<String>,
        /// Only this PAM service
        #[arg(long, value_name = "S")]
        service: Option<String>,
        /// From this time: RFC 3339, a date, or a span back from now (3d, 12h)
        #[arg(long, value_name = "T")]
        since: Option<String>,
        /// Before this time
        #[arg(long, value_name = "T")]
        until: Option<String>,
        /// At most N entries
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        #[arg(long, value_enum, default_value = "table")]
        format: LogFormat,
    },
    /// Per account: state, reason, failures, last login, password expiry.
    /// With one USER, exit 0 if it may log in and 3 if it may not.
    Status {
        users: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: StatusFormat,
    },
    /// Re-enable accounts: clear lock, disable and failure count; restart the inactivity clock
    Activate {
        #[arg(required = true)]
        users: Vec<String>,
    },
    /// Disable an account by hand
    Lock {
        user: String,
        /// Why (shown by status)
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Disable accounts inactive longer than account_expiry_days; delete log entries older than retention_days
    Sweep {
        /// Show what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the configuration and the database; print the effective settings
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pam_useraudit::sys::openlog(c"useraudit-admin");
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(io::stderr(), "useraudit-admin: {}", e.0.replace('\n', " "));
            ExitCode::from(1)
        }
    }
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
    fn done(mut self) -> Result<(), AdminError> {
        match self.0.flush() {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(AdminError::from),
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, AdminError> {
    let cfg = admin::load_config(cli.conf.as_deref(), cli.db.as_deref())?;
    let now = now_micros();
    let mut out = Out::new();
    let mut code = ExitCode::SUCCESS;
    match cli.command {
        Command::Log { failed, succeeded, user, rhost, service, since, until, limit, format } => {
            let q = LogQuery {
                success: if failed {
                    Some(false)
                } else if succeeded {
                    Some(true)
                } else {
                    None
                },
                user: user.map(String::into_bytes),
                rhost: rhost.map(String::into_bytes),
                service: service.map(String::into_bytes),
                since: since
                    .map(|t| parse_time(&t, now).map_err(|e| AdminError(format!("--since: {e}"))))
                    .transpose()?,
                until: until
                    .map(|t| parse_time(&t, now).map_err(|e| AdminError(format!("--until: {e}"))))
                    .transpose()?,
                limit,
            };
            let db = admin::open_store(&cfg)?;
            warn_damaged(&db);
            let rows = db.log()?.query(&q)?;
            match format {
                LogFormat::Table => print_log_table(&mut out, &rows)?,
                LogFormat::Csv => print_log_csv(&mut out, &rows)?,
                LogFormat::Json => out.line(&json_text(&Value::Array(rows.iter().map(log_json).collect())))?,
            }
        }
        Command::Status { users, format } => {
            let db = admin::open_store(&cfg)?;
            warn_unmerged(&db);
            let rows = admin::status(&cfg, &db.accounts, &users, now)?;
            match format {
                StatusFormat::Table => print_status_table(&mut out, &rows)?,
                StatusFormat::Json => out.line(&json_text(&Value::Array(rows.iter().map(status_json).collect())))?,
            }
            if users.len() == 1 && rows.first().is_some_and(|r| !r.may_login) {
                code = ExitCode::from(3);
            }
        }
        Command::Activate { users } => {
            let db = admin::open_store(&cfg)?;
            warn_unmerged(&db);
            // Check every name first, so a typo changes nothing.
            for u in &users {
                admin::resolve(&db.accounts, u)?;
            }
            for u in &users {
                let (name, what) = admin::activate(&cfg, &db.accounts, u, now)?;
                let name = escape_visible(&name);
                out.line(&match what {
                    Activated::Reactivated { was_state, was_reason, failures } => format!(
                        "{name}: activated (was {was_state}{}, {failures} failures)",
                        was_reason.map(|r| format!(", {r}")).unwrap_or_default()
                    ),
                    Activated::AlreadyActive => {
                        format!("{name}: already active (inactivity clock restarted)")
                    }
                    Activated::Repaired => format!("{name}: activated (its damaged state file was replaced)"),
                })?;
            }
        }
        Command::Lock { user, reason } => {
            let db = admin::open_store(&cfg)?;
            warn_unmerged(&db);
            let (name, newly) = admin::lock(&cfg, &db.accounts, &user, reason.as_deref(), now)?;
            let name = escape_visible(&name);
            out.line(&if newly {
                format!("{name}: disabled")
            } else {
                format!("{name}: already locked or disabled; now disabled by hand")
            })?;
        }
        Command::Sweep { dry_run } => {
            let mut db = admin::open_store(&cfg)?;
            warn_unmerged(&db);
            let r = admin::sweep(&cfg, &mut db, dry_run, now)?;
            let verb = if dry_run { "would disable" } else { "disabled" };
            if cfg.account_expiry_days == 0 {
                out.line("account_expiry_days is 0: no account is disabled for inactivity")?;
            }
            for (name, last) in &r.disabled {
                out.line(&format!(
                    "{}: {verb} (inactive since {}, more than {} days)",
                    escape_visible(name),
                    rfc3339(*last),
                    cfg.account_expiry_days
                ))?;
            }
            if let Some(before) = r.retention_before {
                out.line(&format!(
                    "log: {} {} entries older than {}",
                    if dry_run { "would delete" } else { "deleted" },
                    r.deleted,
                    rfc3339(before)
                ))?;
            }
            out.line(&format!("{} account(s) {verb}", r.disabled.len()))?;
        }
        Command::Check => {
            let db = admin::open_store(&cfg)?;
            for l in admin::check(&cfg, &db)? {
                out.line(&l)?;
            }
        }
    }
    out.done()?;
    Ok(code)
}

/// Commands that do not show the log go on when the spool cannot be
/// merged (an administrator re-activating an account must not be stopped
/// by it), with a warning.
fn warn_unmerged(db: &admin::Db) {
    if let Some(e) = db.problem() {
        eprintln!("useraudit-admin: warning: the log spool was not merged: {e}");
    }
    warn_damaged(db);
}

/// Every command says so while a spool file with a damaged header exists
/// (`check` fails instead).
fn warn_damaged(db: &admin::Db) {
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
    let fmt = |cells: Vec<String>| {
        let n = cells.len();
        let mut line = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            let pad = w[i] - width(&c);
            line.push_str(&c);
            if i + 1 < n {
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        line
    };
    out.line(&fmt(header.iter().map(|s| s.to_string()).collect()))?;
    for r in rows {
        out.line(&fmt(r))?;
    }
    Ok(())
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

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', ' ']) || s.is_empty() { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

fn print_log_csv(out: &mut Out, rows: &[Entry]) -> Result<(), AdminError> {
    out.line("id,time,outcome,user,service,rhost,ruser,tty,auth_method,reason")?;
    for e in rows {
        let cells: Vec<String> = std::iter::once(e.id.to_string()).chain(log_fields(e, escape, "")).collect();
        out.line(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","))?;
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
        "password_changed": jtime(r.password_changed),
        "password_expires": jtime(r.password_expires),
        "unlocks_at": jtime(r.unlocks_at),
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
        "LOCKED SINCE",
        "UNLOCKS AT",
        "PASSWORD CHANGED",
        "PASSWORD EXPIRES",
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
                (Some(t), Some(d)) => format!("{} ({d} days left)", date(t)),
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
            ]
        })
        .collect();
    table(out, &header, cells)
}
