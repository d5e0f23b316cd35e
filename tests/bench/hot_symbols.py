#!/usr/bin/env python3
"""Write src/hot-symbols.txt: the functions of pam_useraudit.so that a login runs.

libpam dlopen()s the module for every PAM handle and dlclose()s it at
pam_end, so every 64 KiB stretch of the module's code that a login touches
is a page fault (the kernel maps 16 pages around each), paid again by every
login; those faults were most of what the module added to a login beyond
pam_faillock. build.rs hands this list to the linker (lld's
--symbol-ordering-file), which puts these functions next to each other.

Run after changes to the login path (`make hot-symbols`): it builds the
module exactly as `make build` does (MODULE_BUILD; symbol names carry a
hash of the build settings, so only the same build gives the same names),
runs successful and failed attempts of the README's stack through
tests/bench's driver under callgrind, and lists every function of the
module that ran, by linker symbol name. A stale list is harmless: names
that no longer exist are ignored, new functions land in the default place.
Needs valgrind, cc, libpam-wrapper, libnss-wrapper.
"""

import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(TOP, "src", "hot-symbols.txt")
MODULE_BUILD = os.environ["MODULE_BUILD"]  # from the Makefile
SO = os.path.abspath(os.path.join(TOP, os.environ["SO"]))
os.environ.setdefault("USERS", "20")
sys.path.insert(0, HERE)
import bench  # noqa: E402  (reads SO and USERS from the environment)

ATTEMPTS = 20


def build():
    subprocess.run(["sh", "-c", MODULE_BUILD], cwd=TOP, check=True, timeout=1800)


def functions_run(callgrind_out):
    """Names (as the linker knows them) of the module's functions that ran."""
    names, obs, ours, cur_ob = {}, {}, set(), None
    with open(callgrind_out) as f:
        for line in f:
            line = line.strip()
            m = re.match(r"^(ob|cob)=\((\d+)\)(?: (.*))?$", line)
            if m:
                kind, i, name = m.groups()
                if name:
                    obs[i] = name
                if kind == "ob":
                    cur_ob = obs.get(i)
                continue
            m = re.match(r"^(fn|cfn)=\((\d+)\)(?: (.*))?$", line)
            if m:
                kind, i, name = m.groups()
                if name:
                    names[i] = name
                if kind == "fn" and cur_ob and os.path.basename(cur_ob) == os.path.basename(SO):
                    ours.add(i)
    return {names[i] for i in ours if i in names and not names[i].startswith("0x")}


def main():
    if not shutil.which("valgrind"):
        print("hot_symbols: valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 1
    build()
    sb = bench.Sandbox()
    try:
        bench.ensure_driver(sb)
        stack = bench.stack_useraudit(sb)
        hot = set()
        for outcome in bench.OUTCOMES:
            stack.reset()
            out = sb.path(f"callgrind.{outcome}")
            cmd = ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out}",
                   bench.DRIVE, "--confdir", stack.confdir, "--service", bench.SERVICE,
                   "--user", "bench%d", "--users", os.environ["USERS"],
                   "--password", bench.EXPECT[outcome][0], "--rhost", "203.0.113.9", "--tty", "ssh",
                   "--acct", "--quiet", "--count", str(ATTEMPTS), "--warmup", "0"]
            subprocess.run(cmd, env=sb.env, check=True, capture_output=True, timeout=900)
            hot |= functions_run(out)
    finally:
        sb.cleanup()
    # valgrind has no AVX-512, so under it crc32fast picks another of its
    # CPU-specific variants than a login does: list them all (they are small).
    nm = subprocess.run(["nm", SO], capture_output=True, text=True, check=True, timeout=60).stdout
    hot |= {ln.split()[-1] for ln in nm.splitlines() if "crc32fast" in ln and ln.split()[-2] in "tT"}
    if len(hot) < 20:
        print(f"hot_symbols: only {len(hot)} functions found; not writing {OUT}", file=sys.stderr)
        return 1
    with open(OUT, "w") as f:
        f.write("".join(f"{name}\n" for name in sorted(hot)))
    print(f"hot_symbols: {len(hot)} functions written to {os.path.relpath(OUT, TOP)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
