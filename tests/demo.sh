#!/usr/bin/env bash
# make demo: real logins through real libpam in a throwaway sandbox.
# pam_wrapper points libpam at our own service files, nss_wrapper supplies
# the users, pam_matrix checks the passwords, faketime moves the clock.
# Nothing on the host changes; the sandbox is deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
SO=${SO:-$PWD/target/release/libpam_useraudit.so}
ADMIN=${ADMIN:-$PWD/target/release/useraudit-admin}
MATRIX=/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so
FAKETIME_LIB=/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
for f in "$SO" "$ADMIN" "$MATRIX" "$FAKETIME_LIB" /usr/bin/pamtester; do
  [ -e "$f" ] || { echo "missing $f: run make demo (it builds and installs what is needed)" >&2; exit 1; }
done

D=$(mktemp -d /tmp/useraudit-demo.XXXXXX)
trap 'rm -rf "$D"' EXIT
mkdir -p "$D/pam.d"
cat > "$D/passwd" <<EOF
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
bob:x:1001:1001:Bob:/home/bob:/bin/sh
carol:x:1002:1002:Carol:/home/carol:/bin/sh
EOF
printf 'root:x:0:\nalice:x:1000:\nbob:x:1001:\ncarol:x:1002:\n' > "$D/group"
printf 'alice:wonderland:login\nbob:builder:login\ncarol:singer:login\nroot:toor:login\n' > "$D/passdb"
cat > "$D/useraudit.toml" <<EOF
database = "$D/state/useraudit.db"
login_failure_limit = 3
account_expiry_days = 30
EOF
U="$SO conf=$D/useraudit.toml"
cat > "$D/pam.d/login" <<EOF
auth     requisite                   $U preauth
auth     [success=1 default=ignore]  $MATRIX passdb=$D/passdb
auth     [default=die]               $U authfail
auth     sufficient                  $U authsucc
auth     required                    pam_deny.so
account  required                    $U
account  required                    $MATRIX passdb=$D/passdb
password required                    $MATRIX passdb=$D/passdb
password optional                    $U
EOF

export NSS_WRAPPER_PASSWD="$D/passwd" NSS_WRAPPER_GROUP="$D/group"
B=$'\e[1m' N=$'\e[0m'
[ -t 1 ] || { B=; N=; }
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

# login USER PASSWORD RHOST [FAKETIME]
login() {
  local preload="libpam_wrapper.so libnss_wrapper.so" out rc=0
  [ -z "${4:-}" ] || preload="$preload $FAKETIME_LIB"
  out=$(printf '%s\n' "$2" | env LD_PRELOAD="$preload" FAKETIME="${4:-}" PAM_WRAPPER=1 \
        PAM_WRAPPER_SERVICE_DIR="$D/pam.d" \
        pamtester -I rhost="$3" login "$1" authenticate acct_mgmt 2>&1) || rc=$?
  out=$(printf '%s\n' "$out" | sed 's/^Password: //' | grep -v -e '^pamtester:' -e PWRAP -e '^$' | tr '\n' ' ' || true)
  printf '  %-6s %-10s from %-14s %s -> %s\n' "$1" "'$2'" "$3" "${4:+(clock $4)}" \
    "$([ $rc = 0 ] && echo "${B}logged in${N}" || echo "${B}refused${N}")  ${out}"
}
admin() { echo "  \$ useraudit-admin $*"; LD_PRELOAD=libnss_wrapper.so "$ADMIN" --conf "$D/useraudit.toml" "$@" | sed 's/^/    /'; }

say "Configuration: login_failure_limit = 3, account_expiry_days = 30"
say "Successful logins"
login alice wonderland 203.0.113.9
login bob builder 198.51.100.23
say "What the logins wrote: a state file per account and the log spool (no SQLite on the login path)"
(cd "$D/state" && find . -mindepth 1 | sort | sed 's|^\./|    |')
say "A name that is not an account (logged, no account state)"
login mallory letmein 192.0.2.66
say "Three wrong passwords for alice lock her account"
login alice password 192.0.2.66
login alice 123456 192.0.2.66
login alice qwerty 192.0.2.66
say "Now even the right password is refused (before it is asked)"
login alice wonderland 203.0.113.9
admin status alice || true
say "The administrator re-activates alice"
admin activate alice
login alice wonderland 203.0.113.9
say "Forty days later, bob has not logged in since: his right password disables the account"
login bob builder 198.51.100.23 +40d
login carol wrongpass 203.0.113.7 +40d
say "A nightly sweep (here: sixty days on) disables alice as well; carol never logged in and is left alone"
LD_PRELOAD="libnss_wrapper.so $FAKETIME_LIB" FAKETIME=+60d "$ADMIN" --conf "$D/useraudit.toml" sweep --dry-run | sed 's/^/    /'
LD_PRELOAD="libnss_wrapper.so $FAKETIME_LIB" FAKETIME=+60d "$ADMIN" --conf "$D/useraudit.toml" sweep | sed 's/^/    /'
say "The login log (every useraudit-admin command first merges the spool into the database)"
admin log
say "Account states"
admin status || true
say "Only the failures of alice, as JSON"
admin log --user alice --failed --limit 2 --format json
echo
