#!/usr/bin/env bash
# End-to-end test behind a real sshd (root only; skips otherwise).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec bash tests/sshd/harness.sh selftest --module "$PWD/target/release/libpam_useraudit.so" --admin "$PWD/target/release/useraudit-admin"
