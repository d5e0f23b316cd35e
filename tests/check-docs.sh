#!/bin/sh
# The project's docs stand alone: no file in the repository points at a
# design file that is not in it, and every source path ARCHITECTURE.md
# names exists, so its code map cannot silently go stale.
# Usage: tests/check-docs.sh   Exit: 0 clean, 1 a problem (each printed).
set -u
cd "$(dirname "$0")/.." || exit 1
rc=0
hits=$(git grep -n -I 'DESIGN\.md' -- . ':!tests/check-docs.sh' 2>/dev/null)
if [ -n "$hits" ]; then
    echo "FAIL - files point at DESIGN.md, which is not in the repository:"; echo "$hits" | sed 's/^/     /'; rc=1
else
    echo "ok   - no pointer to a design file outside the repository"
fi
[ -f ARCHITECTURE.md ] || { echo "FAIL - ARCHITECTURE.md is missing"; exit 1; }
missing=""
for p in $(grep -o '`[A-Za-z0-9_./-]*\.\(rs\|sh\|md\|toml\|c\|py\)`' ARCHITECTURE.md README.md | cut -d'`' -f2 | sort -u); do
    case "$p" in
        /*) ;;
        */*) [ -e "$p" ] || missing="$missing $p" ;;
    esac
done
if [ -n "$missing" ]; then
    echo "FAIL - ARCHITECTURE.md or README.md names paths that do not exist:$missing"; rc=1
else
    echo "ok   - every path ARCHITECTURE.md and README.md name exists"
fi
exit $rc
