#!/usr/bin/env bash
# tests/sshd/harness.sh — run Debian's OpenSSH server on 127.0.0.1 inside
# bubblewrap, with its own /etc/pam.d/sshd, passwd, group and shadow, and drive
# it with the real ssh client (sshpass for passwords).
#
# Two ways to use it:
#   source tests/sshd/harness.sh        # a library of functions (see API below)
#   bash tests/sshd/harness.sh selftest # prove the harness with stand-in stacks
#   bash tests/sshd/harness.sh selftest --module PATH [--admin PATH]
#                                       # ... then a smoke run of pam_useraudit.so
#
# Root only. The host's /etc/pam.d, /etc/passwd, /etc/shadow, /etc/ssh and any
# running sshd are never touched: everything lives in a sandbox directory DIR,
# bind-mounted over the real paths inside a private mount and pid namespace.
#
# ---------------------------------------------------------------------------
# API (all functions return non-zero with a message on stderr when they fail)
#
#   sshd_can_run                      0 if root and bwrap/sshd/ssh/sshpass work;
#                                     else prints the reason, returns 1
#   sshd_sandbox_setup DIR [PAMTEXT]  create DIR: etc/{passwd,group,shadow}
#                                     (root, sshd, nobody, alice, bob, carol),
#                                     home/<user> (mounted as /home), host key,
#                                     client key (authorized for alice and bob),
#                                     known_hosts, sshd_config, pam.d/sshd
#                                     (PAMTEXT, else $SSHD_PAM_STACK, else the
#                                     pam_unix default), probe.sh
#   sshd_set_pam DIR PAMTEXT          rewrite DIR/pam.d/sshd; sshd reads it at
#                                     every connection, so no restart is needed.
#                                     @DIR@ and @PROBE@ in PAMTEXT are replaced by
#                                     DIR and DIR/probe.sh
#   sshd_pam_default                  print the default pam_unix stack
#   sshd_pam_useraudit MODULE [ARG..] print the README's stack with MODULE (an
#                                     absolute path) and ARGs on every
#                                     pam_useraudit line (e.g. db=@DIR@/ua.db
#                                     login_failure_limit=3)
#   sshd_pam_faillock [ARG..]         print a pam_faillock stack (state in
#                                     @DIR@/faillock) for side-by-side runs
#   sshd_user_add DIR USER PASSWORD [UID]   add an account (and its home)
#   sshd_set_password DIR USER PASSWORD     new hash in shadow (lastchg kept)
#   sshd_shadow_set DIR USER FIELD VALUE    set a shadow field: lastchg min max
#                                     warn inactive expire (or 3..8); written in
#                                     place (the file is bind-mounted: never
#                                     replace it with mv)
#   sshd_today [DAYS]                 days since the epoch (+DAYS), for shadow
#   sshd_authorize_key DIR USER       install DIR/client/id_ed25519.pub for USER
#   sshd_start DIR [NAME=VALUE...]    start sshd in bwrap with a clean
#                                     environment plus NAME=VALUE; FAKETIME=...
#                                     also preloads libfaketime. If DIR/faketime
#                                     exists, libfaketime reads the offset from
#                                     that file at every clock call (see
#                                     sshd_time_travel). Waits until sshd
#                                     listens (bounded); port in DIR/port
#   sshd_stop DIR                     stop sshd (and everything in its pid ns)
#   sshd_time_travel DIR OFFSET       move sshd's clock: OFFSET as libfaketime
#                                     takes it ("+100d", "-2h", "+0"); takes
#                                     effect at the next connection if sshd was started with
#                                     DIR/faketime present, else sshd is
#                                     restarted (with the same environment)
#   ssh_password DIR USER PASSWORD [CMD...]   "password" method (sshpass)
#   ssh_kbdint   DIR USER PASSWORD [CMD...]   "keyboard-interactive" (sshpass)
#   ssh_pubkey   DIR USER [CMD...]            "publickey" with DIR/client key
#                                     One authentication attempt per call
#                                     (NumberOfPasswordPrompts=1). Return ssh's
#                                     status (0 = logged in and CMD exited 0,
#                                     255 = refused; sshpass's own 5 = it saw a
#                                     second password prompt; 124 = timeout).
#                                     CMD defaults to "true". The status is
#                                     also left in SSH_RC. stdout+stderr go
#                                     to DIR/ssh.out (overwritten; SSH_OUT=FILE
#                                     for calls in parallel) and are
#                                     appended to DIR/ssh.history. Stdin is
#                                     /dev/null unless SSH_STDIN=FILE; extra
#                                     client options in SSH_EXTRA_OPTS (e.g.
#                                     "-tt" for a pty login). SSH_TIMEOUT
#                                     (default 30 s) bounds each call.
#   sshd_log DIR / sshd_syslog DIR / ssh_out DIR / probe_log DIR
#                                     print the paths of sshd's stderr log,
#                                     the captured syslog (needs python3), the
#                                     last client output, the probe log
#   sshd_wait_log DIR REGEX [SECS]    wait until sshd.log matches (bounded)
#
# For the pam_useraudit test scripts (e2e.sh, policy.sh), run from the top of
# the repository with ROOT set to it:
#   ua_begin NAME TAG [TOOL...]       the start every script shares: prints
#                                     "SKIP: NAME: ..." and exits 0 unless
#                                     sshd_can_run, python3, libfaketime and
#                                     each TOOL (a command) are there;
#                                     sets PY, LIBFAKETIME, MODULE and ADMIN
#                                     (USERAUDIT_SO, USERAUDIT_ADMIN, else
#                                     target/release, built when missing), the
#                                     sandbox D (/tmp/useraudit-TAG.XXXXXX:
#                                     sshd stopped and D removed at exit unless
#                                     KEEP=1), CONF (D/useraudit.toml), DB
#                                     (D/state/useraudit.db), PASS=0 FAIL=0
#   ok DESC / fail DESC               one TAP line, counted in PASS or FAIL
#   check DESC CMD...                 ok if CMD succeeds, else fail and run
#                                     the script's show_context (if defined)
#   ua_expect_status DESC USER FIELD=VALUE...
#                                     ok if `status USER --format json`, run
#                                     by the script's ua_admin, has these
#                                     fields ("null" for JSON null)
#   ua_abort DESC                     fail DESC, print the counts, exit 1
#   ua_finish                         stop sshd, print "N passed, M failed";
#                                     returns 1 if any check failed
#
# Default accounts: alice/alice-pw (uid 2001), bob/bob-pw (2002),
# carol/carol-pw (2003, no authorized key). Shell /bin/bash, homes /home/USER.
#
# Probe: DIR/probe.sh (use "@PROBE@" in a stack, e.g.
#   "account optional pam_exec.so @PROBE@") appends to DIR/probe.log a block
# "=== PAM_TYPE ..." with `date`, PAM_SERVICE/USER/RHOST/RUSER/TTY and the PAM
# environment (pam_exec passes only the PAM environment and the PAM items).
#
# ---------------------------------------------------------------------------
# Findings (SSH_AUTH_INFO_0 per method and stack, how PAM messages reach the
# client, faketime, the sshd settings that matter): tests/sshd/README.md.
# ---------------------------------------------------------------------------

