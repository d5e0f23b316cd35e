//! The optional fleet store on PostgreSQL: ALL PostgreSQL code lives here
//! (the schema and its roles, the push of local entries, the pull of fleet
//! decisions, the fleet views).
//!
//! The login path never reaches this file: the module decides from the
//! local state files; useraudit-admin (`fleet sync`, or the daemon every
//! `fleet.interval`) carries entries and decisions both ways.
//!
//! Exactly once: the local SQLite log is the queue. A host pushes the
//! entries after its high-water mark (the local log id last pushed, kept in
//! `DATABASE.fleet` and, when that file is missing, read back from
//! PostgreSQL), in one transaction per batch, with `ON CONFLICT (host,
//! generation, local_id) DO NOTHING`; the generation is the local log's
//! identity ([`Store::identity`]), so a replaced database starts afresh.
//! A kill between the commit and the write of the mark only makes the
//! next round send rows that are already there.
//!
//! Fleet lockout: derived from the facts (entries and admin actions) by one
//! query; each host writes the lock into its own state files, with the
//! reason `fleet_failure_limit`.
//!
//! Fleet host blocks (with `host_failure_limit` set): the failures of one
//! remote host on all hosts, in time order, replayed through the core's own
//! rule ([`hosts::replay`]); each host writes the block into its own host
//! state files, with the reason `fleet_host_failure_limit`. Hosts group an
//! entry's remote host by the key the core counts it under
//! ([`hosts::host_of`]), pushed with the entry as `rhost_key`.
use std::io::Write as _;
use std::path::{Path, PathBuf};

use postgres::Client;
use useraudit_core::config::{self, Config};
use useraudit_core::hosts::{self, HostState};
use useraudit_core::policy::{self, Account, Reason, State};
use useraudit_core::state::Accounts;
use useraudit_core::sys::{self, Lookup};
use useraudit_core::text::escape;

use crate::commands::{self, AdminError, Result};
use crate::store::{Entry, LogQuery, Store};

mod connect;
pub use connect::connect;

/// Entries sent per transaction.
pub const BATCH: usize = 5_000;
/// The schema and its roles. Idempotent: `fleet init` runs it every time.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS useraudit_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS fleet_log (
    host        text    NOT NULL,
    generation  bigint  NOT NULL,
    local_id    bigint  NOT NULL,
    time        bigint  NOT NULL,
    success     boolean NOT NULL,
    "user"      bytea   NOT NULL,
    service     bytea,
    rhost       bytea,
    ruser       bytea,
    tty         bytea,
    auth_method bytea,
    reason      text,
    added_by    name    NOT NULL DEFAULT current_user,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, generation, local_id)
);
CREATE INDEX IF NOT EXISTS fleet_log_added_at ON fleet_log (added_at);
CREATE INDEX IF NOT EXISTS fleet_log_user_time ON fleet_log ("user", time);
CREATE INDEX IF NOT EXISTS fleet_log_time ON fleet_log (time);
-- A name's last success, for the fleet lockout (successes are few).
CREATE INDEX IF NOT EXISTS fleet_log_user_success ON fleet_log ("user", time) WHERE success;
CREATE TABLE IF NOT EXISTS fleet_action (
    id       bigserial PRIMARY KEY,
    time     bigint NOT NULL,
    "user"   bytea  NOT NULL,
    action   text   NOT NULL CHECK (action IN ('activate', 'lock', 'block', 'unblock')),
    note     bytea,
    by_host  text,
    added_by name   NOT NULL DEFAULT current_user
);
CREATE INDEX IF NOT EXISTS fleet_action_user ON fleet_action ("user", time);
DO $$ BEGIN CREATE ROLE useraudit_host NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE useraudit_fleet_admin NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
REVOKE ALL ON useraudit_meta, fleet_log, fleet_action FROM PUBLIC;
REVOKE ALL ON fleet_log, fleet_action FROM useraudit_host, useraudit_fleet_admin;
GRANT SELECT ON useraudit_meta TO useraudit_host, useraudit_fleet_admin;
GRANT SELECT ON fleet_log TO useraudit_host, useraudit_fleet_admin;
GRANT INSERT (host, generation, local_id, time, success, "user", service, rhost, ruser, tty, auth_method, reason)
    ON fleet_log TO useraudit_host, useraudit_fleet_admin;
GRANT SELECT ON fleet_action TO useraudit_host, useraudit_fleet_admin;
GRANT INSERT (time, "user", action, note, by_host) ON fleet_action TO useraudit_fleet_admin;
GRANT USAGE ON SEQUENCE fleet_action_id_seq TO useraudit_fleet_admin;
-- Schema 2: which login role may add entries under which host name.
-- A host claims its name at its first push (first come); a fleet
-- administrator may assign names in advance or release them.
CREATE TABLE IF NOT EXISTS fleet_host (
    host     text PRIMARY KEY,
    role     name NOT NULL DEFAULT session_user,
    added_at timestamptz NOT NULL DEFAULT now()
);
DO $$ BEGIN
    -- Hosts that pushed before names were claimed keep theirs.
    IF NOT EXISTS (SELECT 1 FROM useraudit_meta WHERE key = 'schema' AND value::int >= 2) THEN
        INSERT INTO fleet_host (host, role)
            SELECT DISTINCT ON (host) host, added_by FROM fleet_log ORDER BY host, added_at
            ON CONFLICT (host) DO NOTHING;
    END IF;
