//! Configuration: the TOML file and `key=value` module arguments of
//! pam_useraudit(8) and useraudit.toml(5), validated into one [`Config`].
//! Every error names the file (or
//! the module argument), the line and the key, and says what is allowed.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

use crate::hosts::Net;
use crate::text::{format_duration, parse_duration};

/// Default location of the configuration file.
pub const DEFAULT_CONF: &str = "/etc/security/useraudit.toml";
/// Default location of the database.
pub const DEFAULT_DB: &str = "/var/lib/useraudit/useraudit.db";

/// Where the last password change date comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordSource {
    Shadow,
    Useraudit,
}

/// What happens when a password has expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredAction {
    Disable,
    Change,
}

/// What the module answers when its storage (the state files, the spool)
/// or the configuration cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// The effective settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub database: PathBuf,
    pub login_failure_limit: u32,
    /// Seconds; 0 = failures count until a success.
    pub failure_window: u64,
    /// Seconds; 0 = locked until `useraudit-admin activate`.
    pub unlock_after: u64,
    pub account_expiry_days: u32,
    pub password_expiry_days: u32,
    pub password_expiry_warning_days: u32,
    pub password_change_source: PasswordSource,
    pub password_expired_action: ExpiredAction,
    pub exempt_users: Vec<String>,
    pub exempt_groups: Vec<String>,
    pub ignore_services: Vec<String>,
    pub notify_command: Option<PathBuf>,
    pub retention_days: u32,
    pub on_error: OnError,
    /// Bytes the log spool may grow to between merges (see [`crate::spool`]).
    pub spool_max_bytes: u64,
    /// Where `useraudit-admin daemon` keeps the Prometheus metrics
    /// (node_exporter's textfile collector); None: nowhere.
    pub metrics_file: Option<PathBuf>,
    /// The Nth failed attempt from one remote host within
    /// `host_failure_window` blocks it; 0: hosts are not counted.
    pub host_failure_limit: u32,
    /// Seconds.
    pub host_failure_window: u64,
    /// Seconds; 0 = blocked until `useraudit-admin unblock`.
    pub host_block_time: u64,
    /// Addresses and networks never blocked, whose failures alone make a
    /// lock that applies to them.
    pub trusted_hosts: Vec<Net>,
    /// IPv6 hosts are counted by this prefix length.
    pub host_ipv6_prefix: u8,
    /// The optional `[fleet]` table: one log and one lockout across hosts,
    /// kept by useraudit-admin in PostgreSQL. Parsed here only; the core
    /// never connects.
    pub fleet: Option<Fleet>,
}

/// The `[fleet]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// A libpq connection string or URL.
    pub url: String,
    /// A root-only file whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// This machine's name in the fleet; None: its hostname.
    pub host: Option<String>,
    /// Seconds between the daemon's syncs.
    pub interval: u64,
    /// Failures of one name across all hosts that lock it everywhere;
    /// None: `login_failure_limit`.
    pub failure_limit: Option<u32>,
}

/// The keys of the `[fleet]` table.
pub const FLEET_KEYS: &[&str] = &["url", "password_file", "host", "interval", "failure_limit"];

impl Fleet {
    fn parse(t: &toml::Table) -> Result<Fleet, (String, String)> {
        let mut f = Fleet { url: String::new(), password_file: None, host: None, interval: 2, failure_limit: None };
        for (key, value) in t {
            let raw = Raw::Toml(value);
            let r: Result<(), String> = (|| {
                match key.as_str() {
                    "url" => f.url = get_str(&raw, "a connection string or URL as a string")?.to_string(),
                    "password_file" => f.password_file = Some(get_path(&raw)?),
                    "host" => {
                        let h = get_str(&raw, "a host name as a string")?;
                        if h.is_empty() || h.len() > 255 || h.contains('\0') {
                            return Err(bad(&raw, "a host name of 1 to 255 bytes"));
                        }
                        f.host = Some(h.to_string())
                    }
                    "interval" => {
                        f.interval = get_duration(&raw)?;
                        if f.interval == 0 {
                            return Err(bad(&raw, "a duration of at least 1s"));
                        }
                    }
                    "failure_limit" => f.failure_limit = Some(get_uint(&raw, 1_000_000)? as u32),
                    _ => return Err(format!("unknown key; known keys are {}", FLEET_KEYS.join(", "))),
                }
                Ok(())
            })();
            r.map_err(|m| (format!("fleet.{key}"), m))?;
        }
        if f.url.is_empty() {
            return Err(("fleet.url".into(), "missing: [fleet] needs url".into()));
        }
        Ok(f)
    }

