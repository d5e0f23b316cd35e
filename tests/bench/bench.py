#!/usr/bin/env python3
"""useraudit benchmark: what does pam_useraudit add to a login, next to pam_faillock?

Run through tests/bench/bench.sh (that is what `make bench` calls). Environment:
  SO=target/release/libpam_useraudit.so   the module (useraudit sections skipped if missing)
  SO_BASE=PATH                            another build of the module (an older commit, other
                                          link options) measured as a fourth stack,
                                          "useraudit_base", interleaved with the others in
                                          sections 1 and 5: a before/after in one run
  ADMIN=target/release/useraudit-admin    the CLI (CLI timings skipped if missing)
  DRIVE=target/pam_drive                  the driver (built here from
                                          tests/driver/pam_drive.c if missing)
  FILL=target/release/examples/bench-fill the bulk loader (tests/bench/fill.rs; built
                                          here with `cargo build --release --example
                                          bench-fill` if missing)
Knobs (environment, all optional):
  ATTEMPTS=4000  measured attempts per stack and outcome, split over
  ROUNDS=40      interleaved rounds (stack 1, 2, 3, stack 1, 2, 3, ...), so that
                 drift of the machine hits every stack alike; short rounds, as
                 a shared machine changes speed within seconds
  WARMUP=20      un-measured attempts at the start of every run
  USERS=50       accounts the attempts rotate over
  PROCS=8 CONC_COUNT=250   concurrency: PROCS processes x CONC_COUNT attempts
  MILLION=1000000 MILLION_ACCOUNTS=10000   the large database (MILLION=0 skips it)
  MILLION_ATTEMPTS=2000    measured attempts per outcome against it (and against an
                           empty database, interleaved, for the ratio)
  CLI_RUNS=7               runs of each useraudit-admin command
  DLOPEN_N=300             dlopen+dlclose repetitions
  BENCH_JSON=FILE          also write all results as JSON to FILE
  KEEP=1                   keep the sandbox directory (path printed)
Everything happens in a throwaway directory: nss_wrapper passwd/group files,
a pam_matrix passdb (stands in for pam_unix), PAM service files with absolute
module paths, driven in-process by pam_drive via pam_start_confdir(); the
host's /etc/pam.d and accounts are never touched.

What is measured, and how to read it:
  * one attempt = pam_start_confdir .. PAM_RHOST/PAM_TTY .. pam_authenticate ..
    pam_acct_mgmt (after a success) .. pam_end, in one process, over and over;
    libpam dlopen()s and dlclose()s every module of the stack each time, as a
    login in a fresh process (sshd forks one per connection) pays once;
  * "added" = a stack's median minus pam_matrix's median in the same round,
    the median over rounds; the ratio compares the two modules' added costs;
  * mean and p90/p99 show what medians hide (stalls of the machine, the
    disk); the fsync probe at the start says how slow this machine's disk
    is. pam_useraudit does not fsync on the login path: it appends each
    attempt to DATABASE.spool and keeps account state in DATABASE.accounts/,
    and useraudit-admin merges the spool into SQLite (the log rows below
    are counted after such a merge, whose cost section 4 shows).
"""

import json
import math
import resource
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
SO_BASE = os.environ.get("SO_BASE", "")
ADMIN = os.environ.get("ADMIN", "target/release/useraudit-admin")
DRIVE = os.environ.get("DRIVE", "target/pam_drive")
FILL = os.environ.get("FILL", os.path.join(os.environ.get("CARGO_TARGET_DIR") or "target",
                                           "release", "examples", "bench-fill"))

