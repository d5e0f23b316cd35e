//! Text helpers shared by the module and the CLI: escaping of untrusted
//! bytes, bounding of stored fields, and the time and duration formats of
//! useraudit-admin(8).
#![forbid(unsafe_code)]

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// Microseconds in one second, the unit of every stored time.
pub const MICROS: i64 = 1_000_000;
/// Microseconds in one day.
pub const DAY_MICROS: i64 = 86_400 * MICROS;

/// Longest stored text field (user, service, rhost, ruser, tty, auth method),
/// in bytes. Longer input is cut at this length; the cut is documented.
pub const FIELD_CAP: usize = 1024;

/// Cut untrusted bytes to [`FIELD_CAP`].
pub fn cap(bytes: &[u8]) -> &[u8] {
    &bytes[..bytes.len().min(FIELD_CAP)]
}

/// Render untrusted bytes for a terminal, a CSV cell or a syslog line:
/// printable UTF-8 stays as it is; control characters, bidirectional
/// overrides, backslash and bytes that are not UTF-8 become escapes
/// (`\n`, `\t`, `\\`, `\xNN`, `\u{NNNN}`). The mapping is one-to-one, so two
/// different names never look alike.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Like [`escape`], but a trailing or leading space is shown as `\x20` so
/// `alice ` and `alice` cannot be confused in a table.
pub fn escape_visible(bytes: &[u8]) -> String {
    let mut s = escape(bytes);
    if s.ends_with(' ') {
        s.pop();
        s.push_str("\\x20");
    }
    if s.starts_with(' ') {
        s.replace_range(0..1, "\\x20");
    }
    s
}

fn push_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
        // C1 controls, bidi controls, zero-width and line/paragraph separators.
        c if is_invisible(c) => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        c => out.push(c),
    }
}

/// The inverse of [`escape`]: read a name, host or service written the way
/// the output shows it. `\\`, `\n`, `\r`, `\t`, `\xNN` (any byte) and
/// `\u{N..}` (a character) are escapes; every other byte stands for itself,
/// so raw bytes (also ones that are not UTF-8) pass through. A backslash
/// that starts no escape is an error: it cannot be told from a typo.
pub fn unescape(s: &[u8]) -> Result<Vec<u8>, String> {
    const FORMS: &str = "a backslash starts an escape as the output shows it: \\\\ for a backslash, \\n, \\r, \\t, \\xNN for a byte, \\u{NNNN} for a character";
    fn hex(b: &[u8]) -> Option<&str> {
        std::str::from_utf8(b).ok().filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()))
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] != b'\\' {
            out.push(s[i]);
            i += 1;
            continue;
        }
        let bad = || match s.get(i + 1) {
            Some(_) => format!("`\\{}` at byte {} starts no escape; {FORMS}", escape(&s[i + 1..i + 2]), i + 1),
            None => format!("a backslash ends the text; {FORMS}"),
        };
        match s.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'x') => {
                let h = s.get(i + 2..i + 4).and_then(hex).ok_or_else(bad)?;
                out.push(u8::from_str_radix(h, 16).map_err(|_| bad())?);
                i += 2;
            }
            Some(b'u') if s.get(i + 2) == Some(&b'{') => {
                let close = s[i + 3..].iter().position(|&b| b == b'}').ok_or_else(bad)?;
                let h = hex(&s[i + 3..i + 3 + close]).filter(|h| (1..=6).contains(&h.len())).ok_or_else(bad)?;
                let c = u32::from_str_radix(h, 16).ok().and_then(char::from_u32).ok_or_else(bad)?;
                out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                i += 2 + close;
            }
            _ => return Err(bad()),
        }
        i += 2;
    }
    Ok(out)
}

/// `1 day`, `2 days`, `0 days`, `2 entries`: a count with its noun, made
/// plural by the regular English rules (a consonant and `y` take `ies`; `s`,
/// `x`, `z`, `ch` and `sh` take `es`; anything else `s`).
pub fn plural(n: i64, noun: &str) -> String {
    if n.abs() == 1 {
        return format!("{n} {noun}");
    }
    let b = noun.as_bytes();
    let consonant_y = b.len() >= 2
        && b[b.len() - 1] == b'y'
        && b[b.len() - 2].is_ascii_alphabetic()
        && !b"aeiou".contains(&b[b.len() - 2]);
    if consonant_y {
        format!("{n} {}ies", &noun[..noun.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"].iter().any(|e| noun.ends_with(e)) {
        format!("{n} {noun}es")
    } else {
        format!("{n} {noun}s")
    }
}

/// C1 controls, bidirectional controls, zero-width characters and line or
/// paragraph separators: characters a terminal acts on or hides.
pub fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x9f | 0xad | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x2064
        | 0x2066..=0x2069 | 0xfeff | 0xfff9..=0xfffb)
}

/// Number of terminal columns an escaped string takes (one per char: the
/// escaped text contains no control characters).
pub fn width(s: &str) -> usize {
    s.chars().count()
}

/// Current time in microseconds since the epoch (UTC), from the system clock.
pub fn now_micros() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// RFC 3339 UTC with seconds, e.g. `2026-11-28T10:00:00Z`.
pub fn rfc3339(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::Secs, true),
        None => format!("@{micros}us"),
    }
}

/// A date (UTC) for tables, e.g. `2026-11-28`.
pub fn date(micros: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => format!("@{micros}us"),
    }
}

