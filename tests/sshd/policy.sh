#!/usr/bin/env bash
# tests/sshd/policy.sh — policy cases that need the real programs, inside
# bubblewrap with the sandbox's own /etc/pam.d, passwd, group and shadow
# (tests/sshd/harness.sh), with the REAL module
# (target/release/libpam_useraudit.so; USERAUDIT_SO=PATH for another build)
# and the real pam_unix:
#   1. root's su and runuser (util-linux) to an account locked by
#      login_failure_limit work and are logged (ruser root); a lock by hand
#      still refuses su;
#   2. sshd: which PAM messages reach the client. With the password method
#      a refused user sees only "Permission denied"; keyboard-interactive
#      and public keys show the module's message;
#   3. sshd: a login asked for a new password (PAM_NEW_AUTHTOK_REQD) whose
#      change does not happen (no tty; a client that cannot answer the
#      change prompts) is logged as a failure (password_expired), moves
#      neither the count nor last_login, and does not use up the chance
#      given by `activate`;
#   4. sshd: the change done in the same keyboard-interactive login
#      (pam_matrix keeps the passwords; a pty driver answers the prompts):
#      the demand is a failure, the password hook logs the completed login
#      as a success and only then resets the count and sets last_login.
#
# Usage: bash tests/sshd/policy.sh   (root only; prints "SKIP: ..." and exits
#        0 otherwise). KEEP=1 keeps the sandbox. Last line "N passed, M
#        failed"; exit 1 if any check failed.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD

# shellcheck source=tests/sshd/harness.sh
. tests/sshd/harness.sh

ua_begin "policy end-to-end test" policy su runuser pamtester

show_context() { sed 's/^/#   out: /' "$D/out" 2>/dev/null | tail -n 6; }
out_has() { grep -Fq -- "$1" "$D/out"; }

