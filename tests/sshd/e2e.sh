#!/usr/bin/env bash
# tests/sshd/e2e.sh — pam_useraudit end to end behind Debian's real sshd.
#
# Runs /usr/sbin/sshd on 127.0.0.1 inside bubblewrap (tests/sshd/harness.sh)
# with its own /etc/pam.d/sshd (the README's stack with the REAL module,
# target/release/libpam_useraudit.so), passwd and shadow, drives it with the
# real ssh client, and asserts on what `useraudit-admin log|status --format
# json` then reports:
#   - password logins, right and wrong, by "password" and by
#     "keyboard-interactive/pam": service sshd, rhost 127.0.0.1, the method;
#   - 3 wrong passwords lock the account (login_failure_limit=3); the right
#     password is then refused, and so is a PUBLIC-KEY login (account hook),
#     logged with method "publickey" and reason "locked"; a public-key login
#     of an active account is logged as a success with method "publickey";
#   - the password-expiry warning (password_change_source = "useraudit",
#     password_expiry_days = 10, warning 3) reaches the ssh client at +8 days;
#   - an account not used for 31 days (account_expiry_days = 30) is refused
#     after the right password (reason account_expired); a wrong password
#     does not disable it;
#   - a remote host blocked by `useraudit-admin block` (host_failure_limit
#     set) is refused, public keys too, logged with reason host_blocked.
# sshd's clock is moved with libfaketime (harness: sshd_time_travel).
#
# Usage: bash tests/sshd/e2e.sh        (root only; prints "SKIP: ..." and
#        exits 0 otherwise). KEEP=1 keeps the sandbox directory.
# Tests target/release (USERAUDIT_SO=PATH, USERAUDIT_ADMIN=PATH for another
# build), built with cargo build --release when the module or useraudit-admin
# is missing. Last line: "N passed, M failed"; exit 1 if any check failed.
# About 45 s on 2 cores.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$PWD

# shellcheck source=tests/sshd/harness.sh
. tests/sshd/harness.sh

ua_begin "sshd end-to-end test" e2e

show_context() {
  sed 's/^/#   ssh: /' "$D/ssh.out" 2>/dev/null | tail -n 6
  sed 's/^/#   sshd: /' "$D/sshd.log" 2>/dev/null | tail -n 4
  grep 'pam_useraudit' "$D/syslog.log" 2>/dev/null | tail -n 3 | sed 's/^/#   syslog: /'
}
out_has() { grep -Fq -- "$1" "$D/ssh.out"; }

# useraudit-admin inside a bwrap that sees the sandbox's passwd/group, so it
# resolves the sandbox accounts as the module inside sshd does.
# UA_FAKETIME=OFFSET runs it on sshd's moved clock (libfaketime).
ua_admin() {
  local -a ft=()
  [ -z "${UA_FAKETIME:-}" ] || ft=(env "LD_PRELOAD=$LIBFAKETIME" "FAKETIME=$UA_FAKETIME" FAKETIME_DONT_FAKE_MONOTONIC=1)
  timeout 30 bwrap --bind / / --dev /dev --proc /proc \
    --bind "$D/etc/passwd" /etc/passwd --bind "$D/etc/group" /etc/group \
    "${ft[@]}" "$ADMIN" --conf "$CONF" --db "$DB" "$@"
}

# The id of the newest log entry (0 if none): later checks look only at
# entries made after a mark.
MARK=0
mark() {
  MARK=$(ua_admin log --limit 1 --format json | "$PY" -c 'import json,sys; l=json.load(sys.stdin); print(l[0]["id"] if l else 0)') || MARK=0
}

# expect_new DESC FIELD=VALUE...: since the last mark, exactly one new log
# entry, and it has these fields (VALUE "null" means JSON null;
# days_ahead=N: its time is sshd's clock moved N days). Then marks.
cat > "$D/expect_new.py" <<'PY'
import json, sys
mark = int(sys.argv[1])
want = {}
for kv in sys.argv[2:]:
    k, v = kv.split("=", 1)
    want[k] = None if v == "null" else v
try:
    log = json.load(sys.stdin)
except Exception as e:
    print("bad JSON from useraudit-admin log: %s" % e); sys.exit(1)
new = [e for e in log if e["id"] > mark]
if len(new) != 1:
    print("expected 1 new log entry, got %d: %s" % (len(new), json.dumps(new)))
    sys.exit(1)
e = new[0]
ahead = want.pop("days_ahead", None)
bad = ["%s=%r (want %r)" % (k, e.get(k), v) for k, v in want.items() if e.get(k) != v]
if ahead is not None:
    # the entry's time is sshd's (moved) clock: N days ahead of ours, +-1 h
    import datetime, time
    t = datetime.datetime.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc).timestamp()
    if abs(t - (time.time() + int(ahead) * 86400)) > 3600:
        bad.append("time=%s is not %s days ahead" % (e["time"], ahead))
if bad:
    print("entry %s: %s" % (json.dumps(e), "; ".join(bad)))
    sys.exit(1)