END $$;
-- The login role, which SET ROLE cannot change.
ALTER TABLE fleet_log ALTER COLUMN added_by SET DEFAULT session_user;
ALTER TABLE fleet_action ALTER COLUMN added_by SET DEFAULT session_user;
REVOKE ALL ON fleet_host FROM PUBLIC, useraudit_host, useraudit_fleet_admin;
GRANT SELECT, INSERT (host) ON fleet_host TO useraudit_host;
GRANT SELECT, INSERT (host, role), DELETE ON fleet_host TO useraudit_fleet_admin;
ALTER TABLE fleet_log ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS fleet_log_read ON fleet_log;
CREATE POLICY fleet_log_read ON fleet_log FOR SELECT USING (true);
DROP POLICY IF EXISTS fleet_log_own_host ON fleet_log;
CREATE POLICY fleet_log_own_host ON fleet_log FOR INSERT WITH CHECK (
    EXISTS (SELECT 1 FROM fleet_host h WHERE h.host = fleet_log.host AND h.role = session_user)
);
-- Also schema 2: remote hosts counted across the fleet. rhost_key is the key the
-- pushing host counts the remote host under (an IPv6 network of its
-- host_ipv6_prefix, an IPv4 address for an IPv4-mapped one); NULL when that
-- is the remote host as logged, and in rows pushed before: then rhost is the key.
ALTER TABLE fleet_log ADD COLUMN IF NOT EXISTS rhost_key bytea;
CREATE INDEX IF NOT EXISTS fleet_log_rhost_key_time ON fleet_log ((coalesce(rhost_key, rhost)), time);
GRANT INSERT (rhost_key) ON fleet_log TO useraudit_host, useraudit_fleet_admin;
INSERT INTO useraudit_meta VALUES ('schema', '2') ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value;
"#;

/// Claim this host's name for the login role, or find it claimed by this
/// role already (the row-level security on `fleet_log` lets a role add
/// entries only under the names it holds). A schema from before claims
/// (`fleet init` not run since the upgrade) has neither: the host goes on
/// pushing, and the next `fleet init` gives the name to the role that
/// added its rows.
fn claim(c: &mut Client, host: &str) -> Result<()> {
    let r = match c.query_one(
        "WITH ins AS (INSERT INTO fleet_host (host) VALUES ($1) ON CONFLICT (host) DO NOTHING RETURNING role)
             SELECT (SELECT role FROM ins UNION ALL SELECT role FROM fleet_host WHERE host = $1 LIMIT 1)::text,
                    session_user::text",
        &[&host],
    ) {
        Ok(r) => r,
        Err(e) if e.code() == Some(&postgres::error::SqlState::UNDEFINED_TABLE) => return Ok(()),
        Err(e) => return Err(pg_err("cannot claim this host's name")(e)),
    };
    let (owner, me): (Option<String>, String) = (r.get(0), r.get(1));
    match owner {
        Some(o) if o == me => Ok(()),
        o => Err(AdminError::Problem(format!(
            "fleet: the host name {} belongs to the role {}, and this host connects as {}: give each host its own \
             fleet.host, or have a fleet administrator release the name (DELETE FROM fleet_host WHERE host = ...)",
            escape(host.as_bytes()),
            escape(o.unwrap_or_default().as_bytes()),
            escape(me.as_bytes())
        ))),
    }
}

/// This machine's name in the fleet.
pub fn host_name(f: &config::Fleet) -> String {
    if let Some(h) = &f.host {
        return h.clone();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn fleet_of(cfg: &Config) -> Result<&config::Fleet> {
    cfg.fleet
        .as_ref()
        .ok_or_else(|| AdminError::Problem("no [fleet] table in the configuration: the fleet is not set up".into()))
}

fn pg_err(what: &str) -> impl Fn(postgres::Error) -> AdminError + '_ {
    move |e| {
        // The server's own words when it sent any.
        let detail = match e.as_db_error() {
            Some(d) => d.message().to_string(),
            None => {
                let mut s = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(c) = src {
                    let c_text = c.to_string();
                    if !s.contains(&c_text) {
                        s.push_str(&format!(": {c_text}"));
                    }
                    src = c.source();
                }
                s
            }
        };
        AdminError::Problem(format!("fleet: {what}: {detail}"))
    }
}

/// `fleet init`: create or migrate the schema, the roles and their GRANTs.
pub fn init(cfg: &Config) -> Result<()> {
    let mut c = connect(fleet_of(cfg)?)?;
    let mut t = c.transaction().map_err(pg_err("init"))?;
    t.batch_execute(SCHEMA).map_err(pg_err("cannot create the schema"))?;
    t.commit().map_err(pg_err("cannot create the schema"))
}

/// What a host keeps locally about its sync (`DATABASE.fleet`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// The local log id up to which entries are in the fleet log.
    pub pushed: Option<i64>,
    /// The identity of the local log that `pushed` counts in.
    pub generation: Option<i64>,
    /// The last fleet admin action applied here.
    /// None: no mark (a host new to the fleet, or its mark lost).
    pub action: Option<i64>,
    /// When a sync last completed (microseconds).
    pub last_sync: Option<i64>,
    /// The server's clock when the fleet lockout was last looked at.
    pub checked: Option<i64>,
}

pub fn mark_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".fleet");
    PathBuf::from(s)
}

pub fn read_mark(db: &Path) -> Mark {
    let mut m = Mark::default();
    let Ok(text) = std::fs::read_to_string(mark_path(db)) else {
        return m;
    };
    for l in text.lines() {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let Ok(n) = v.trim().parse::<i64>() else {
            continue;
        };
        match k.trim() {
            "pushed" => m.pushed = Some(n),
            "generation" => m.generation = Some(n),
            "action" => m.action = Some(n),
            "last_sync" => m.last_sync = Some(n),
            "checked" => m.checked = Some(n),
            _ => {}
        }
    }
    m
}

