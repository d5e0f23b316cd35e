#!/bin/sh
# The login path stays local: the PAM module's whole dependency tree (what
# sshd loads) has no SQLite, no PostgreSQL, no TLS and no network crate.
# The built module (when target/release has one) links only libpam and libc,
# and imports no socket, name lookup, SQLite, TLS or libpq function.
# Usage: tests/check-deps.sh   Exit: 0 clean, 1 a forbidden crate or import (printed).
set -u
cd "$(dirname "$0")/.." || exit 1
tree=$(cargo tree --locked --offline -p pam_useraudit -e normal --prefix none 2>&1) || { echo "FAIL - cargo tree: $tree"; exit 1; }
bad=$(echo "$tree" | grep -E '^(rusqlite|libsqlite3-sys|postgres|tokio-postgres|tokio|rustls|native-tls|openssl|reqwest|hyper|mio|socket2) ' | sort -u)
if [ -n "$bad" ]; then
    echo "FAIL - the PAM module depends on crates a login must not load:"; echo "$bad" | sed 's/^/     /'; exit 1
fi
echo "ok   - the PAM module's dependencies: $(echo "$tree" | cut -d' ' -f1 | sort -u | tr '\n' ' ')"
so=target/release/libpam_useraudit.so
if [ ! -e "$so" ]; then echo "skip - $so is not built (make build)"; exit 0; fi
needed=$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -Ev '^(libpam\.so\.0|libc\.so\.6|ld-linux[-a-z0-9_.]*\.so\.[0-9]|libgcc_s\.so\.1)$')
if [ -n "$needed" ]; then echo "FAIL - $so links more than libpam and libc: $needed"; exit 1; fi
imports=$(readelf --dyn-syms -W "$so" | awk '$7 == "UND" { sub(/@.*/, "", $8); print $8 }' | sort -u)
bad=$(echo "$imports" | grep -E '^(socket|connect|bind|listen|accept4?|send(to|msg)?|recv(from|msg)?|getaddrinfo|gethostbyname.*|sqlite3_.*|SSL_.*|PQ.*)$')
if [ -n "$bad" ]; then echo "FAIL - $so imports network or database functions: $(echo $bad)"; exit 1; fi
echo "ok   - $so links libpam and libc only; $(echo "$imports" | wc -l) imports, none for sockets, SQLite, TLS or libpq"
