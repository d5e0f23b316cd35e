#!/usr/bin/env bash
# make demo-fleet: three simulated hosts share one log and one lockout on a
# throwaway PostgreSQL cluster. A password spray (2 guesses on each host,
# below each host's own limit of 3) is stopped on every host by the fleet
# limit of 5; `activate --fleet` by the security team lifts it everywhere.
# Each host is a sandbox of its own (pam_wrapper service files, nss_wrapper
# users, pam_matrix passwords, state directory, `fleet.host`) with its own
# `useraudit-admin daemon`. The server listens on a Unix socket in the
# sandbox only; as root it runs as the `postgres` user, otherwise as the
# caller. Everything is stopped and removed at the end, also on failure or
# Ctrl-C. Nothing on the host changes. Not part of `make demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
SO=${SO:-$PWD/target/release/libpam_useraudit.so}
ADMIN=${ADMIN:-$PWD/target/release/useraudit-admin}
MATRIX=/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so
PGBIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
for f in "$SO" "$ADMIN" "$MATRIX" /usr/bin/pamtester "$PGBIN/initdb" "$PGBIN/pg_ctl" "$PGBIN/psql"; do
  [ -e "$f" ] || { echo "missing $f: run make demo-fleet (it builds and installs what is needed)" >&2; exit 1; }
done
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || { echo "no postgres user to run the server as (apt-get install postgresql)" >&2; exit 1; }
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

