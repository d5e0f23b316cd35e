//! Link the functions a login runs next to each other in pam_useraudit.so.
//!
//! libpam dlopen()s the module for every PAM handle and dlclose()s it at
//! pam_end, so each 64 KiB stretch of code a login touches is a page fault,
//! paid by every login. src/hot-symbols.txt (made by `make hot-symbols`,
//! tests/bench/hot_symbols.py) lists those functions; lld lays them out
//! together (--symbol-ordering-file). Only when asked (the Makefile's
//! module build sets USERAUDIT_SYMBOL_ORDER=1) and only with lld, Rust's own
//! linker on x86_64 Linux since Rust 1.90 (a GNU ld would reject the
//! option); any other build gets the default layout.

use std::path::Path;
use std::process::Command;

fn main() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    println!("cargo::rerun-if-changed=hot-symbols.txt");
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    println!("cargo::rerun-if-env-changed=USERAUDIT_SYMBOL_ORDER");
    if std::env::var("USERAUDIT_SYMBOL_ORDER").as_deref() != Ok("1")
        || std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || !list.exists()
    {
        return;
    }
    // A linker chosen by the user (config or flags) may not be lld.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if std::env::var_os("RUSTC_LINKER").is_some() || flags.contains("linker") {
        return;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let minor = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1)?.split('.').nth(1)?.parse::<u32>().ok());
    if minor.is_none_or(|m| m < 90) {
        return;
    }
    // ... and the toolchain must ship its lld (distribution builds may not).
    let sysroot = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let lld = Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld");
    if !lld.exists() {
        return;
    }
    println!("cargo::rustc-cdylib-link-arg=-Wl,--symbol-ordering-file={}", list.display());
    println!("cargo::rustc-cdylib-link-arg=-Wl,--no-warn-symbol-ordering");
}
