#!/bin/sh
# Run every cargo-fuzz target for a bounded time and report the executions.
#
#   fuzz/run.sh [SECONDS]      (default 60 seconds per target)
#
# Builds are optimised with debug assertions and overflow checks, and
# AddressSanitizer (cargo-fuzz defaults).
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). cargo-fuzz passes
# nightly-only flags (-Zsanitizer=address); on a stable toolchain this
# script sets RUSTC_BOOTSTRAP=1 so stable rustc accepts them.
#
# The corpus grows in fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET
# holds the committed starting inputs. A crash leaves its input in
# fuzz/artifacts/TARGET/ and makes this script exit 1; replay it with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run TARGET fuzz/artifacts/TARGET/crash-...
set -eu

secs=${1:-60}
case $secs in
    '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
    exit 1
fi
export RUSTC_BOOTSTRAP=1

targets=$(cargo fuzz list)
# one build for all targets, bounded like the runs
timeout $((600 + secs)) cargo fuzz build

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0
total=0
for t in $targets; do
    mkdir -p "corpus/$t"
    set -- "corpus/$t"
    if [ -d "seeds/$t" ]; then
        set -- "$@" "seeds/$t"
    fi
    # -max_total_time bounds the run; timeout is the backstop (a hang in
    # one input is caught by -timeout and reported as a crash).
    if timeout $((secs + 120)) cargo fuzz run "$t" "$@" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$logs/$t" 2>&1; then
        status=ok
    else
        status=FAILED
        failed=1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t" | tail -n 1)
    runs=${runs:-0}
    total=$((total + runs))
    printf '%-14s %-7s %12s executions in %ss\n' "$t" "$status" "$runs" "$secs"
    if [ "$status" = FAILED ]; then
        grep -E 'panicked at|SUMMARY|Test unit written|ERROR' "$logs/$t" | head -n 20 >&2 || true
        tail -n 5 "$logs/$t" >&2
    fi
done
printf '%-14s %-7s %12s executions\n' total "$([ $failed = 0 ] && echo ok || echo FAILED)" "$total"
exit $failed