PY
expect_new() {
  local desc=$1; shift
  local res
  res=$(ua_admin log --format json 2>&1 | "$PY" "$D/expect_new.py" "$MARK" "$@")
  if [ $? = 0 ]; then ok "$desc"; else fail "$desc"; echo "#   $res"; show_context; fi
  mark
}

refused() { [ "$SSH_RC" != 0 ] && ! grep -qx 'logged-in' "$D/ssh.out"; }
logged_in() { [ "$SSH_RC" = 0 ] && grep -qx 'logged-in' "$D/ssh.out"; }

# --- sandbox ---------------------------------------------------------------
# The policy lives in the sandbox config; login_failure_limit comes as a
# module argument (it overrides the file), the database as db=.
cat > "$CONF" <<'EOF'
# tests/sshd/e2e.sh sandbox configuration
account_expiry_days = 30
password_expiry_days = 10
password_expiry_warning_days = 3
password_change_source = "useraudit"
EOF
chmod 644 "$CONF"
sshd_sandbox_setup "$D" "$(sshd_pam_useraudit "$MODULE" "conf=@DIR@/useraudit.toml" "db=@DIR@/state/useraudit.db" login_failure_limit=3)" \
  || ua_abort "sandbox setup"
echo "# /etc/pam.d/sshd in the sandbox:"; grep -v '^#' "$D/pam.d/sshd" | sed "s|$ROOT/||; s/^/#   /"
# libfaketime reads the offset from DIR/faketime at every clock call: sshd
# runs with it from the start, and the clock moves later without a restart.
sshd_time_travel "$D" +0
sshd_start "$D" || ua_abort "sshd starts with pam_useraudit"
ok "sshd (with pam_useraudit in /etc/pam.d/sshd) listens on 127.0.0.1:$(cat "$D/port") in bwrap"
mark

# --- 1. password logins, both methods ----------------------------------------
DAY0=$(sshd_today)
ssh_password "$D" alice alice-pw echo logged-in
check "password: alice, right password, logs in" logged_in
expect_new "password: logged as success, service sshd, rhost 127.0.0.1, method password" \
  user=alice outcome=success service=sshd rhost=127.0.0.1 auth_method=password reason=null
ssh_password "$D" alice wrong-pw echo logged-in
check "password: alice, wrong password, refused" refused
expect_new "password: logged as failure (reason auth), method password" \
  user=alice outcome=failure service=sshd rhost=127.0.0.1 auth_method=password reason=auth
ssh_kbdint "$D" alice alice-pw echo logged-in
check "keyboard-interactive: alice, right password, logs in" logged_in
expect_new "keyboard-interactive: logged as success, method keyboard-interactive/pam" \
  user=alice outcome=success service=sshd rhost=127.0.0.1 auth_method=keyboard-interactive/pam reason=null
ssh_kbdint "$D" alice wrong-pw echo logged-in
check "keyboard-interactive: alice, wrong password, refused" refused
expect_new "keyboard-interactive: logged as failure (reason auth), method keyboard-interactive/pam" \
  user=alice outcome=failure service=sshd rhost=127.0.0.1 auth_method=keyboard-interactive/pam reason=auth
ssh_pubkey "$D" alice echo logged-in
check "publickey: alice (active) logs in with her key" logged_in
expect_new "publickey: logged as success by the account hook, method publickey" \
  user=alice outcome=success service=sshd rhost=127.0.0.1 auth_method=publickey reason=null
ssh_password "$D" no-such-user whatever echo logged-in
check "password: a name that is not an account is refused" refused
expect_new "password: a name that is not an account is logged as typed (failure, auth)" \
  user=no-such-user outcome=failure service=sshd rhost=127.0.0.1 reason=auth

# --- 2. the failure limit, and public keys of a locked account ----------------
for i in 1 2 3; do
  if [ $i = 2 ]; then ssh_kbdint "$D" bob "wrong-$i" echo logged-in; else ssh_password "$D" bob "wrong-$i" echo logged-in; fi
  check "limit 3: bob, wrong password $i/3, refused" refused
  expect_new "limit 3: wrong password $i/3 logged (failure, auth)" user=bob outcome=failure service=sshd rhost=127.0.0.1 reason=auth
done
ua_expect_status "limit 3: status bob: locked (login_failure_limit), 3 failures" bob state=locked reason=login_failure_limit failures=3
ssh_password "$D" bob bob-pw echo logged-in
check "locked: bob's right password is refused" refused
expect_new "locked: that attempt is logged (failure, reason locked, method password)" \
  user=bob outcome=failure service=sshd rhost=127.0.0.1 auth_method=password reason=locked
ssh_pubkey "$D" bob echo logged-in
check "locked: bob's PUBLIC-KEY login is refused (account hook)" refused
expect_new "locked: the public-key attempt is logged (failure, reason locked, method publickey)" \
  user=bob outcome=failure service=sshd rhost=127.0.0.1 auth_method=publickey reason=locked
check "locked: sshd says 'Access denied for user bob by PAM account configuration'" \
  sshd_wait_log "$D" 'Access denied for user bob by PAM account configuration'
check "locked: the client is told 'The account is locked due to 3 failed logins.'" \
  out_has "The account is locked due to 3 failed logins."
