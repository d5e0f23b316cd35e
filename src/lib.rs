//! useraudit: a PAM module that logs every login into SQLite and enforces a
//! failed-login limit, account inactivity and password expiry, and the
//! library behind `useraudit-admin`.
//!
//! Layout: [`config`] (file and module arguments), [`policy`] (pure rules),
//! [`store`] (all SQL), [`spool`] (where the module appends log entries
//! for the store), [`state`] (account state files), [`files`] (what those
//! two share), [`audit`] (the core behind the PAM hooks), [`admin`]
//! (the core behind the CLI), [`text`] (escaping and time formats),
//! [`notify`]. `unsafe` lives only in `sys` (libc) and `pam_glue` (the PAM
//! entry points).
#![deny(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod config;
pub mod files;
pub mod notify;
#[allow(unsafe_code)]
mod pam_glue;
pub mod policy;
pub mod spool;
pub mod state;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod text;