    /// The fleet lockout's limit (0: off).
    pub fn limit(&self, cfg: &Config) -> u32 {
        self.failure_limit.unwrap_or(cfg.login_failure_limit)
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database: PathBuf::from(DEFAULT_DB),
            login_failure_limit: 0,
            failure_window: 0,
            unlock_after: 0,
            account_expiry_days: 0,
            password_expiry_days: 0,
            password_expiry_warning_days: 0,
            password_change_source: PasswordSource::Shadow,
            password_expired_action: ExpiredAction::Disable,
            exempt_users: vec!["root".into()],
            exempt_groups: vec![],
            ignore_services: ["cron", "crond", "atd", "systemd-user"].map(String::from).to_vec(),
            notify_command: None,
            retention_days: 0,
            on_error: OnError::Allow,
            spool_max_bytes: SPOOL_MAX_DEFAULT,
            metrics_file: None,
            host_failure_limit: 0,
            host_failure_window: 3600,
            host_block_time: 3600,
            trusted_hosts: vec![],
            host_ipv6_prefix: 64,
            fleet: None,
        }
    }
}

/// Every key the configuration knows, in the order `check` prints them.
pub const KEYS: &[&str] = &[
    "database",
    "login_failure_limit",
    "failure_window",
    "unlock_after",
    "account_expiry_days",
    "password_expiry_days",
    "password_expiry_warning_days",
    "password_change_source",
    "password_expired_action",
    "exempt_users",
    "exempt_groups",
    "ignore_services",
    "notify_command",
    "retention_days",
    "on_error",
    "spool_max_bytes",
    "metrics_file",
    "host_failure_limit",
    "host_failure_window",
    "host_block_time",
    "trusted_hosts",
    "host_ipv6_prefix",
];

/// The default bound of the log spool: 128 MiB, days of an ordinary
/// server's logins, far from a full disk.
pub const SPOOL_MAX_DEFAULT: u64 = 128 << 20;
/// The smallest bound accepted (64 KiB: a few hundred entries).
pub const SPOOL_MAX_MIN: u64 = 64 << 10;
/// The largest bound accepted (1 TiB).
pub const SPOOL_MAX_MAX: u64 = 1 << 40;

/// Where a bad value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { path: PathBuf, line: Option<usize> },
    Argument,
}

