//! The connection to PostgreSQL, with bounded waits and the TLS that
//! libpq users expect.
//!
//! `fleet.url` is either libpq form: a URL (`postgresql://…?k=v&k=v`) or
//! `key=value` words. The `postgres` crate parses both, but it does not
//! read libpq's TLS file parameters, and it knows `sslmode` only up to
//! `require`. So those are taken out here, and the rest goes to the crate
//! unchanged:
//! - `sslmode=verify-ca` and `verify-full` become `require` for the crate,
//!   and the TLS connector checks the certificate (`verify-full` also the
//!   host name);
//! - `sslrootcert=FILE` is the only certificate authority trusted (as in
//!   libpq; `sslrootcert=system`: the system's authorities, the default);
//! - `sslcert=FILE` and `sslkey=FILE` are the client certificate and its
//!   PKCS#8 key (for `cert` authentication); the key must be readable by
//!   root only, like `password_file`.
//!
//! A connection over Unix sockets only, with none of these, uses no TLS
//! connector at all (PostgreSQL does not use TLS there, and building one
//! reads the system's certificate bundle); otherwise one connector is kept
//! per process while the setting and its files stay the same.
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use postgres::{Client, NoTls};
use useraudit_core::config;
use useraudit_core::sys;

use super::pg_err;
use crate::commands::{AdminError, Result};

/// The bound on any one statement.
const STATEMENT_TIMEOUT_MS: u32 = 30_000;
/// Used when the connection string sets none.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Verify {
    /// Encrypted, not checked (`prefer`, `require`), as in libpq.
    #[default]
    No,
    /// Signed by a trusted authority (`verify-ca`).
    Ca,
    /// That, and issued for the host connected to (`verify-full`).
    Full,
}

/// The TLS parameters taken out of the connection string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tls {
    verify: Verify,
    root_cert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
}

impl Tls {
    /// Take one parameter; false when it is not one of ours.
    fn take(&mut self, key: &str, value: &str) -> bool {
        match key {
            "sslrootcert" => self.root_cert = Some(PathBuf::from(value)).filter(|_| value != "system"),
            "sslcert" => self.cert = Some(PathBuf::from(value)),
            "sslkey" => self.key = Some(PathBuf::from(value)),
            _ => return false,
        }
        true
    }
}

/// The connection string for the crate, and the TLS parameters.
fn split(url: &str) -> std::result::Result<(String, Tls), String> {
    let mut tls = Tls::default();
    let mut mode = |key: &str, value: &str| -> Option<&'static str> {
        if key != "sslmode" {
            return None;
        }
        match value {
            "verify-ca" => tls.verify = Verify::Ca,
            "verify-full" => tls.verify = Verify::Full,
            _ => return None,
        }
        Some("require")
    };
    let mut taken = Tls::default();
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| format!("the parameter {k:?} is not UTF-8 after percent-decoding"))
            };
            let (key, value) = (decode(k)?, decode(v)?);
            if let Some(m) = mode(&key, &value) {
                kept.push(format!("sslmode={m}"));
            } else if !taken.take(&key, &value) {
                kept.push(pair.to_string());
            }
        }
        if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) }
    } else {
        let mut kept = Vec::new();
        for (key, value, raw) in words(url)? {
            if let Some(m) = mode(&key, &value) {
                kept.push(format!("sslmode={m}"));
            } else if !taken.take(&key, &value) {
                kept.push(raw.to_string());
            }
        }
        kept.join(" ")
    };
    tls.root_cert = taken.root_cert;
    tls.cert = taken.cert;
    tls.key = taken.key;
    Ok((rest, tls))
}