/// Written to a new file and renamed over the old one, synced. The new
/// file is this process's own: a `fleet sync` run while the daemon syncs
/// must not truncate the file the other is about to rename.
fn write_mark(db: &Path, m: &Mark) -> Result<()> {
    let path = mark_path(db);
    let tmp = {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".tmp.{}", std::process::id()));
        PathBuf::from(s)
    };
    let mut text = m.action.map(|a| format!("action={a}\n")).unwrap_or_default();
    if let (Some(p), Some(g)) = (m.pushed, m.generation) {
        text.push_str(&format!("generation={g}\npushed={p}\n"));
    }
    if let Some(t) = m.last_sync {
        text.push_str(&format!("last_sync={t}\n"));
    }
    if let Some(t) = m.checked {
        text.push_str(&format!("checked={t}\n"));
    }
    let written = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, &path));
    written.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        AdminError::Problem(format!("{}: {e}", path.display()))
    })
}

/// What one sync round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    pub pushed: u64,
    pub actions: u64,
    /// Names locked here by the fleet lockout in this round.
    pub locked: Vec<Vec<u8>>,
    /// Remote hosts blocked here by the fleet's count in this round.
    pub blocked: Vec<Vec<u8>>,
}

/// Whether the schema has `fleet_log.rhost_key` (schema 2): a host
/// upgraded before `fleet init` ran keeps pushing without it (those rows
/// are counted under their remote host as logged), and counts no remote
/// host across the fleet until then.
fn has_rhost_key(c: &mut Client) -> Result<bool> {
    let r = c
        .query_one(
            "SELECT count(*) FROM pg_attribute
             WHERE attrelid = 'fleet_log'::regclass AND attname = 'rhost_key' AND NOT attisdropped",
            &[],
        )
        .map_err(pg_err("cannot read the schema"))?;
    Ok(r.get::<_, i64>(0) > 0)
}

/// The key an entry's remote host is counted under, when it is not the
/// remote host as logged (see the schema).
fn rhost_key(rhost: Option<&[u8]>, ipv6_prefix: u8) -> Option<Vec<u8>> {
    hosts::host_of(rhost, &[], ipv6_prefix).map(|h| h.key).filter(|k| Some(k.as_slice()) != rhost)
}

