#!/usr/bin/env python3
"""useraudit benchmark: what does pam_useraudit add to a login, next to pam_faillock?

Run through tests/bench/bench.sh (that is what `make bench` calls). Environment:
  SO=target/release/libpam_useraudit.so   the module (stack 3 is skipped if missing)
  ADMIN=target/release/useraudit-admin    the CLI (CLI timings skipped if missing)
  DRIVE=target/pam_drive                  the driver (built here from
                                          tests/driver/pam_drive.c if missing)
Knobs (environment, all optional):
  ATTEMPTS=3000  measured attempts per stack and outcome, split over
  ROUNDS=5       interleaved rounds (stack 1, 2, 3, stack 1, 2, 3, ...), so that
                 drift of the machine hits every stack alike
  WARMUP=100     un-measured attempts at the start of every run
  USERS=50       accounts the attempts rotate over
  PROCS=8 CONC_COUNT=250   concurrency section: PROCS processes x CONC_COUNT attempts
  MILLION=1000000          rows for the large-database section (0 skips it)
  MILLION_ATTEMPTS=1000    measured attempts per outcome against that database
  LOG_TABLE=log            useraudit's log table name
  DLOPEN_N=300             dlopen+dlclose repetitions
  BENCH_JSON=FILE          also write all results as JSON to FILE
  KEEP=1                   keep the sandbox directory (path printed)
Everything happens in a throwaway directory: nss_wrapper passwd/group files,
a pam_matrix passdb (stands in for pam_unix), PAM service files with absolute
module paths, driven in-process by pam_drive via pam_start_confdir().
"""

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))

SO = os.environ.get("SO", "target/release/libpam_useraudit.so")
ADMIN = os.environ.get("ADMIN", "target/release/useraudit-admin")
DRIVE = os.environ.get("DRIVE", "target/pam_drive")

ATTEMPTS = int(os.environ.get("ATTEMPTS", "3000"))
WARMUP = int(os.environ.get("WARMUP", "100"))
ROUNDS = max(1, int(os.environ.get("ROUNDS", "5")))
USERS = int(os.environ.get("USERS", "50"))
PROCS = int(os.environ.get("PROCS", "8"))
CONC_COUNT = int(os.environ.get("CONC_COUNT", "250"))
MILLION = int(os.environ.get("MILLION", "1000000"))
MILLION_ATTEMPTS = int(os.environ.get("MILLION_ATTEMPTS", "1000"))
LOG_TABLE = os.environ.get("LOG_TABLE", "log")
DLOPEN_N = int(os.environ.get("DLOPEN_N", "300"))
BENCH_JSON = os.environ.get("BENCH_JSON")
KEEP = os.environ.get("KEEP") == "1"

SERVICE = "bench"
GOOD_PW = "Correct-Horse-7"
BAD_PW = "wrong-password"
TIMEOUT = 600  # no single command may run longer than this