SSHD_BIN=${SSHD_BIN:-/usr/sbin/sshd}
SSHD_BWRAP=${SSHD_BWRAP:-bwrap}
SSHD_SSH=${SSHD_SSH:-ssh}
SSHD_SSHPASS=${SSHD_SSHPASS:-sshpass}
SSH_TIMEOUT=${SSH_TIMEOUT:-30}
SSHD_START_TIMEOUT=${SSHD_START_TIMEOUT:-15}
SSHD_HOST_ALIAS=useraudit-sshd-sandbox
# Extra bwrap arguments (a string, split on whitespace), e.g. "--tmpfs /var/lib/x".
SSHD_BWRAP_EXTRA=${SSHD_BWRAP_EXTRA:-}
SSH_EXTRA_OPTS=${SSH_EXTRA_OPTS:-}

# Fixed hashes (openssl passwd -6 -salt userauditUSER USER-pw), so that setup
# needs no hashing tool for the default accounts.
_SSHD_USERS=(alice bob carol)
declare -A _SSHD_UID=([alice]=2001 [bob]=2002 [carol]=2003)
declare -A _SSHD_PW=([alice]=alice-pw [bob]=bob-pw [carol]=carol-pw)
declare -A _SSHD_HASH=(
  [alice]='$6$userauditalice$GSSCul/oYdMNXtHorZEpQxxH6cwoge9zWsEHqz7bAS95c1iAccFVh.78T.0P6sZxLpXwLclBAtsjDAAAoTtGC0'
  [bob]='$6$userauditbob$6A2ggtB85KLktbwb.0drDPMqwPgCrtmeSgd6A9AGWYcbfzHjRJOv85.BOgIFt7fh6yLQ9YwCXQg2m4B0Ix4240'
  [carol]='$6$userauditcarol$RA7jRGioP8sTN4Dih8hBg2NDZfMygBmmUNDcC0qzl2TxKlMC3UUkclBs/div9qvflDZ.VIH5/UY8Jvrpyne5R/'
)

_sshd_err() { echo "harness: $*" >&2; }

# --- checks -----------------------------------------------------------------

sshd_can_run() {
  if [ "$(id -u)" != 0 ]; then echo "needs root (bwrap bind mounts over /etc, sshd)"; return 1; fi
  local t
  for t in "$SSHD_BWRAP" "$SSHD_BIN" "$SSHD_SSH" "$SSHD_SSHPASS" ssh-keygen timeout; do
    command -v "$t" >/dev/null 2>&1 || { echo "missing $t (Debian: bubblewrap openssh-server openssh-client sshpass coreutils)"; return 1; }
  done
  if ! timeout 20 "$SSHD_BWRAP" --bind / / --dev /dev --proc /proc --tmpfs /run \
       --unshare-pid --die-with-parent true >/dev/null 2>&1; then
    echo "bwrap cannot create a sandbox here"; return 1
  fi
  return 0
}

_sshd_libfaketime() {
  local f
  for f in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1; do
    [ -e "$f" ] && { echo "$f"; return 0; }
  done
  return 1
}