/// Parse a duration: `900`, `900s`, `15m`, `2h`, `7d` (also `w`). Returns seconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let allowed = "a whole number of seconds, or a number followed by s, m, h, d or w (e.g. 900, 15m, 2h, 7d)";
    let (num, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_lowercase()),
        Some(_) => (s, 's'),
        None => return Err(format!("empty duration; expected {allowed}")),
    };
    let mult: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return Err(format!("unknown unit in {s:?}; expected {allowed}")),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{s:?} is not a duration; expected {allowed}"));
    }
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is too large"))?;
    n.checked_mul(mult)
        .filter(|&v| v <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{s:?} is too large (at most 100 years)"))
}

/// Show a span of seconds the way it is written in the configuration.
pub fn format_duration(secs: u64) -> String {
    if secs == 0 {
        return "0".into();
    }
    for (unit, n) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs % n == 0 {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// Parse a point in time for `--since`/`--until`: RFC 3339, a date
/// (`2026-11-28`, midnight UTC) or a span back from `now` (`3d`, `12h`).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    let t = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc).timestamp_micros());
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        if let Some(dt) = d.and_hms_opt(0, 0, 0) {
            return Ok(dt.and_utc().timestamp_micros());
        }
    }
    match parse_duration(t) {
        Ok(secs) => Ok(now - i64::try_from(secs).unwrap_or(i64::MAX / MICROS) * MICROS),
        Err(_) => Err(format!(
            "{t:?} is not a time; use RFC 3339 (2026-11-28T10:00:00Z), a date (2026-11-28) or a span back from now (3d, 12h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_invalid_utf8() {
        assert_eq!(escape(b"alice"), "alice");
        assert_eq!(escape(b"a\nb\x1b[31m"), "a\\nb\\x1b[31m");
        assert_eq!(escape(b"\xff\xfeok"), "\\xff\\xfeok");
        assert_eq!(escape("é\u{202e}x".as_bytes()), "é\\u{202e}x");
        assert_eq!(escape(b"back\\slash"), "back\\\\slash");
        assert_eq!(escape_visible(b"alice "), "alice\\x20");
        assert_eq!(escape_visible(b" alice"), "\\x20alice");
        // one-to-one: a literal backslash-x is not confused with a byte
        assert_ne!(escape(b"\\xff"), escape(b"\xff"));
    }

    #[test]
    fn unescape_reads_what_escape_writes() {
        let names: [&[u8]; 8] = [
            b"alice",
            b"\xff\xfe",
            b"evil\nuser\r\t",
            b"back\\slash\\\\",
            b"\\xff",
            "é\u{202e}x\u{85}".as_bytes(),
            b"\x1b[31m\x7f",
            b" spaced ",
        ];
        for n in names {
            assert_eq!(unescape(escape(n).as_bytes()).as_deref(), Ok(n), "{}", escape(n));
            assert_eq!(unescape(escape_visible(n).as_bytes()).as_deref(), Ok(n), "{}", escape_visible(n));
            // Raw bytes without a backslash stand for themselves.
            if !n.contains(&b'\\') {
                assert_eq!(unescape(n).as_deref(), Ok(n));
            }
        }
        assert_eq!(unescape(br"\u{65}\x41"), Ok(b"eA".to_vec()));
        for bad in [
            &br"back\slash"[..],
            br"\x4",
            br"\xg0",
            br"\u{110000}",
            br"\u{d800}",
            br"\u{}",
            br"\u{41",
            br"\u41",
            br"end\",
        ] {
            let e = unescape(bad).unwrap_err();
            assert!(e.contains("\\\\ for a backslash"), "{e}");
        }
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "day"), "1 day");
        assert_eq!(plural(0, "day"), "0 days");
        assert_eq!(plural(2, "failure"), "2 failures");
        assert_eq!(plural(-1, "day"), "-1 day");
        assert_eq!(plural(2, "entry"), "2 entries");
        assert_eq!(plural(0, "entry"), "0 entries");
        assert_eq!(plural(1, "entry"), "1 entry");
        assert_eq!(plural(3, "key"), "3 keys", "a vowel before the y");
        assert_eq!(plural(2, "admin action"), "2 admin actions");
        assert_eq!(plural(2, "attempt"), "2 attempts");
        assert_eq!(plural(2, "address"), "2 addresses");
        assert_eq!(plural(2, "batch"), "2 batches");
        assert_eq!(plural(2, "box"), "2 boxes");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("900"), Ok(900));
        assert_eq!(parse_duration("900s"), Ok(900));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("1.5h").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
        assert!(parse_duration("999999w").is_err());
        assert_eq!(format_duration(900), "15m");
        assert_eq!(format_duration(90), "90s");
        assert_eq!(format_duration(0), "0");
    }

    #[test]
    fn times() {
        let now = 1_800_000_000 * MICROS;
        assert_eq!(parse_time("2026-11-28T10:00:00Z", now), Ok(1_795_860_000 * MICROS));
        assert_eq!(parse_time("2026-11-28", now), Ok(1_795_824_000 * MICROS));
        assert_eq!(parse_time("3d", now), Ok(now - 3 * DAY_MICROS));
        assert!(parse_time("yesterday", now).is_err());
        assert_eq!(rfc3339(1_795_860_000 * MICROS), "2026-11-28T10:00:00Z");
        assert_eq!(date(1_795_860_000 * MICROS), "2026-11-28");
    }

    #[test]
    fn caps_fields() {
        let long = vec![b'a'; 70_000];
        assert_eq!(cap(&long).len(), FIELD_CAP);
        assert_eq!(cap(b"bob"), b"bob");
    }
}
