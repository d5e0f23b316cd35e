#!/usr/bin/env python3
"""The fleet's numbers (run by `make bench` after daemon.py), each printed
next to its target, against a throwaway PostgreSQL cluster made here:

  1. lock propagation: 3 hosts (each its own configuration, state
     directory, PAM service files, `fleet.host` and running `useraudit-admin
     daemon`, `fleet.interval` = FLEET_INTERVAL seconds, default 1); in each
     of PROPAGATION_RUNS (default 15) runs, 5 failures of a fresh name
     spread over the hosts through the real module and libpam (fleet limit
     5, each host's own limit 10), at a random moment of the daemons'
     cycle; from the return of the failure that reaches the limit until
     `useraudit-admin status NAME` on each host says fleet_failure_limit;
     median and max (target: within two intervals); what one round costs
     (a `fleet sync` with nothing to push). Then the daemons' CPU over
     FLEET_IDLE_SECS (default 10) with no logins;
  2. sync throughput: SYNC_ENTRIES (default 200,000) local log entries,
     loaded by bench-fill, pushed by one `useraudit-admin fleet sync` as a
     host's role; entries per second of the whole process (target: at
     least 20,000), with the server's share (its INSERT and COMMIT times,
     from its own statement log) and the cost of a round with nothing to
     push (run after 1: the lockout looks at names with entries added
     in the last 5 minutes, and these are many);
  3. `log --fleet --user U --limit 50` with FLEET_ROWS (default 10,000,000)
     rows in the fleet log (filled server-side with generate_series after
     `fleet init`: 200 hosts, 20,000 accounts and 8 names that sprays aim
     at, 90 days), whole processes, QUERY_RUNS (default 20) runs per name:
     median and max (target: under 50 ms), with the server's own time for
     the query, and the same with sslmode=disable in the URL (no TLS set-up
     in the client). Then, without targets, at that size: a sync round with
     nothing to push (what every host pays every interval; the fleet
     lockout's query) and `status --fleet NAME`. FLEET_ROWS=0 skips this
     section.

Environment: ADMIN (useraudit-admin), SO (the module), FILL (bench-fill), as
for bench.sh; PG_BIN (the PostgreSQL programs; default: the newest
/usr/lib/postgresql/*/bin); FLEET_TIMEOUT (default 900 s) bounds the run;
KEEP=1 keeps the directory (the server stopped). Skipped, with a message,
when PostgreSQL or the PAM test tools are not installed. As root the
server runs as the `postgres` user; otherwise as the caller. The server
listens on a Unix socket in a temporary directory only and keeps its
default settings (fsync on), except while section 3 fills the table.
Everything (cluster, hosts, daemons) is removed at the
end, also on failure, Ctrl-C or SIGTERM. Standard library only.
"""

import glob
import json
import os
import pwd
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
ADMIN = os.path.abspath(os.environ.get("ADMIN", os.path.join(TOP, "target/release/useraudit-admin")))
SO = os.path.abspath(os.environ.get("SO", os.path.join(TOP, "target/release/libpam_useraudit.so")))
FILL = os.path.abspath(os.environ.get("FILL", os.path.join(TOP, "target/release/examples/bench-fill")))
MATRIX = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"
PASSWORD = "secret"

SYNC_ENTRIES = int(os.environ.get("SYNC_ENTRIES", "200000"))
INTERVAL = int(os.environ.get("FLEET_INTERVAL", "1"))
RUNS = int(os.environ.get("PROPAGATION_RUNS", "15"))
IDLE_SECS = float(os.environ.get("FLEET_IDLE_SECS", "10"))
ROWS = int(os.environ.get("FLEET_ROWS", "10000000"))
QUERY_RUNS = int(os.environ.get("QUERY_RUNS", "20"))
TIMEOUT = int(os.environ.get("FLEET_TIMEOUT", "900"))
FLEET_LIMIT = 5
HOSTS = ["web-1", "web-2", "web-3"]
ROOT = os.geteuid() == 0


def say(*a):
    print(*a, flush=True)


def verdict(ok):
    return "ok" if ok else "FAIL"


def ms(v):
    return f"{v * 1000:.1f} ms"


def pg_bin():
    if os.environ.get("PG_BIN"):
        return os.environ["PG_BIN"]
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(d, "initdb"))]
    if not found:
        return None
    return max(found, key=lambda d: int(re.sub(r"\D", "", d.split("/")[-2]) or 0))


