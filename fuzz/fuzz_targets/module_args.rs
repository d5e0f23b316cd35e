//! The module-argument parser and `Config::apply_arg`: arguments as libpam
//! hands them over (words of the stack line, lossily decoded by the glue).
//! Every `key=value` is applied, and the input is also tried as the value
//! of every key. Nothing panics; errors name the key; what is accepted
//! renders and parses back equal.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use useraudit_core::config::{Config, KEYS, ModuleArgs};

fn round_trip(cfg: &Config) {
    let rendered: String = cfg.render().iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
    let path = Path::new("/etc/security/useraudit.toml");
    let back = Config::parse_file_text(&rendered, path)
        .unwrap_or_else(|e| panic!("rendered configuration does not parse: {e}\n{rendered}"));
    assert_eq!(&back, cfg, "render does not round-trip:\n{rendered}");
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let words: Vec<&str> = text.split(|c: char| c.is_ascii_whitespace() || c == '\0').filter(|w| !w.is_empty()).collect();
    let m = ModuleArgs::parse(words.iter().copied());
    let _ = m.on_error_hint();
    let mut cfg = Config::default();
    let mut ok = true;
    for (k, v) in &m.settings {
        match cfg.apply_arg(k, v) {
            Ok(()) => {}
            Err(e) => {
                assert!(e.to_string().starts_with(&format!("module argument, key {k}: ")), "{e}");
                ok = false;
            }
        }
    }
    if ok && cfg.finish().is_ok() {
        if let Some(db) = &m.db {
            cfg.database = db.clone();
        }
        round_trip(&cfg);
    }
    // the whole input as the value of each key
    for key in KEYS {
        let mut c = Config::default();
        if c.apply_arg(key, &text).is_ok() && c.finish().is_ok() {
            round_trip(&c);
        }
    }
});
