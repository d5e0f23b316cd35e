#!/usr/bin/env python3
"""The live log's numbers (run by `make bench` after bench.sh):

  1. idle CPU of `useraudit-admin daemon` over IDLE_SECS (default 30) with
     no logins: utime + stime from /proc/PID/stat, as % of one core
     (target: under 0.1 %);
  2. login-to-row latency: DAEMON_LOGINS (default 1000) logins through the
     real module and libpam (pamtester under pam_wrapper, pam_matrix for
     the password), one every 1/RATE s (default 10 per second); after each
     login returns, the database is polled with SQLite directly (as
     `sqlite3` would read it) until the row is there; p50, p99 and max
     (target: p99 <= 1 s).

Environment: SO (the module), ADMIN (useraudit-admin), as for bench.sh.
Everything happens in a throwaway directory; the host's /etc/pam.d and
accounts are never touched. Standard library only.
"""

import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

SO = os.path.abspath(os.environ.get("SO", "target/release/libpam_useraudit.so"))
ADMIN = os.path.abspath(os.environ.get("ADMIN", "target/release/useraudit-admin"))
IDLE_SECS = float(os.environ.get("IDLE_SECS", "30"))
LOGINS = int(os.environ.get("DAEMON_LOGINS", "1000"))
RATE = float(os.environ.get("RATE", "10"))
MATRIX = "/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so"
PASSWORD = "secret"


def say(*a):
    print(*a, flush=True)


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def count(db):
    try:
        c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return c.execute("SELECT count(*) FROM log").fetchone()[0]
        finally:
            c.close()
    except sqlite3.Error:
        return -1


def main():
    for p, what in ((SO, "the module"), (ADMIN, "useraudit-admin"), (MATRIX, "pam_matrix")):
        if not os.path.exists(p):
            say(f"SKIP: {what} ({p}) is missing")
            return 0
    if not shutil.which("pamtester"):
        say("SKIP: pamtester is missing")
        return 0
    d = tempfile.mkdtemp(prefix="useraudit-daemon-bench.")
    try:
        os.chmod(d, 0o700)
        state = os.path.join(d, "state")
        os.mkdir(state, 0o700)
        db = os.path.join(state, "useraudit.db")
        conf = os.path.join(d, "useraudit.toml")
        open(conf, "w").close()
        with open(os.path.join(d, "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\nbench:x:20000:20000::/nonexistent:/bin/false\n")
        with open(os.path.join(d, "group"), "w") as f:
            f.write("root:x:0:\nbench:x:20000:\n")
        with open(os.path.join(d, "passdb"), "w") as f:
            f.write(f"bench:{PASSWORD}:login\n")
        os.mkdir(os.path.join(d, "pam.d"))
        ua = f"conf={conf} db={db} login_failure_limit=1000000"
        m = f"{MATRIX} passdb={d}/passdb"
        with open(os.path.join(d, "pam.d", "login"), "w") as f:
            f.write(f"auth requisite {SO} preauth {ua}\n"
                    f"auth [success=1 default=ignore] {m}\n"
                    f"auth [default=die] {SO} authfail {ua}\n"
                    f"auth sufficient {SO} authsucc {ua}\n"
                    f"auth required pam_deny.so\n"
                    f"account required {SO} {ua}\n"
                    f"account required {m}\n")
        nss = {"NSS_WRAPPER_PASSWD": f"{d}/passwd", "NSS_WRAPPER_GROUP": f"{d}/group"}
        pam_env = dict(os.environ, LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so", PAM_WRAPPER="1",
                       PAM_WRAPPER_SERVICE_DIR=f"{d}/pam.d", **nss)
        pam_env.pop("PAM_WRAPPER_DEBUGLEVEL", None)
        daemon = subprocess.Popen([ADMIN, "--conf", conf, "--db", db, "daemon"],
                                  env=dict(os.environ, LD_PRELOAD="libnss_wrapper.so", **nss),
                                  stdout=subprocess.DEVNULL, stderr=open(f"{d}/daemon.stderr", "w"))
        try:
            deadline = time.monotonic() + 10
            while count(db) < 0:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    say("FAIL: the daemon did not start:", open(f"{d}/daemon.stderr").read())
                    return 1
                time.sleep(0.05)
            time.sleep(1)

            hz = os.sysconf("SC_CLK_TCK")
            say(f"== useraudit-admin daemon: idle CPU over {IDLE_SECS:g} s, no logins")
            t0, c0 = time.monotonic(), cpu_ticks(daemon.pid)
            time.sleep(IDLE_SECS)
            t1, c1 = time.monotonic(), cpu_ticks(daemon.pid)
            idle = (c1 - c0) / hz / (t1 - t0) * 100
            say(f"   {c1 - c0} tick(s) of {1 / hz * 1000:.0f} ms: {idle:.3f} % of one core "
                f"[{'ok' if idle < 0.1 else 'FAIL'}: target < 0.1 %]")

            say(f"== login to row visible in SQLite: {LOGINS} logins, {RATE:g} per second")
            lat = []
            lost = 0
            base = count(db)
            start = time.monotonic()
            for i in range(LOGINS):
                slot = start + i / RATE
                now = time.monotonic()
                if slot > now:
                    time.sleep(slot - now)
                r = subprocess.run(["pamtester", "login", "bench", "authenticate", "acct_mgmt"],
                                   input=PASSWORD + "\n", text=True, env=pam_env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                if r.returncode != 0:
                    say("FAIL: a login failed")
                    return 1
                done = time.monotonic()
                want = base + i + 1
                while count(db) < want:
                    if time.monotonic() - done > 10:
                        lost += 1
                        break
                    time.sleep(0.002)
                lat.append(time.monotonic() - done)
            lat.sort()
            p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
            say(f"   p50 {p(0.50):.1f} ms, p90 {p(0.90):.1f} ms, p99 {p(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms, "
                f"mean {statistics.mean(lat) * 1000:.1f} ms [{'ok' if p(0.99) <= 1000 and not lost else 'FAIL'}: "
                f"target p99 <= 1000 ms]" + (f"; {lost} never seen within 10 s" if lost else ""))
            daemon.send_signal(signal.SIGTERM)
            rc = daemon.wait(30)
            say(f"   SIGTERM: exit {rc}; rows {count(db)} of {base + LOGINS}")
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