/// Send the local entries after the high-water mark, batch by batch.
/// `keys`: the `host_ipv6_prefix` to send each remote host's key with
/// (None: the schema has no `rhost_key` yet).
fn push(c: &mut Client, store: &Store, host: &str, mark: &mut Mark, db: &Path, keys: Option<u8>) -> Result<u64> {
    let generation = store.identity()?;
    if mark.generation != Some(generation) {
        // A new local log (or no mark yet): ask the fleet how far it got.
        mark.pushed = None;
        mark.generation = Some(generation);
    }
    claim(c, host)?;
    let mut after = match mark.pushed {
        Some(p) => p,
        None => {
            let r = c
                .query_one(
                    "SELECT coalesce(max(local_id), 0) FROM fleet_log WHERE host = $1 AND generation = $2",
                    &[&host, &generation],
                )
                .map_err(pg_err("cannot read the fleet log"))?;
            r.get(0)
        }
    };
    let mut total = 0;
    loop {
        let rows = store.entries_after(after, BATCH)?;
        let batch: Vec<&Entry> = rows.iter().collect();
        let Some(last) = batch.last().map(|e| e.id) else {
            break;
        };
        let col = |f: fn(&Entry) -> Option<Vec<u8>>| batch.iter().map(|e| f(e)).collect::<Vec<_>>();
        let ids: Vec<i64> = batch.iter().map(|e| e.id).collect();
        let times: Vec<i64> = batch.iter().map(|e| e.time).collect();
        let ok: Vec<bool> = batch.iter().map(|e| e.success).collect();
        let users: Vec<Vec<u8>> = batch.iter().map(|e| e.user.clone()).collect();
        let service = col(|e| e.service.clone());
        let rhost = col(|e| e.rhost.clone());
        let ruser = col(|e| e.ruser.clone());
        let tty = col(|e| e.tty.clone());
        let method = col(|e| e.auth_method.clone());
        let reason: Vec<Option<String>> = batch.iter().map(|e| e.reason.clone()).collect();
        let rkeys: Vec<Option<Vec<u8>>> =
            keys.map_or_else(Vec::new, |p| batch.iter().map(|e| rhost_key(e.rhost.as_deref(), p)).collect());
        let mut params: Vec<&(dyn postgres::types::ToSql + Sync)> =
            vec![&host, &ids, &times, &ok, &users, &service, &rhost, &ruser, &tty, &method, &reason, &generation];
        let (key_col, key_arg) = if keys.is_some() { (", rhost_key", ", $13::bytea[]") } else { ("", "") };
        if keys.is_some() {
            params.push(&rkeys);
        }
        let mut t = c.transaction().map_err(pg_err("cannot push"))?;
        let n = t
            .execute(
                &format!("INSERT INTO fleet_log (host, generation, local_id, time, success, \"user\", service, rhost, ruser, tty, auth_method, reason{key_col})
                 SELECT $1, $12, * FROM unnest($2::bigint[], $3::bigint[], $4::boolean[], $5::bytea[], $6::bytea[],
                                          $7::bytea[], $8::bytea[], $9::bytea[], $10::bytea[], $11::text[]{key_arg})
                 ON CONFLICT (host, generation, local_id) DO NOTHING"),
                &params,
            )
            .map_err(pg_err("cannot push"))?;
        t.commit().map_err(pg_err("cannot push"))?;
        total += n;
        after = last;
        mark.pushed = Some(after);
        write_mark(db, mark)?;
    }
    if mark.pushed.is_none() {
        mark.pushed = Some(after);
    }
    Ok(total)
}

/// The most failures `status --fleet` counts per name (a sync round counts
/// up to `failure_limit` only: that decides, and a round reads no more of a
/// name that sprays aim at and that never succeeds).
const COUNT_CAP: i64 = 1_000;

/// The names the fleet lockout locks now: failures (`reason = 'auth'`)
/// after the name's last success on any host and its last `activate
/// --fleet`, within `failure_window`, at least `limit` of them; with the
/// time of the last one. Candidates are the names with entries added since
/// `$3` (all when NULL), or the names `$4` (when not empty). Per name: two
/// index lookups for the last reset (the partial index of successes, and
/// `fleet_action`), then at most `$5` failures read backwards from the
/// newest, so a round costs what is new, not a name's whole history.
const FLEET_LOCKS: &str = r#"
WITH cand AS (
    SELECT DISTINCT "user" FROM fleet_log
    WHERE ($3::bigint IS NULL OR added_at > to_timestamp($3::bigint / 1e6) - interval '5 minutes')
      AND cardinality($4::bytea[]) = 0
    UNION
    SELECT u FROM unnest($4::bytea[]) AS u
)
SELECT c."user", n.count, n.last
FROM cand c
CROSS JOIN LATERAL (
    SELECT greatest(
        (SELECT max(time) FROM fleet_log s WHERE s."user" = c."user" AND s.success),
        (SELECT max(time) FROM fleet_action a WHERE a."user" = c."user" AND a.action = 'activate')
    ) AS t
) r
CROSS JOIN LATERAL (
    SELECT count(*) AS count, max(x.time) AS last FROM (
        SELECT f.time FROM fleet_log f
        WHERE f."user" = c."user" AND NOT f.success AND f.reason = 'auth'
          AND f.time > coalesce(r.t, -1) AND f.time >= $1
        ORDER BY f.time DESC LIMIT $5
    ) x
) n
WHERE n.count >= $2
"#;

/// Names locked fleet-wide at `now`: (name, failures up to `cap` (at least
/// the limit), last failure). With `added_since` (the server's clock, microseconds),
/// only names with entries added since then (less 5 minutes, for
/// transactions that were still open) are looked at: a decision changes
/// only with new facts. With `names`, only those.
fn fleet_locks(
    c: &mut Client,
    cfg: &Config,
    now: i64,
    added_since: Option<i64>,
    names: &[Vec<u8>],
    cap: i64,
) -> Result<Vec<(Vec<u8>, i64, i64)>> {
    let f = fleet_of(cfg)?;
    let limit = f.limit(cfg);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let since = if cfg.failure_window > 0 {
        now.saturating_sub(i64::try_from(cfg.failure_window).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000))
    } else {
        i64::MIN
    };
    // A small LIMIT also keeps the planner on the ordered index scan, which
    // stops early, for names whose failures it underestimates.
    let cap = cap.max(i64::from(limit));
    let rows = c
        .query(FLEET_LOCKS, &[&since, &i64::from(limit), &added_since, &names, &cap])
        .map_err(pg_err("cannot read the fleet lockout"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The failures that count against a remote host, as the module counts
/// them: wrong passwords and guessed names (`auth`), and attempts refused
/// for a locked, disabled or expired account. Not counted: successes,
/// `password_expired` (mostly a login that must change its password first),
/// `host_blocked` (refused for the host itself), `dropped`.
const HOST_FAILURES: [&str; 4] = ["auth", "locked", "disabled", "account_expired"];

/// The remote hosts the fleet may block now, with the times of their
/// failures on all hosts (oldest first): hosts with failures added since
/// the last round (`$3`, the server's clock, less 5 minutes, for
/// transactions that were still open), counting the failures from `$1` on
/// and after the host's last `unblock --fleet`, when there are at least
/// `$2` of them. Each host is then replayed by [`hosts::replay`]. Served by
/// the indexes on `added_at`, on (key, time) and on `fleet_action`.
const FLEET_HOSTS: &str = r#"
WITH cand AS (
    SELECT DISTINCT coalesce(rhost_key, rhost) AS k FROM fleet_log
    WHERE ($3::bigint IS NULL OR added_at > to_timestamp($3::bigint / 1e6) - interval '5 minutes')
      AND NOT success AND reason = ANY($4::text[]) AND rhost <> ''::bytea
),
reset AS (
    SELECT "user" AS k, max(time) AS t FROM fleet_action
    WHERE action = 'unblock' AND "user" IN (SELECT k FROM cand) GROUP BY "user"
)
SELECT c.k, array_agg(f.time ORDER BY f.time)
FROM cand c
JOIN fleet_log f ON coalesce(f.rhost_key, f.rhost) = c.k
LEFT JOIN reset r ON r.k = c.k
WHERE NOT f.success AND f.reason = ANY($4::text[]) AND f.time >= $1 AND (r.t IS NULL OR f.time > r.t)
GROUP BY c.k
HAVING count(*) >= $2
"#;

/// The earliest failure that can matter to a block in force now: the
/// block began at most `host_block_time` ago, and the failures that made it
/// lie within `host_failure_window` before that. With either 0 (blocks
/// until `unblock`, or failures that count however old), every failure
/// after the last `unblock --fleet`.
fn host_horizon(cfg: &Config, now: i64) -> i64 {
    if cfg.host_failure_window == 0 || cfg.host_block_time == 0 {
        return i64::MIN;
    }
    let secs = cfg.host_failure_window.saturating_add(cfg.host_block_time);
    now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000))
}

/// Remote hosts with enough failures on all hosts to be blocked, and their
/// failure times (see [`FLEET_HOSTS`]).
fn fleet_host_failures(
    c: &mut Client,
    cfg: &Config,
    now: i64,
    added_since: Option<i64>,
) -> Result<Vec<(Vec<u8>, Vec<i64>)>> {
    let rows = c
        .query(
            FLEET_HOSTS,
            &[&host_horizon(cfg, now), &i64::from(cfg.host_failure_limit), &added_since, &&HOST_FAILURES[..]],
        )
        .map_err(pg_err("cannot read the fleet's remote hosts"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Write the fleet's host blocks into the local host state files: each
/// remote host's failures on all hosts, after it was last unblocked here,
/// replayed by the local rule; a block in force now is written (reason
/// `fleet_host_failure_limit`, from the failure that reached the limit,
/// for `host_block_time`) unless the host is in `trusted_hosts` or
/// already blocked here. Reads `mark.checked`; `apply_locks` moves it.
fn apply_host_blocks(c: &mut Client, cfg: &Config, mark: &Mark, now: i64) -> Result<Vec<Vec<u8>>> {
    let limit = cfg.host_failure_limit;
    if limit == 0 {
        return Ok(Vec::new());
    }
    let found = fleet_host_failures(c, cfg, now, mark.checked)?;
    let found: Vec<_> = found.into_iter().filter(|(k, _)| !crate::hosts::trusted(cfg, k)).collect();
    if found.is_empty() {
        return Ok(Vec::new());
    }
    let hs = crate::hosts::open(cfg, true)?.expect("created");
    let mut blocked = Vec::new();
    for (key, times) in found {
        let r = hs.update(&key, false, |cur| {
            let mut h = cur.unwrap_or_else(|| HostState::new(&key));
            if hosts::block_at(&h, now).is_some() {
                return Ok((None, None));
            }
            // A local `unblock` forgot the failures before it, here.
            let after = h.unblocked_at.unwrap_or(i64::MIN);
            let counted: Vec<i64> = times.iter().copied().filter(|&t| t > after).collect();
            let fleet = hosts::replay(&key, &counted, limit, cfg.host_failure_window, cfg.host_block_time);
            let Some(b) = hosts::block_at(&fleet, now) else { return Ok((None, None)) };
            h.block = Some(b.clone());
            h.fail_times.clear();
            Ok((Some(h), Some(counted.len())))
        });
        match r {
            Ok(Some(n)) => {
                sys::syslog(
                    sys::Priority::Warning,
                    &format!("useraudit-admin: host {} blocked by the fleet ({n} failures across hosts)", escape(&key)),
                );
                blocked.push(key);
            }
            Ok(None) => {}
            // A damaged file: said, and the other hosts are still done.
            Err(e) => sys::syslog(sys::Priority::Warning, &format!("useraudit-admin: fleet block: {e}")),
        }
    }
    Ok(blocked)
}

/// `block --fleet` / `unblock --fleet` here: the `user` column holds the
/// remote host's key. The unblock's time starts the fleet's count here.
fn apply_host_action(cfg: &Config, key: &[u8], action: &str, note: Option<&[u8]>, time: i64, now: i64) -> Result<()> {
    if action == "block" {
        let note = note.map(|b| String::from_utf8_lossy(b).into_owned());
        crate::hosts::block(cfg, key, note.as_deref(), now).map(|_| ())
    } else {
        crate::hosts::unblock_since(cfg, key, now, time.min(now)).map(|_| ())
    }
}

/// Apply the admin actions recorded since the last round, in order.
fn apply_actions(c: &mut Client, cfg: &Config, accounts: &Accounts, mark: &mut Mark, now: i64) -> Result<u64> {
    let rows = match mark.action {
        Some(after) => {
            c.query("SELECT id, \"user\", action, note, time FROM fleet_action WHERE id > $1 ORDER BY id", &[&after])
        }
        // No mark: the fleet's standing, not its history. Of each name and
        // each remote host, the latest action, when it locks or blocks; an
        // old activate or unblock is not applied again, as it could lift a
        // lock made here since.
        None => {
            let upto: i64 = c
                .query_one("SELECT coalesce(max(id), 0) FROM fleet_action", &[])
                .map_err(pg_err("cannot read the fleet's admin actions"))?
                .get(0);
            mark.action = Some(upto);
            c.query(
                "SELECT id, \"user\", action, note, time FROM (
                     SELECT DISTINCT ON (\"user\", action IN ('block', 'unblock')) * FROM fleet_action
                     WHERE id <= $1 ORDER BY \"user\", action IN ('block', 'unblock'), id DESC
                 ) latest WHERE action IN ('lock', 'block') ORDER BY id",
                &[&upto],
            )
        }
    }
    .map_err(pg_err("cannot read the fleet's admin actions"))?;
    let mut n = 0;
    for r in &rows {
        let id: i64 = r.get(0);
        let user: Vec<u8> = r.get(1);
        let action: String = r.get(2);
        let note: Option<Vec<u8>> = r.get(3);
        if action == "block" || action == "unblock" {
            // A remote host (its key), not an account.
            if let Err(e) = apply_host_action(cfg, &user, &action, note.as_deref(), r.get(4), now) {
                // In trusted_hosts here, a damaged file: said, and not retried.
                sys::syslog(sys::Priority::Warning, &format!("useraudit-admin: fleet {action} {}: {e}", escape(&user)));
            }
            n += 1;
            mark.action = Some(mark.action.unwrap_or(id).max(id));
            continue;
        }
        // Only accounts this host knows; others are not here to act on.
        let name = std::str::from_utf8(&user).ok().filter(|n| commands::resolve(accounts, n).is_ok());
        if let Some(name) = name {
            let done = match action.as_str() {
                "activate" => commands::activate(cfg, accounts, name, now).map(|_| ()),
                "lock" => {
                    let note = note.map(|b| String::from_utf8_lossy(&b).into_owned());
                    commands::lock(cfg, accounts, name, note.as_deref(), now).map(|_| ())
                }
                // block and unblock are handled above.
                _ => Ok(()),
            };
            if let Err(e) = done {
                // An exempt account, a damaged file: said, and not retried.
                sys::syslog(sys::Priority::Warning, &format!("useraudit-admin: fleet {action} {}: {e}", escape(&user)));
            }
            n += 1;
        }
        mark.action = Some(mark.action.unwrap_or(id).max(id));
    }
    Ok(n)
}

/// Write the fleet lockout into the local state files.
fn apply_locks(c: &mut Client, cfg: &Config, accounts: &Accounts, mark: &mut Mark, now: i64) -> Result<Vec<Vec<u8>>> {
    let mut locked = Vec::new();
    let server_now: i64 = c
        .query_one("SELECT (extract(epoch FROM now()) * 1000000)::bigint", &[])
        .map_err(pg_err("cannot read the server's clock"))?
        .get(0);
    for (user, n, last) in fleet_locks(c, cfg, now, mark.checked, &[], 0)? {
        let info = match sys::lookup_user(&user) {
            Lookup::Found(u) => u,
            _ => continue,
        };
        if commands::is_exempt(cfg, &user, Some(&info)) {
            continue;
        }
        let newly = accounts.update(&info.name, false, |cur| {
            let mut a = cur.unwrap_or_else(|| Account::new(&info.name, now));
            // Already refused for another reason, or activated here after
            // the last failure: nothing to write.
            if a.state == State::Disabled || a.activated_at.is_some_and(|t| t >= last) {
                return Ok((None, false));
            }
            policy::disable(&mut a, Reason::FleetFailureLimit, now);
            a.failures = u32::try_from(n).unwrap_or(u32::MAX);
            Ok((Some(a), true))
        })?;
        if newly {
            sys::syslog(
                sys::Priority::Notice,
                &format!("useraudit-admin: {} locked by the fleet lockout ({n} failures across hosts)", escape(&user)),
            );
            locked.push(info.name.clone());
        }
    }
    // Written with the rest of the mark when the whole round succeeded.
    mark.checked = Some(server_now);
    Ok(locked)
}

/// One sync round: push the waiting entries, apply the fleet's admin
/// actions, write the fleet lockout into the local state files.
pub fn sync(cfg: &Config, store: &Store, accounts: &Accounts, now: i64) -> Result<Synced> {
    let f = fleet_of(cfg)?;
    let host = host_name(f);
    let mut c = connect(f)?;
    let mut mark = read_mark(&cfg.database);
    let keyed = has_rhost_key(&mut c)?;
    let pushed = push(&mut c, store, &host, &mut mark, &cfg.database, keyed.then_some(cfg.host_ipv6_prefix))?;
    let actions = apply_actions(&mut c, cfg, accounts, &mut mark, now)?;
    // Before apply_locks, which moves mark.checked to this round.
    let blocked = if keyed { apply_host_blocks(&mut c, cfg, &mark, now)? } else { Vec::new() };
    let locked = apply_locks(&mut c, cfg, accounts, &mut mark, now)?;
    mark.last_sync = Some(now);
    write_mark(&cfg.database, &mark)?;
    Ok(Synced { pushed, actions, locked, blocked })
}

/// `fleet status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    pub host: String,
    pub last_sync: Option<i64>,
    pub waiting: i64,
    /// None: reachable; else why not.
    pub unreachable: Option<String>,
}

pub fn status(cfg: &Config, store: &Store) -> Result<FleetStatus> {
    let f = fleet_of(cfg)?;
    let unreachable = match connect(f) {
        Ok(mut c) => c.simple_query("SELECT 1").err().map(|e| pg_err("")(e).to_string()),
        Err(e) => Some(e.to_string()),
    };
    let (last_sync, waiting) = progress(cfg, store)?;
    Ok(FleetStatus { host: host_name(f), last_sync, waiting, unreachable })
}

/// This host's side of the sync, from local files only (no connection):
/// when a sync last completed, and the local log entries not yet sent.
pub fn progress(cfg: &Config, store: &Store) -> Result<(Option<i64>, i64)> {
    let mark = read_mark(&cfg.database);
    let waiting = match mark.pushed {
        Some(p) if mark.generation == Some(store.identity()?) => store.count_after(p)?,
        _ => store.last_id()?.min(store.count()?),
    };
    Ok((mark.last_sync, waiting))
}

/// An entry of the fleet log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetEntry {
    pub host: String,
    pub entry: Entry,
}

/// `log --fleet`: the fleet log, newest first, with the same filters.
pub fn log(cfg: &Config, q: &LogQuery) -> Result<Vec<FleetEntry>> {
    let mut c = connect(fleet_of(cfg)?)?;
    let mut sql = String::from(
        "SELECT host, local_id, time, success, \"user\", service, rhost, ruser, tty, auth_method, reason FROM fleet_log WHERE true",
    );
    let mut args: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
    let mut arg = |sql: &mut String, cond: &str, v: Box<dyn postgres::types::ToSql + Sync>| {
        args.push(v);
        sql.push_str(&format!(" AND {cond} ${}", args.len()));
    };
    if let Some(s) = q.success {
        arg(&mut sql, "success =", Box::new(s));
    }
    for (col, v) in [("\"user\"", &q.user), ("rhost", &q.rhost), ("service", &q.service)] {
        if let Some(v) = v {
            arg(&mut sql, &format!("{col} ="), Box::new(v.clone()));
        }
    }
    if let Some(t) = q.since {
        arg(&mut sql, "time >=", Box::new(t));
    }
    if let Some(t) = q.until {
        arg(&mut sql, "time <", Box::new(t));
    }
    sql.push_str(" ORDER BY time DESC, host DESC, local_id DESC");
    if let Some(n) = q.limit {
        args.push(Box::new(i64::try_from(n).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" LIMIT ${}", args.len()));
    }
    let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args.iter().map(|b| b.as_ref()).collect();
    let rows = c.query(&sql, &params).map_err(pg_err("cannot read the fleet log"))?;
    Ok(rows
        .iter()
        .map(|r| FleetEntry {
            host: r.get(0),
            entry: Entry {
                id: r.get(1),
                time: r.get(2),
                success: r.get(3),
                user: r.get(4),
                service: r.get(5),
                rhost: r.get(6),
                ruser: r.get(7),
                tty: r.get(8),
                auth_method: r.get(9),
                reason: r.get(10),
            },
        })
        .collect())
}

/// One name as `status --fleet` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatusRow {
    pub user: Vec<u8>,
    /// "active", "locked" (the fleet lockout) or "disabled" (`lock --fleet`).
    pub state: &'static str,
    pub reason: Option<&'static str>,
    /// Counted failures across hosts (since the last reset).
    pub failures: i64,
    /// The host of the name's latest entry, and that entry's time.
    pub host: String,
    pub last_seen: i64,
}

/// `status --fleet [USER...]`: every name in the fleet log (or those named).
pub fn fleet_status(cfg: &Config, users: &[String], now: i64) -> Result<Vec<FleetStatusRow>> {
    let mut c = connect(fleet_of(cfg)?)?;
    let mut names: Vec<Vec<u8>> = users.iter().map(|u| u.as_bytes().to_vec()).collect();
    names.sort();
    names.dedup();
    // Counting up to COUNT_CAP, the planner may take a bitmap scan of all of
    // a name's failures (it does not know how many a sprayed name has); the
    // ordered index scan stops at the cap. This connection serves this
    // command only.
    c.batch_execute("SET enable_bitmapscan = off").map_err(pg_err("cannot set up the query"))?;
    let locks = fleet_locks(&mut c, cfg, now, None, &names, COUNT_CAP)?;
    // Named: each name's newest entry by the index on ("user", time).
    let rows = if names.is_empty() {
        c.query(
            "SELECT DISTINCT ON (\"user\") \"user\", host, time FROM fleet_log ORDER BY \"user\", time DESC, host DESC",
            &[],
        )
    } else {
        c.query(
            "SELECT u, l.host, l.time FROM unnest($1::bytea[]) AS u CROSS JOIN LATERAL (
                 SELECT host, time FROM fleet_log WHERE \"user\" = u ORDER BY time DESC, host DESC LIMIT 1
             ) l ORDER BY u",
            &[&names],
        )
    }
    .map_err(pg_err("cannot read the fleet log"))?;
    let actions = c
        .query("SELECT DISTINCT ON (\"user\") \"user\", action FROM fleet_action ORDER BY \"user\", id DESC", &[])
        .map_err(pg_err("cannot read the fleet's admin actions"))?;
    let mut out = Vec::new();
    for r in &rows {
        let user: Vec<u8> = r.get(0);
        let lock = locks.iter().find(|l| l.0 == user);
        let disabled = actions.iter().any(|a| a.get::<_, Vec<u8>>(0) == user && a.get::<_, String>(1) == "lock");
        let (state, reason) = if disabled {
            ("disabled", Some(Reason::Admin.as_str()))
        } else if lock.is_some() {
            ("locked", Some(Reason::FleetFailureLimit.as_str()))
        } else {
            ("active", None)
        };
        out.push(FleetStatusRow {
            failures: lock.map_or(0, |l| l.1),
            user,
            state,
            reason,
            host: r.get(1),
            last_seen: r.get(2),
        });
    }
    Ok(out)
}