ATTEMPTS = int(os.environ.get("ATTEMPTS", "4000"))
WARMUP = int(os.environ.get("WARMUP", "20"))
ROUNDS = max(1, int(os.environ.get("ROUNDS", "40")))
USERS = int(os.environ.get("USERS", "50"))
PROCS = int(os.environ.get("PROCS", "8"))
CONC_COUNT = int(os.environ.get("CONC_COUNT", "250"))
MILLION = int(os.environ.get("MILLION", "1000000"))
MILLION_ACCOUNTS = int(os.environ.get("MILLION_ACCOUNTS", "10000"))
MILLION_ATTEMPTS = int(os.environ.get("MILLION_ATTEMPTS", "2000"))
CLI_RUNS = max(1, int(os.environ.get("CLI_RUNS", "7")))
DLOPEN_N = int(os.environ.get("DLOPEN_N", "300"))
BENCH_JSON = os.environ.get("BENCH_JSON")
KEEP = os.environ.get("KEEP") == "1"

SERVICE = "bench"
GOOD_PW = "Correct-Horse-7"
BAD_PW = "wrong-password"
TIMEOUT = 600  # no single command may run longer than this
CLI_USER = "bench7"  # an account in NSS and, at a million rows, with ~100 log entries

# the issue's targets
TARGET_RATIO = 1.5        # useraudit-added / faillock-added
TARGET_HOSTS = 1.10       # added cost with host counting on / off
TARGET_GROWTH = 1.2       # per-attempt cost at 1M rows / empty database
TARGET_CLI_MS = 50.0      # log --user U --limit 50, status U
TARGET_REPORT_MS = 1000.0  # report (the last 7 days), on the million-row database


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
                      "users": USERS, "procs": PROCS, "conc_count": CONC_COUNT,
                      "million": MILLION, "million_accounts": MILLION_ACCOUNTS}}
SUMMARY = []  # (what, measured, target, ok or None)


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
                for suffix in ("", "-wal", "-shm", "-journal", ".spool"):
                    if os.path.exists(p + suffix):
                        os.unlink(p + suffix)
                # the module's account and host state files
                shutil.rmtree(p + ".accounts", ignore_errors=True)
                shutil.rmtree(p + ".hosts", ignore_errors=True)


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