ua_expect_status "locked: refused attempts do not change the count (3)" bob state=locked failures=3
ssh_pubkey "$D" alice echo logged-in
check "publickey: alice still logs in (only bob is locked)" logged_in
expect_new "publickey: alice's login logged as success, method publickey" user=alice outcome=success auth_method=publickey

# carol logs in once today: her inactivity clock starts.
ssh_password "$D" carol carol-pw echo logged-in
check "carol logs in once (day 0)" logged_in
expect_new "carol's login is logged (success)" user=carol outcome=success auth_method=password

# --- 3. password-expiry warning at +8 days --------------------------------------
# alice's password counts from the first time the module saw her (day 0):
# it expires at day 10, so at +8 days there are 2 days left.
sshd_time_travel "$D" +8d
left=$(( DAY0 + 10 - ($(sshd_today) + 8) ))
if [ "$left" = 1 ]; then WARN="Warning: your password will expire in 1 day."; else WARN="Warning: your password will expire in $left days."; fi
ssh_password "$D" alice alice-pw echo logged-in
check "+8d, password: alice logs in" logged_in
check "+8d, password: the client shows '$WARN'" out_has "$WARN"
expect_new "+8d, password: logged as success, at sshd's clock" user=alice outcome=success auth_method=password days_ahead=8
ssh_kbdint "$D" alice alice-pw echo logged-in
check "+8d, keyboard-interactive: the client shows '$WARN'" eval 'logged_in && out_has "$WARN"'
expect_new "+8d, keyboard-interactive: logged as success, at sshd's clock" user=alice outcome=success auth_method=keyboard-interactive/pam days_ahead=8
ssh_pubkey "$D" alice echo logged-in
check "+8d, publickey: the client shows '$WARN'" eval 'logged_in && out_has "$WARN"'
expect_new "+8d, publickey: logged as success, at sshd's clock" user=alice outcome=success auth_method=publickey days_ahead=8
SSH_EXTRA_OPTS=-q ssh_password "$D" alice alice-pw echo logged-in
check "+8d, ssh -q: the warning is hidden by the client (it travels as a banner)" eval 'logged_in && ! out_has "password will expire"'
mark

# --- 4. inactivity at +31 days ---------------------------------------------------
sshd_time_travel "$D" +31d
ssh_password "$D" carol wrong-pw echo logged-in
check "+31d: carol, wrong password, refused" refused
expect_new "+31d: logged as failure (reason auth)" user=carol outcome=failure reason=auth
ua_expect_status "+31d: a wrong password does not disable carol" carol state=active
ssh_password "$D" carol carol-pw echo logged-in
check "+31d: carol (last login 31 days ago), right password, refused" refused
expect_new "+31d: logged as failure, reason account_expired, method password" \
  user=carol outcome=failure service=sshd rhost=127.0.0.1 auth_method=password reason=account_expired days_ahead=31
ua_expect_status "+31d: status carol: disabled (account_expired)" carol state=disabled reason=account_expired
sshd_authorize_key "$D" carol
ssh_pubkey "$D" carol echo logged-in
check "+31d: carol's public-key login is refused too" refused
expect_new "+31d: logged as failure, reason account_expired, method publickey" \
  user=carol outcome=failure auth_method=publickey reason=account_expired
# Re-activation restarts the inactivity clock (on sshd's clock, +31d). Her
# password, though, counts from day 0 (password_expiry_days = 10): the next
# right password now disables her for that reason instead.
UA_FAKETIME=+31d ua_admin activate carol >/dev/null
ua_expect_status "+31d: useraudit-admin activate carol: active again" carol state=active
mark
ssh_password "$D" carol carol-pw echo logged-in
check "+31d, re-activated: carol's right password is refused (password 31 days old, limit 10)" refused
expect_new "+31d, re-activated: logged with reason password_expired, not account_expired (clock restarted)" \
  user=carol outcome=failure auth_method=password reason=password_expired
ua_expect_status "+31d, re-activated: status carol: disabled (password_expired)" carol state=disabled reason=password_expired

# --- 5. a blocked remote host: refused before PAM's password, keys too ----------
# Host counting on (the module reads the file at every attempt), then
# 127.0.0.1 blocked by hand: a public-key login from it is refused by the
# account hook and logged with reason host_blocked.
echo "host_failure_limit = 100" >> "$CONF"
UA_FAKETIME=+31d ua_admin block 127.0.0.1 --reason e2e >/dev/null
mark
ssh_pubkey "$D" alice echo logged-in
check "blocked host: alice's PUBLIC-KEY login from 127.0.0.1 is refused" refused
expect_new "blocked host: logged as failure, reason host_blocked, method publickey" \
  user=alice outcome=failure service=sshd rhost=127.0.0.1 auth_method=publickey reason=host_blocked
ssh_password "$D" alice alice-pw echo logged-in
check "blocked host: alice's right password from 127.0.0.1 is refused" refused
expect_new "blocked host: the password attempt is logged host_blocked (refused by preauth)" \
  user=alice outcome=failure rhost=127.0.0.1 reason=host_blocked

ua_finish
