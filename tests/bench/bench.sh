#!/bin/bash
# useraudit benchmark (what `make bench` runs):
#   SO=target/release/libpam_useraudit.so ADMIN=target/release/useraudit-admin \
#   DRIVE=target/pam_drive FILL=target/release/examples/bench-fill tests/bench/bench.sh
# The work is done by bench.py next to this file (python3, standard library
# only); see its header for the knobs (ATTEMPTS, ROUNDS, PROCS, MILLION,
# BENCH_JSON, ...). The bulk loader for the million-row section is the Cargo
# example bench-fill (tests/bench/fill.rs); it is built here when missing.
# The whole run is bounded by BENCH_TIMEOUT seconds (default 900).
set -euo pipefail
cd "$(dirname "$0")/../.."
export SO="${SO:-target/release/libpam_useraudit.so}"
export ADMIN="${ADMIN:-target/release/useraudit-admin}"
export DRIVE="${DRIVE:-target/pam_drive}"
export FILL="${FILL:-${CARGO_TARGET_DIR:-target}/release/examples/bench-fill}"
if [ ! -x "$FILL" ] && command -v cargo >/dev/null; then
    timeout 900 cargo build --release --locked --example bench-fill >&2 ||
        echo "bench: could not build bench-fill; the million-row section will be skipped" >&2
fi
exec timeout "${BENCH_TIMEOUT:-900}" python3 tests/bench/bench.py "$@"