class Cluster:
    """A throwaway cluster: a socket in its own directory, no TCP."""

    def __init__(self, top, bindir):
        self.bin = bindir
        self.dir = os.path.join(top, "pg")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        os.mkdir(self.dir, 0o755)
        if ROOT:
            shutil.chown(self.dir, "postgres", "postgres")
        self.running = False
        self.as_owner(["initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])

    def as_owner(self, args, timeout=120):
        cmd = [os.path.join(self.bin, args[0])] + args[1:]
        if ROOT:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {r.stderr.strip()}")
        return r

    def start(self, settings=""):
        opts = f"-k {self.dir} -c listen_addresses='' {settings}"
        self.as_owner(["pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start"])
        self.running = True

    def stop(self, mode="fast"):
        if self.running:
            self.running = False
            try:
                self.as_owner(["pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"], timeout=90)
            except (RuntimeError, subprocess.TimeoutExpired):
                self.as_owner(["pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"], timeout=90)

    def url(self, role):
        return f"host={self.dir} dbname=useraudit user={role} connect_timeout=5"

    def sql(self, text, db="useraudit", timeout=600):
        """Run SQL as the superuser through psql; rows as lists of fields."""
        r = subprocess.run([os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t", "-F", "\t",
                            "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-U", "postgres", "-d", db],
                           input=text, capture_output=True, text=True, timeout=timeout)
        if r.returncode != 0:
            raise RuntimeError(f"psql: {r.stderr.strip()}")
        return [l.split("\t") for l in r.stdout.splitlines() if l]

    def one(self, text):
        return self.sql(text)[0][0]

    def log_size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def log_since(self, offset):
        with open(self.log, errors="replace") as f:
            f.seek(offset)
            return f.read()


class Host:
    """A simulated host: its own users, passwords, PAM service file,
    configuration (with `fleet.host`) and state directory."""

    def __init__(self, top, name, url, users):
        self.name = name
        self.dir = os.path.join(top, name)
        os.mkdir(self.dir, 0o755)
        self.state = os.path.join(self.dir, "state")
        os.mkdir(self.state, 0o700)
        self.db = os.path.join(self.state, "useraudit.db")
        self.conf = os.path.join(self.dir, "useraudit.toml")
        with open(self.conf, "w") as f:
            f.write(f'login_failure_limit = 10\n[fleet]\nurl = "{url}"\nhost = "{name}"\n'
                    f'interval = "{INTERVAL}s"\nfailure_limit = {FLEET_LIMIT}\n')
        names = ["bob"] + list(users)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
            f.writelines(f"{u}:x:{2000 + i}:{2000 + i}::/nonexistent:/bin/false\n" for i, u in enumerate(names))
        with open(os.path.join(self.dir, "group"), "w") as f:
            f.write("root:x:0:\n")
            f.writelines(f"{u}:x:{2000 + i}:\n" for i, u in enumerate(names))
        with open(os.path.join(self.dir, "passdb"), "w") as f:
            f.writelines(f"{u}:{PASSWORD}:login\n" for u in names)
        os.mkdir(os.path.join(self.dir, "pam.d"))
        ua = f"conf={self.conf} db={self.db}"
        m = f"{MATRIX} passdb={self.dir}/passdb"
        with open(os.path.join(self.dir, "pam.d", "login"), "w") as f:
            f.write(f"auth requisite {SO} preauth {ua}\n"
                    f"auth [success=1 default=ignore] {m}\n"
                    f"auth [default=die] {SO} authfail {ua}\n"
                    f"auth sufficient {SO} authsucc {ua}\n"
                    f"auth required pam_deny.so\n"
                    f"account required {SO} {ua}\n"
                    f"account required {m}\n")
        nss = {"NSS_WRAPPER_PASSWD": f"{self.dir}/passwd", "NSS_WRAPPER_GROUP": f"{self.dir}/group"}
        self.admin_env = dict(os.environ, LD_PRELOAD="libnss_wrapper.so", **nss)
        self.pam_env = dict(os.environ, LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so", PAM_WRAPPER="1",
                            PAM_WRAPPER_SERVICE_DIR=f"{self.dir}/pam.d", **nss)
        self.pam_env.pop("PAM_WRAPPER_DEBUGLEVEL", None)
        self.daemon = None

    def admin(self, *args, timeout=120, conf=None):
        return subprocess.run([ADMIN, "--conf", conf or self.conf, "--db", self.db] + list(args), env=self.admin_env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)

    def admin_ok(self, *args, timeout=120, conf=None):
        r = self.admin(*args, timeout=timeout, conf=conf)
        if r.returncode != 0:
            raise RuntimeError(f"useraudit-admin {' '.join(args)} on {self.name}: {r.stderr.strip()}")
        return r.stdout

    def login(self, user, password):
        r = subprocess.run(["pamtester", "-I", "rhost=203.0.113.9", "login", user, "authenticate", "acct_mgmt"],
                           input=password + "\n", text=True, env=self.pam_env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=30)
        return r.returncode == 0

    def reason(self, user):
        r = self.admin("status", user, "--format", "json", timeout=30)
        if r.returncode not in (0, 3):
            return None
        try:
            return json.loads(r.stdout)[0].get("reason")
        except (ValueError, IndexError, AttributeError):
            return None

    def start_daemon(self):
        self.daemon = subprocess.Popen([ADMIN, "--conf", self.conf, "--db", self.db, "daemon"], env=self.admin_env,
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=open(os.path.join(self.dir, "daemon.stderr"), "w"))

    def stop_daemon(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()


def no_tls(conf):
    """A copy of a host's configuration with sslmode=disable in the URL: no
    TLS set-up in the client, for comparison."""
    plain = conf + ".no-tls"
    with open(conf) as f:
        text = f.read()
    with open(plain, "w") as f:
        f.write(text.replace('connect_timeout=5"', 'connect_timeout=5 sslmode=disable"'))
    return plain


def timed(f):
    t = time.monotonic()
    f()
    return time.monotonic() - t


def server_times(text, statement):
    """Sum of the server's logged durations (ms) of parse, bind and execute
    of statements starting with `statement`."""
    pat = re.compile(r"duration: ([0-9.]+) ms  (?:parse|bind|execute) [^:]*: \s*" + re.escape(statement))
    return [float(m.group(1)) for m in pat.finditer(text)]


def section_sync(pg, top):
    say(f"== fleet sync: {SYNC_ENTRIES:,} local entries into PostgreSQL, one `useraudit-admin fleet sync`")
    pg.sql("CREATE ROLE sync_host LOGIN IN ROLE useraudit_host;"
           "ALTER ROLE sync_host SET log_min_duration_statement = 0")
    h = Host(top, "sync-host", pg.url("sync_host"), [])
    r = subprocess.run([FILL, h.db, str(SYNC_ENTRIES), "997"], capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"bench-fill: {r.stderr.strip()}")
    h.admin_ok("check")  # the database is current and its spool merged before the clock starts
    at = pg.log_size()
    wall = timed(lambda: h.admin_ok("fleet", "sync", timeout=600))
    log = pg.log_since(at)
    n = int(pg.one("SELECT count(*) FROM fleet_log WHERE host = 'sync-host'"))
    batches = int(pg.one("SELECT count(DISTINCT added_at) FROM fleet_log WHERE host = 'sync-host'"))
    rate = n / wall
    say(f"   {n:,} entries in {wall:.2f} s, {batches} transactions: {rate:,.0f} entries/s "
        f"[{verdict(rate >= 20000 and n == SYNC_ENTRIES)}: target >= 20,000 entries/s]")
    insert = sum(server_times(log, "INSERT INTO fleet_log")) / 1000
    commit = sum(float(x) for x in re.findall(r"duration: ([0-9.]+) ms  statement: COMMIT", log)) / 1000
    say(f"   the server's time: INSERT {insert:.2f} s, COMMIT {commit:.2f} s (the WAL flushed to disk); "
        f"the rest, {max(0.0, wall - insert - commit):.2f} s: reading the local log, the marks, the fleet "
        f"lockout's query, start-up")
    again, lockout = [], []
    for _ in range(5):
        at = pg.log_size()
        again.append(timed(lambda: h.admin_ok("fleet", "sync")))
        lockout.append(sum(server_times(pg.log_since(at), "WITH cand")))
    say(f"   a round with nothing to push (whole process): median {ms(statistics.median(again))}, max "
        f"{ms(max(again))}; of it the fleet lockout's query on the server {statistics.median(lockout):.1f} ms "
        f"(it looks at the names with entries added in the last 5 minutes: all {n:,} of these)")
    pg.sql("ALTER ROLE sync_host RESET log_min_duration_statement")
    return h


def section_propagation(pg, top):
    users = [f"spray{k}" for k in range(RUNS)]
    for h in HOSTS:
        pg.sql(f'CREATE ROLE "{h}" LOGIN IN ROLE useraudit_host')
    hosts = [Host(top, h, pg.url(h), users) for h in HOSTS]
    say(f"== lock propagation: 3 hosts, each with its daemon, fleet.interval = {INTERVAL}s, fleet limit "
        f"{FLEET_LIMIT}; {RUNS} runs")
    try:
        for h in hosts:
            if not h.login("bob", PASSWORD):
                raise RuntimeError(f"a login on {h.name} failed")
            h.start_daemon()
        time.sleep(INTERVAL + 0.5)
        for h in hosts:
            if h.daemon.poll() is not None:
                raise RuntimeError(f"the daemon of {h.name} stopped: "
                                   + open(os.path.join(h.dir, "daemon.stderr")).read())
        each = []  # per host and run
        worst = []  # per run: the last host
        never = 0
        rnd = random.Random(17)
        for k, user in enumerate(users):
            time.sleep(rnd.uniform(0, INTERVAL))
            order = [hosts[(k + i) % len(hosts)] for i in range(FLEET_LIMIT)]
            for h in order:
                if h.login(user, "wrong"):
                    raise RuntimeError("a wrong password was accepted")
            t0 = time.monotonic()
            got = {}

            def poll(h):
                until = t0 + 4 * INTERVAL + 10
                while time.monotonic() < until:
                    if h.reason(user) == "fleet_failure_limit":
                        got[h.name] = time.monotonic() - t0
                        return
                    time.sleep(0.01)

            threads = [threading.Thread(target=poll, args=(h,), daemon=True) for h in hosts]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            never += len(hosts) - len(got)
            each += got.values()
            if len(got) == len(hosts):
                worst.append(max(got.values()))
        each.sort()
        worst.sort()
        target = 2 * INTERVAL
        if not worst:
            say(f"   FAIL: never locked on every host ({never} host(s) missed)")
            return
        say(f"   each host: median {ms(statistics.median(each))}, max {ms(each[-1])}; the last of the 3 hosts: "
            f"median {ms(statistics.median(worst))}, max {ms(worst[-1])} "
            f"[{verdict(worst[-1] <= target and not never)}: target within two intervals, {target} s]"
            + (f"; {never} host(s) never locked" if never else ""))
        # What one round costs here: the failure may wait up to an interval
        # on its host, the lock up to another on the others, each plus a round.
        pg.sql('CREATE ROLE probe LOGIN IN ROLE useraudit_host')
        probe = Host(top, "probe", pg.url("probe"), [])
        probe.login("bob", PASSWORD)
        plain = no_tls(probe.conf)
        probe.admin_ok("fleet", "sync")
        rounds = [timed(lambda: probe.admin_ok("fleet", "sync")) for _ in range(7)]
        bare = [timed(lambda: probe.admin_ok("fleet", "sync", conf=plain)) for _ in range(7)]
        say(f"   one sync round (`fleet sync`, whole process, nothing to push): median "
            f"{ms(statistics.median(rounds))}; with sslmode=disable in the URL {ms(statistics.median(bare))}")
        say(f"== the 3 daemons idle, fleet.interval = {INTERVAL}s: CPU over {IDLE_SECS:g} s with no logins")
        hz = os.sysconf("SC_CLK_TCK")

        def ticks(p):
            with open(f"/proc/{p.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        t0, c0 = time.monotonic(), [ticks(h.daemon) for h in hosts]
        time.sleep(IDLE_SECS)
        t1, c1 = time.monotonic(), [ticks(h.daemon) for h in hosts]
        pcts = [(b - a) / hz / (t1 - t0) * 100 for a, b in zip(c0, c1)]
        say("   " + ", ".join(f"{h.name} {p:.2f} %" for h, p in zip(hosts, pcts))
            + f" of one core (a sync round every {INTERVAL} s: a new connection each time)")
    finally:
        for h in hosts:
            h.stop_daemon()


def fill_sql(rows, lo, hi, now):
    span = 90 * 86400 * 1000000
    return f"""
SELECT setseed(0.17);
INSERT INTO fleet_log (host, generation, local_id, time, success, "user", service, rhost, ruser, tty,
                       auth_method, reason, added_at)
SELECT 'web-' || lpad((g % 200)::text, 3, '0'), 1, g / 200 + 1, t, ok, convert_to(u, 'UTF8'), '\\x73736864'::bytea,
       convert_to(CASE WHEN spray THEN '198.51.' || (g % 20) || '.' || (g % 250 + 1)
                       ELSE '10.' || (g % 7) || '.' || (g % 250 + 1) || '.1' END, 'UTF8'),
       NULL, '\\x737368'::bytea,
       convert_to(CASE WHEN ok AND g % 3 <> 0 THEN 'publickey' ELSE 'password' END, 'UTF8'),
       CASE WHEN ok THEN NULL ELSE 'auth' END,
       to_timestamp(t / 1e6) + interval '1 second'
FROM (
    SELECT g, spray, t,
           CASE WHEN spray THEN (ARRAY['root','admin','ubuntu','test','oracle','postgres','git','user'])
                                [1 + (r * r * 8)::int % 8]
                ELSE 'user' || floor(20000 * r * r)::int END AS u,
           NOT spray AND r2 < 0.95 AS ok
    FROM (
        SELECT g, random() < 0.3 AS spray, random() AS r, random() AS r2,
               {now} - ({rows} - g) * ({span} / {rows}) AS t
        FROM generate_series({lo}, {hi} - 1) g
    ) a
) b;
"""


def section_fleet_log(pg, h, role):
    if ROWS <= 0:
        say("== log --fleet: skipped (FLEET_ROWS=0)")
        return
    say(f"== log --fleet --user U --limit 50 with {ROWS:,} rows in the fleet log")
    # Filling: one transaction that empties the table first (with
    # wal_level=minimal the rows skip the WAL), the indexes dropped and made
    # again afterwards, as written by `fleet init`; then the server restarts
    # with its default settings.
    pg.stop()
    pg.start("-c wal_level=minimal -c max_wal_senders=0 -c max_wal_size=8GB -c checkpoint_timeout=30min")
    indexes = [r[0] for r in pg.sql(
        "SELECT indexdef FROM pg_indexes i WHERE tablename = 'fleet_log' AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)")]
    constraints = pg.sql("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                         "WHERE conrelid = 'fleet_log'::regclass AND contype IN ('p', 'u')")
    names = [r[0] for r in pg.sql("SELECT format('%I.%I', i.schemaname, i.indexname) FROM pg_indexes i "
                                  "WHERE tablename = 'fleet_log' AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
                                  "WHERE c.conindid = format('%I.%I', i.schemaname, i.indexname)::regclass)")]
    now = int(time.time() * 1e6)
    t = time.monotonic()
    drop = "".join(f"DROP INDEX {n};" for n in names)
    drop += "".join(f'ALTER TABLE fleet_log DROP CONSTRAINT "{c}";' for c, _ in constraints)
    pg.sql("BEGIN; TRUNCATE fleet_log; " + drop + fill_sql(ROWS, 0, ROWS, now) + "COMMIT;", timeout=TIMEOUT)
    filled = time.monotonic() - t
    t = time.monotonic()
    make = "SET maintenance_work_mem = '1GB';" + "".join(f"{d};" for d in indexes)
    make += "".join(f'ALTER TABLE fleet_log ADD CONSTRAINT "{c}" {d};' for c, d in constraints)
    pg.sql(make + "ANALYZE fleet_log;", timeout=TIMEOUT)
    indexed = time.monotonic() - t
    pg.stop()
    pg.start()
    size = pg.one("SELECT pg_size_pretty(pg_total_relation_size('fleet_log'))")
    say(f"   filled in {filled:.0f} s, indexed and analyzed in {indexed:.0f} s; table and indexes: {size}")
    pg.sql(f'ALTER ROLE "{role}" SET log_min_duration_statement = 0')
    counts = dict((u, int(n)) for u, n in pg.sql(
        "SELECT convert_from(\"user\", 'UTF8'), count(*) FROM fleet_log "
        "WHERE \"user\" IN ('root', 'user100', 'user19000') GROUP BY 1"))
    plain = no_tls(h.conf)
    worst = 0.0
    for user, what in (("root", "the name sprays aim at most"), ("user100", "an account"),
                       ("user19000", "a rare account"), ("nobody", "a name with no entries")):
        runs, bare, server = [], [], []
        for _ in range(QUERY_RUNS):
            at = pg.log_size()
            runs.append(timed(lambda: h.admin_ok("log", "--fleet", "--user", user, "--limit", "50",
                                                 "--format", "json")))
            server.append(sum(server_times(pg.log_since(at), "SELECT host, local_id")))
            bare.append(timed(lambda: h.admin_ok("log", "--fleet", "--user", user, "--limit", "50",
                                                 "--format", "json", conf=plain)))
        worst = max(worst, max(runs))
        n = counts.get(user, 0)
        say(f"   {user} ({what}, {n:,} {'row' if n == 1 else 'rows'}): median {ms(statistics.median(runs))}, "
            f"max {ms(max(runs))}; the server's part {statistics.median(server):.2f} ms; "
            f"with sslmode=disable: median {ms(statistics.median(bare))}, max {ms(max(bare))}")
    say(f"   [{verdict(worst < 0.05)}: target under 50 ms per whole process, with the URL as given]")
    # Not targets, but what every host pays each interval, and the fleet view.
    rounds, lockout = [], []
    for _ in range(2):
        at = pg.log_size()
        rounds.append(timed(lambda: h.admin_ok("fleet", "sync", timeout=120)))
        lockout.append(sum(server_times(pg.log_since(at), "WITH cand")))
    recent = int(pg.one("SELECT count(*) FROM fleet_log WHERE added_at > now() - interval '5 minutes'"))
    say(f"   at this size, a sync round with nothing to push: median {ms(statistics.median(rounds))}, of it the "
        f"fleet lockout's query {statistics.median(lockout):.1f} ms ({recent:,} "
        f"{'entry' if recent == 1 else 'entries'} added in the last 5 minutes)")
    t = time.monotonic()
    r = h.admin("status", "--fleet", "root", "--format", "json", timeout=120)
    t = time.monotonic() - t
    say(f"   status --fleet root (the lockout over the whole fleet log): {ms(t)}, exit {r.returncode}"
        + (f": {r.stderr.strip()}" if r.returncode not in (0, 3) else ""))
    pg.sql(f'ALTER ROLE "{role}" RESET log_min_duration_statement')


def main():
    for p, what in ((SO, "the module"), (ADMIN, "useraudit-admin"), (FILL, "bench-fill"), (MATRIX, "pam_matrix")):
        if not os.path.exists(p):
            say(f"SKIP (fleet): {what} ({p}) is missing")
            return 0
    bindir = pg_bin()
    if not bindir or not os.path.exists(os.path.join(bindir, "psql")):
        say("SKIP (fleet): PostgreSQL is not installed (Debian: apt-get install postgresql; make deps)")
        return 0
    if ROOT:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            say("SKIP (fleet): running as root, and there is no postgres user to run the server as")
            return 0
    for tool in ("pamtester",):
        if not shutil.which(tool):
            say(f"SKIP (fleet): {tool} is missing")
            return 0

    def stop(signum, _frame):
        # SystemExit unwinds through the finally blocks: daemons, cluster, files.
        why = f"over FLEET_TIMEOUT={TIMEOUT} s" if signum == signal.SIGALRM else f"signal {signum}"
        raise SystemExit(f"fleet bench: stopped ({why})")

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, stop)
    signal.alarm(TIMEOUT)
    top = tempfile.mkdtemp(prefix="useraudit-fleet-bench.")
    pg = None
    try:
        os.chmod(top, 0o755)  # the server's user enters it to reach its own directory
        pg = Cluster(top, bindir)
        pg.start()
        pg.sql("CREATE DATABASE useraudit", db="postgres")
        version = pg.one("SHOW server_version")
        say(f"== PostgreSQL {version} (throwaway cluster, Unix socket, default settings), "
            f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
        init = Host(top, "init", pg.url("postgres"), [])
        init.admin_ok("fleet", "init")
        section_propagation(pg, top)
        h = section_sync(pg, top)
        section_fleet_log(pg, h, "sync_host")
    finally:
        signal.alarm(0)
        if pg:
            pg.stop()
        if os.environ.get("KEEP") == "1":
            say(f"kept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        say("fleet bench: interrupted; everything it started is stopped and removed")
        sys.exit(130)