# Everything below runs in a bwrap that sees the sandbox's accounts and
# PAM configuration, as root (real uid 0).
jail() {
  timeout 60 bwrap --bind / / --dev /dev --proc /proc \
    --bind "$D/pam.d" /etc/pam.d \
    --bind "$D/etc/passwd" /etc/passwd --bind "$D/etc/group" /etc/group \
    --bind "$D/etc/shadow" /etc/shadow --bind "$D/home" /home \
    --tmpfs /run --unshare-pid --die-with-parent "$@"
}
# UA_FAKETIME=OFFSET: on sshd's moved clock.
ua_admin() {
  local -a ft=()
  [ -z "${UA_FAKETIME:-}" ] || ft=(env "LD_PRELOAD=$LIBFAKETIME" "FAKETIME=$UA_FAKETIME" FAKETIME_DONT_FAKE_MONOTONIC=1)
  jail "${ft[@]}" "$ADMIN" --conf "$CONF" --db "$DB" "$@"
}
# newest log entry of USER: field=value ...
expect_last() { # DESC USER FIELD=VALUE...
  local desc=$1 user=$2; shift 2
  local res
  res=$(ua_admin log --user "$user" --limit 1 --format json 2>&1 | "$PY" -c '
import json, sys
want = dict(kv.split("=", 1) for kv in sys.argv[1:])
try:
    e = json.load(sys.stdin)[0]
except Exception as ex:
    print("no log entry: %s" % ex); sys.exit(1)
bad = ["%s=%r (want %r)" % (k, e.get(k), v) for k, v in want.items()
       if str(e.get(k)) != v and not (v == "null" and e.get(k) is None)]
if bad:
    print("%s: %s" % (json.dumps(e), "; ".join(bad))); sys.exit(1)
' "$@")
  if [ $? = 0 ]; then ok "$desc"; else fail "$desc"; echo "#   $res"; fi
}
entries() { ua_admin log --user "$1" --format json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
status_field() { ua_admin status "$1" --format json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)[0][sys.argv[1]])' "$2"; }

cat > "$CONF" <<'EOF'
# tests/sshd/policy.sh sandbox configuration
login_failure_limit = 3
password_expiry_days = 10
password_change_source = "useraudit"
password_expired_action = "disable"
EOF
chmod 644 "$CONF"
ARGS="conf=@DIR@/useraudit.toml db=@DIR@/state/useraudit.db"
STACK=$(sshd_pam_useraudit "$MODULE" "$ARGS")
sshd_sandbox_setup "$D" "$STACK" || ua_abort "sandbox setup"
# su and runuser as Debian ships them (pam_rootok first), around the
# module's stack; "guess" is the same stack without pam_rootok, to lock an
# account with wrong passwords through pam_unix.
for s in su su-l runuser runuser-l; do
  { echo "auth     sufficient                  pam_rootok.so"; printf '%s\n' "${STACK//@DIR@/$D}"; } > "$D/pam.d/$s"
done
printf '%s\n' "${STACK//@DIR@/$D}" > "$D/pam.d/guess"
chmod 644 "$D/pam.d/"*

# --- 1. root's su and runuser ------------------------------------------------
for i in 1 2 3; do
  echo "wrong-$i" | jail pamtester -I rhost=203.0.113.9 guess bob authenticate > "$D/out" 2>&1
done
ua_expect_status "3 wrong passwords (pam_unix) lock bob" bob state=locked reason=login_failure_limit failures=3
echo bob-pw | jail pamtester -I rhost=203.0.113.9 guess bob authenticate acct_mgmt > "$D/out" 2>&1
rc=$?
check "locked: bob's right password is refused" eval '[ $rc != 0 ] && out_has "The account is locked"'

jail su bob -c 'echo su-ok; id -un' > "$D/out" 2>&1
check "root's su to locked bob runs the command" eval 'out_has su-ok && grep -qx bob "$D/out"'
expect_last "logged: success, service su, ruser root (util-linux su sets PAM_RUSER), no rhost" bob \
  outcome=success service=su ruser=root rhost=null reason=null
ua_expect_status "the lock stays (state locked, 3 failures)" bob state=locked failures=3
jail su - bob -c 'echo su-l-ok' > "$D/out" 2>&1
check "root's su - (service su-l) to locked bob runs the command" out_has su-l-ok
expect_last "logged: success, service su-l" bob outcome=success service=su-l ruser=root
n=$(entries bob)
jail runuser -u bob -- sh -c 'echo runuser-ok' > "$D/out" 2>&1
check "root's runuser -u to locked bob runs the command" out_has runuser-ok
jail runuser -l bob -c 'echo runuser-l-ok' > "$D/out" 2>&1
check "root's runuser -l to locked bob runs the command" out_has runuser-l-ok
check "runuser calls neither the auth nor the account stack: nothing logged" eval '[ "$(entries bob)" = "$n" ]'

ua_admin lock carol --reason test >/dev/null
jail su carol -c 'echo su-ok' > "$D/out" 2>&1
check "disabled by hand: root's su to carol is refused" eval '! out_has su-ok'
expect_last "logged: failure, reason disabled" carol outcome=failure service=su reason=disabled
ua_admin activate carol bob >/dev/null

# --- 2. sshd: which messages reach the client --------------------------------
sshd_time_travel "$D" +0
sshd_start "$D" || ua_abort "sshd starts"
ok "sshd with the module listens in bwrap"
sshout() { cp "$D/ssh.out" "$D/out"; }
for i in 1 2 3; do ssh_password "$D" bob "wrong-$i" true; done
ua_expect_status "sshd: 3 wrong passwords lock bob" bob state=locked
LOCKED="The account is locked due to 3 failed logins."
ssh_password "$D" bob bob-pw echo logged-in; sshout
check "password method, locked: refused with only 'Permission denied' (no message)" \
  eval '[ $SSH_RC != 0 ] && out_has "Permission denied" && ! out_has "$LOCKED"'
ssh_kbdint "$D" bob bob-pw echo logged-in; sshout
check "keyboard-interactive, locked: the client is told '$LOCKED'" eval '[ $SSH_RC != 0 ] && out_has "$LOCKED"'
ssh_pubkey "$D" bob echo logged-in; sshout
check "publickey, locked: the client is told '$LOCKED'" eval '[ $SSH_RC != 0 ] && out_has "$LOCKED"'

# carol: password older than 10 days (counts from her first login, today)
ssh_password "$D" carol carol-pw echo logged-in
sshd_time_travel "$D" +11d
EXPIRED="Your password has expired and your account has been disabled"
ssh_password "$D" carol carol-pw echo logged-in; sshout
check "password method, expired: disabled, and only 'Permission denied' is shown" \
  eval '[ $SSH_RC != 0 ] && out_has "Permission denied" && ! out_has "$EXPIRED"'
ua_expect_status "carol is disabled (password_expired)" carol state=disabled reason=password_expired
ssh_kbdint "$D" carol carol-pw echo logged-in; sshout
check "keyboard-interactive, disabled: the client is told why" eval '[ $SSH_RC != 0 ] && out_has "$EXPIRED"'

# --- 3. sshd: a demanded change that does not happen ---------------------------
# activate gives carol one chance to change her password; it lasts until
# she has changed it.
UA_FAKETIME=+11d ua_admin activate carol >/dev/null
before=$(entries carol); last_login=$(status_field carol last_login)
ssh_password "$D" carol carol-pw echo logged-in; sshout
check "password, no tty: the change cannot happen, refused" eval '[ $SSH_RC != 0 ] && ! grep -qx logged-in "$D/out"'
check "sshd: 'Password change required but no TTY available'" out_has "Password change required but no TTY available"
expect_last "logged as a failure, reason password_expired (not a success)" carol outcome=failure reason=password_expired auth_method=password
check "one entry for that login" eval '[ "$(entries carol)" = $((before + 1)) ]'
ua_expect_status "not disabled; last_login unchanged" carol state=active last_login="$last_login"
ssh_kbdint "$D" carol carol-pw echo logged-in; sshout
check "keyboard-interactive: asked for a new password, the client cannot answer: refused" \
  eval '[ $SSH_RC != 0 ] && ! grep -qx logged-in "$D/out"'
expect_last "logged as a failure, reason password_expired" carol outcome=failure reason=password_expired auth_method=keyboard-interactive/pam
ua_expect_status "the chance is still there: active, last_login unchanged" carol state=active last_login="$last_login"
ssh_password "$D" carol carol-pw echo logged-in; sshout
check "and again: change demanded, not disabled" out_has "Password change required but no TTY available"
ua_expect_status "still active" carol state=active

# --- 4. sshd: the change done in the same login ---------------------------------
# pam_unix cannot write the bind-mounted shadow file, so pam_matrix (from
# libpam-wrapper, a plain PAM module) keeps the passwords here, for the auth
# and password stacks; the module's lines are as before. A pty driver
# answers the keyboard-interactive prompts, the change prompts included.
MATRIX=/usr/lib/x86_64-linux-gnu/pam_wrapper/pam_matrix.so
if [ -f "$MATRIX" ]; then
  printf 'bob:bob-pw:sshd\n' > "$D/passdb"; chmod 600 "$D/passdb"
  sshd_set_pam "$D" "auth     requisite                   $MODULE preauth $ARGS
auth     [success=1 default=ignore]  $MATRIX passdb=@DIR@/passdb
auth     [default=die]               $MODULE authfail $ARGS
auth     sufficient                  $MODULE authsucc $ARGS
auth     required                    pam_deny.so
account  required                    $MODULE $ARGS
password required                    $MATRIX passdb=@DIR@/passdb
password optional                    $MODULE $ARGS
session  required                    pam_unix.so"
  sed -i 's/^password_expired_action = .*/password_expired_action = "change"/' "$CONF"
  UA_FAKETIME=+11d ua_admin activate bob >/dev/null
  cat > "$D/kbdint.py" <<'PY'
# ssh by keyboard-interactive on a pty; answers each prompt from the list
# of (prompt substring, answer) pairs given as arguments; prints the
# session; exits with ssh's status.
import os, pty, sys, time
answers = [a.split("=", 1) for a in sys.argv[1].split("\n") if a]
cmd = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    os.execvp(cmd[0], cmd)
buf, seen, deadline = b"", 0, time.time() + 30
while time.time() < deadline:
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    buf += data
    tail = buf[seen:].decode(errors="replace")
    if tail.rstrip().endswith(":"):
        for key, ans in answers:
            if key.lower() in tail.lower():
                os.write(fd, ans.encode() + b"\n")
                seen = len(buf)
                break
sys.stdout.write(buf.decode(errors="replace"))
_, st = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(st))
PY
  kbdint_tty() { # USER ANSWERS CMD...
    local user=$1 answers=$2; shift 2
    _ssh_common_opts "$D"
    timeout 60 "$PY" "$D/kbdint.py" "$answers" "$SSHD_SSH" "${_SSH_OPTS[@]}" \
      -o PreferredAuthentications=keyboard-interactive -o KbdInteractiveAuthentication=yes \
      -o PasswordAuthentication=no -o PubkeyAuthentication=no "$user@127.0.0.1" "$@" > "$D/out" 2>&1
  }
  before=$(entries bob)
  kbdint_tty bob $'new password=fresh-pw-1\nverify=fresh-pw-1\nretype=fresh-pw-1\nold password=bob-pw\npassword=bob-pw' echo logged-in
  rc=$?
  check "keyboard-interactive: bob is asked for a new password, changes it and logs in" \
    eval '[ $rc = 0 ] && grep -q "^logged-in" "$D/out" && grep -q "bob:fresh-pw-1:sshd" "$D/passdb"'
  check "two entries: the demand, then the completed login" eval '[ "$(entries bob)" = $((before + 2)) ]'
  expect_last "the completed login is logged as a success by the password hook" bob \
    outcome=success reason=null service=sshd rhost=127.0.0.1 auth_method=keyboard-interactive/pam
  ua_expect_status "the count is reset and the change recorded" bob state=active failures=0
  check "last_login is the completed login, password_changed is set" eval \
    '[ "$(status_field bob last_login)" = "$(ua_admin log --user bob --limit 1 --format json | "$PY" -c "import json,sys; print(json.load(sys.stdin)[0][\"time\"])")" ] && [ "$(status_field bob password_changed)" != None ]'
  kbdint_tty bob $'password=fresh-pw-1' echo logged-in
  rc=$?
  check "the next login with the new password is plain" eval '[ $rc = 0 ] && grep -q "^logged-in" "$D/out" && ! grep -qi "new password" "$D/out"'
  expect_last "logged as a success" bob outcome=success reason=null
else
  echo "# skipped section 4: $MATRIX missing (Debian: libpam-wrapper)"
fi

ua_finish
