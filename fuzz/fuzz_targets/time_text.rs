//! Durations, points in time and the escaping of untrusted bytes.
//! - parse_duration never panics, stays within 100 years, and
//!   format_duration gives text that parses back to the same value;
//! - parse_time never panics for a realistic clock;
//! - escape / escape_visible output holds no control, DEL, C1 or bidi
//!   character, and decodes back to the input (so it is one-to-one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use useraudit_core::text::{escape, escape_visible, format_duration, parse_duration, parse_time, rfc3339};

/// The inverse of `escape`: `\\`, `\n`, `\r`, `\t`, `\xNN`, `\u{N..}`.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c != '\\' {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            continue;
        }
        match it.next().expect("dangling backslash") {
            '\\' => out.push(b'\\'),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'x' => {
                let h: String = [it.next().unwrap(), it.next().unwrap()].iter().collect();
                out.push(u8::from_str_radix(&h, 16).expect("bad \\x escape"));
            }
            'u' => {
                assert_eq!(it.next(), Some('{'));
                let mut h = String::new();
                for c in it.by_ref() {
                    if c == '}' {
                        break;
                    }
                    h.push(c);
                }
                let c = char::from_u32(u32::from_str_radix(&h, 16).unwrap()).unwrap();
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            other => panic!("unknown escape \\{other}"),
        }
    }
    out
}

fn terminal_safe(s: &str) -> bool {
    !s.chars().any(|c| {
        (c as u32) < 0x20 || matches!(c as u32, 0x7f..=0x9f | 0x200b..=0x200f | 0x2028..=0x202e | 0x2066..=0x2069)
    })
}

fuzz_target!(|data: &[u8]| {
    for out in [escape(data), escape_visible(data)] {
        assert!(terminal_safe(&out), "{out:?}");
        assert_eq!(unescape(&out), data, "escape is not one-to-one: {out:?}");
    }
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(secs) = parse_duration(s) {
        assert!(secs <= 100 * 365 * 86_400);
        let f = format_duration(secs);
        assert_eq!(parse_duration(&f), Ok(secs), "{s:?} -> {secs} -> {f:?}");
    }
    // a clock from 1900 to 2100
    let now = 1_795_860_000_000_000i64;
    for now in [now, -2_208_988_800_000_000, 4_102_444_800_000_000] {
        if let Ok(t) = parse_time(s, now) {
            let _ = rfc3339(t);
        }
    }
});
