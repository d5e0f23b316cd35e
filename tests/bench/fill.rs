//! bench-fill: load a useraudit database with many log entries, quickly,
//! through the store's own API (`Store::bulk_insert`) and the account
//! state files' (`Accounts::update`), so the benchmark measures the
//! schema, indexes and files that are really used.
//!
//! Built as a Cargo example (see `[[example]] name = "bench-fill"` in
//! Cargo.toml): `cargo build --release --example bench-fill`, then
//!
//!   target/release/examples/bench-fill DB ROWS ACCOUNTS [DAYS] [PREFIX]
//!
//! appends ROWS log entries spread evenly over the last DAYS days (default
//! 60), oldest first, rotating over ACCOUNTS account names PREFIX0 ..
//! PREFIX{ACCOUNTS-1} (default prefix `bench`); one in ten is a failure;
//! remote hosts come from a pool of 1,000 addresses. Every account gets
//! an account row (active, last login = its newest success). Creates the
//! database (0600, directory 0700) when missing. Prints one line:
//!   rows=N accounts=M seconds=S
//! Exit: 0 ok, 1 error, 2 usage.

use std::path::Path;
use std::time::Instant;

use useraudit_admin::store::{NewEntry, OpenOptions, Store};
use useraudit_core::policy::{Account, LogReason};
use useraudit_core::state::Accounts;
use useraudit_core::text::now_micros;

/// Rows per transaction: big enough to amortise the commit (and the WAL
/// checkpoint that follows it), small enough to keep the WAL modest.
const BATCH: u64 = 100_000;

fn usage() -> ! {
    eprintln!("usage: bench-fill DB ROWS ACCOUNTS [DAYS] [PREFIX]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 || args.len() > 6 {
        usage();
    }
    let num = |s: &str| s.parse::<u64>().unwrap_or_else(|_| usage());
    let db = Path::new(&args[1]);
    let rows = num(&args[2]);
    let accounts = num(&args[3]).max(1);
    let days = args.get(4).map_or(60, |s| num(s)).max(1);
    let prefix = args.get(5).map_or("bench", String::as_str);
    if let Err(e) = run(db, rows, accounts, days, prefix) {
        eprintln!("bench-fill: {e}");
        std::process::exit(1);
    }
}

fn run(db: &Path, rows: u64, accounts: u64, days: u64, prefix: &str) -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let root = useraudit_core::sys::euid() == 0;
    let mut store = Store::open(db, OpenOptions { create: true, require_root_owned: root })?;
    let now = now_micros();
    let span = i64::try_from(days * 86_400_000_000)?;
    let start = now - span;
    let step = span / i64::try_from(rows.max(1))?;
    let names: Vec<Vec<u8>> = (0..accounts).map(|i| format!("{prefix}{i}").into_bytes()).collect();
    let hosts: Vec<Vec<u8>> =
        (0..1000u32).map(|i| format!("198.51.{}.{}", i / 250, i % 250 + 1).into_bytes()).collect();
    let mut last_login: Vec<Option<i64>> = vec![None; names.len()];
    let mut done = 0u64;
    while done < rows {
        let n = BATCH.min(rows - done);
        let first = done;
        let entries = (first..first + n).map(|i| {
            let u = usize::try_from(i % accounts).unwrap_or(0);
            let success = i % 10 != 9;
            let time = start + step * i64::try_from(i).unwrap_or(0);
            if success {
                last_login[u] = Some(time);
            }
            NewEntry {
                time,
                success,
                user: &names[u],
                service: Some(b"sshd"),
                rhost: Some(&hosts[usize::try_from(i % 1000).unwrap_or(0)]),
                ruser: None,
                tty: Some(b"ssh"),
                auth_method: Some(if success { b"publickey" } else { b"password" }),
                reason: (!success).then_some(LogReason::Auth),
            }
        });
        // `entries` borrows last_login mutably; collect the batch first.
        let batch: Vec<NewEntry<'_>> = entries.collect();
        store.bulk_insert(batch)?;
        done += n;
    }
    let state = Accounts::open(db, true, root)?;
    for (u, name) in names.iter().enumerate() {
        let mut a = Account::new(name, start);
        a.last_login = last_login[u];
        state.update(name, false, |_| Ok((Some(a.clone()), ())))?;
    }
    println!("rows={rows} accounts={accounts} seconds={:.1}", t0.elapsed().as_secs_f64());
    Ok(())
}
