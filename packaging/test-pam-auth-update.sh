#!/bin/bash
# Check the pam-auth-update profiles in packaging/pam-configs/ with the real
# pam-auth-update (Debian's libpam-runtime), never on the live system:
# everything runs inside bubblewrap with the root file system read-only and
# writable COPIES bound over /etc/pam.d, /usr/share/pam-configs, /var/lib/pam
# and /var/cache/debconf.
#
# For each scenario (the profiles installed on this machine, and the same plus
# two extra "Primary" password modules at other priorities) it checks:
#   1. install (`pam-auth-update --package`, as postinst does): line order and
#      jump counts in common-auth, common-account, common-password;
#   2. remove (`pam-auth-update --package --remove ...`, as prerm does, then
#      the profile files disappear, as dpkg does): every common-* file and
#      the saved state in /var/lib/pam are byte for byte what they were;
#   3. reinstall gives the same files as the first install.
# Then it runs the generated stacks with the real libpam (pamtester): pam_unix
# is replaced by pam_matrix (password file) and pam_useraudit by pam_exec with a
# stub that records which mode was called, so the control flow is tested, not
# the module.
#
# Usage: packaging/test-pam-auth-update.sh   (as root)
# Exit status: 0 all checks passed or skipped (a line starting "SKIP:" says
# why), 1 a check failed.
# The checks pass code to eval in single quotes, on purpose:
# shellcheck disable=SC2016,SC2034,SC2317
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
PROFILE_DIR=$HERE/pam-configs
PROFILES=(useraudit useraudit-authfail useraudit-authsucc)

skip() { echo "SKIP: $*"; exit 0; }
[ "$(id -u)" = 0 ] || skip "needs root (bind mounts over /etc/pam.d inside bubblewrap)"
command -v bwrap >/dev/null || skip "bwrap not found (Debian package bubblewrap)"
command -v pam-auth-update >/dev/null || skip "pam-auth-update not found (Debian package libpam-runtime)"
[ -d /usr/share/pam ] || skip "/usr/share/pam templates missing (libpam-runtime)"
bwrap --ro-bind / / --dev /dev --proc /proc true 2>/dev/null \
    || skip "bwrap cannot create a sandbox here"
for p in "${PROFILES[@]}"; do
    [ -f "$PROFILE_DIR/$p" ] || { echo "FAIL: missing $PROFILE_DIR/$p"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/useraudit-pau.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

FAILED=0
ok() { echo "ok   - $*"; }
not_ok() { echo "FAIL - $*"; FAILED=1; }
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then ok "$what"; else not_ok "$what"; fi
}

# ---- sandbox -------------------------------------------------------------

# new_root DIR: writable copies of everything pam-auth-update writes.
new_root() {
    local r=$1
    mkdir -p "$r"
    cp -a /etc/pam.d "$r/pam.d"
    cp -a /usr/share/pam-configs "$r/pam-configs"
    if [ -d /var/lib/pam ]; then cp -a /var/lib/pam "$r/varlibpam"; else mkdir "$r/varlibpam"; fi
    cp -a /var/cache/debconf "$r/debconf"
}

# in_root DIR COMMAND...: run COMMAND with DIR's copies in place. The rest of
# the file system is read-only, so a mistake cannot reach the host.
in_root() {
    local r=$1; shift
    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp \
        --bind "$r/pam.d" /etc/pam.d \
        --bind "$r/pam-configs" /usr/share/pam-configs \
        --bind "$r/varlibpam" /var/lib/pam \
        --bind "$r/debconf" /var/cache/debconf \
        --bind "$r" /tmp/root \
        --setenv DEBIAN_FRONTEND noninteractive \
        --setenv DEBCONF_NONINTERACTIVE_SEEN true \
        "$@"
}

pau() { # pau DIR ARGS...
    local r=$1; shift
    in_root "$r" pam-auth-update "$@" </dev/null
}

snapshot() { # snapshot DIR NAME: keep common-* and /var/lib/pam state
    local r=$1 n=$2
    rm -rf "${r:?}/$n"; mkdir -p "$r/$n/pam.d" "$r/$n/varlibpam"
    cp -a "$r"/pam.d/common-* "$r/$n/pam.d/"
    cp -a "$r"/varlibpam/. "$r/$n/varlibpam/"
}