def multiarch():
    for cmd in (["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], ["gcc", "-print-multiarch"]):
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
            if out:
                return out
        except (OSError, subprocess.SubprocessError):
            pass
    return "x86_64-linux-gnu"


MA = multiarch()


def first_existing(*paths):
    for p in paths:
        if os.path.exists(p):
            return p
    return paths[0]


PAM_MATRIX = os.environ.get("PAM_MATRIX", first_existing(
    f"/usr/lib/{MA}/pam_wrapper/pam_matrix.so", f"/lib/{MA}/pam_wrapper/pam_matrix.so"))
SECDIR = first_existing(f"/lib/{MA}/security", f"/usr/lib/{MA}/security")
PAM_FAILLOCK = os.path.join(SECDIR, "pam_faillock.so")
PAM_DENY = os.path.join(SECDIR, "pam_deny.so")

RESULTS = {"params": {"attempts": ATTEMPTS, "warmup": WARMUP, "rounds": ROUNDS,
                      "users": USERS, "procs": PROCS, "conc_count": CONC_COUNT}}


def say(*a):
    print(*a, flush=True)


def absolute(p):
    return p if os.path.isabs(p) else os.path.join(os.getcwd(), p)


class Sandbox:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="useraudit-bench.")
        os.chmod(self.dir, 0o700)
        d = self.dir
        self.passwd = os.path.join(d, "passwd")
        self.group = os.path.join(d, "group")
        self.passdb = os.path.join(d, "passdb")
        with open(self.passwd, "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
            for i in range(USERS):
                f.write(f"bench{i}:x:{20000 + i}:20000:bench user {i}:/nonexistent:/bin/false\n")
        with open(self.group, "w") as f:
            f.write("root:x:0:\nbench:x:20000:\n")
        # pam_matrix: one line per user (it matches the first line of a user,
        # and its account step wants that line's service == PAM service)
        with open(self.passdb, "w") as f:
            for i in range(USERS):
                f.write(f"bench{i}:{GOOD_PW}:{SERVICE}\n")
        self.env = dict(os.environ)
        self.env.update({
            "LD_PRELOAD": "libnss_wrapper.so",
            "NSS_WRAPPER_PASSWD": self.passwd,
            "NSS_WRAPPER_GROUP": self.group,
        })

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def write_stack(self, name, lines):
        """a confdir holding one service file SERVICE"""
        confdir = self.path("pam.d-" + name)
        os.makedirs(confdir, exist_ok=True)
        with open(os.path.join(confdir, SERVICE), "w") as f:
            f.write("\n".join(lines) + "\n")
        return confdir

    def cleanup(self):
        if KEEP:
            say(f"(sandbox kept: {self.dir})")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------ stacks

class Stack:
    """a PAM configuration plus the state files it writes (reset between rounds)"""

    def __init__(self, name, confdir, state_paths=(), db=None):
        self.name = name
        self.confdir = confdir
        self.state_paths = list(state_paths)
        self.db = db

    def reset(self):
        for p in self.state_paths:
            if os.path.isdir(p):
                for e in os.listdir(p):
                    os.unlink(os.path.join(p, e))
            else:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    if os.path.exists(p + suffix):
                        os.unlink(p + suffix)


def stack_matrix(sb):
    m = f"{PAM_MATRIX} passdb={sb.passdb}"
    return Stack("pam_matrix", sb.write_stack("matrix", [
        f"auth     required  {m}",
        f"account  required  {m}",
    ]))


def stack_faillock(sb, tag="faillock"):
    # pam_faillock(8), second example plus the authsucc call of the first:
    # preauth before the password module, authfail/authsucc after it,
    # and the account call.  conf= an empty file keeps the host's
    # /etc/security/faillock.conf out of it.
    tally = sb.path("tally-" + tag)
    os.makedirs(tally, exist_ok=True)
    conf = sb.path("faillock.conf")
    open(conf, "a").close()
    fa = f"conf={conf} dir={tally} nodelay deny=1000000"
    m = f"{PAM_MATRIX} passdb={sb.passdb}"
    return Stack("pam_faillock", sb.write_stack(tag, [
        f"auth     required                 {PAM_FAILLOCK} preauth {fa}",
        f"auth     [success=1 default=bad]  {m}",
        f"auth     [default=die]            {PAM_FAILLOCK} authfail {fa}",
        f"auth     sufficient               {PAM_FAILLOCK} authsucc {fa}",
        f"auth     required                 {PAM_DENY}",
        f"account  required                 {PAM_FAILLOCK} conf={conf} dir={tally}",
        f"account  required                 {m}",
    ]), state_paths=[tally])


def stack_useraudit(sb, tag="useraudit"):
    # DESIGN.md "PAM stacks", pam_matrix standing in for pam_unix.  conf= an
    # empty file keeps the host's /etc/security/useraudit.toml out of it.
    so = absolute(SO)
    db = sb.path(tag + ".db")
    conf = sb.path("useraudit.toml")
    open(conf, "a").close()
    ua = f"conf={conf} db={db} login_failure_limit=1000000"
    m = f"{PAM_MATRIX} passdb={sb.passdb}"
    return Stack("pam_useraudit", sb.write_stack(tag, [
        f"auth     requisite                   {so} preauth {ua}",
        f"auth     [success=1 default=ignore]  {m}",
        f"auth     [default=die]               {so} authfail {ua}",
        f"auth     sufficient                  {so} authsucc {ua}",
        f"auth     required                    {PAM_DENY}",
        f"account  required                    {so} {ua}",
        f"account  required                    {m}",
    ]), state_paths=[db], db=db)


# ------------------------------------------------------------- the driver

EXPECT = {
    # outcome: (password, expected authenticate code, expected acct_mgmt code)
    "success": (GOOD_PW, "PAM_SUCCESS", "PAM_SUCCESS"),
    "failure": (BAD_PW, "PAM_AUTH_ERR", "-"),
}


def drive(sb, stack, outcome, count, warmup=0, procs=1, samples=None):
    pw = EXPECT[outcome][0]
    cmd = [DRIVE, "--confdir", stack.confdir, "--service", SERVICE,
           "--user", "bench%d", "--users", str(USERS), "--password", pw,
           "--rhost", "203.0.113.9", "--tty", "ssh", "--acct", "--json", "--quiet",
           "--count", str(count), "--warmup", str(warmup), "--procs", str(procs)]
    if samples:
        cmd += ["--samples", samples]
    p = subprocess.run(cmd, env=sb.env, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError(f"pam_drive exited {p.returncode}: {p.stderr.strip()}")
    r = json.loads(p.stdout)
    _, want_auth, want_acct = EXPECT[outcome]
    n = r["attempts"]
    ok = min(r["authenticate"].get(want_auth, 0), r["acct_mgmt"].get(want_acct, 0))
    r["errors"] = n - ok
    r["made"] = n + warmup * procs  # attempts that reached the stack
    return r


def single(sb, stack, outcome):
    pw = EXPECT[outcome][0]
    cmd = [DRIVE, "--confdir", stack.confdir, "--service", SERVICE, "--user", "bench1",
           "--password", pw, "--acct"]
    p = subprocess.run(cmd, env=sb.env, capture_output=True, text=True, timeout=60)
    return (p.stdout.splitlines() or [p.stderr.strip()])[0]


def sanity(sb, stack):
    """one attempt of each kind; a wrong verdict is reported, not fatal"""
    for outcome, (_, a, c) in EXPECT.items():
        got = single(sb, stack, outcome)
        want = f"authenticate={a} acct_mgmt={c}"
        if got != want:
            say(f"  WARNING {stack.name} {outcome}: got '{got}', expected '{want}'")
    stack.reset()


# ---------------------------------------------------------- main section

def fmt(v, width=8):
    return f"{v:>{width}}" if v is not None else f"{'-':>{width}}"


def pct(sorted_v, p):
    """nearest-rank percentile, as pam_drive computes it"""
    if not sorted_v:
        return None
    k = max(1, min(len(sorted_v), math.ceil(p / 100.0 * len(sorted_v) - 1e-9)))
    return sorted_v[k - 1]


def section_latency(sb, stacks):
    per_run = max(1, math.ceil(ATTEMPTS / ROUNDS))
    say(f"== latency: {per_run * ROUNDS} attempts per stack and outcome in {ROUNDS} "
        f"interleaved round(s) of {per_run}, each after {WARMUP} warm-up; {USERS} accounts; "
        f"acct_mgmt after success; 1 process ==")
    live = [s for s in stacks if s]
    samples = {s.name: {"success": [], "failure": []} for s in live}
    medians = {s.name: {"success": [], "failure": []} for s in live}
    errors = {s.name: 0 for s in live}
    sfile = sb.path("samples.txt")
    for _ in range(ROUNDS):
        for s in live:
            s.reset()  # each round starts from an empty tally / database
            for outcome in ("success", "failure"):
                r = drive(sb, s, outcome, per_run, WARMUP, samples=sfile)
                with open(sfile) as f:
                    v = [int(line.split()[0]) for line in f if line.strip()]
                samples[s.name][outcome] += v
                medians[s.name][outcome].append(r["all"]["median_us"])
                errors[s.name] += r["errors"]
    res = {}
    for name in samples:
        res[name] = {"errors": errors[name]}
        for outcome in ("success", "failure"):
            v = sorted(samples[name][outcome])
            res[name][outcome] = {"count": len(v), "median_us": pct(v, 50), "p90_us": pct(v, 90),
                                  "p99_us": pct(v, 99),
                                  "round_medians": medians[name][outcome]}

    # added cost: per round, the stack's median minus pam_matrix's median in
    # the same round (they ran seconds apart); the median of those differences
    added = {}
    if "pam_matrix" in medians:
        for name in medians:
            if name == "pam_matrix":
                continue
            added[name] = tuple(
                int(statistics.median(a - b for a, b in zip(medians[name][o],
                                                             medians["pam_matrix"][o])))
                for o in ("success", "failure"))

    hdr = (f"{'stack':<14} {'succ_med':>8} {'succ_p90':>8} {'succ_p99':>8} "
           f"{'fail_med':>8} {'fail_p90':>8} {'fail_p99':>8} {'+succ':>7} {'+fail':>7} {'errors':>6}")
    say(hdr)
    say("-" * len(hdr))
    for s in live:
        r = res[s.name]
        su, fa = r["success"], r["failure"]
        a1, a2 = (f"{added[s.name][0]:+d}", f"{added[s.name][1]:+d}") if s.name in added else ("-", "-")
        say(f"{s.name:<14} {fmt(su['median_us'])} {fmt(su['p90_us'])} {fmt(su['p99_us'])} "
            f"{fmt(fa['median_us'])} {fmt(fa['p90_us'])} {fmt(fa['p99_us'])} "
            f"{a1:>7} {a2:>7} {r['errors']:>6}")
    if stacks[2] is None:
        say(f"{'pam_useraudit':<14} skipped ({SO} not found)")
    say("(microseconds per whole attempt, pam_start_confdir .. pam_end, all rounds pooled;")
    say(" +succ/+fail = added over pam_matrix alone: median over rounds of the difference of")
    say(" the round medians; errors = attempts whose PAM codes were not the expected ones)")
    for n in res:
        say(f"round medians {n:<14} success {res[n]['success']['round_medians']}  "
            f"failure {res[n]['failure']['round_medians']}")
    ratio = {}
    if "pam_faillock" in added and "pam_useraudit" in added:
        for i, outcome in enumerate(("success", "failure")):
            fl, ua = added["pam_faillock"][i], added["pam_useraudit"][i]
            ratio[outcome] = round(ua / fl, 2) if fl > 0 else None
        say("ratio useraudit-added / faillock-added: "
            f"successes {ratio['success'] if ratio['success'] is not None else 'n/a'}, "
            f"failures {ratio['failure'] if ratio['failure'] is not None else 'n/a'}")
    else:
        say("ratio useraudit-added / faillock-added: skipped (needs stacks 2 and 3)")
    RESULTS["latency"] = res
    RESULTS["added_median_us"] = {k: {"success": v[0], "failure": v[1]} for k, v in added.items()}
    RESULTS["ratio_useraudit_over_faillock"] = ratio
    say("")


def sqlite_count(db, table):
    if not shutil.which("sqlite3") or not db or not os.path.exists(db):
        return None
    p = subprocess.run(["sqlite3", db, f"select count(*) from {table}"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return f"error: {p.stderr.strip()}"
    return int(p.stdout.strip())


# ====================================================================
# SECTION: 8-way concurrency (stacks 2 and 3, pam_matrix for reference)
# ====================================================================
def section_concurrency(sb, stacks):
    say(f"== concurrency: {PROCS} processes x {CONC_COUNT} attempts, started together ==")
    out = {}
    hdr = f"{'stack':<14} {'outcome':<8} {'attempts':>8} {'att/s':>9} {'med_us':>8} {'p99_us':>8} {'errors':>6}  log rows"
    say(hdr)
    say("-" * len(hdr))
    for s in stacks:
        if not s:
            continue
        s.reset()
        made = 0
        for outcome in ("success", "failure"):
            r = drive(sb, s, outcome, CONC_COUNT, warmup=5, procs=PROCS)
            made += r["made"]
            rows = ""
            if s.db and outcome == "failure":
                n = sqlite_count(s.db, LOG_TABLE)
                rows = (f"{n} rows for {made} attempts" if isinstance(n, int)
                        else (n or "no sqlite3/database"))
                if isinstance(n, int) and n < made:
                    rows += "  MISSING ROWS"
                out.setdefault(s.name, {})["log_rows"] = n
                out[s.name]["attempts_made"] = made
            out.setdefault(s.name, {})[outcome] = {
                "attempts": r["attempts"], "attempts_per_s": r["attempts_per_s"],
                "median_us": r["all"]["median_us"], "p99_us": r["all"]["p99_us"],
                "errors": r["errors"]}
            say(f"{s.name:<14} {outcome:<8} {r['attempts']:>8} {r['attempts_per_s']:>9.0f} "
                f"{r['all']['median_us']:>8} {r['all']['p99_us']:>8} {r['errors']:>6}  {rows}")
    if stacks[2] is None:
        say(f"{'pam_useraudit':<14} skipped ({SO} not found)")
    say("(errors = attempts whose PAM codes were not the expected ones; log rows counted "
        "after both runs, warm-ups included in attempts)")
    RESULTS["concurrency"] = out
    say("")


# ====================================================================
# SECTION: million-row database (stack 3 against a large log table)
# needs: SO, sqlite3.  Fills the log by doubling the rows the bench wrote
# (every column except the integer primary key), then measures again.
# ====================================================================
def section_million_rows(sb, ua):
    say(f"== large database: {MILLION} log rows ==")
    if MILLION <= 0:
        say("skipped (MILLION=0)\n")
        return None
    if ua is None:
        say(f"skipped ({SO} not found)\n")
        return None
    if not shutil.which("sqlite3"):
        say("skipped (sqlite3 not found)\n")
        return None
    big = stack_useraudit(sb, tag="useraudit-big")
    big.name = "pam_useraudit"
    big.reset()
    drive(sb, big, "success", 200)
    drive(sb, big, "failure", 200)
    info = subprocess.run(["sqlite3", "-separator", "|", big.db,
                           f"pragma table_info({LOG_TABLE})"],
                          capture_output=True, text=True, timeout=60)
    cols = []
    for line in info.stdout.splitlines():
        f = line.split("|")  # cid|name|type|notnull|dflt|pk
        if len(f) >= 6 and not (f[5] != "0" and f[2].upper() == "INTEGER"):
            cols.append('"' + f[1].replace('"', '""') + '"')
    if info.returncode != 0 or not cols:
        say(f"skipped (no table {LOG_TABLE} in the database: {info.stderr.strip()})\n")
        return None
    c = ",".join(cols)
    t0 = time.monotonic()
    n = sqlite_count(big.db, LOG_TABLE)
    while isinstance(n, int) and 0 < n < MILLION:
        need = min(n, MILLION - n)
        p = subprocess.run(["sqlite3", big.db,
                            f"insert into {LOG_TABLE} ({c}) select {c} from {LOG_TABLE} limit {need}"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        if p.returncode != 0:
            say(f"skipped (cannot fill {LOG_TABLE}: {p.stderr.strip()})\n")
            return None
        n = sqlite_count(big.db, LOG_TABLE)
    fill_s = time.monotonic() - t0
    size = os.path.getsize(big.db)
    say(f"filled to {n} rows in {fill_s:.1f} s, database {size / 1e6:.1f} MB")
    res = {"rows": n, "db_bytes": size}
    for outcome in ("success", "failure"):
        r = drive(sb, big, outcome, MILLION_ATTEMPTS, WARMUP)
        a = r["all"]
        res[outcome] = {"median_us": a["median_us"], "p90_us": a["p90_us"],
                        "p99_us": a["p99_us"], "errors": r["errors"]}
        say(f"pam_useraudit  {outcome:<8} median {a['median_us']} us  p90 {a['p90_us']}  "
            f"p99 {a['p99_us']}  errors {r['errors']}")
    RESULTS["million_rows"] = res
    say("")
    return big.db


# ====================================================================
# SECTION: CLI timings (useraudit-admin against the bench database)
# needs: ADMIN, a database written by stack 3
# ====================================================================
def section_cli(sb, db):
    say("== useraudit-admin timings ==")
    if not os.path.exists(ADMIN):
        say(f"skipped ({ADMIN} not found)\n")
        return
    if not db or not os.path.exists(db):
        say("skipped (no useraudit database: stack 3 did not run)\n")
        return
    conf = sb.path("useraudit.toml")
    open(conf, "a").close()
    base = [absolute(ADMIN), "--conf", conf, "--db", db]
    cmds = [
        ["check"],
        ["log", "--limit", "50"],
        ["log", "--failed", "--user", "bench1", "--limit", "50"],
        ["log", "--since", "1d", "--format", "json", "--limit", "1000"],
        ["status"],
        ["status", "bench1"],
        ["sweep", "--dry-run"],
    ]
    rows = sqlite_count(db, LOG_TABLE)
    rows = rows if isinstance(rows, int) else "?"
    say(f"(database {db}, {rows} log rows; median of 5 runs)")
    out = {}
    for args in cmds:
        times, rcs = [], set()
        for _ in range(5):
            t0 = time.monotonic()
            p = subprocess.run(base + args, env=sb.env, capture_output=True, timeout=TIMEOUT)
            times.append((time.monotonic() - t0) * 1000)
            rcs.add(p.returncode)
        ok = rcs <= ({0, 3} if args[0] == "status" else {0})
        med = statistics.median(times)
        out[" ".join(args)] = {"median_ms": round(med, 1), "exit": sorted(rcs)}
        say(f"  {' '.join(args):<55} {med:8.1f} ms  exit {sorted(rcs)}{'' if ok else '  UNEXPECTED'}")
    RESULTS["cli"] = out
    say("")


# ====================================================================
# SECTION: dlopen cost (the modules as libpam loads them, once per handle)
# needs: cc
# ====================================================================
def section_dlopen(sb):
    say(f"== dlopen(RTLD_NOW)+dlclose, {DLOPEN_N} times ==")
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        say("skipped (no C compiler)\n")
        return
    exe = sb.path("dlopen_cost")
    p = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", exe,
                        os.path.join(HERE, "dlopen_cost.c"), "-lpam", "-ldl"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        say(f"skipped (cannot build dlopen_cost: {p.stderr.strip()})\n")
        return
    out = {}
    mods = [("pam_matrix", PAM_MATRIX), ("pam_faillock", PAM_FAILLOCK)]
    mods.append(("pam_useraudit", absolute(SO)) if os.path.exists(SO) else ("pam_useraudit", None))
    say(f"{'module':<14} {'size_bytes':>10} {'first_us':>8} {'median_us':>9} {'p90_us':>7}  resident_after_close")
    for name, path in mods:
        if not path:
            say(f"{name:<14} skipped ({SO} not found)")
            continue
        p = subprocess.run([exe, path, str(DLOPEN_N)], capture_output=True, text=True,
                           timeout=TIMEOUT)
        if p.returncode != 0:
            say(f"{name:<14} error: {p.stderr.strip()}")
            out[name] = {"error": p.stderr.strip()}
            continue
        kv = dict(x.split("=", 1) for x in p.stdout.split())
        out[name] = kv
        say(f"{name:<14} {kv['size_bytes']:>10} {kv['first_us']:>8} {kv['median_us']:>9} "
            f"{kv['p90_us']:>7}  {kv['resident_after_close']}")
    RESULTS["dlopen"] = out
    say("")


def ensure_driver(sb):
    global DRIVE
    if os.path.exists(DRIVE):
        DRIVE = absolute(DRIVE)
        return
    cc = shutil.which("cc") or shutil.which("gcc")
    src = os.path.join(TOP, "tests", "driver", "pam_drive.c")
    exe = sb.path("pam_drive")
    say(f"({DRIVE} not found, building it from {src})")
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", exe, src, "-lpam"],
                   check=True, timeout=120)
    DRIVE = exe


def main():
    for need in (PAM_MATRIX, PAM_FAILLOCK, PAM_DENY):
        if not os.path.exists(need):
            say(f"bench: {need} not found (packages libpam-wrapper, libpam-modules)")
            return 1
    t_start = time.monotonic()
    sb = Sandbox()
    try:
        ensure_driver(sb)
        probe = subprocess.run(["sh", "-c", "id -un 20000"], env=sb.env,
                               capture_output=True, text=True, timeout=30)
        if probe.stdout.strip() != "bench0":
            say("bench: nss_wrapper does not work (package libnss-wrapper): "
                + probe.stderr.strip())
            return 1
        say(f"useraudit bench — {time.strftime('%Y-%m-%d %H:%M:%S')}, "
            f"{os.cpu_count()} CPUs, sandbox {sb.dir}")
        say(f"driver {DRIVE}; module {SO} {'(present)' if os.path.exists(SO) else '(MISSING)'}")
        say("")
        stacks = [stack_matrix(sb), stack_faillock(sb),
                  stack_useraudit(sb) if os.path.exists(SO) else None]
        for s in stacks:
            if s:
                sanity(sb, s)
        section_latency(sb, stacks)
        section_concurrency(sb, stacks)
        db = section_million_rows(sb, stacks[2])
        section_cli(sb, db or (stacks[2].db if stacks[2] else None))
        section_dlopen(sb)
        total = time.monotonic() - t_start
        say(f"bench finished in {total:.0f} s")
        RESULTS["total_s"] = round(total, 1)
        if BENCH_JSON:
            with open(BENCH_JSON, "w") as f:
                json.dump(RESULTS, f, indent=2)
            say(f"results written to {BENCH_JSON}")
        return 0
    except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as e:
        say(f"bench: {e}")
        return 1
    finally:
        sb.cleanup()


if __name__ == "__main__":
    sys.exit(main())