_sshd_absdir() { # DIR -> absolute path (DIR may not exist yet)
  case $1 in /*) echo "${1%/}";; *) echo "$PWD/${1%/}";; esac
}

# --- accounts ---------------------------------------------------------------

sshd_today() { echo $(( $(date +%s) / 86400 + ${1:-0} )); }

_sshd_hash() { # PASSWORD -> SHA-512 crypt hash
  local h
  if command -v openssl >/dev/null 2>&1 && h=$(openssl passwd -6 -- "$1" 2>/dev/null); then echo "$h"; return 0; fi
  if command -v mkpasswd >/dev/null 2>&1 && h=$(mkpasswd -m sha-512 -- "$1" 2>/dev/null); then echo "$h"; return 0; fi
  if command -v python3 >/dev/null 2>&1 && h=$(python3 -W ignore -c 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_SHA512)))' "$1" 2>/dev/null); then echo "$h"; return 0; fi
  _sshd_err "no tool to hash a password (install openssl)"; return 1
}

# Rewrite a file in place (same inode: it is bind-mounted into the sandbox).
_sshd_rewrite() { # FILE CONTENT
  printf '%s' "$2" > "$1"
}

_sshd_user_hash_add() { # DIR USER HASH UID
  local dir=$1 user=$2 hash=$3 uid=$4
  if grep -q "^$user:" "$dir/etc/passwd"; then _sshd_err "user $user exists"; return 1; fi
  printf '%s:x:%s:%s::/home/%s:/bin/bash\n' "$user" "$uid" "$uid" "$user" >> "$dir/etc/passwd"
  printf '%s:x:%s:\n' "$user" "$uid" >> "$dir/etc/group"
  printf '%s:%s:%s:0:99999:7:::\n' "$user" "$hash" "$(sshd_today)" >> "$dir/etc/shadow"
  mkdir -p "$dir/home/$user/.ssh"
  chown -R "$uid:$uid" "$dir/home/$user"
  chmod 700 "$dir/home/$user" "$dir/home/$user/.ssh"
}

sshd_user_add() { # DIR USER PASSWORD [UID]
  local dir; dir=$(_sshd_absdir "$1")
  local uid=${4:-}
  if [ -z "$uid" ]; then
    uid=$(awk -F: 'BEGIN{m=2999} $3>m && $3<60000 {m=$3} END{print m+1}' "$dir/etc/passwd")
  fi
  local h; h=$(_sshd_hash "$3") || return 1
  _sshd_user_hash_add "$dir" "$2" "$h" "$uid"
}

sshd_shadow_set() { # DIR USER FIELD VALUE
  local dir; dir=$(_sshd_absdir "$1")
  local user=$2 field=$3 value=$4 n
  case $field in
    hash|password) n=2;; lastchg) n=3;; min) n=4;; max) n=5;; warn) n=6;;
    inactive) n=7;; expire) n=8;; [2-9]) n=$field;;
    *) _sshd_err "unknown shadow field $field"; return 1;;
  esac
  grep -q "^$user:" "$dir/etc/shadow" || { _sshd_err "no user $user"; return 1; }
  local new
  new=$(awk -F: -v OFS=: -v u="$user" -v n="$n" -v v="$value" '$1==u {$n=v} {print}' "$dir/etc/shadow") || return 1
  _sshd_rewrite "$dir/etc/shadow" "$new"$'\n'
}

sshd_set_password() { # DIR USER PASSWORD
  local h; h=$(_sshd_hash "$3") || return 1
  sshd_shadow_set "$1" "$2" hash "$h"
}

sshd_authorize_key() { # DIR USER
  local dir; dir=$(_sshd_absdir "$1")
  local user=$2 uid
  uid=$(awk -F: -v u="$user" '$1==u {print $3}' "$dir/etc/passwd")
  [ -n "$uid" ] || { _sshd_err "no user $user"; return 1; }
  mkdir -p "$dir/home/$user/.ssh"
  cat "$dir/client/id_ed25519.pub" >> "$dir/home/$user/.ssh/authorized_keys"
  chown -R "$uid:$uid" "$dir/home/$user/.ssh"
  chmod 700 "$dir/home/$user/.ssh"; chmod 600 "$dir/home/$user/.ssh/authorized_keys"
}

# --- PAM stacks -------------------------------------------------------------

sshd_pam_default() {
  cat <<'EOF'
# default stand-in stack (pam_unix)
auth     required   pam_unix.so
account  required   pam_unix.so
password required   pam_unix.so
session  required   pam_unix.so
EOF
}

sshd_pam_useraudit() { # MODULE [ARG...]
  local m=$1; shift
  local a="$*"
  cat <<EOF
# pam_useraudit stack (as in the README)
auth     requisite                   $m preauth $a
auth     [success=1 default=ignore]  pam_unix.so nullok
auth     [default=die]               $m authfail $a
auth     sufficient                  $m authsucc $a
auth     required                    pam_deny.so
account  required                    $m $a
account  required                    pam_unix.so
password required                    pam_unix.so
password optional                    $m $a
session  required                    pam_unix.so
EOF
}

sshd_pam_faillock() { # [ARG...]
  local a="dir=@DIR@/faillock $*"
  cat <<EOF
# pam_faillock stack, for side-by-side comparisons
auth     required                    pam_faillock.so preauth $a
auth     [success=1 default=ignore]  pam_unix.so nullok
auth     [default=die]               pam_faillock.so authfail $a
auth     sufficient                  pam_faillock.so authsucc $a
auth     required                    pam_deny.so
account  required                    pam_faillock.so
account  required                    pam_unix.so
password required                    pam_unix.so
session  required                    pam_unix.so
EOF
}

sshd_set_pam() { # DIR PAMTEXT
  local dir; dir=$(_sshd_absdir "$1")
  local text=$2
  text=${text//@PROBE@/$dir/probe.sh}
  text=${text//@DIR@/$dir}
  mkdir -p "$dir/pam.d" "$dir/faillock"
  printf '%s\n' "$text" > "$dir/pam.d/sshd"
  # libpam complains on every pam_start when there is no "other"
  [ -f "$dir/pam.d/other" ] || printf '%s\n' "auth required pam_deny.so" \
    "account required pam_deny.so" "password required pam_deny.so" \
    "session required pam_deny.so" > "$dir/pam.d/other"
  chmod 644 "$dir/pam.d/sshd" "$dir/pam.d/other"
}

# --- sandbox ----------------------------------------------------------------

sshd_sandbox_setup() { # DIR [PAMTEXT]
  local dir; dir=$(_sshd_absdir "$1")
  local pam=${2:-${SSHD_PAM_STACK:-$(sshd_pam_default)}}
  case "$dir/" in
    /run/*|/home/*|/var/log/*|/dev/*|/proc/*|/) _sshd_err "DIR must not be under /run, /home, /var/log, /dev or /proc (they are replaced in the sandbox): $dir"; return 1;;
  esac
  mkdir -p "$dir" && chmod 755 "$dir" || return 1
  mkdir -p "$dir/etc" "$dir/home" "$dir/hostkeys" "$dir/client" "$dir/varlog" "$dir/pam.d" "$dir/faillock"
  chmod 755 "$dir/home" "$dir/pam.d"; chmod 700 "$dir/hostkeys" "$dir/client"
  : > "$dir/varlog/wtmp"; : > "$dir/varlog/btmp"; : > "$dir/varlog/lastlog"
  chmod 664 "$dir/varlog/wtmp" "$dir/varlog/lastlog"; chmod 600 "$dir/varlog/btmp"

  local sshd_line
  sshd_line=$(getent passwd sshd 2>/dev/null || true)
  [ -n "$sshd_line" ] || sshd_line='sshd:x:102:65534::/run/sshd:/usr/sbin/nologin'
  cat > "$dir/etc/passwd" <<EOF
root:x:0:0:root:/root:/bin/bash
$sshd_line
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
  cat > "$dir/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
  local today; today=$(sshd_today)
  printf 'root:*:%s:0:99999:7:::\nsshd:*:%s:0:99999:7:::\nnobody:*:%s:0:99999:7:::\n' \
    "$today" "$today" "$today" > "$dir/etc/shadow"
  chmod 644 "$dir/etc/passwd" "$dir/etc/group"; chmod 640 "$dir/etc/shadow"
  local u
  for u in "${_SSHD_USERS[@]}"; do
    _sshd_user_hash_add "$dir" "$u" "${_SSHD_HASH[$u]}" "${_SSHD_UID[$u]}" || return 1
  done

  rm -f "$dir/hostkeys/ssh_host_ed25519_key"* "$dir/client/id_ed25519"*
  ssh-keygen -q -t ed25519 -N '' -C sandbox-host -f "$dir/hostkeys/ssh_host_ed25519_key" || return 1
  ssh-keygen -q -t ed25519 -N '' -C sandbox-client -f "$dir/client/id_ed25519" || return 1
  printf '%s %s\n' "$SSHD_HOST_ALIAS" "$(cut -d' ' -f1,2 "$dir/hostkeys/ssh_host_ed25519_key.pub")" \
    > "$dir/client/known_hosts"
  sshd_authorize_key "$dir" alice && sshd_authorize_key "$dir" bob || return 1

  cat > "$dir/sshd_config" <<EOF
# sandbox sshd (tests/sshd/harness.sh); Port is rewritten by sshd_start
Port 22
ListenAddress 127.0.0.1
AddressFamily inet
HostKey $dir/hostkeys/ssh_host_ed25519_key
PidFile $dir/sshd.pid
# PAM: auth stack for password and keyboard-interactive, account stack after
# every method (publickey too), session stack for the session.
UsePAM yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
# PAM_RHOST = the client's address, not a reverse-DNS name
UseDNS no
PermitRootLogin no
PermitEmptyPasswords no
StrictModes no
MaxAuthTries 20
MaxStartups 100:30:200
LoginGraceTime 60
LogLevel VERBOSE
PrintMotd no
PrintLastLog no
Banner none
X11Forwarding no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
  chmod 644 "$dir/sshd_config"

  cat > "$dir/probe.sh" <<EOF
#!/bin/sh
# pam_exec probe: dumps what a PAM module sees (items and PAM environment)
{
  echo "=== \${PAM_TYPE:-?} service=\${PAM_SERVICE:-} user=\${PAM_USER:-} pid=\$\$ date=\$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  env | LC_ALL=C sort
  echo "--- end"
} >> "$dir/probe.log" 2>/dev/null
exit 0
EOF
  chmod 755 "$dir/probe.sh"
  : > "$dir/probe.log"
  sshd_set_pam "$dir" "$pam"
}

_sshd_port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

_sshd_pick_port() {
  local i p
  for i in $(seq 1 50); do
    p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 20000 ))
    _sshd_port_busy "$p" || { echo "$p"; return 0; }
  done
  _sshd_err "no free port found"; return 1
}

_sshd_syslog_start() { # DIR
  local dir=$1
  command -v python3 >/dev/null 2>&1 || return 1
  rm -f "$dir/syslog.sock"
  python3 - "$dir/syslog.sock" "$dir/syslog.log" <<'PY' &
import ctypes, os, signal, socket, sys
try:  # die with the shell that started us
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except Exception:
    pass
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o666)
with open(out, "ab", buffering=0) as f:
    while True:
        data = s.recv(65536)
        f.write(data.rstrip(b"\0\n") + b"\n")
PY
  echo $! > "$dir/syslog.pid"
  local i
  for i in $(seq 1 50); do [ -S "$dir/syslog.sock" ] && return 0; sleep 0.1; done
  kill "$(cat "$dir/syslog.pid")" 2>/dev/null; rm -f "$dir/syslog.pid"
  return 1
}

sshd_start() { # DIR [NAME=VALUE...]
  local dir; dir=$(_sshd_absdir "$1"); shift
  [ -f "$dir/sshd_config" ] || { _sshd_err "$dir is not a sandbox (run sshd_sandbox_setup)"; return 1; }
  if [ -f "$dir/bwrap.pid" ] && kill -0 "$(cat "$dir/bwrap.pid")" 2>/dev/null; then
    _sshd_err "sshd already running for $dir"; return 1
  fi
  local kv
  for kv in "$@"; do
    case $kv in *=*) ;; *) _sshd_err "not NAME=VALUE: $kv"; return 1;; esac
  done
  # remember the environment for restarts (sshd_time_travel)
  : > "$dir/sshd.env"
  for kv in "$@"; do printf '%s\0' "$kv" >> "$dir/sshd.env"; done

  local -a envv=(PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C)
  local want_ft=0 has_preload=0 ft
  for kv in "$@"; do
    case $kv in FAKETIME=*) want_ft=1;; LD_PRELOAD=*) has_preload=1;; esac
  done
  if [ -f "$dir/faketime" ]; then
    want_ft=1
    envv+=("FAKETIME_TIMESTAMP_FILE=$dir/faketime")
  fi
  if [ "$want_ft" = 1 ]; then
    ft=$(_sshd_libfaketime) || { _sshd_err "libfaketime not found (Debian: libfaketime)"; return 1; }
    # A long cache, not FAKETIME_NO_CACHE: sshd's keyboard-interactive PAM
    # helper clears its environment (auth-pam.c sshpam_thread: environ[0] =
    # NULL), and libfaketime re-reading its settings there would find none
    # and return the real clock. Every connection is a freshly exec'd sshd
    # (rexec) that reads DIR/faketime anew, so a live change still reaches
    # the next connection.
    envv+=(FAKETIME_DONT_FAKE_MONOTONIC=1 FAKETIME_CACHE_DURATION=1000000)
    [ "$has_preload" = 1 ] || envv+=("LD_PRELOAD=$ft")
    echo 1 > "$dir/sshd.faketime"
  else
    rm -f "$dir/sshd.faketime"
  fi
  envv+=("$@")

  local -a logbind=()
  if _sshd_syslog_start "$dir"; then
    logbind=(--bind "$dir/syslog.sock" /dev/log)
  fi

  local port pid i
  for _ in 1 2 3; do
    port=$(_sshd_pick_port) || return 1
    sed -i "s/^Port .*/Port $port/" "$dir/sshd_config"
    echo "$port" > "$dir/port"
    rm -f "$dir/sshd.pid"
    echo "=== sshd_start port=$port $(date -u +%FT%TZ)" >> "$dir/sshd.log.all"
    # shellcheck disable=SC2086
    "$SSHD_BWRAP" \
      --bind / / --dev /dev --proc /proc \
      --bind "$dir/pam.d" /etc/pam.d \
      --bind "$dir/etc/passwd" /etc/passwd \
      --bind "$dir/etc/group" /etc/group \
      --bind "$dir/etc/shadow" /etc/shadow \
      --bind "$dir/home" /home \
      --bind "$dir/varlog" /var/log \
      --tmpfs /run --dir /run/sshd --chmod 0755 /run/sshd \
      "${logbind[@]}" \
      $SSHD_BWRAP_EXTRA \
      --unshare-pid --die-with-parent \
      env -i "${envv[@]}" "$SSHD_BIN" -D -e -f "$dir/sshd_config" \
      </dev/null >/dev/null 2>"$dir/sshd.log" &
    pid=$!
    echo "$pid" > "$dir/bwrap.pid"
    for i in $(seq 1 $(( SSHD_START_TIMEOUT * 10 ))); do
      if ! kill -0 "$pid" 2>/dev/null; then break; fi
      if grep -q "Server listening on 127.0.0.1 port $port" "$dir/sshd.log" 2>/dev/null \
         && _sshd_port_busy "$port"; then
        return 0
      fi
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      _sshd_err "sshd did not listen within ${SSHD_START_TIMEOUT}s"; cat "$dir/sshd.log" >&2
      sshd_stop "$dir"; return 1
    fi
    cat "$dir/sshd.log" >> "$dir/sshd.log.all"
    if grep -qi "address already in use" "$dir/sshd.log"; then continue; fi
    _sshd_err "sshd exited:"; cat "$dir/sshd.log" >&2
    rm -f "$dir/bwrap.pid"; _sshd_syslog_stop "$dir"
    return 1
  done
  _sshd_err "could not bind a port"; _sshd_syslog_stop "$dir"; return 1
}