/// A configuration that cannot be used.
#[derive(Debug)]
pub struct ConfigError {
    pub origin: Origin,
    pub key: Option<String>,
    pub message: String,
    /// The I/O error that kept the file from being read, if one did.
    pub source: Option<std::io::Error>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Origin::File { path, line: Some(l) } => write!(f, "{}, line {l}", path.display())?,
            Origin::File { path, line: None } => write!(f, "{}", path.display())?,
            Origin::Argument => write!(f, "module argument")?,
        }
        if let Some(k) = &self.key {
            write!(f, ", key {k}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl ConfigError {
    /// The file exists but this caller may not read it (a non-root program
    /// meeting a root-only file).
    pub fn permission_denied(&self) -> bool {
        self.source.as_ref().is_some_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
    }
}

/// A value as written: a TOML value from the file, or the text of a
/// `key=value` module argument.
enum Raw<'a> {
    Toml(&'a toml::Value),
    Arg(&'a str),
}

impl Raw<'_> {
    fn describe(&self) -> String {
        match self {
            Raw::Toml(v) => format!("{} {}", v.type_str(), v),
            Raw::Arg(s) => format!("{s:?}"),
        }
    }
}

fn bad(raw: &Raw<'_>, allowed: &str) -> String {
    format!("expected {allowed}, found {}", raw.describe())
}

fn get_uint(raw: &Raw<'_>, max: u64) -> Result<u64, String> {
    let allowed = format!("a whole number from 0 to {max}");
    let n = match raw {
        Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i).ok(),
        Raw::Arg(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => s.parse().ok(),
        _ => None,
    };
    n.filter(|&n| n <= max).ok_or_else(|| bad(raw, &allowed))
}

fn get_duration(raw: &Raw<'_>) -> Result<u64, String> {
    match raw {
        Raw::Toml(toml::Value::Integer(i)) => u64::try_from(*i)
            .ok()
            .filter(|&n| n <= 100 * 365 * 86_400)
            .ok_or_else(|| bad(raw, "a duration such as 900, \"15m\", \"2h\" or \"7d\" (at most 100 years)")),
        Raw::Toml(toml::Value::String(s)) => parse_duration(s),
        Raw::Arg(s) => parse_duration(s),
        _ => Err(bad(raw, "a duration such as 900, \"15m\", \"2h\" or \"7d\"")),
    }
}

/// A size in bytes: a whole number, or a string with a binary suffix
/// (`"64K"`, `"128M"`, `"1G"`).
fn get_size(raw: &Raw<'_>, min: u64, max: u64) -> Result<u64, String> {
    let allowed = format!("a size in bytes from {min} to {max}, or with a suffix: \"64K\", \"128M\", \"1G\"");
    let text = match raw {
        Raw::Toml(toml::Value::Integer(i)) => Some(i.to_string()),
        Raw::Toml(toml::Value::String(s)) => Some(s.clone()),
        Raw::Arg(s) => Some(s.to_string()),
        _ => None,
    };
    let n = text.and_then(|t| {
        let (digits, shift) = match t.strip_suffix(['K', 'k']) {
            Some(d) => (d, 10),
            None => match t.strip_suffix(['M', 'm']) {
                Some(d) => (d, 20),
                None => match t.strip_suffix(['G', 'g']) {
                    Some(d) => (d, 30),
                    None => (t.as_str(), 0),
                },
            },
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<u64>().ok()?.checked_mul(1 << shift)
    });
    n.filter(|n| (min..=max).contains(n)).ok_or_else(|| bad(raw, &allowed))
}

fn get_str<'a>(raw: &'a Raw<'a>, what: &str) -> Result<&'a str, String> {
    match raw {
        Raw::Toml(toml::Value::String(s)) => Ok(s),
        Raw::Arg(s) => Ok(s),
        _ => Err(bad(raw, what)),
    }
}

fn get_choice<T: Copy>(raw: &Raw<'_>, choices: &[(&str, T)]) -> Result<T, String> {
    let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let allowed = format!("one of {}", names.join(", "));
    let s = get_str(raw, &allowed)?;
    choices.iter().find(|(n, _)| *n == s).map(|(_, v)| *v).ok_or_else(|| bad(raw, &allowed))
}

fn get_list(raw: &Raw<'_>) -> Result<Vec<String>, String> {
    let allowed = "a list of names such as [\"root\", \"admin\"] (as a module argument: root,admin)";
    let items: Vec<String> = match raw {
        Raw::Toml(toml::Value::Array(a)) => {
            a.iter().map(|v| v.as_str().map(String::from).ok_or_else(|| bad(raw, allowed))).collect::<Result<_, _>>()?
        }
        Raw::Arg(s) => s.split(',').filter(|p| !p.is_empty()).map(String::from).collect(),
        _ => return Err(bad(raw, allowed)),
    };
    for it in &items {
        if it.is_empty() || it.chars().any(|c| c.is_control() || c == ',' || c.is_whitespace()) {
            return Err(format!("{it:?} is not a valid name (no spaces, commas or control characters)"));
        }
    }
    Ok(items)
}

/// A list of addresses and networks (`trusted_hosts`).
fn get_nets(raw: &Raw<'_>) -> Result<Vec<Net>, String> {
    let allowed = "a list of addresses and networks such as [\"10.0.0.0/8\", \"2001:db8::/32\", \"::1\"] (as a module argument: 10.0.0.0/8,::1)";
    let items: Vec<String> = match raw {
        Raw::Toml(toml::Value::Array(a)) => {
            a.iter().map(|v| v.as_str().map(String::from).ok_or_else(|| bad(raw, allowed))).collect::<Result<_, _>>()?
        }
        Raw::Arg(s) => s.split(',').filter(|p| !p.is_empty()).map(String::from).collect(),
        _ => return Err(bad(raw, allowed)),
    };
    items.iter().map(|s| Net::parse(s)).collect()
}

fn get_path(raw: &Raw<'_>) -> Result<PathBuf, String> {
    let s = get_str(raw, "an absolute path as a string")?;
    if !s.starts_with('/') || s.contains('\0') {
        return Err(bad(raw, "an absolute path (starting with /)"));
    }
    Ok(PathBuf::from(s))
}

impl Config {
    /// Set one key from a raw value. Errors carry only the message; the
    /// caller adds where it came from.
    fn set(&mut self, key: &str, raw: &Raw<'_>) -> Result<(), String> {
        const DAYS_MAX: u64 = 36_500;
        match key {
            "database" => self.database = get_path(raw)?,
            "login_failure_limit" => self.login_failure_limit = get_uint(raw, 1_000_000)? as u32,
            "failure_window" => self.failure_window = get_duration(raw)?,
            "unlock_after" => self.unlock_after = get_duration(raw)?,
            "account_expiry_days" => self.account_expiry_days = get_uint(raw, DAYS_MAX)? as u32,
            "password_expiry_days" => self.password_expiry_days = get_uint(raw, DAYS_MAX)? as u32,
            "password_expiry_warning_days" => self.password_expiry_warning_days = get_uint(raw, DAYS_MAX)? as u32,
            "password_change_source" => {
                self.password_change_source =
                    get_choice(raw, &[("shadow", PasswordSource::Shadow), ("useraudit", PasswordSource::Useraudit)])?
            }
            "password_expired_action" => {
                self.password_expired_action =
                    get_choice(raw, &[("disable", ExpiredAction::Disable), ("change", ExpiredAction::Change)])?
            }
            "exempt_users" => self.exempt_users = get_list(raw)?,
            "exempt_groups" => self.exempt_groups = get_list(raw)?,
            "ignore_services" => self.ignore_services = get_list(raw)?,
            "notify_command" => {
                self.notify_command = match raw {
                    Raw::Toml(toml::Value::String(s)) if s.is_empty() => None,
                    Raw::Arg("") => None,
                    _ => Some(get_path(raw)?),
                }
            }
            "retention_days" => self.retention_days = get_uint(raw, DAYS_MAX)? as u32,
            "on_error" => self.on_error = get_choice(raw, &[("allow", OnError::Allow), ("deny", OnError::Deny)])?,
            "spool_max_bytes" => self.spool_max_bytes = get_size(raw, SPOOL_MAX_MIN, SPOOL_MAX_MAX)?,
            "metrics_file" => {
                self.metrics_file = match raw {
                    Raw::Toml(toml::Value::String(s)) if s.is_empty() => None,
                    Raw::Arg("") => None,
                    _ => Some(get_path(raw)?),
                }
            }
            "host_failure_limit" => self.host_failure_limit = get_uint(raw, 1_000_000)? as u32,
            "host_failure_window" => self.host_failure_window = get_duration(raw)?,
            "host_block_time" => self.host_block_time = get_duration(raw)?,
            "trusted_hosts" => self.trusted_hosts = get_nets(raw)?,
            "host_ipv6_prefix" => self.host_ipv6_prefix = get_uint(raw, 128)? as u8,
            _ => return Err(format!("unknown key; known keys are {}", KEYS.join(", "))),
        }
        Ok(())
    }

    /// Check combinations of keys that are each valid alone.
    fn check_combination(&self) -> Result<(), (String, String)> {
        if self.password_expiry_days > 0 && self.password_expiry_warning_days >= self.password_expiry_days {
            return Err((
                "password_expiry_warning_days".into(),
                format!(
                    "{} must be smaller than password_expiry_days ({})",
                    self.password_expiry_warning_days, self.password_expiry_days
                ),
            ));
        }
        Ok(())
    }

    /// Parse the text of a configuration file on top of the defaults.
    pub fn parse_file_text(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e.span().map(|s| line_of_offset(text, s.start));
            ConfigError {
                origin: Origin::File { path: path.into(), line },
                key: None,
                message: format!("not valid TOML: {}", e.message().trim()),
                source: None,
            }
        })?;
        let mut cfg = Config::default();
        for (key, value) in &table {
            let at = |message: String| ConfigError {
                origin: Origin::File { path: path.into(), line: line_of_key(text, key) },
                key: Some(key.clone()),
                message,
                source: None,
            };
            if let toml::Value::Table(t) = value {
                if key == "fleet" {
                    cfg.fleet = Some(Fleet::parse(t).map_err(|(k, m)| ConfigError {
                        origin: Origin::File {
                            path: path.into(),
                            line: line_of_key(text, k.trim_start_matches("fleet.")),
                        },
                        key: Some(k),
                        message: m,
                        source: None,
                    })?);
                    continue;
                }
                return Err(at("sections are not used except [fleet]; write every other key at the top level".into()));
            }
            cfg.set(key, &Raw::Toml(value)).map_err(at)?;
        }
        cfg.check_combination().map_err(|(key, message)| ConfigError {
            origin: Origin::File { path: path.into(), line: line_of_key(text, &key) },
            key: Some(key),
            message,
            source: None,
        })?;
        Ok(cfg)
    }

    /// Apply one `key=value` module argument.
    pub fn apply_arg(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        self.set(key, &Raw::Arg(value)).map_err(|message| ConfigError {
            origin: Origin::Argument,
            key: Some(key.into()),
            message,
            source: None,
        })
    }

    /// Check combinations after module arguments were applied.
    pub fn finish(&self) -> Result<(), ConfigError> {
        self.check_combination().map_err(|(key, message)| ConfigError {
            origin: Origin::Argument,
            key: Some(key),
            message,
            source: None,
        })
    }

    /// Read a configuration file. `explicit` is true when the path was given
    /// (`conf=`, `--conf`): then a missing file is an error; the default
    /// file may be missing and means built-in defaults. `must_be_root_owned`
    /// refuses a file that anyone but root could have written.
    pub fn load(path: &Path, explicit: bool, must_be_root_owned: bool) -> Result<Config, ConfigError> {
        let err = |message: String| ConfigError {
            origin: Origin::File { path: path.into(), line: None },
            key: None,
            message,
            source: None,
        };
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(Config::default()),
            Err(e) => {
                let message = format!("cannot read it: {e}");
                return Err(ConfigError { source: Some(e), ..err(message) });
            }
        };
        if must_be_root_owned {
            use std::os::unix::fs::MetadataExt;
            let md = file.metadata().map_err(|e| err(format!("cannot read it: {e}")))?;
            if md.uid() != 0 || md.mode() & 0o022 != 0 {
                return Err(err(format!(
                    "refusing a configuration that others could have written (owner uid {}, mode {:04o}); \
                     make it owned by root and not writable by group or others",
                    md.uid(),
                    md.mode() & 0o7777
                )));
            }
        }
        let mut text = String::new();
        use std::io::Read;
        const MAX: u64 = 1 << 20;
        file.take(MAX + 1).read_to_string(&mut text).map_err(|e| err(format!("cannot read it as UTF-8 text: {e}")))?;
        if text.len() as u64 > MAX {
            return Err(err("larger than 1 MiB; this is not a useraudit configuration".into()));
        }
        Config::parse_file_text(&text, path)
    }

    /// The settings as `key = value` lines, in TOML syntax.
    pub fn render(&self) -> Vec<(&'static str, String)> {
        // TOML's own quoting: Rust's `{:?}` writes `\u{9b}`, which TOML rejects.
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        let list = |v: &[String]| {
            let items: Vec<String> = v.iter().map(|s| quote(s)).collect();
            format!("[{}]", items.join(", "))
        };
        let dur = |s: u64| if s == 0 { "0".to_string() } else { format!("\"{}\"", format_duration(s)) };
        let mut v = vec![
            ("database", quote(&self.database.display().to_string())),
            ("login_failure_limit", self.login_failure_limit.to_string()),
            ("failure_window", dur(self.failure_window)),
            ("unlock_after", dur(self.unlock_after)),
            ("account_expiry_days", self.account_expiry_days.to_string()),
            ("password_expiry_days", self.password_expiry_days.to_string()),
            ("password_expiry_warning_days", self.password_expiry_warning_days.to_string()),
            (
                "password_change_source",
                match self.password_change_source {
                    PasswordSource::Shadow => "\"shadow\"",
                    PasswordSource::Useraudit => "\"useraudit\"",
                }
                .into(),
            ),
            (
                "password_expired_action",
                match self.password_expired_action {
                    ExpiredAction::Disable => "\"disable\"",
                    ExpiredAction::Change => "\"change\"",
                }
                .into(),
            ),
            ("exempt_users", list(&self.exempt_users)),
            ("exempt_groups", list(&self.exempt_groups)),
            ("ignore_services", list(&self.ignore_services)),
            (
                "notify_command",
                match &self.notify_command {
                    Some(p) => quote(&p.display().to_string()),
                    None => "\"\" # unset".into(),
                },
            ),
            ("retention_days", self.retention_days.to_string()),
            (
                "on_error",
                match self.on_error {
                    OnError::Allow => "\"allow\"",
                    OnError::Deny => "\"deny\"",
                }
                .into(),
            ),
            ("spool_max_bytes", self.spool_max_bytes.to_string()),
            (
                "metrics_file",
                match &self.metrics_file {
                    Some(p) => quote(&p.display().to_string()),
                    None => "\"\" # unset".into(),
                },
            ),
            ("host_failure_limit", self.host_failure_limit.to_string()),
            ("host_failure_window", dur(self.host_failure_window)),
            ("host_block_time", dur(self.host_block_time)),
            (
                "trusted_hosts",
                format!("[{}]", self.trusted_hosts.iter().map(|n| quote(&n.render())).collect::<Vec<_>>().join(", ")),
            ),
            ("host_ipv6_prefix", self.host_ipv6_prefix.to_string()),
        ];
        if let Some(f) = &self.fleet {
            // The URL may carry a password: show where it goes, not what it holds.
            let url = match f.url.find('@') {
                Some(at) if f.url.contains("://") => {
                    format!("{}…{}", &f.url[..f.url.find("://").unwrap_or(0) + 3], &f.url[at..])
                }
                _ => f.url.clone(),
            };
            v.push(("fleet.url", quote(&url)));
            if let Some(p) = &f.password_file {
                v.push(("fleet.password_file", quote(&p.display().to_string())));
            }
            v.push(("fleet.host", f.host.as_deref().map(quote).unwrap_or_else(|| "\"\" # the hostname".into())));
            v.push(("fleet.interval", dur(f.interval)));
            v.push(("fleet.failure_limit", f.limit(self).to_string()));
        }
        v
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line where `key` is assigned (the file is flat, so the first
/// assignment is the only one).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            let rest = l
                .strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .or_else(|| l.strip_prefix(&format!("'{key}'")));
            rest.is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// The mode word of a module line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Preauth,
    Authfail,
    Authsucc,
}

/// Parsed module arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleArgs {
    pub mode: Option<Mode>,
    pub conf: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub debug: bool,
    pub silent: bool,
    /// `key=value` settings, in order.
    pub settings: Vec<(String, String)>,
    /// Arguments that mean nothing here; logged and ignored.
    pub unknown: Vec<String>,
}

