#!/usr/bin/env bash
# make install / make uninstall into a throwaway DESTDIR: every file lands
# where the man pages and README say, with the right modes, and uninstall
# takes them away again (keeping the configuration and the state directory).
set -euo pipefail
cd "$(dirname "$0")/.."
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
fail=0 n=0
check() { n=$((n + 1)); if eval "$2"; then echo "ok   - $1"; else echo "FAIL - $1"; fail=$((fail + 1)); fi; }
mode() { stat -c %a "$1"; }

make -s install DESTDIR="$D" PREFIX=/usr >/dev/null
pamdir=$(make -s --no-print-directory print -f Makefile -f - <<<'print: ; @echo $(PAMDIR)')
check "module in the PAM directory ($pamdir)" '[ -f "$D$pamdir/pam_useraudit.so" ] && [ "$(mode "$D$pamdir/pam_useraudit.so")" = 644 ]'
check "module directory is where libpam looks" '[ -f "$pamdir/pam_unix.so" ]'
check "useraudit-admin in /usr/sbin, 0755" '[ "$(mode "$D/usr/sbin/useraudit-admin")" = 755 ]'
check "configuration in /etc/security" '[ -f "$D/etc/security/useraudit.toml" ]'
check "state directory 0700" '[ "$(mode "$D/var/lib/useraudit")" = 700 ]'
check "man pages" '[ -f "$D/usr/share/man/man8/pam_useraudit.8" ] && [ -f "$D/usr/share/man/man8/useraudit-admin.8" ] && [ -f "$D/usr/share/man/man5/useraudit.toml.5" ]'
check "systemd timer and service" '[ -f "$D/usr/lib/systemd/system/useraudit-sweep.timer" ] && [ -f "$D/usr/lib/systemd/system/useraudit-sweep.service" ]'
check "live log service" '[ -f "$D/usr/lib/systemd/system/useraudit.service" ]'
check "tmpfiles.d" '[ -f "$D/usr/lib/tmpfiles.d/useraudit.conf" ]'
check "no /etc/pam.d written" '[ ! -e "$D/etc/pam.d" ]'
echo 'login_failure_limit = 7' > "$D/etc/security/useraudit.toml"
make -s install DESTDIR="$D" PREFIX=/usr >/dev/null
check "a second install keeps an edited configuration" 'grep -q "= 7" "$D/etc/security/useraudit.toml"'
make -s install DESTDIR="$D/opt" PREFIX=/usr/local >/dev/null
check "PREFIX=/usr/local puts the admin tool in /usr/local/sbin" '[ -x "$D/opt/usr/local/sbin/useraudit-admin" ]'
make -s uninstall DESTDIR="$D" PREFIX=/usr >/dev/null
check "uninstall removes the module and the tool" '[ ! -e "$D$pamdir/pam_useraudit.so" ] && [ ! -e "$D/usr/sbin/useraudit-admin" ]'
check "uninstall keeps configuration and state" '[ -f "$D/etc/security/useraudit.toml" ] && [ -d "$D/var/lib/useraudit" ]'
echo "$((n - fail)) passed, $fail failed"
[ "$fail" = 0 ]
