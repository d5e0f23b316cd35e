//! useraudit-core: what a login decides and writes, shared by the PAM
//! module (`src/module`) and `useraudit-admin` (the root package).
//!
//! Nothing here opens SQLite or the network: a login decides from the
//! account state files ([`state`]) and appends its entry to the log spool
//! ([`spool`]); `useraudit-admin` alone merges the spool into the SQLite
//! log. Layout: [`config`] (file and module arguments), [`policy`] (pure
//! rules of state, configuration and now), [`audit`] (one call per PAM
//! hook), [`state`] and [`spool`] (the files), [`files`] (what those two
//! share), [`text`] (escaping and time formats), [`notify`]
//! (`notify_command`), [`hosts`] (remote-host state and address rules),
//! [`sys`] (libc: the only module here with `unsafe`).
#![deny(unsafe_code)]

pub mod audit;
pub mod config;
pub mod files;
pub mod hosts;
pub mod notify;
pub mod policy;
pub mod spool;
pub mod state;
#[allow(unsafe_code)]
pub mod sys;
pub mod text;