_sshd_syslog_stop() {
  local dir=$1
  if [ -f "$dir/syslog.pid" ]; then
    kill "$(cat "$dir/syslog.pid")" 2>/dev/null
    rm -f "$dir/syslog.pid" "$dir/syslog.sock"
  fi
}

sshd_stop() { # DIR
  local dir; dir=$(_sshd_absdir "$1")
  local pid i
  if [ -f "$dir/bwrap.pid" ]; then
    pid=$(cat "$dir/bwrap.pid")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null
      for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
      wait "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/bwrap.pid"
    [ -f "$dir/sshd.log" ] && cat "$dir/sshd.log" >> "$dir/sshd.log.all"
  fi
  _sshd_syslog_stop "$dir"
  return 0
}

sshd_time_travel() { # DIR OFFSET
  local dir; dir=$(_sshd_absdir "$1")
  printf '%s\n' "$2" > "$dir/faketime"
  if [ -f "$dir/bwrap.pid" ] && kill -0 "$(cat "$dir/bwrap.pid")" 2>/dev/null \
     && [ ! -f "$dir/sshd.faketime" ]; then
    local -a envs=()
    [ -s "$dir/sshd.env" ] && mapfile -d '' envs < "$dir/sshd.env"
    sshd_stop "$dir" && sshd_start "$dir" "${envs[@]}"
  fi
}

