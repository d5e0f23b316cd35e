#!/bin/sh
# The login path stays local: the PAM module's whole dependency tree (what
# sshd loads) has no SQLite, no PostgreSQL, no TLS and no network crate.
# Usage: tests/check-deps.sh   Exit: 0 clean, 1 a forbidden crate (printed).
set -u
cd "$(dirname "$0")/.." || exit 1
tree=$(cargo tree --locked --offline -p pam_useraudit -e normal --prefix none 2>&1) || { echo "FAIL - cargo tree: $tree"; exit 1; }
bad=$(echo "$tree" | grep -E '^(rusqlite|libsqlite3-sys|postgres|tokio-postgres|tokio|rustls|native-tls|openssl|reqwest|hyper|mio|socket2) ' | sort -u)
if [ -n "$bad" ]; then
    echo "FAIL - the PAM module depends on crates a login must not load:"; echo "$bad" | sed 's/^/     /'; exit 1
fi
echo "ok   - the PAM module's dependencies: $(echo "$tree" | cut -d' ' -f1 | sort -u | tr '\n' ' ')"