same_as() { # same_as DIR NAME: common-* and saved state identical to snapshot
    local r=$1 n=$2 f rc=0
    for f in "$r/$n"/pam.d/common-*; do
        cmp -s "$f" "$r/pam.d/$(basename "$f")" || { echo "     differs: /etc/pam.d/$(basename "$f")"; diff -u "$f" "$r/pam.d/$(basename "$f")" | sed 's/^/     /' || true; rc=1; }
    done
    for f in auth account password session session-noninteractive; do
        [ -e "$r/$n/varlibpam/$f" ] || continue
        cmp -s "$r/$n/varlibpam/$f" "$r/varlibpam/$f" || { echo "     differs: /var/lib/pam/$f"; rc=1; }
    done
    return "$rc"
}

show() { # show FILE TYPE: the PAM lines of one common-* file
    echo "  --- /etc/pam.d/$(basename "$1")"
    grep -E "^$2[[:space:]]" "$1" | sed 's/^/  | /'
}

# ---- parsing a generated stack -----------------------------------------------

# load FILE TYPE: fill CTL[i], MOD[i], ARGS[i] with the stack's lines in order.
load() {
    CTL=(); MOD=(); ARGS=()
    local line re='^[a-z-]+[[:space:]]+(\[[^]]*\]|[a-z]+)[[:space:]]+([^[:space:]]+)[[:space:]]*(.*)$'
    while IFS= read -r line; do
        [[ $line =~ $re ]] || continue
        CTL+=("${BASH_REMATCH[1]}"); MOD+=("${BASH_REMATCH[2]}")
        ARGS+=("$(echo "${BASH_REMATCH[3]}" | sed 's/[[:space:]]*$//')")
    done < <(grep -E "^$2[[:space:]]" "$1")
}