sshd_wait_log() { # DIR REGEX [SECS]
  local dir; dir=$(_sshd_absdir "$1")
  local i
  for i in $(seq 1 $(( ${3:-10} * 10 ))); do
    grep -Eq -- "$2" "$dir/sshd.log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

sshd_log()    { echo "$(_sshd_absdir "$1")/sshd.log"; }
sshd_syslog() { echo "$(_sshd_absdir "$1")/syslog.log"; }
ssh_out()     { echo "$(_sshd_absdir "$1")/ssh.out"; }
probe_log()   { echo "$(_sshd_absdir "$1")/probe.log"; }

# --- client -----------------------------------------------------------------

_ssh_common_opts() { # DIR -> fills array _SSH_OPTS
  local dir=$1
  _SSH_OPTS=(-F /dev/null -p "$(cat "$dir/port")"
    -o "HostKeyAlias=$SSHD_HOST_ALIAS"
    -o "UserKnownHostsFile=$dir/client/known_hosts" -o GlobalKnownHostsFile=/dev/null
    -o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o CheckHostIP=no
    -o ConnectTimeout=10 -o ControlMaster=no -o ControlPath=none
    -o IdentityAgent=none -o IdentitiesOnly=yes -o ForwardAgent=no
    -o NumberOfPasswordPrompts=1
    # INFO or above, else the client hides PAM messages (sent as a banner)
    -o LogLevel=INFO)
}

_ssh_run() { # DIR LABEL CMD... (the command line is complete)
  local dir=$1 label=$2; shift 2
  local rc
  local in=${SSH_STDIN:-/dev/null} out=${SSH_OUT:-$dir/ssh.out}
  timeout -k 5 "$SSH_TIMEOUT" "$@" < "$in" > "$out" 2>&1
  rc=$?
  # shellcheck disable=SC2034  # read by the caller
  SSH_RC=$rc
  { echo "=== $label rc=$rc $(date -u +%FT%TZ)"; cat "$out"; } >> "$dir/ssh.history"
  return $rc
}

ssh_password() { # DIR USER PASSWORD [CMD...]
  local dir; dir=$(_sshd_absdir "$1")
  local user=$2 pw=$3; shift 3
  [ $# -gt 0 ] || set -- true
  _ssh_common_opts "$dir"
  # shellcheck disable=SC2086
  SSHPASS=$pw _ssh_run "$dir" "password $user" "$SSHD_SSHPASS" -e "$SSHD_SSH" "${_SSH_OPTS[@]}" \
    -o PreferredAuthentications=password -o PasswordAuthentication=yes \
    -o KbdInteractiveAuthentication=no -o PubkeyAuthentication=no \
    $SSH_EXTRA_OPTS "$user@127.0.0.1" "$@"
}

ssh_kbdint() { # DIR USER PASSWORD [CMD...]
  local dir; dir=$(_sshd_absdir "$1")
  local user=$2 pw=$3; shift 3
  [ $# -gt 0 ] || set -- true
  _ssh_common_opts "$dir"
  # shellcheck disable=SC2086
  SSHPASS=$pw _ssh_run "$dir" "keyboard-interactive $user" "$SSHD_SSHPASS" -e "$SSHD_SSH" "${_SSH_OPTS[@]}" \
    -o PreferredAuthentications=keyboard-interactive -o KbdInteractiveAuthentication=yes \
    -o PasswordAuthentication=no -o PubkeyAuthentication=no \
    $SSH_EXTRA_OPTS "$user@127.0.0.1" "$@"
}

ssh_pubkey() { # DIR USER [CMD...]
  local dir; dir=$(_sshd_absdir "$1")
  local user=$2; shift 2
  [ $# -gt 0 ] || set -- true
  _ssh_common_opts "$dir"
  # shellcheck disable=SC2086
  _ssh_run "$dir" "publickey $user" "$SSHD_SSH" "${_SSH_OPTS[@]}" -o BatchMode=yes \
    -o PreferredAuthentications=publickey -o PubkeyAuthentication=yes \
    -o "IdentityFile=$dir/client/id_ed25519" \
    -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
    $SSH_EXTRA_OPTS "$user@127.0.0.1" "$@"
}

# ===========================================================================
# pam_useraudit test scripts (see the API above)
# ===========================================================================

ua_begin() { # NAME TAG [TOOL...]
  local name=$1 tag=$2 why t
  shift 2
  if ! why=$(sshd_can_run); then echo "SKIP: $name: $why"; exit 0; fi
  PY=$(command -v python3) || { echo "SKIP: $name: python3 missing (parses the JSON log)"; exit 0; }
  LIBFAKETIME=$(_sshd_libfaketime) || { echo "SKIP: $name: libfaketime missing (Debian: faketime)"; exit 0; }
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "SKIP: $name: $t missing"; exit 0; }
  done
  MODULE=${USERAUDIT_SO:-$ROOT/target/release/libpam_useraudit.so}
  ADMIN=${USERAUDIT_ADMIN:-$ROOT/target/release/useraudit-admin}
  PASS=0 FAIL=0
  if [ ! -f "$MODULE" ] || [ ! -x "$ADMIN" ]; then
    echo "# building target/release (module or useraudit-admin missing)"
    (cd "$ROOT" && timeout 1800 cargo build --release --locked --quiet) || ua_abort "cargo build --release"
  fi
  D=$(mktemp -d "/tmp/useraudit-$tag.XXXXXX") || exit 1
  # shellcheck disable=SC2064
  trap "sshd_stop '$D'; [ -n \"\${KEEP:-}\" ] || rm -rf '$D'" EXIT
  echo "# sandbox: $D (KEEP=1 keeps it)"
  CONF=$D/useraudit.toml
  DB=$D/state/useraudit.db
}

ok()   { PASS=$((PASS+1)); echo "ok - $*"; }
fail() { FAIL=$((FAIL+1)); echo "not ok - $*"; }
check() { # DESC CMD...
  local desc=$1; shift
  if "$@"; then ok "$desc"; else fail "$desc"; ! declare -F show_context >/dev/null || show_context; fi
}

ua_expect_status() { # DESC USER FIELD=VALUE...
  local desc=$1 user=$2; shift 2
  local res
  res=$(ua_admin status "$user" --format json 2>&1 | "$PY" -c '
import json, sys
want = dict(kv.split("=", 1) for kv in sys.argv[1:])
try:
    s = json.load(sys.stdin)[0]
except Exception as e:
    print("no status: %s" % e); sys.exit(1)
bad = ["%s=%r (want %r)" % (k, s.get(k), v) for k, v in want.items()
       if str(s.get(k)) != v and not (v == "null" and s.get(k) is None)]
if bad:
    print("%s: %s" % (json.dumps(s), "; ".join(bad))); sys.exit(1)
' "$@")
  if [ $? = 0 ]; then ok "$desc"; else fail "$desc"; echo "#   $res"; fi
}

ua_abort() { # DESC
  fail "$1"
  echo "$PASS passed, $FAIL failed"
  exit 1
}

ua_finish() {
  sshd_stop "$D"
  echo "$PASS passed, $FAIL failed"
  [ "$FAIL" = 0 ]
}

# ===========================================================================
# self-test
# ===========================================================================

_ST_PASS=0; _ST_FAIL=0
_st_ok()   { _ST_PASS=$((_ST_PASS+1)); echo "ok - $*"; }
_st_fail() { _ST_FAIL=$((_ST_FAIL+1)); echo "not ok - $*"; }
_st_check() { # DESC CMD...   (CMD may be eval '...'; $d there is the sandbox)
  local _st_desc=$1; shift
  if "$@"; then _st_ok "$_st_desc"; else _st_fail "$_st_desc"; _st_show; fi
}
_st_show() { # show the last client output and the tail of sshd's log
  sed 's/^/#   ssh: /' "$_ST_DIR/ssh.out" 2>/dev/null | tail -n 8
  sed 's/^/#   sshd: /' "$_ST_DIR/sshd.log" 2>/dev/null | tail -n 6
}
_st_out_has() { grep -Fq -- "$1" "$_ST_DIR/ssh.out"; }

# The value of VAR in the probe block of PAM_TYPE (last such block) or <unset>.
_st_probe_var() { # TYPE VAR
  awk -v t="$1" -v v="$2" '
    /^=== / { inb = ($2 == t); if (inb) { val = "<unset>" } ; next }
    /^--- end/ { if (inb) { last = val; seen = 1 }; inb = 0; next }
    inb && index($0, v "=") == 1 { val = substr($0, length(v) + 2); if (val == "") val = "<empty>" }
    END { if (seen) print last; else print "<no call>" }' "$_ST_DIR/probe.log"
}

_st_probe_date() { # TYPE -> date field of last block
  awk -v t="$1" '/^=== / && $2 == t { for (i = 3; i <= NF; i++) if ($i ~ /^date=/) d = substr($i, 6) } END { print d }' "$_ST_DIR/probe.log"
}

_selftest() {
  local module="" admin=""
  while [ $# -gt 0 ]; do
    case $1 in
      --module) module=$2; shift 2;;
      --admin) admin=$2; shift 2;;
      *) echo "usage: $0 selftest [--module PATH [--admin PATH]]" >&2; return 2;;
    esac
  done
  local why
  if ! why=$(sshd_can_run); then echo "SKIP: sshd harness self-test: $why"; return 0; fi

  _ST_DIR=$(mktemp -d /tmp/useraudit-sshd.XXXXXX) || return 1
  # shellcheck disable=SC2064
  trap "sshd_stop '$_ST_DIR'; [ -n \"\${KEEP:-}\" ] || rm -rf '$_ST_DIR'" EXIT
  echo "# sandbox: $_ST_DIR (set KEEP=1 to keep it)"
  local d=$_ST_DIR

  sshd_sandbox_setup "$d" || { _st_fail "sandbox setup"; return 1; }
  sshd_start "$d" || { _st_fail "sshd starts"; return 1; }
  _st_ok "sshd listens on 127.0.0.1:$(cat "$d/port") inside bwrap"

  # --- 1. pam_unix: right/wrong passwords, both methods, public key ---------
  ssh_password "$d" alice alice-pw echo ok
  _st_check "password: right password logs in and runs 'echo ok'" eval '[ $SSH_RC = 0 ] && _st_out_has ok'
  _st_check "password: sshd logs 'Accepted password'" \
    sshd_wait_log "$d" 'Accepted password for alice from 127\.0\.0\.1'
  ssh_password "$d" alice wrong-pw echo ok
  _st_check "password: wrong password is refused" eval '[ $SSH_RC != 0 ] && _st_out_has "Permission denied" && ! grep -qx ok "$d/ssh.out"'
  _st_check "password: sshd logs 'Failed password'" sshd_wait_log "$d" 'Failed password for alice'
  ssh_kbdint "$d" bob bob-pw echo ok
  _st_check "keyboard-interactive: right password logs in" eval '[ $SSH_RC = 0 ] && _st_out_has ok'
  _st_check "keyboard-interactive: sshd logs 'Accepted keyboard-interactive/pam'" \
    sshd_wait_log "$d" 'Accepted keyboard-interactive/pam for bob'
  ssh_kbdint "$d" bob wrong-pw echo ok
  _st_check "keyboard-interactive: wrong password is refused" eval '[ $SSH_RC != 0 ] && _st_out_has "Permission denied"'
  ssh_pubkey "$d" alice echo ok
  _st_check "publickey: login works" eval '[ $SSH_RC = 0 ] && _st_out_has ok'
  ssh_pubkey "$d" carol echo ok
  _st_check "publickey: user without the key is refused" eval '[ $SSH_RC != 0 ]'
  ssh_password "$d" nosuchuser whatever echo ok
  _st_check "password: unknown user is refused" eval '[ $SSH_RC != 0 ]'
  if [ -f "$d/syslog.sock" ] || [ -f "$d/syslog.pid" ]; then
    _st_check "syslog from PAM modules is captured in DIR/syslog.log" \
      grep -q 'pam_unix(sshd:auth): authentication failure' "$d/syslog.log"
  else
    echo "# note: python3 missing: module syslog is not captured"
  fi

  # --- 2. account pam_deny refuses every method ------------------------------
  sshd_set_pam "$d" "auth required pam_unix.so
account required pam_deny.so
session required pam_unix.so"
  ssh_pubkey "$d" alice echo ok
  _st_check "account pam_deny: public-key login is refused" eval '[ $SSH_RC != 0 ] && ! grep -qx ok "$d/ssh.out"'
  _st_check "account pam_deny: sshd logs 'Access denied ... by PAM account configuration'" \
    sshd_wait_log "$d" 'Access denied for user alice by PAM account configuration'
  ssh_password "$d" alice alice-pw echo ok
  _st_check "account pam_deny: right password is refused" eval '[ $SSH_RC != 0 ]'
  ssh_kbdint "$d" alice alice-pw echo ok
  _st_check "account pam_deny: keyboard-interactive is refused" eval '[ $SSH_RC != 0 ]'

  # --- 3. probe: items, PAM environment, messages ----------------------------
  sshd_set_pam "$d" "auth optional pam_exec.so quiet @PROBE@
auth required pam_unix.so
account optional pam_exec.so quiet @PROBE@
account required pam_unix.so
account optional pam_echo.so ACCOUNT-STACK-INFO for %u from %H
session optional pam_exec.so quiet @PROBE@
session required pam_unix.so"
  local m rc
  declare -A ainfo_auth ainfo_acct ainfo_sess rhost
  for m in password kbdint pubkey; do
    : > "$d/probe.log"
    case $m in
      password) ssh_password "$d" alice alice-pw echo ok;;
      kbdint)   ssh_kbdint "$d" alice alice-pw echo ok;;
      pubkey)   ssh_pubkey "$d" alice echo ok;;
    esac
    rc=$?
    _st_check "$m: login with probe stack" eval "[ $rc = 0 ]"
    _st_check "$m: account-stack TEXT_INFO (pam_echo) reaches the client" \
      _st_out_has "ACCOUNT-STACK-INFO for alice from 127.0.0.1"
    sleep 0.3  # session probe runs as the session starts
    ainfo_auth[$m]=$(_st_probe_var auth SSH_AUTH_INFO_0)
    ainfo_acct[$m]=$(_st_probe_var account SSH_AUTH_INFO_0)
    ainfo_sess[$m]=$(_st_probe_var open_session SSH_AUTH_INFO_0)
    rhost[$m]=$(_st_probe_var account PAM_RHOST)
    _st_check "$m: PAM_RHOST is 127.0.0.1 (UseDNS no)" eval "[ '${rhost[$m]}' = 127.0.0.1 ]"
    _st_check "$m: PAM_SERVICE is sshd" eval '[ "$(_st_probe_var account PAM_SERVICE)" = sshd ]'
  done
  echo "# SSH_AUTH_INFO_0 as PAM modules see it (pam_getenv):"
  printf '#   %-8s auth=%-10s account=%-10s session=%s\n' \
    password "${ainfo_auth[password]}" "${ainfo_acct[password]}" "${ainfo_sess[password]}" \
    kbdint "${ainfo_auth[kbdint]}" "${ainfo_acct[kbdint]}" "${ainfo_sess[kbdint]}" \
    pubkey "${ainfo_auth[pubkey]}" "${ainfo_acct[pubkey]}" "${ainfo_sess[pubkey]}"
  _st_check "SSH_AUTH_INFO_0 in session: password / keyboard-interactive/pam / publickey <key>" eval \
    '[ "${ainfo_sess[password]}" = password ] && [ "${ainfo_sess[kbdint]}" = keyboard-interactive/pam ] && [[ "${ainfo_sess[pubkey]}" == "publickey ssh-ed25519 "* ]]'
  _st_check "SSH_AUTH_INFO_0 in the account stack is empty for every method (OpenSSH 9.2)" eval \
    '[ "${ainfo_acct[password]}" = "<empty>" ] && [ "${ainfo_acct[kbdint]}" = "<empty>" ] && [ "${ainfo_acct[pubkey]}" = "<empty>" ]'
  _st_check "publickey: the auth stack is not called" eval '[ "${ainfo_auth[pubkey]}" = "<no call>" ]'
  : > "$d/probe.log"
  ssh_password "$d" alice wrong-pw echo ok
  _st_check "wrong password: auth probe ran, account probe did not" eval \
    '[ "$(_st_probe_var auth PAM_USER)" = alice ] && [ "$(_st_probe_var account PAM_USER)" = "<no call>" ]'

  # pam_unix's own expiry warning (password expires in 3 days)
  sshd_shadow_set "$d" carol lastchg "$(sshd_today -7)"
  sshd_shadow_set "$d" carol max 10
  for m in password kbdint; do
    if [ $m = password ]; then ssh_password "$d" carol carol-pw echo ok; else ssh_kbdint "$d" carol carol-pw echo ok; fi
    _st_check "$m: pam_unix password-expiry warning reaches the client" eval \
      '[ $SSH_RC = 0 ] && _st_out_has "Warning: your password will expire in 3 days"'
  done
  SSH_EXTRA_OPTS=-q ssh_password "$d" carol carol-pw echo ok
  _st_check "ssh -q (LogLevel QUIET) hides that warning (it travels as a banner)" eval \
    '[ $SSH_RC = 0 ] && ! _st_out_has "password will expire"'
  sshd_shadow_set "$d" carol max 99999

  # --- 4. pam_faillock side by side (deny=3) ----------------------------------
  sshd_set_pam "$d" "$(sshd_pam_faillock deny=3 unlock_time=0)"
  local i
  for i in 1 2 3; do ssh_password "$d" carol "wrong-$i" echo ok; done
  ssh_password "$d" carol carol-pw echo ok
  _st_check "pam_faillock deny=3: after 3 wrong passwords the right one is refused" eval '[ $SSH_RC != 0 ]'
  sshd_authorize_key "$d" carol
  ssh_pubkey "$d" carol echo ok
  _st_check "pam_faillock deny=3: its account hook does NOT refuse the locked account's key (useraudit must)" \
    eval '[ $SSH_RC = 0 ]'
  rm -f "$d/home/carol/.ssh/authorized_keys"
  sshd_set_pam "$d" "auth optional pam_exec.so quiet @PROBE@