def stack_useraudit(sb, tag="useraudit", name="pam_useraudit", so=None, extra=""):
    # The README's stacks, pam_matrix standing in for pam_unix.  conf= an
    # empty file keeps the host's /etc/security/useraudit.toml out of it.
    so = absolute(so or SO)
    db = sb.path(tag + ".db")
    conf = sb.path("useraudit.toml")
    open(conf, "a").close()
    ua = f"conf={conf} db={db} login_failure_limit=1000000 {extra}"
    m = f"{PAM_MATRIX} passdb={sb.passdb}"
    return Stack(name, sb.write_stack(tag, [
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
OUTCOMES = ("success", "failure")
PLURAL = {"success": "successes", "failure": "failures"}


def drive(sb, stack, outcome, count, warmup=0, procs=1, samples=None):
    pw = EXPECT[outcome][0]
    cmd = [DRIVE, "--confdir", stack.confdir, "--service", SERVICE,
           "--user", "bench%d", "--users", str(USERS), "--password", pw,
           "--rhost", "203.0.113.9", "--tty", "ssh", "--acct", "--json", "--quiet",
           "--count", str(count), "--warmup", str(warmup), "--procs", str(procs)]
    if samples:
        cmd += ["--samples", samples]
    flt0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    p = subprocess.run(cmd, env=sb.env, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        raise RuntimeError(f"pam_drive exited {p.returncode}: {p.stderr.strip()}")
    r = json.loads(p.stdout)
    # minor page faults of the driver process(es), start-up included
    r["minflt"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - flt0
    _, want_auth, want_acct = EXPECT[outcome]
    n = r["attempts"]
    ok = min(r["authenticate"].get(want_auth, 0), r["acct_mgmt"].get(want_acct, 0))
    r["errors"] = n - ok
    r["made"] = n + warmup * procs  # attempts that reached the stack
    # (older pam_drive builds have no max for "all"; take it from the classes)
    r["all"].setdefault("max_us", max((c["max_us"] for c in r["classes"].values() if c["count"]),
                                      default=0))
    return r


def drive_samples(sb, stack, outcome, count, warmup):
    """one run; returns (pam_drive's JSON, the per-attempt microseconds)"""
    sfile = sb.path("samples.txt")
    r = drive(sb, stack, outcome, count, warmup, samples=sfile)
    with open(sfile) as f:
        v = [int(line.split()[0]) for line in f if line.strip()]
    return r, v


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


# ------------------------------------------------------------- statistics

def fmt(v, width=8):
    return f"{v:>{width}}" if v is not None else f"{'-':>{width}}"


def pct(sorted_v, p):
    """nearest-rank percentile, as pam_drive computes it"""
    if not sorted_v:
        return None
    k = max(1, min(len(sorted_v), math.ceil(p / 100.0 * len(sorted_v) - 1e-9)))
    return sorted_v[k - 1]


def describe(v):
    v = sorted(v)
    return {"count": len(v), "median_us": pct(v, 50), "p90_us": pct(v, 90),
            "p99_us": pct(v, 99), "mean_us": round(statistics.mean(v)) if v else None}


def rounds_added(medians, base):
    """median over rounds of (stack median - baseline median) in the same round"""
    return int(statistics.median(a - b for a, b in zip(medians, base)))


def check(what, measured, target, ok):
    SUMMARY.append((what, measured, target, ok))


# ============================================================ fsync probe

def section_disk(sb):
    """how long this disk takes to make a 4 KiB write durable (pam_useraudit
    does none on the login path; the merge's SQLite commit does)"""
    p = sb.path("fsync-probe")
    ts = []
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for i in range(20):
            os.pwrite(fd, b"x" * 4096, (i % 4) * 4096)
            t0 = time.perf_counter()
            os.fsync(fd)
            ts.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
        os.unlink(p)
    ts.sort()
    RESULTS["fsync_us"] = {"median": round(ts[len(ts) // 2]), "max": round(ts[-1])}
    say(f"disk: fsync of a 4 KiB write in the sandbox: median {ts[len(ts) // 2]:.0f} us, "
        f"max {ts[-1]:.0f} us (20 tries)")
    say("")


# ====================================================================
# SECTION 1: latency, stacks 1-3 side by side
# ====================================================================
def section_latency(sb, stacks):
    per_run = max(1, math.ceil(ATTEMPTS / ROUNDS))
    say(f"== 1. latency: {per_run * ROUNDS} attempts per stack and outcome in {ROUNDS} "
        f"interleaved round(s) of {per_run}, each after {WARMUP} warm-up; {USERS} accounts; "
        f"acct_mgmt after success; 1 process ==")
    live = [s for s in stacks if s]
    samples = {s.name: {o: [] for o in OUTCOMES} for s in live}
    medians = {s.name: {o: [] for o in OUTCOMES} for s in live}
    errors = {s.name: 0 for s in live}
    faults = {s.name: {o: [] for o in OUTCOMES} for s in live}
    for _ in range(ROUNDS):
        for s in live:
            s.reset()  # each round starts from an empty tally / database
            for outcome in OUTCOMES:
                r, v = drive_samples(sb, s, outcome, per_run, WARMUP)
                samples[s.name][outcome] += v
                medians[s.name][outcome].append(r["all"]["median_us"])
                errors[s.name] += r["errors"]
                faults[s.name][outcome].append(r["minflt"] / max(1, r["made"]))
    res = {}
    for name in samples:
        res[name] = {"errors": errors[name]}
        for outcome in OUTCOMES:
            res[name][outcome] = describe(samples[name][outcome])
            res[name][outcome]["round_medians"] = medians[name][outcome]

    added = {}
    if "pam_matrix" in medians:
        for name in medians:
            if name != "pam_matrix":
                added[name] = {o: rounds_added(medians[name][o], medians["pam_matrix"][o])
                               for o in OUTCOMES}
                # the same for the means (what a busy server pays on average)
                added[name]["mean"] = {
                    o: res[name][o]["mean_us"] - res["pam_matrix"][o]["mean_us"] for o in OUTCOMES}

    hdr = (f"{'stack':<14} {'succ_med':>8} {'p90':>6} {'p99':>6} {'mean':>6} "
           f"{'fail_med':>8} {'p90':>6} {'p99':>6} {'mean':>6} {'+succ':>6} {'+fail':>6} "
           f"{'+mean_s':>7} {'+mean_f':>7} {'errors':>6}")
    say(hdr)
    say("-" * len(hdr))
    for s in live:
        r = res[s.name]
        su, fa = r["success"], r["failure"]
        if s.name in added:
            a = added[s.name]
            extra = (f"{a['success']:>+6d} {a['failure']:>+6d} "
                     f"{a['mean']['success']:>+7d} {a['mean']['failure']:>+7d}")
        else:
            extra = f"{'-':>6} {'-':>6} {'-':>7} {'-':>7}"
        say(f"{s.name:<14} {fmt(su['median_us'])} {fmt(su['p90_us'], 6)} {fmt(su['p99_us'], 6)} "
            f"{fmt(su['mean_us'], 6)} {fmt(fa['median_us'])} {fmt(fa['p90_us'], 6)} "
            f"{fmt(fa['p99_us'], 6)} {fmt(fa['mean_us'], 6)} {extra} {r['errors']:>6}")
    if stacks[2] is None:
        say(f"{'pam_useraudit':<14} skipped ({SO} not found)")
    say("(microseconds per whole attempt, pam_start_confdir .. pam_end, all rounds pooled;")
    say(" +succ/+fail = added over pam_matrix alone: median over rounds of the difference of")
    say(" the round medians; +mean_s/+mean_f = the same for the means, fsync stalls included;")
    say(" errors = attempts whose PAM codes were not the expected ones)")
    for n in res:
        say(f"round medians {n:<14} success {res[n]['success']['round_medians']}  "
            f"failure {res[n]['failure']['round_medians']}")
    # libpam dlopen()s every module per handle: each page of a module a login
    # touches is a fault, paid again by every login (the process's own
    # start-up faults are spread over the attempts and shrink with them)
    say("minor page faults per attempt: " + ";  ".join(
        f"{n} {statistics.median(faults[n]['success']):.1f} / {statistics.median(faults[n]['failure']):.1f}"
        for n in res) + "  (success / failure)")
    for n in res:
        res[n]["minflt_per_attempt"] = {o: round(statistics.median(faults[n][o]), 1) for o in OUTCOMES}
    ratio = {}
    if "pam_faillock" in added and "pam_useraudit" in added:
        for outcome in OUTCOMES:
            fl, ua = added["pam_faillock"][outcome], added["pam_useraudit"][outcome]
            ratio[outcome] = round(ua / fl, 2) if fl > 0 else None
        for outcome in OUTCOMES:
            fl = added["pam_faillock"]["mean"][outcome]
            ua = added["pam_useraudit"]["mean"][outcome]
            ratio["mean_" + outcome] = round(ua / fl, 2) if fl > 0 else None
        show = lambda v: v if v is not None else "n/a"  # noqa: E731
        say(f"ratio useraudit-added / faillock-added (medians): successes {show(ratio['success'])}, "
            f"failures {show(ratio['failure'])};  (means): successes {show(ratio['mean_success'])}, "
            f"failures {show(ratio['mean_failure'])}")
        for outcome in OUTCOMES:
            r = ratio[outcome]
            check(f"added cost ratio useraudit/faillock, {PLURAL[outcome]} (medians)",
                  f"{show(r)}x ({added['pam_useraudit'][outcome]:+d} vs "
                  f"{added['pam_faillock'][outcome]:+d} us)",
                  f"<= {TARGET_RATIO}x", r is not None and r <= TARGET_RATIO)
    else:
        say("ratio useraudit-added / faillock-added: skipped (needs stacks 2 and 3)")
    if "useraudit_base" in added and "pam_useraudit" in added:
        for outcome in OUTCOMES:
            b, u = added["useraudit_base"][outcome], added["pam_useraudit"][outcome]
            ratio["over_base_" + outcome] = round(u / b, 2) if b > 0 else None
        say(f"SO against SO_BASE (added cost, medians): successes {added['pam_useraudit']['success']:+d} vs "
            f"{added['useraudit_base']['success']:+d} us ({ratio['over_base_success']}x), failures "
            f"{added['pam_useraudit']['failure']:+d} vs {added['useraudit_base']['failure']:+d} us "
            f"({ratio['over_base_failure']}x)")
    if "useraudit_hosts" in added and "pam_useraudit" in added:
        # Every attempt comes from one remote host: each failure updates its
        # host file under flock (a limit that is never reached, so no block).
        for outcome in OUTCOMES:
            h, u = added["useraudit_hosts"][outcome], added["pam_useraudit"][outcome]
            ratio["hosts_over_off_" + outcome] = round(h / u, 2) if u > 0 else None
        for outcome in OUTCOMES:
            r = ratio["hosts_over_off_" + outcome]
            check(f"added cost with host counting on / off, {PLURAL[outcome]} (medians)",
                  f"{r}x ({added['useraudit_hosts'][outcome]:+d} vs {added['pam_useraudit'][outcome]:+d} us)",
                  f"<= {TARGET_HOSTS}x", r is not None and r <= TARGET_HOSTS)
    RESULTS["latency"] = res
    RESULTS["added_us"] = added
    RESULTS["ratio_useraudit_over_faillock"] = ratio
    say("")


def merge(sb, db):
    """Have useraudit-admin merge the module's log spool into the database
    (every command does, `check` included); returns the seconds it took."""
    if not os.path.exists(ADMIN) or not db:
        return None
    t0 = time.monotonic()
    p = subprocess.run([absolute(ADMIN), "--db", db, "check"], env=sb.env,
                       capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        say(f"bench: useraudit-admin check failed: {p.stderr.strip()}")
        return None
    return time.monotonic() - t0


def sqlite_count(db, sb=None):
    """Log rows in the database, after merging the spool (with sb)."""
    if sb is not None:
        merge(sb, db)
    if not shutil.which("sqlite3") or not db or not os.path.exists(db):
        return None
    p = subprocess.run(["sqlite3", db, "select count(*) from log"],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return f"error: {p.stderr.strip()}"
    return int(p.stdout.strip())


# ====================================================================
# SECTION 2: 8-way concurrency
# ====================================================================
def section_concurrency(sb, stacks):
    say(f"== 2. concurrency: {PROCS} processes x {CONC_COUNT} attempts, started together ==")
    out = {}
    hdr = (f"{'stack':<14} {'outcome':<8} {'attempts':>8} {'att/s':>8} {'med_us':>7} "
           f"{'p99_us':>7} {'max_us':>8} {'errors':>6}  log rows")
    say(hdr)
    say("-" * len(hdr))
    for s in stacks:
        if not s:
            continue
        s.reset()
        made = 0
        errors = 0
        for outcome in OUTCOMES:
            r = drive(sb, s, outcome, CONC_COUNT, warmup=5, procs=PROCS)
            made += r["made"]
            errors += r["errors"]
            rows = ""
            if s.db and outcome == "failure":
                n = sqlite_count(s.db, sb)
                rows = (f"{n} rows for {made} attempts" if isinstance(n, int)
                        else (n or "no sqlite3/database"))
                if isinstance(n, int) and n != made:
                    rows += "  MISMATCH"
                out.setdefault(s.name, {})["log_rows"] = n
                out[s.name]["attempts_made"] = made
                check(f"{PROCS}-way concurrency: errors, log rows = attempts",
                      f"{errors} errors, {n} rows / {made} attempts", "0 errors, equal",
                      errors == 0 and n == made)
            out.setdefault(s.name, {})[outcome] = {
                "attempts": r["attempts"], "attempts_per_s": r["attempts_per_s"],
                "median_us": r["all"]["median_us"], "p99_us": r["all"]["p99_us"],
                "max_us": r["all"]["max_us"], "errors": r["errors"]}
            say(f"{s.name:<14} {outcome:<8} {r['attempts']:>8} {r['attempts_per_s']:>8.0f} "
                f"{r['all']['median_us']:>7} {r['all']['p99_us']:>7} {r['all']['max_us']:>8} "
                f"{r['errors']:>6}  {rows}")
    if stacks[2] is None:
        say(f"{'pam_useraudit':<14} skipped ({SO} not found)")
    say("(errors = attempts whose PAM codes were not the expected ones; log rows counted "
        "after both runs, warm-ups included in attempts)")
    RESULTS["concurrency"] = out
    say("")


# ====================================================================
# SECTION 3: a million log rows (stack 3 against a large database)
# ====================================================================
def ensure_fill():
    """the bulk loader, built with cargo if it is not there; None if impossible"""
    global FILL
    if os.path.exists(FILL):
        FILL = absolute(FILL)
        return FILL
    cargo = shutil.which("cargo")
    if not cargo or not os.path.exists(os.path.join(TOP, "Cargo.toml")):
        return None
    say(f"({FILL} not found: cargo build --release --example bench-fill)")
    p = subprocess.run([cargo, "build", "--release", "--example", "bench-fill"], cwd=TOP,
                       capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        say(p.stderr.strip()[-2000:])
        return None
    cand = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(TOP, "target"),
                        "release", "examples", "bench-fill")
    if os.path.exists(cand):
        FILL = cand
        return FILL
    return None


def section_million_rows(sb, ua, matrix):
    say(f"== 3. large database: {MILLION} log rows over {MILLION_ACCOUNTS} accounts ==")
    if MILLION <= 0:
        say("skipped (MILLION=0)\n")
        return None
    if ua is None:
        say(f"skipped ({SO} not found)\n")
        return None
    if not ensure_fill():
        say("skipped (no bulk loader: build it with "
            "`cargo build --release --example bench-fill`, or set FILL)\n")
        return None
    big = stack_useraudit(sb, tag="useraudit-big", name="useraudit@1M")
    empty = stack_useraudit(sb, tag="useraudit-empty", name="useraudit@0")
    big.reset()
    p = subprocess.run([FILL, big.db, str(MILLION), str(MILLION_ACCOUNTS), "60", "bench"],
                       env=sb.env, capture_output=True, text=True, timeout=TIMEOUT)
    if p.returncode != 0:
        say(f"skipped (bench-fill failed: {p.stderr.strip()})\n")
        return None
    n = sqlite_count(big.db, sb)
    size = os.path.getsize(big.db)
    say(f"bench-fill: {p.stdout.strip()}; database {size / 1e6:.1f} MB, "
        f"{n if n is not None else '?'} log rows")
    res = {"fill": p.stdout.strip(), "rows": n, "db_bytes": size}
    rounds = max(2, ROUNDS)
    per_run = max(1, math.ceil(MILLION_ATTEMPTS / rounds))
    say(f"{per_run * rounds} attempts per database and outcome in {rounds} interleaved rounds "
        f"(pam_matrix, empty database, million-row database)")
    live = [matrix, empty, big]
    samples = {s.name: {o: [] for o in OUTCOMES} for s in live}
    medians = {s.name: {o: [] for o in OUTCOMES} for s in live}
    errors = {s.name: 0 for s in live}
    for _ in range(rounds):
        empty.reset()
        for s in live:
            for outcome in OUTCOMES:
                r, v = drive_samples(sb, s, outcome, per_run, WARMUP)
                samples[s.name][outcome] += v
                medians[s.name][outcome].append(r["all"]["median_us"])
                errors[s.name] += r["errors"]
    hdr = (f"{'database':<14} {'succ_med':>8} {'p90':>6} {'p99':>6} {'mean':>6} "
           f"{'fail_med':>8} {'p90':>6} {'p99':>6} {'mean':>6} {'+succ':>6} {'+fail':>6} {'errors':>6}")
    say(hdr)
    say("-" * len(hdr))
    stats = {}
    for s in live:
        st = {o: describe(samples[s.name][o]) for o in OUTCOMES}
        add = {o: rounds_added(medians[s.name][o], medians[matrix.name][o]) for o in OUTCOMES}
        stats[s.name] = (st, add)
        a1, a2 = ((f"{add['success']:+d}", f"{add['failure']:+d}") if s is not matrix else ("-", "-"))
        say(f"{s.name:<14} {fmt(st['success']['median_us'])} {fmt(st['success']['p90_us'], 6)} "
            f"{fmt(st['success']['p99_us'], 6)} {fmt(st['success']['mean_us'], 6)} "
            f"{fmt(st['failure']['median_us'])} {fmt(st['failure']['p90_us'], 6)} "
            f"{fmt(st['failure']['p99_us'], 6)} {fmt(st['failure']['mean_us'], 6)} "
            f"{a1:>6} {a2:>6} {errors[s.name]:>6}")
        res[s.name] = {"stats": st, "added": add, "errors": errors[s.name]}
    growth = {}
    for o in OUTCOMES:
        # per-attempt cost: median over rounds of (big round median / empty round median)
        growth[o] = round(statistics.median(
            b / e for b, e in zip(medians[big.name][o], medians[empty.name][o]) if e > 0), 2)
        ea, ba = stats[empty.name][1][o], stats[big.name][1][o]
        growth["added_" + o] = round(ba / ea, 2) if ea > 0 else None
    say(f"growth, whole attempt at 1M rows / empty: successes {growth['success']}, failures "
        f"{growth['failure']};  added cost only: successes {growth['added_success']}, "
        f"failures {growth['added_failure']}")
    for o in OUTCOMES:
        check(f"per-attempt cost at {MILLION} rows / empty, {PLURAL[o]}", f"{growth[o]}x",
              f"<= {TARGET_GROWTH}x", growth[o] <= TARGET_GROWTH)
    res["growth"] = growth
    RESULTS["million_rows"] = res
    say("")
    return big.db


# ====================================================================
# SECTION 4: useraudit-admin timings (whole processes, large database)
# ====================================================================
def section_cli(sb, db):
    say("== 4. useraudit-admin timings (whole processes) ==")
    if not os.path.exists(ADMIN):
        say(f"skipped ({ADMIN} not found)\n")
        return
    if not db or not os.path.exists(db):
        say("skipped (no useraudit database)\n")
        return
    # retention and expiry set, so that sweep --dry-run has something to weigh
    conf = sb.path("useraudit-cli.toml")
    with open(conf, "w") as f:
        f.write("retention_days = 30\naccount_expiry_days = 90\n")
    base = [absolute(ADMIN), "--conf", conf, "--db", db]
    cmds = [
        (["check"], None),
        (["log", "--limit", "50"], None),
        (["log", "--user", CLI_USER, "--limit", "50"], TARGET_CLI_MS),
        (["log", "--failed", "--user", CLI_USER, "--limit", "50"], None),
        (["log", "--rhost", "198.51.0.17", "--limit", "50"], None),
        (["log", "--rhost", "192.0.2.1", "--limit", "50"], None),  # a host never seen
        (["log", "--since", "1d", "--format", "json", "--limit", "1000"], None),
        (["status", CLI_USER], TARGET_CLI_MS),
        (["status"], None),
        (["sweep", "--dry-run"], None),
        # the default span, the last 7 days: a seventh of the 60 days filled
        (["report"], TARGET_REPORT_MS),
        (["report", "--format", "json"], TARGET_REPORT_MS),
        (["report", "--since", "61d"], None),  # every row
        (["metrics"], None),
    ]
    out = {}
    # The million-row section left its attempts in the spool: the first
    # command merges them into the big database.
    before = sqlite_count(db)
    secs = merge(sb, db)
    rows = sqlite_count(db)
    if isinstance(before, int) and isinstance(rows, int) and secs is not None:
        say(f"  merge of {rows - before} spooled entries into the {before}-row database "
            f"(useraudit-admin check, whole process): {secs * 1000:.1f} ms")
        out["merge"] = {"entries": rows - before, "ms": round(secs * 1000, 1)}
    say(f"(database {os.path.basename(db)}, {rows if isinstance(rows, int) else '?'} log rows; "
        f"median and max of {CLI_RUNS} runs, milliseconds, process start to exit)")
    for args, target in cmds:
        times, rcs, size = [], set(), 0
        for _ in range(CLI_RUNS):
            t0 = time.monotonic()
            p = subprocess.run(base + args, env=sb.env, capture_output=True, timeout=TIMEOUT)
            times.append((time.monotonic() - t0) * 1000)
            rcs.add(p.returncode)
            size = len(p.stdout)
        ok = rcs <= ({0, 3} if args[0] == "status" else {0})
        med = statistics.median(times)
        key = " ".join(args)
        out[key] = {"median_ms": round(med, 1), "max_ms": round(max(times), 1),
                    "exit": sorted(rcs), "stdout_bytes": size}
        mark = "" if ok else "  UNEXPECTED EXIT"
        if target is not None:
            mark += f"  (target < {target:.0f} ms)"
            check(f"useraudit-admin {key}", f"{med:.1f} ms", f"< {target:.0f} ms", ok and med < target)
        say(f"  {key:<52} {med:8.1f} {max(times):8.1f}  exit {sorted(rcs)}  "
            f"{size:>8} bytes out{mark}")
    RESULTS["cli"] = out
    say("")


# ====================================================================
# SECTION 5: module load cost (libpam dlopen()s each module per handle)
# ====================================================================
def section_dlopen(sb):
    say(f"== 5. module load: dlopen(RTLD_NOW)+dlclose, {DLOPEN_N} times ==")
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
    if SO_BASE and os.path.exists(SO_BASE):
        mods.append(("useraudit_base", absolute(SO_BASE)))
    say(f"{'module':<14} {'size_bytes':>10} {'first_us':>8} {'median_us':>9} {'p90_us':>7}  "
        f"resident_after_close  needs")
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
        kv["needed"] = needed(path)
        out[name] = kv
        say(f"{name:<14} {kv['size_bytes']:>10} {kv['first_us']:>8} {kv['median_us']:>9} "
            f"{kv['p90_us']:>7}  {kv['resident_after_close']:<20}  {' '.join(kv['needed'])}")
    RESULTS["dlopen"] = out
    say("")


def needed(path):
    """the DT_NEEDED libraries of a shared object (each is loaded with it)"""
    if not shutil.which("readelf"):
        return []
    p = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, timeout=30)
    return [line.split("[", 1)[1].rstrip("]") for line in p.stdout.splitlines()
            if "(NEEDED)" in line and "[" in line]


def section_summary():
    say("== summary: the issue's targets ==")
    for what, measured, target, ok in SUMMARY:
        say(f"  {'ok  ' if ok else 'MISS'} {what:<58} {measured:<34} target {target}")
    RESULTS["summary"] = [{"what": w, "measured": m, "target": t, "ok": o} for w, m, t, o in SUMMARY]
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
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, sandbox {sb.dir}")
        say(f"driver {DRIVE}; module {SO} {'(present)' if os.path.exists(SO) else '(MISSING)'}")
        section_disk(sb)
        stacks = [stack_matrix(sb), stack_faillock(sb),
                  stack_useraudit(sb) if os.path.exists(SO) else None]
        for s in stacks:
            if s:
                sanity(sb, s)
        base = None
        if SO_BASE:
            if not os.path.exists(SO_BASE):
                say(f"bench: SO_BASE {SO_BASE} not found")
                return 1
            base = stack_useraudit(sb, tag="useraudit_base", name="useraudit_base", so=SO_BASE)
            sanity(sb, base)
        hosts = None
        if os.path.exists(SO):
            # host counting on (host_failure_limit), next to it off
            hosts = stack_useraudit(sb, tag="useraudit_hosts", name="useraudit_hosts",
                                    extra="host_failure_limit=1000000")
            sanity(sb, hosts)
        section_latency(sb, stacks + [s for s in (base, hosts) if s])
        section_concurrency(sb, stacks)
        db = section_million_rows(sb, stacks[2], stacks[0])
        section_cli(sb, db)
        section_dlopen(sb)
        section_summary()
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