D=$(mktemp -d /tmp/useraudit-demo-fleet.XXXXXX)
DAEMONS=()
cleanup() {
  set +e
  for p in "${DAEMONS[@]}"; do kill "$p" 2>/dev/null; done
  for p in "${DAEMONS[@]}"; do wait "$p" 2>/dev/null; done
  if [ -f "$D/pg/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$D/pg/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
      as_pg "$PGBIN/pg_ctl" -D "$D/pg/data" -m immediate -w stop >/dev/null 2>&1
  fi
  rm -rf "$D"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up" >&2; exit 130' INT
trap 'exit 143' TERM
chmod 755 "$D" # the server's user enters it to reach its own directory

B=$'\e[1m' N=$'\e[0m'
[ -t 1 ] || { B=; N=; }
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
now() { date +%s%3N; } # milliseconds

# The cluster: a socket in $D/pg, no TCP.
mkdir -m 755 "$D/pg"
[ "$(id -u)" != 0 ] || chown postgres: "$D/pg"
as_pg "$PGBIN/initdb" -D "$D/pg/data" -A trust -U postgres --no-sync -E UTF8 >"$D/initdb.log" 2>&1 ||
  { cat "$D/initdb.log" >&2; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$D/pg/data" -l "$D/pg/server.log" -o "-k $D/pg -c listen_addresses=''" -w -t 60 start \
  >/dev/null || { cat "$D/pg/server.log" >&2; exit 1; }
sql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$D/pg" -U postgres -d "${2:-useraudit}" -c "$1" >/dev/null; }
sql "CREATE DATABASE useraudit" postgres

# host NAME ROLE: a sandbox whose configuration connects as ROLE.
host() {
  local h="$D/$1"
  mkdir -p "$h/pam.d" && mkdir -m 700 "$h/state"
  printf 'root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\nbob:x:1001:1001:Bob:/home/bob:/bin/sh\n' >"$h/passwd"
  printf 'root:x:0:\nalice:x:1000:\nbob:x:1001:\n' >"$h/group"
  printf 'alice:wonderland:login\nbob:builder:login\n' >"$h/passdb"
  cat >"$h/useraudit.toml" <<EOF
database = "$h/state/useraudit.db"
login_failure_limit = 3
[fleet]
url = "host=$D/pg dbname=useraudit user=$2 connect_timeout=5"
host = "$1"
interval = "1s"
failure_limit = 5
EOF
  local U="$SO conf=$h/useraudit.toml"
  cat >"$h/pam.d/login" <<EOF
auth     requisite                   $U preauth
auth     [success=1 default=ignore]  $MATRIX passdb=$h/passdb
auth     [default=die]               $U authfail
auth     sufficient                  $U authsucc
auth     required                    pam_deny.so
account  required                    $U
account  required                    $MATRIX passdb=$h/passdb
EOF
}

# on HOST useraudit-admin ARGS..., quietly
on() {
  local h="$D/$1"
  shift
  LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$h/passwd" NSS_WRAPPER_GROUP="$h/group" \
    "$ADMIN" --conf "$h/useraudit.toml" "$@"
}
# admin HOST ARGS...: shown as typed, output indented
admin() {
  local h=$1
  shift
  echo "  [$h] \$ useraudit-admin $*"
  on "$h" "$@" 2>&1 | sed 's/^/    /'
}

# login HOST USER PASSWORD
login() {
  local h="$D/$1" out rc=0
  out=$(printf '%s\n' "$3" | env LD_PRELOAD="libpam_wrapper.so libnss_wrapper.so" PAM_WRAPPER=1 \
        PAM_WRAPPER_SERVICE_DIR="$h/pam.d" NSS_WRAPPER_PASSWD="$h/passwd" NSS_WRAPPER_GROUP="$h/group" \
        pamtester -I rhost=192.0.2.66 login "$2" authenticate acct_mgmt 2>&1) || rc=$?
  out=$(printf '%s\n' "$out" | sed 's/^Password: //' | grep -v -e '^pamtester:' -e PWRAP -e '^$' | tr '\n' ' ' || true)
  printf '  [%s] %-6s %-12s -> %s\n' "$1" "$2" "'$3'" \
    "$([ $rc = 0 ] && echo "${B}logged in${N}" || echo "${B}refused${N}")  ${out}"
}

# until_all WHAT TIMEOUT CMD...: run CMD HOST for each host until it holds;
# print each host's time since the start.
until_all() {
  local what=$1 limit=$2 t0 h ms done_hosts=""
  shift 2
  t0=$(now)
  while :; do
    for h in web-1 web-2 web-3; do
      case " $done_hosts " in *" $h "*) continue ;; esac
      if "$@" "$h"; then
        done_hosts="$done_hosts $h"
        ms=$(($(now) - t0))
        printf '  %s on %s after %d.%d s\n' "$what" "$h" $((ms / 1000)) $((ms % 1000 / 100))
      fi
    done
    [ "$(echo "$done_hosts" | wc -w)" = 3 ] && return 0
    if [ $(($(now) - t0)) -gt $((limit * 1000)) ]; then
      echo "  not $what on every host within $limit s; the daemons said:" >&2
      cat "$D"/web-*/daemon.log >&2
      exit 1
    fi
    sleep 0.1
  done
}
locked() { local rc=0; on "$1" status alice >/dev/null 2>&1 || rc=$?; [ $rc = 3 ]; }
active() { on "$1" status alice >/dev/null 2>&1; }

say "A throwaway PostgreSQL cluster ($("$PGBIN/postgres" --version | sed 's/.*) //')) and the fleet schema"
host console postgres
admin console fleet init
# A login role per host (it may add entries and read), and one for the
# security team (it may also record admin actions for the fleet).
for r in web1 web2 web3; do sql "CREATE ROLE $r LOGIN IN ROLE useraudit_host"; done
sql "CREATE ROLE security LOGIN IN ROLE useraudit_fleet_admin"
sed -i 's/user=postgres /user=security /' "$D/console/useraudit.toml"
echo "  roles web1, web2, web3 in useraudit_host; security in useraudit_fleet_admin"

say "Three hosts, each with its own state and daemon: login_failure_limit = 3 on each host; fleet.failure_limit = 5, fleet.interval = 1s"
for i in 1 2 3; do
  host "web-$i" "web$i"
  login "web-$i" bob builder >/dev/null # makes the host's database
  # A direct child (not a function's subshell), so that cleanup stops it.
  LD_PRELOAD=libnss_wrapper.so NSS_WRAPPER_PASSWD="$D/web-$i/passwd" NSS_WRAPPER_GROUP="$D/web-$i/group" \
    "$ADMIN" --conf "$D/web-$i/useraudit.toml" daemon 2>"$D/web-$i/daemon.log" &
  DAEMONS+=($!)
done
sleep 1.5
for i in 1 2 3; do
  kill -0 "${DAEMONS[$((i - 1))]}" 2>/dev/null || { echo "the daemon of web-$i stopped:" >&2; cat "$D/web-$i/daemon.log" >&2; exit 1; }
done
echo "  web-1, web-2, web-3: daemons running"

say "A password spray: 2 guesses for alice on each host (each host alone would allow 3)"
for h in web-1 web-2 web-3; do
  login "$h" alice password
  login "$h" alice 123456
done

say "The daemons carry the failures to PostgreSQL; at 5 across hosts, alice is locked on every host"
until_all "locked" 10 locked
admin web-2 status alice || true
login web-3 alice wonderland

say "The fleet log, from any host (a host's role may read it)"
admin web-1 log --fleet --user alice
admin web-1 status --fleet alice || true

say "A host cannot lift a fleet lock: its role may not record admin actions"
admin web-1 activate --fleet alice || true

say "The security team re-activates alice for the whole fleet"
admin console activate --fleet alice
until_all "active again" 10 active
for h in web-1 web-2 web-3; do login "$h" alice wonderland; done
echo
