#!/bin/sh
# Render-check the hand-written man pages: groff with all warnings on must
# print nothing, and man(1) must format each page.
# Usage: packaging/check-man.sh   Exit: 0 clean (or "SKIP:" when groff or
# man is missing), 1 a page has warnings or does not render.
set -u
dir=$(cd "$(dirname "$0")/man" && pwd)
command -v groff >/dev/null 2>&1 || { echo "SKIP: groff not installed (Debian package groff)"; exit 0; }
command -v man >/dev/null 2>&1 || { echo "SKIP: man not installed (Debian package man-db)"; exit 0; }
rc=0
for page in "$dir"/*.[1-8]; do
    name=$(basename "$page")
    warnings=$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$page" 2>&1)
    if [ -n "$warnings" ]; then
        echo "FAIL - $name: groff warnings:"; echo "$warnings" | sed 's/^/     /'; rc=1; continue
    fi
    if ! out=$(MANWIDTH=80 man -l "$page" 2>&1 >/dev/null) || [ -n "$out" ]; then
        echo "FAIL - $name: man -l: $out"; rc=1; continue
    fi
    echo "ok   - $name"
done
exit $rc