/// One remote host as `hosts --fleet` shows it: the row of `hosts` (`host`
/// is the remote host's key, as there; the reason `fleet_host_failure_limit`
/// for the fleet's count or `admin` for `block --fleet`; the failures that
/// count now across hosts), decided from every host's entries, and where it
/// was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetHostRow {
    pub row: crate::hosts::HostRow,
    /// The time of its latest entry on any host, and that fleet host.
    pub last_seen: Option<i64>,
    pub last_seen_on: Option<String>,
}

/// Every remote host with counted failures since [`host_horizon`] (after
/// its last `unblock --fleet`) or blocked by `block --fleet`; the last
/// admin action of a host decides whether it is blocked by hand.
const FLEET_HOSTS_VIEW: &str = r#"
WITH act AS (
    SELECT DISTINCT ON ("user") "user" AS k, action, time, note FROM fleet_action
    WHERE action IN ('block', 'unblock') ORDER BY "user", id DESC
),
reset AS (
    SELECT "user" AS k, max(time) AS t FROM fleet_action WHERE action = 'unblock' GROUP BY "user"
),
fails AS (
    SELECT coalesce(f.rhost_key, f.rhost) AS k, array_agg(f.time ORDER BY f.time) AS times
    FROM fleet_log f LEFT JOIN reset r ON r.k = coalesce(f.rhost_key, f.rhost)
    WHERE NOT f.success AND f.reason = ANY($2::text[]) AND f.time >= $1 AND f.rhost <> ''::bytea
      AND (r.t IS NULL OR f.time > r.t)
    GROUP BY 1
),
keys AS (SELECT k FROM fails UNION SELECT k FROM act WHERE action = 'block')
SELECT keys.k, fails.times, act.action, act.time, act.note, ls.host, ls.time
FROM keys
LEFT JOIN fails ON fails.k = keys.k
LEFT JOIN act ON act.k = keys.k
LEFT JOIN LATERAL (
    SELECT l.host, l.time FROM fleet_log l WHERE coalesce(l.rhost_key, l.rhost) = keys.k
    ORDER BY l.time DESC, l.host DESC LIMIT 1
) ls ON true
ORDER BY keys.k
"#;