impl ModuleArgs {
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> ModuleArgs {
        let mut m = ModuleArgs::default();
        for a in args {
            match a {
                "preauth" => m.mode = Some(Mode::Preauth),
                "authfail" => m.mode = Some(Mode::Authfail),
                "authsucc" => m.mode = Some(Mode::Authsucc),
                "debug" => m.debug = true,
                "silent" => m.silent = true,
                _ => match a.split_once('=') {
                    Some(("conf", v)) if v.starts_with('/') => m.conf = Some(v.into()),
                    Some(("db", v)) if v.starts_with('/') => m.db = Some(v.into()),
                    Some((k, v)) if KEYS.contains(&k) => m.settings.push((k.into(), v.into())),
                    _ => m.unknown.push(a.into()),
                },
            }
        }
        m
    }

    /// `on_error` as given on the module line, for when the file cannot be read.
    pub fn on_error_hint(&self) -> OnError {
        // As `apply_arg` would: the last valid value wins; an invalid one is
        // skipped here (the configuration error itself is logged).
        self.settings.iter().filter(|(k, _)| k == "on_error").fold(OnError::Allow, |cur, (_, v)| match v.as_str() {
            "allow" => OnError::Allow,
            "deny" => OnError::Deny,
            _ => cur,
        })
    }

