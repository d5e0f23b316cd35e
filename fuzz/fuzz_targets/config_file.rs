//! The configuration file parser: any text either parses or gives an error
//! naming the file; a parsed configuration survives `render` (what
//! `useraudit-admin check` prints, "in TOML syntax") and parses back equal.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use useraudit_core::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/security/useraudit.toml");
    match Config::parse_file_text(text, path) {
        Ok(cfg) => {
            let rendered: String = cfg.render().iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            let back = Config::parse_file_text(&rendered, path)
                .unwrap_or_else(|e| panic!("rendered configuration does not parse: {e}\n{rendered}"));
            assert_eq!(back, cfg, "render does not round-trip:\n{rendered}");
        }
        Err(e) => {
            let s = e.to_string();
            assert!(s.starts_with("/etc/security/useraudit.toml"), "{s}");
        }
    }
});