/// `hosts --fleet [--blocked]`: the fleet's view of remote hosts, decided by
/// this host's `host_*` settings (as every host decides for itself; each
/// host's `trusted_hosts` and local `unblock` still apply there).
pub fn fleet_hosts(cfg: &Config, blocked_only: bool, now: i64) -> Result<Vec<FleetHostRow>> {
    let mut c = connect(fleet_of(cfg)?)?;
    if !has_rhost_key(&mut c)? {
        return Err(AdminError::Problem(
            "fleet: the schema in PostgreSQL predates remote hosts: run `useraudit-admin fleet init`".into(),
        ));
    }
    let rows = c
        .query(FLEET_HOSTS_VIEW, &[&host_horizon(cfg, now), &&HOST_FAILURES[..]])
        .map_err(pg_err("cannot read the fleet's remote hosts"))?;
    let (limit, window) = (cfg.host_failure_limit, cfg.host_failure_window);
    let mut out = Vec::new();
    for r in &rows {
        let key: Vec<u8> = r.get(0);
        let times: Vec<i64> = r.get::<_, Option<Vec<i64>>>(1).unwrap_or_default();
        let by_hand = r.get::<_, Option<String>>(2).as_deref() == Some("block");
        let counted = hosts::replay(&key, &times, limit, window, cfg.host_block_time);
        let fleet_block = hosts::block_at(&counted, now);
        let (reason, blocked_at, unblocks_at) = match (by_hand, fleet_block) {
            (true, _) => (Some(hosts::BlockReason::Admin), r.get(3), None),
            (false, Some(b)) => (Some(b.reason), Some(b.at), b.until),
            (false, None) => (None, None, None),
        };
        if blocked_only && reason.is_none() {
            continue;
        }
        let row = crate::hosts::HostRow {
            state: if reason.is_some() { "blocked" } else { "active" },
            reason: reason.map(hosts::BlockReason::as_str),
            note: if by_hand { r.get(4) } else { None },
            failures: hosts::failures_at(&counted, window, now) as u64,
            last_failure: times.last().copied(),
            blocked_at,
            unblocks_at,
            host: key,
        };
        out.push(FleetHostRow { row, last_seen: r.get(6), last_seen_on: r.get(5) });
    }
    Ok(out)
}