    /// Build the effective configuration: the file (`conf=` or the
    /// default), then the `key=value` arguments, then `db=`.
    pub fn config(&self, must_be_root_owned: bool) -> Result<Config, ConfigError> {
        let (path, explicit) = match &self.conf {
            Some(p) => (p.as_path(), true),
            None => (Path::new(DEFAULT_CONF), false),
        };
        let mut cfg = Config::load(path, explicit, must_be_root_owned)?;
        for (k, v) in &self.settings {
            cfg.apply_arg(k, v)?;
        }
        if let Some(db) = &self.db {
            cfg.database = db.clone();
        }
        cfg.finish()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_keeps_the_io_error() {
        use std::error::Error as _;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("missing/useraudit.conf");
        let e = Config::load(&p, true, false).unwrap_err();
        assert!(!e.permission_denied());
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>()).expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert_eq!(e.to_string(), format!("{}: cannot read it: {io}", p.display()));
        let e = ConfigError { source: Some(std::io::Error::from_raw_os_error(13)), ..e };
        assert!(e.permission_denied());
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_file_text(text, Path::new("/etc/security/useraudit.toml"))
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        assert_eq!(parse("# only a comment\n").unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
database = "/tmp/x.db"
login_failure_limit = 5
failure_window = "15m"
unlock_after = 600
account_expiry_days = 90
password_expiry_days = 180
password_expiry_warning_days = 14
password_change_source = "useraudit"
password_expired_action = "change"
exempt_users = ["root", "ops"]
exempt_groups = ["wheel"]
ignore_services = ["cron"]
notify_command = "/usr/local/sbin/notify"
retention_days = 365
on_error = "deny"
"#,
        )
        .unwrap();
        assert_eq!(c.database, PathBuf::from("/tmp/x.db"));
        assert_eq!(c.login_failure_limit, 5);
        assert_eq!(c.failure_window, 900);
        assert_eq!(c.unlock_after, 600);
        assert_eq!(c.account_expiry_days, 90);
        assert_eq!(c.password_expiry_days, 180);
        assert_eq!(c.password_expiry_warning_days, 14);
        assert_eq!(c.password_change_source, PasswordSource::Useraudit);
        assert_eq!(c.password_expired_action, ExpiredAction::Change);
        assert_eq!(c.exempt_users, vec!["root", "ops"]);
        assert_eq!(c.exempt_groups, vec!["wheel"]);
        assert_eq!(c.ignore_services, vec!["cron"]);
        assert_eq!(c.notify_command, Some(PathBuf::from("/usr/local/sbin/notify")));
        assert_eq!(c.retention_days, 365);
        assert_eq!(c.on_error, OnError::Deny);
    }