/// libpq's `key = value` words: (key, value, the word as written). A value
/// may be in single quotes; a backslash escapes the next character.
fn words(s: &str) -> std::result::Result<Vec<(String, String, &str)>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i == b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_ws(&mut i);
        if i == b.len() || b[i] != b'=' {
            return Err(format!("{key:?} has no \"=\" and value (\"key=value\" words, or a postgresql:// URL)"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = Vec::new();
        let quoted = i < b.len() && b[i] == b'\'';
        if quoted {
            i += 1;
        }
        loop {
            if i == b.len() {
                if quoted {
                    return Err(format!("the value of {key:?} has no closing quote"));
                }
                break;
            }
            match b[i] {
                b'\\' if i + 1 < b.len() => {
                    value.push(b[i + 1]);
                    i += 2;
                }
                b'\'' if quoted => {
                    i += 1;
                    break;
                }
                c if !quoted && c.is_ascii_whitespace() => break,
                c => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        // Cut on ASCII bytes only, so the value is still UTF-8.
        let value = String::from_utf8(value).map_err(|_| format!("the value of {key:?} is not UTF-8"))?;
        out.push((key, value, &s[start..i]));
    }
}

/// A file only root may read: the password file, a client key.
pub(super) fn read_root_only(what: &str, p: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let err = |e: std::io::Error| AdminError::Problem(format!("{what} {}: {e}", p.display()));
    let md = std::fs::metadata(p).map_err(err)?;
    if md.mode() & 0o077 != 0 || (sys::euid() == 0 && md.uid() != 0) {
        return Err(AdminError::Problem(format!(
            "{what} {}: must be owned by root and readable by root only (mode 0600 or 0400)",
            p.display()
        )));
    }
    std::fs::read(p).map_err(err)
}

/// The first line of the root-only password file.
pub(super) fn read_password(p: &Path) -> Result<String> {
    let text = read_root_only("fleet.password_file", p)?;
    let text = String::from_utf8(text)
        .map_err(|_| AdminError::Problem(format!("fleet.password_file {}: not UTF-8 text", p.display())))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn read_file(what: &str, p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).map_err(|e| AdminError::Problem(format!("fleet.url {what} {}: {e}", p.display())))
}

fn connector(tls: &Tls) -> Result<native_tls::TlsConnector> {
    let bad = |what: &str, p: &Path, e: native_tls::Error| {
        AdminError::Problem(format!("fleet.url {what} {}: {e}", p.display()))
    };
    let mut b = native_tls::TlsConnector::builder();
    match tls.verify {
        Verify::No => {
            b.danger_accept_invalid_certs(true).danger_accept_invalid_hostnames(true);
        }
        Verify::Ca => {
            b.danger_accept_invalid_hostnames(true);
        }
        Verify::Full => {}
    }
    if let Some(p) = &tls.root_cert {
        let pem = read_file("sslrootcert", p)?;
        let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| bad("sslrootcert", p, e))?;
        b.add_root_certificate(cert).disable_built_in_roots(true);
    }
    match (&tls.cert, &tls.key) {
        (Some(c), Some(k)) => {
            let cert = read_file("sslcert", c)?;
            let key = read_root_only("fleet.url sslkey", k)?;
            let id = native_tls::Identity::from_pkcs8(&cert, &key).map_err(|e| {
                AdminError::Problem(format!(
                    "fleet.url sslcert {} and sslkey {}: {e} (the key must be PEM PKCS#8, \
                     \"BEGIN PRIVATE KEY\"; convert with openssl pkcs8 -topk8 -nocrypt)",
                    c.display(),
                    k.display()
                ))
            })?;
            b.identity(id);
        }
        (None, None) => {}
        _ => {
            return Err(AdminError::Problem(
                "fleet.url: sslcert and sslkey go together (a client certificate and its key)".into(),
            ));
        }
    }
    b.build().map_err(|e| AdminError::Problem(format!("fleet: TLS: {e}")))
}

/// Connect with bounded waits: `connect_timeout` (10 s unless the
/// connection string sets it), TCP keepalives, and a `statement_timeout`.
pub fn connect(f: &config::Fleet) -> Result<Client> {
    let (url, tls) = split(&f.url).map_err(|e| AdminError::Problem(format!("fleet.url: {e}")))?;
    let mut pc = postgres::Config::from_str(&url).map_err(pg_err("url"))?;
    if pc.get_connect_timeout().is_none() {
        pc.connect_timeout(CONNECT_TIMEOUT);
    }
    pc.keepalives(true).keepalives_idle(Duration::from_secs(30));
    pc.options(&format!("-c statement_timeout={STATEMENT_TIMEOUT_MS}"));
    if pc.get_application_name().is_none() {
        pc.application_name("useraudit-admin");
    }
    if let Some(p) = &f.password_file {
        pc.password(read_password(p)?);
    }
    let disabled = pc.get_ssl_mode() == postgres::config::SslMode::Disable;
    if disabled && tls != Tls::default() {
        return Err(AdminError::Problem(
            "fleet.url: sslmode=disable with TLS parameters (sslrootcert, sslcert, sslkey)".into(),
        ));
    }
    // PostgreSQL never uses TLS on a Unix socket: building a connector
    // (OpenSSL reads the system's certificate bundle) would be wasted.
    let local = pc.get_hosts().iter().all(|h| matches!(h, postgres::config::Host::Unix(_)));
    let client = if disabled || (local && tls == Tls::default()) {
        pc.connect(NoTls)
    } else {
        pc.connect(postgres_native_tls::MakeTlsConnector::new(cached_connector(&tls)?))
    };
    client.map_err(pg_err("cannot connect to PostgreSQL"))
}

/// One connector per process while the TLS setting and its files stay the
/// same: the daemon connects every `fleet.interval`, and building one reads
/// the certificate files again. A file replaced (a renewed certificate)
/// makes a new one.
fn cached_connector(tls: &Tls) -> Result<native_tls::TlsConnector> {
    type Key = (Tls, Vec<Option<std::time::SystemTime>>);
    static CACHE: std::sync::Mutex<Option<(Key, native_tls::TlsConnector)>> = std::sync::Mutex::new(None);
    let changed = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    let key = (tls.clone(), [&tls.root_cert, &tls.cert, &tls.key].into_iter().map(changed).collect());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, c)) = cache.as_ref().filter(|(k, _)| *k == key) {
        return Ok(c.clone());
    }
    let c = connector(tls)?;
    *cache = Some((key, c.clone()));
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn password_file_first_line_and_root_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        std::fs::write(&p, "s3cret\nsecond line\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&p).unwrap(), "s3cret");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_password(&p).unwrap_err();
        assert!(e.to_string().contains("readable by root only"), "{e}");
    }

    #[test]
    fn tls_files_are_taken_out_of_both_forms() {
        let (rest, tls) = split(
            "host=db.example.com user=web1 sslmode=verify-full sslrootcert='/etc/ssl/fleet ca.pem' \
             sslcert=/etc/c.pem sslkey = /etc/k.pem connect_timeout=3",
        )
        .unwrap();
        assert_eq!(rest, "host=db.example.com user=web1 sslmode=require connect_timeout=3");
        assert_eq!(tls.verify, Verify::Full);
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/etc/ssl/fleet ca.pem")));
        assert_eq!(tls.cert.as_deref(), Some(Path::new("/etc/c.pem")));
        assert_eq!(tls.key.as_deref(), Some(Path::new("/etc/k.pem")));

        let (rest, tls) =
            split("postgresql://web1@db/useraudit?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
                .unwrap();
        assert_eq!(rest, "postgresql://web1@db/useraudit?sslmode=require&application_name=x");
        assert_eq!(tls.verify, Verify::Ca);
        assert_eq!(tls.root_cert.as_deref(), Some(Path::new("/etc/ca.pem")));

        let (rest, tls) = split("postgresql://db/useraudit?sslrootcert=system").unwrap();
        assert_eq!(rest, "postgresql://db/useraudit");
        assert_eq!(tls, Tls::default());
        // Nothing of ours: unchanged.
        for url in ["host=/run/postgresql dbname=useraudit", "postgresql://db/u?sslmode=require", "postgresql://db"] {
            assert_eq!(split(url).unwrap(), (url.to_string(), Tls::default()));
        }
        // A backslash escapes, in and out of quotes.
        let (_, tls) = split(r"host=x sslcert=/a\ b sslkey='/it\'s'").unwrap();
        assert_eq!(tls.cert.as_deref(), Some(Path::new("/a b")));
        assert_eq!(tls.key.as_deref(), Some(Path::new("/it's")));
    }

    #[test]
    fn malformed_words_say_what_is_wrong() {
        assert!(split("host").unwrap_err().contains("\"host\" has no \"=\""));
        assert!(split("host='x").unwrap_err().contains("no closing quote"));
    }
}