/// `activate --fleet` / `lock --fleet`: record an admin action (needs the
/// role `useraudit_fleet_admin`); every host applies it at its next sync.
/// For `block --fleet` / `unblock --fleet`, `user` is the remote host's key.
pub fn record_action(cfg: &Config, user: &[u8], action: &str, note: Option<&[u8]>, now: i64) -> Result<()> {
    let f = fleet_of(cfg)?;
    let mut c = connect(f)?;
    c.execute(
        "INSERT INTO fleet_action (time, \"user\", action, note, by_host) VALUES ($1, $2, $3, $4, $5)",
        &[&now, &user, &action, &note, &host_name(f)],
    )
    .map_err(pg_err("cannot record the admin action (it needs the role useraudit_fleet_admin)"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_hosts_are_pushed_with_the_key_they_are_counted_under() {
        assert_eq!(rhost_key(Some(b"2001:db8:1:2::5"), 64), Some(b"2001:db8:1:2::/64".to_vec()));
        assert_eq!(rhost_key(Some(b"::ffff:192.0.2.1"), 64), Some(b"192.0.2.1".to_vec()));
        // The remote host as logged is the key: nothing to send.
        assert_eq!(rhost_key(Some(b"192.0.2.1"), 64), None);
        assert_eq!(rhost_key(Some(b"scanner.example"), 64), None);
        assert_eq!(rhost_key(Some(b"2001:db8::5"), 128), None);
        assert_eq!(rhost_key(Some(b""), 64), None);
        assert_eq!(rhost_key(None, 64), None);
    }

    #[test]
    fn the_host_horizon_covers_a_block_in_force_and_the_failures_that_made_it() {
        let mut cfg = Config::default();
        (cfg.host_failure_window, cfg.host_block_time) = (3600, 600);
        assert_eq!(host_horizon(&cfg, 10_000 * 1_000_000), (10_000 - 4200) * 1_000_000);
        cfg.host_block_time = 0;
        assert_eq!(host_horizon(&cfg, 10_000 * 1_000_000), i64::MIN);
        (cfg.host_failure_window, cfg.host_block_time) = (0, 600);
        assert_eq!(host_horizon(&cfg, 10_000 * 1_000_000), i64::MIN);
        (cfg.host_failure_window, cfg.host_block_time) = (u64::MAX, u64::MAX);
        assert!(host_horizon(&cfg, 0) < 0);
    }

    #[test]
    fn marks_survive_a_round_trip_and_a_missing_file_is_no_mark() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("u.db");
        assert_eq!(read_mark(&db), Mark::default());
        let m = Mark { pushed: Some(42), generation: Some(-7), action: Some(3), last_sync: Some(99), checked: Some(5) };
        write_mark(&db, &m).unwrap();
        assert_eq!(read_mark(&db), m);
    }
}
