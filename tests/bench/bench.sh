#!/bin/bash
# useraudit benchmark (what `make bench` runs):
#   SO=target/release/libpam_useraudit.so ADMIN=target/release/useraudit-admin \
#   DRIVE=target/pam_drive tests/bench/bench.sh
# The work is done by bench.py next to this file (python3, standard library
# only); see its header for the knobs (ATTEMPTS, ROUNDS, PROCS, BENCH_JSON, ...).
set -euo pipefail
export SO="${SO:-target/release/libpam_useraudit.so}"
export ADMIN="${ADMIN:-target/release/useraudit-admin}"
export DRIVE="${DRIVE:-target/pam_drive}"
exec timeout "${BENCH_TIMEOUT:-900}" python3 "$(dirname "$0")/bench.py" "$@"