auth required pam_unix.so
account optional pam_exec.so quiet @PROBE@
account required pam_unix.so
session required pam_unix.so"

  # --- 5. time travel ---------------------------------------------------------
  sshd_shadow_set "$d" bob expire "$(sshd_today 50)"   # bob's account expires in 50 days
  ssh_password "$d" bob bob-pw echo ok
  _st_check "faketime off: bob (expires in 50 days) logs in" eval '[ $SSH_RC = 0 ]'
  local real_day; real_day=$(date -u +%F)
  : > "$d/probe.log"
  sshd_time_travel "$d" +100d   # restarts sshd with libfaketime (file mode)
  _st_check "sshd restarted with libfaketime" eval '[ -f "$d/sshd.faketime" ]'
  ssh_password "$d" bob bob-pw date -u +%F
  rc=$?
  _st_check "faketime +100d: pam_unix (in sshd) sees the moved clock: bob's account expired" eval \
    "[ $rc != 0 ] && _st_out_has 'Your account has expired'"
  ssh_pubkey "$d" bob echo ok
  _st_check "faketime +100d: expired bob's public-key login is refused too" eval '[ $SSH_RC != 0 ]'
  ssh_password "$d" alice alice-pw date -u +%F
  _st_check "faketime +100d: the user's session does not see the moved clock" eval \
    "[ \$SSH_RC = 0 ] && grep -qx '$real_day' '$d/ssh.out'"
  _st_check "faketime +100d: pam_exec scripts do not see the moved clock" eval \
    "[[ \"\$(_st_probe_date account)\" == '$real_day'* ]]"
  sshd_time_travel "$d" +0      # live: no restart
  ssh_password "$d" bob bob-pw echo ok
  _st_check "faketime +0 (changed live through DIR/faketime): bob logs in again" eval '[ $SSH_RC = 0 ]'
  sshd_stop "$d"
  rm -f "$d/faketime"
  sshd_start "$d" FAKETIME=+100d
  ssh_kbdint "$d" bob bob-pw echo ok
  _st_check "sshd_start DIR FAKETIME=+100d: keyboard-interactive sees the moved clock" eval \
    '[ $SSH_RC != 0 ] && _st_out_has "Your account has expired"'
  sshd_stop "$d"
  _st_check "sshd_stop: nothing of the sandbox is left listening" eval '! _sshd_port_busy "$(cat "$d/port")"'

  # --- 6. optional: the real module -------------------------------------------
  if [ -n "$module" ]; then
    _selftest_module "$d" "$module" "$admin"
  fi

  echo "$_ST_PASS passed, $_ST_FAIL failed"
  [ "$_ST_FAIL" = 0 ]
}