    #[test]
    fn spool_max_bytes_sizes() {
        assert_eq!(parse("").unwrap().spool_max_bytes, 128 << 20);
        assert_eq!(parse("spool_max_bytes = 65536").unwrap().spool_max_bytes, 65536);
        assert_eq!(parse("spool_max_bytes = \"512K\"").unwrap().spool_max_bytes, 512 << 10);
        assert_eq!(parse("spool_max_bytes = \"2G\"").unwrap().spool_max_bytes, 2 << 30);
        let mut c = Config::default();
        c.apply_arg("spool_max_bytes", "64m").unwrap();
        assert_eq!(c.spool_max_bytes, 64 << 20);
        let bad =
            ["spool_max_bytes = 1000", "spool_max_bytes = -1", "spool_max_bytes = \"1T\"", "spool_max_bytes = \"M\""];
        for bad in bad {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("a size in bytes"), "{bad}: {e}");
        }
    }

    #[test]
    fn host_keys_parse_and_bad_networks_name_file_line_and_key() {
        let c = parse("host_failure_limit = 5\nhost_block_time = 0\ntrusted_hosts = [\"10.0.0.0/8\", \"::1\"]\nhost_ipv6_prefix = 56\n").unwrap();
        assert_eq!(
            (c.host_failure_limit, c.host_block_time, c.host_failure_window, c.host_ipv6_prefix),
            (5, 0, 3600, 56)
        );
        assert_eq!(c.trusted_hosts.iter().map(|n| n.render()).collect::<Vec<_>>(), ["10.0.0.0/8", "::1"]);
        let e = parse("# x\n\ntrusted_hosts = [\"10.0.0.1/8\"]\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("trusted_hosts"));
        let s = e.to_string();
        assert!(
            s.contains("/etc/security/useraudit.toml, line 3, key trusted_hosts") && s.contains("10.0.0.0/8"),
            "{s}"
        );
        let e = parse("trusted_hosts = [\"office.example\"]").unwrap_err();
        assert!(e.to_string().contains("not an IP address or network"), "{e}");
        assert!(parse("host_ipv6_prefix = 129").is_err());
        let mut c = Config::default();
        c.apply_arg("trusted_hosts", "192.0.2.0/24,2001:db8::/32").unwrap();
        assert_eq!(c.trusted_hosts.len(), 2);
        assert_eq!(c.apply_arg("trusted_hosts", "192.0.2.0/33").unwrap_err().key.as_deref(), Some("trusted_hosts"));
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let e = parse("# c\nlogin_failure_limit = \"three\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("login_failure_limit"));
        assert_eq!(e.origin, Origin::File { path: "/etc/security/useraudit.toml".into(), line: Some(2) });
        let s = e.to_string();
        assert!(s.contains("/etc/security/useraudit.toml, line 2, key login_failure_limit"), "{s}");
        assert!(s.contains("whole number"), "{s}");

        let e = parse("\n\nlogin_faillure_limit = 3\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("login_faillure_limit"));
        assert!(e.to_string().contains("line 3") && e.to_string().contains("unknown key"), "{e}");

        let e = parse("on_error = \"maybe\"").unwrap_err();
        assert!(e.to_string().contains("\"allow\", \"deny\""), "{e}");

        let e = parse("failure_window = \"15 minutes\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("failure_window"));

        let e = parse("login_failure_limit = -1").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("login_failure_limit"));

        let e = parse("exempt_users = \"root\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("exempt_users"));

        let e = parse("exempt_users = [\"ro ot\"]").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("exempt_users"));

        let e = parse("notify_command = \"notify.sh\"").unwrap_err();
        assert!(e.to_string().contains("absolute path"), "{e}");

        let e = parse("metrics_file = \"useraudit.prom\"").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("metrics_file"));
        assert!(e.to_string().contains("absolute path"), "{e}");
        let c = parse("metrics_file = \"/var/lib/node/useraudit.prom\"").unwrap();
        assert_eq!(c.metrics_file, Some(PathBuf::from("/var/lib/node/useraudit.prom")));
        assert_eq!(parse("metrics_file = \"\"").unwrap().metrics_file, None);

        let e = parse("[section]\nx = 1\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("section"));

        let e = parse("password_expiry_days = 10\npassword_expiry_warning_days = 10\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("password_expiry_warning_days"));
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn fleet_table() {
        let c = parse("login_failure_limit = 4\n[fleet]\nurl = \"host=/run/postgresql dbname=u\"\nhost = \"web-1\"\ninterval = \"5s\"\n").unwrap();
        let f = c.fleet.clone().unwrap();
        assert_eq!((f.host.as_deref(), f.interval, f.failure_limit), (Some("web-1"), 5, None));
        assert_eq!(f.limit(&c), 4);
        assert!(parse("").unwrap().fleet.is_none());
        let e = parse("[fleet]\nhost = \"a\"\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.url"));
        let e = parse("[fleet]\nurl = \"x\"\ninterval = 0\n").unwrap_err();
        assert_eq!(e.key.as_deref(), Some("fleet.interval"));
        let e = parse("[fleet]\nurl = \"x\"\nbogus = 1\n").unwrap_err();
        assert!(e.message.contains("known keys"), "{e}");
        assert!(parse("[other]\nx = 1\n").is_err());
    }

    #[test]
    fn syntax_error_has_line() {
        let e = parse("a = 1\nlogin_failure_limit = = 3\n").unwrap_err();
        assert!(matches!(e.origin, Origin::File { line: Some(2), .. }), "{e:?}");
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }

    #[test]
    fn module_args() {
        let m = ModuleArgs::parse([
            "authfail",
            "conf=/x.toml",
            "db=/y.db",
            "debug",
            "silent",
            "login_failure_limit=3",
            "bogus",
            "foo=bar",
        ]);
        assert_eq!(m.mode, Some(Mode::Authfail));
        assert_eq!(m.conf, Some(PathBuf::from("/x.toml")));
        assert_eq!(m.db, Some(PathBuf::from("/y.db")));
        assert!(m.debug && m.silent);
        assert_eq!(m.settings, vec![("login_failure_limit".to_string(), "3".to_string())]);
        assert_eq!(m.unknown, vec!["bogus", "foo=bar"]);

        let mut c = Config::default();
        c.apply_arg("exempt_users", "root,ops").unwrap();
        assert_eq!(c.exempt_users, vec!["root", "ops"]);
        c.apply_arg("unlock_after", "15m").unwrap();
        assert_eq!(c.unlock_after, 900);
        let e = c.apply_arg("login_failure_limit", "x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "module argument, key login_failure_limit: expected a whole number from 0 to 1000000, found \"x\""
        );
    }

    #[test]
    fn missing_files() {
        let p = Path::new("/nonexistent/useraudit.toml");
        assert_eq!(Config::load(p, false, false).unwrap(), Config::default());
        let e = Config::load(p, true, false).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }

    #[test]
    fn on_error_hint_from_args() {
        let m = ModuleArgs::parse(["on_error=deny"]);
        assert_eq!(m.on_error_hint(), OnError::Deny);
        assert_eq!(ModuleArgs::parse([]).on_error_hint(), OnError::Allow);
    }

    #[test]
    fn shipped_file_documents_every_key_with_its_default() {
        let text = include_str!("../../conf/useraudit.toml");
        assert_eq!(parse(text).unwrap(), Config::default());
        // uncomment every key: still the defaults (but for the example command)
        let on: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(r) if r.split('=').next().is_some_and(|k| KEYS.contains(&k.trim())) => format!("{r}\n"),
                _ => format!("{l}\n"),
            })
            .collect();
        let c = parse(&on).unwrap();
        for k in KEYS {
            assert!(on.lines().any(|l| l.starts_with(&format!("{k} ="))), "{k} is not in conf/useraudit.toml");
        }
        assert_eq!(Config { notify_command: None, ..c }, Config::default());
    }

    #[test]
    fn render_round_trips_any_string() {
        // found by fuzz/module_args: `{:?}` rendered U+009B as `\u{9b}`, not TOML
        let c = Config {
            database: "/var/lib/x\u{9b}\t\"\\y\u{ad}\u{202e}.db".into(),
            notify_command: Some("/usr/sbin/n\u{7f}\u{1b}".into()),
            exempt_users: vec!["r\"o\\ot\u{ad}".into()],
            ..Config::default()
        };
        let text: String = c.render().iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        assert_eq!(parse(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn render_round_trips() {
        let c = Config { failure_window: 900, notify_command: Some("/usr/sbin/n".into()), ..Config::default() };
        let text: String = c.render().iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        assert_eq!(parse(&text).unwrap(), c);
    }
}
