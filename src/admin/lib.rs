//! useraudit-admin's library: the single writer of the SQLite log.
//!
//! [`store`] owns all SQL (schema, the merge of the spool, queries,
//! retention); [`commands`] is the core of each command over the account
//! state files and the store; [`hosts`] the remote-host state (`hosts`,
//! `block`, `unblock`); [`daemon`] keeps the merge running (the
//! live log) and wakes `log --follow`; [`fleet`] owns all PostgreSQL (the
//! optional fleet store). `main.rs` is the thin shell: arguments,
//! output formats and exit codes. The login path never reaches this crate.
#![forbid(unsafe_code)]

pub mod commands;
pub mod daemon;
pub mod fleet;
pub mod hosts;
pub mod metrics;
pub mod report;
pub mod store;