# Smoke run of pam_useraudit.so in the README's stack (not the full e2e test).
_selftest_module() { # DIR MODULE ADMIN
  local d=$1 module=$2 admin=$3
  case $module in /*) ;; *) module=$PWD/$module;; esac
  [ -f "$module" ] || { _st_fail "module $module exists"; return; }
  sshd_shadow_set "$d" bob expire ""
  rm -f "$d/faketime"
  sshd_set_pam "$d" "$(sshd_pam_useraudit "$module" "db=@DIR@/useraudit.db" login_failure_limit=3)"
  sshd_start "$d" || { _st_fail "sshd starts with the module"; return; }
  ssh_password "$d" alice alice-pw echo ok
  _st_check "module: right password logs in" eval '[ $SSH_RC = 0 ] && _st_out_has ok'
  local i
  for i in 1 2 3; do ssh_password "$d" bob "wrong-$i" echo ok; done
  ssh_password "$d" bob bob-pw echo ok
  _st_check "module: after 3 wrong passwords the right one is refused" eval '[ $SSH_RC != 0 ]'
  ssh_pubkey "$d" bob echo ok
  _st_check "module: public-key login of the locked account is refused" eval '[ $SSH_RC != 0 ]'
  if [ -n "$admin" ]; then
    "$admin" --db "$d/useraudit.db" log --format json > "$d/admin-log.json" 2>&1
    _st_check "module: useraudit-admin log shows service sshd and rhost 127.0.0.1" eval \
      "grep -q '\"service\": *\"sshd\"' '$d/admin-log.json' && grep -q '\"rhost\": *\"127.0.0.1\"' '$d/admin-log.json'"
    sed 's/^/#   log: /' "$d/admin-log.json" | head -n 20
  fi
  sshd_stop "$d"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  case ${1:-} in
    selftest) shift; _selftest "$@"; exit $?;;
    *) echo "usage: $0 selftest [--module PATH [--admin PATH]]   (or source it as a library)" >&2; exit 2;;
  esac
fi