# find_line MODULE [FIRST_ARG]: index of the first matching line, or -1.
find_line() {
    local i
    for i in "${!MOD[@]}"; do
        [ "$(basename "${MOD[$i]}")" = "$1" ] || continue
        if [ $# -ge 2 ]; then
            [ "${ARGS[$i]%% *}" = "$2" ] || continue
        fi
        echo "$i"; return
    done
    echo -1
}

# jump_target I: where success=N on line I lands (I+N+1), or -1 without a jump.
jump_target() {
    local c=${CTL[$1]}
    if [[ $c =~ success=([0-9]+) ]]; then echo $(( $1 + BASH_REMATCH[1] + 1 )); else echo -1; fi
}

lt() { [ "$1" -ge 0 ] && [ "$2" -ge 0 ] && [ "$1" -lt "$2" ]; }
eq() { [ "$1" = "$2" ]; }

check_auth() {
    local f=$1 P U F D M S i t bad=0
    load "$f" auth
    P=$(find_line pam_useraudit.so preauth); U=$(find_line pam_unix.so)
    F=$(find_line pam_useraudit.so authfail); S=$(find_line pam_useraudit.so authsucc)
    D=$(find_line pam_deny.so); M=$(find_line pam_permit.so)
    check "auth: preauth is requisite and comes before pam_unix" eval 'lt "$P" "$U" && eq "${CTL[$P]}" requisite'
    check "auth: no module before preauth" eq "$P" 0
    check "auth: authfail is [default=die], after pam_unix, last before pam_deny" \
        eval 'lt "$U" "$F" && eq "${CTL[$F]}" "[default=die]" && eq "$D" $((F + 1)) && eq "${CTL[$D]}" requisite'
    check "auth: pam_permit follows pam_deny" eq "$M" $((D + 1))
    # every password module between preauth and authfail must jump over
    # authfail and pam_deny, onto pam_permit, when it succeeds
    for ((i = P + 1; i < F; i++)); do
        t=$(jump_target "$i")
        if [ "$t" != "$M" ]; then
            echo "     line $i (${MOD[$i]}): success lands on line $t, pam_permit is $M"; bad=1
        fi
    done
    check "auth: success of every password module skips authfail and lands on pam_permit" eq "$bad" 0
    check "auth: authsucc is required, after pam_permit (Additional block)" eval 'lt "$M" "$S" && eq "${CTL[$S]}" required'
}

check_account() {
    local f=$1 A U D M
    load "$f" account
    A=$(find_line pam_useraudit.so); U=$(find_line pam_unix.so)
    D=$(find_line pam_deny.so); M=$(find_line pam_permit.so)
    check "account: pam_useraudit is required and comes first, before pam_unix" \
        eval 'eq "$A" 0 && lt "$A" "$U" && eq "${CTL[$A]}" required && eq "${ARGS[$A]}" ""'
    check "account: pam_unix success lands on pam_permit" eq "$(jump_target "$U")" "$M"
}

check_password() {
    local f=$1 W U M
    load "$f" password
    W=$(find_line pam_useraudit.so); U=$(find_line pam_unix.so); M=$(find_line pam_permit.so)
    check "password: pam_unix success lands on pam_permit" eq "$(jump_target "$U")" "$M"
    check "password: pam_useraudit is optional, after pam_permit (runs only after a successful change)" \
        eval 'lt "$M" "$W" && eq "${CTL[$W]}" optional'
}

# ---- one scenario ----------------------------------------------------------------

# scenario NAME [EXTRA_PROFILE_FILES...]
scenario() {
    local name=$1; shift
    local r=$WORK/$name out p
    echo "== scenario: $name"
    new_root "$r"
    for p in "$@"; do cp "$p" "$r/pam-configs/"; done

    out=$(pau "$r" --package 2>&1) || { echo "$out"; not_ok "$name: baseline pam-auth-update --package"; return; }
    if grep -q "Local modifications" <<<"$out"; then
        echo "  note: this machine's /etc/pam.d/common-* are locally modified; pam-auth-update"
        echo "        would leave them alone. The baseline is rebuilt with --force (in the copy only)."
        pau "$r" --force >/dev/null 2>&1 || { not_ok "$name: baseline pam-auth-update --force"; return; }
    fi
    snapshot "$r" before

    for p in "${PROFILES[@]}"; do cp "$PROFILE_DIR/$p" "$r/pam-configs/"; done
    out=$(pau "$r" --package 2>&1) || { echo "$out"; not_ok "$name: install: pam-auth-update --package"; return; }
    [ -z "$out" ] || echo "$out" | sed 's/^/  pam-auth-update: /'
    show "$r/pam.d/common-auth" auth
    show "$r/pam.d/common-account" account
    show "$r/pam.d/common-password" password
    check_auth "$r/pam.d/common-auth"
    check_account "$r/pam.d/common-account"
    check_password "$r/pam.d/common-password"
    check "session stacks untouched" eval 'cmp -s "$r/before/pam.d/common-session" "$r/pam.d/common-session" && cmp -s "$r/before/pam.d/common-session-noninteractive" "$r/pam.d/common-session-noninteractive"'
    snapshot "$r" installed

    pau "$r" --package --remove "${PROFILES[@]}" >/dev/null 2>&1 || not_ok "$name: remove: pam-auth-update --package --remove"
    check "remove (prerm): every common-* file and /var/lib/pam state as before install" same_as "$r" before
    check "remove: no pam_useraudit line left" eval '! grep -q pam_useraudit "$r"/pam.d/common-*'
    for p in "${PROFILES[@]}"; do rm -f "$r/pam-configs/$p"; done
    pau "$r" --package >/dev/null 2>&1 || not_ok "$name: pam-auth-update --package after the profiles are gone"
    check "profiles deleted (dpkg), pam-auth-update run again: still as before install" same_as "$r" before

    for p in "${PROFILES[@]}"; do cp "$PROFILE_DIR/$p" "$r/pam-configs/"; done
    pau "$r" --package >/dev/null 2>&1 || not_ok "$name: reinstall: pam-auth-update --package"
    check "reinstall enables the profiles again, same files as the first install" same_as "$r" installed
    pau "$r" --package --remove "${PROFILES[@]}" >/dev/null 2>&1 || true
    check "second remove: as before install" same_as "$r" before

    if [ "$name" = system ]; then
        for p in "${PROFILES[@]}"; do cp "$PROFILE_DIR/$p" "$r/pam-configs/"; done
        pau "$r" --package >/dev/null 2>&1
        functional "$r"
    fi
}

# ---- running the generated stacks with real libpam ------------------------------

pt() { # pt DIR USER PASSWORD-INPUT OPERATION...: pamtester inside the sandbox
    local r=$1 user=$2 input=$3; shift 3
    : > "$r/calls"
    printf '%b' "$input" | in_root "$r" --bind "$r/func" /etc/pam.d \
        timeout 20 pamtester uatest "$user" "$@" >"$r/pt.out" 2>&1
}

calls() { tr '\n' ';' < "$1/calls"; }

functional() {
    local r=$1 matrix f rc=0
    echo "== running the generated stacks with libpam (pam_matrix for pam_unix, a pam_exec stub for pam_useraudit)"
    command -v pamtester >/dev/null || { echo "SKIP: functional part: pamtester not installed"; return; }
    matrix=$(ls /usr/lib/*/pam_wrapper/pam_matrix.so 2>/dev/null | head -n1 || true)
    [ -n "$matrix" ] || { echo "SKIP: functional part: pam_matrix.so not found (libpam-wrapper)"; return; }

    mkdir -p "$r/func"
    printf 'alice:secret:uatest\nlocked:secret:uatest\n' > "$r/passdb"
    cat > "$r/stub" <<'EOF'
#!/bin/sh
# stands in for pam_useraudit.so: records the call; "locked" is refused
echo "$PAM_TYPE:${1:-}:$PAM_USER" >> /tmp/root/calls
case "${1:-}" in
    preauth) [ "$PAM_USER" = locked ] && exit 1 ;;
    authfail) exit 1 ;;
esac
[ "$PAM_TYPE" = account ] && [ "$PAM_USER" = locked ] && exit 1
exit 0
EOF
    chmod 755 "$r/stub"
    for f in auth account password; do
        sed -E -e "s#[^[:space:]]*pam_unix\.so.*#$matrix passdb=/tmp/root/passdb#" \
               -e "s#pam_useraudit\.so#pam_exec.so quiet /tmp/root/stub#" \
               "$r/pam.d/common-$f" > "$r/func/common-$f"
    done
    printf '@include common-auth\n@include common-account\n@include common-password\n' > "$r/func/uatest"

    pt "$r" alice 'secret\n' authenticate && rc=0 || rc=$?
    check "good password: accepted; preauth then authsucc, authfail skipped  [$(calls "$r")]" \
        eval '[ $rc = 0 ] && [ "$(calls "$r")" = "auth:preauth:alice;auth:authsucc:alice;" ]'
    pt "$r" alice 'wrong\n' authenticate && rc=0 || rc=$?
    check "bad password: refused; preauth then authfail, authsucc not reached  [$(calls "$r")]" \
        eval '[ $rc != 0 ] && [ "$(calls "$r")" = "auth:preauth:alice;auth:authfail:alice;" ]'
    pt "$r" nosuchuser 'secret\n' authenticate && rc=0 || rc=$?
    check "unknown user: refused; reaches authfail  [$(calls "$r")]" \
        eval '[ $rc != 0 ] && [ "$(calls "$r")" = "auth:preauth:nosuchuser;auth:authfail:nosuchuser;" ]'
    pt "$r" locked 'secret\n' authenticate && rc=0 || rc=$?
    check "refused by preauth: stack stops there, right password or not  [$(calls "$r")]" \
        eval '[ $rc != 0 ] && [ "$(calls "$r")" = "auth:preauth:locked;" ]'
    pt "$r" alice '' acct_mgmt && rc=0 || rc=$?
    check "account: allowed; pam_useraudit called  [$(calls "$r")]" \
        eval '[ $rc = 0 ] && [ "$(calls "$r")" = "account::alice;" ]'
    pt "$r" locked '' acct_mgmt && rc=0 || rc=$?
    check "account: a refusal by pam_useraudit refuses the account step  [$(calls "$r")]" \
        eval '[ $rc != 0 ] && [ "$(calls "$r")" = "account::locked;" ]'
    pt "$r" alice 'secret\nnewpass1\nnewpass1\n' chauthtok && rc=0 || rc=$?
    check "password change: pam_useraudit runs after the change  [$(calls "$r")]" \
        eval '[ $rc = 0 ] && [ "$(calls "$r" | grep -o "password::alice;" | head -n1)" = "password::alice;" ] && grep -q "^alice:newpass1:" "$r/passdb"'
    [ "$rc" = 0 ] || sed 's/^/     pamtester: /' "$r/pt.out"
}

# ---- main ------------------------------------------------------------------------

echo "pam-auth-update profiles: ${PROFILES[*]} (from $PROFILE_DIR)"
scenario system

# The same with two more "Primary" password modules, one before and one after
# pam_unix, as libpam-krb5 (704) and libpam-sss (128) would add.
mkdir -p "$WORK/extra"
cat > "$WORK/extra/test-krb5" <<'EOF'
Name: test profile like libpam-krb5
Default: yes
Priority: 704
Auth-Type: Primary
Auth:
	[success=end default=ignore]	pam_krb5.so minimum_uid=1000
Account-Type: Additional
Account:
	required	pam_krb5.so minimum_uid=1000
EOF
cat > "$WORK/extra/test-sss" <<'EOF'
Name: test profile like libpam-sss
Default: yes
Priority: 128
Auth-Type: Primary
Auth:
	[success=end new_authtok_reqd=done default=ignore]	pam_sss.so use_first_pass
Account-Type: Additional
Account:
	[default=bad success=ok user_unknown=ignore]	pam_sss.so
EOF
scenario with-krb5-and-sss "$WORK/extra/test-krb5" "$WORK/extra/test-sss"

if [ "$FAILED" = 0 ]; then
    echo "PASS: pam-auth-update profiles"
    exit 0
fi
echo "FAIL: see the lines marked FAIL above"
exit 1
