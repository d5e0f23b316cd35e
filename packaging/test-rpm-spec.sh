#!/bin/bash
# Check packaging/rpm/useraudit.spec with rpm's own tools (Debian's package
# rpm: rpmspec, rpmbuild), without building the package:
#   - the spec parses; what it requires and provides (bundled SQLite, no
#     sqlite-devel), %license, no deprecated %tmpfiles_create;
#   - %prep, run by rpmbuild -bp, keeps the project's .cargo/config.toml (the
#     bundled SQLite's build settings) and adds the vendoring to it;
#   - %check after %build compiles no dependency again: both sections' cargo
#     commands are run, as the parsed spec has them, on a two-crate toy
#     project with the same crate types and release profile;
#   - %preun refuses to erase the package while /etc/pam.d or the selected
#     authselect profile still uses the module (run with sh inside
#     bubblewrap, with a private /etc), and so does the Debian prerm;
#   - the stacks in packaging/rpm/authselect.md (packaging/check-authselect.py:
#     jumps, places, and the password stacks run through libpam).
# Fedora's systemd macros are not on Debian; stand-ins are defined for them
# when rpm does not know them.
#
# Usage: packaging/test-rpm-spec.sh
# Exit status: 0 all checks passed or skipped ("SKIP:" says why), 1 a check failed.
# shellcheck disable=SC2016
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
SPEC=$HERE/rpm/useraudit.spec
skip() { echo "SKIP: $*"; exit 0; }

FAILED=0
check() { # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok   - $what"; else echo "FAIL - $what"; FAILED=1; fi
}
note_skip() { echo "skip - $*"; }

command -v python3 >/dev/null || skip "python3 not found"
echo "== packaging/rpm/authselect.md"
python3 "$HERE/check-authselect.py" "$HERE/rpm/authselect.md" || FAILED=1

command -v rpmspec >/dev/null && command -v rpmbuild >/dev/null \
    || { echo "SKIP: rpmspec/rpmbuild not found (Debian package rpm): spec checks not run"; exit "$FAILED"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/useraudit-rpm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# Stand-ins for Fedora's systemd-rpm-macros, only where rpm lacks the macro.
DEFS=()
defined() { [ "$(rpm --eval "%{?$1:yes}")" = yes ]; }
defined _unitdir || DEFS+=(--define '_unitdir /usr/lib/systemd/system')
defined _tmpfilesdir || DEFS+=(--define '_tmpfilesdir /usr/lib/tmpfiles.d')
defined systemd_requires || DEFS+=(--define 'systemd_requires %{nil}')
STANDIN=no
for m in systemd_post systemd_preun systemd_postun systemd_postun_with_restart; do
    defined "$m" || { DEFS+=(--define "$m() echo $m stand-in %*"); STANDIN=yes; }
done
DEFS+=(--define "_topdir $WORK/rpmbuild")

echo "== $SPEC (rpm $(rpm --version | awk '{print $3}'))"
PARSED=$WORK/parsed.spec
check "rpmspec -P parses the spec" eval 'rpmspec -P "${DEFS[@]}" "$SPEC" > "$PARSED" 2>"$WORK/parse.err" && [ ! -s "$WORK/parse.err" ]'
sed 's/^/     /' "$WORK/parse.err"
# rpm 4.18's "rpmspec -P" leaves out the "%build" line (and comments in
# %files): the sections are found by their lines and by a comment put
# after each section line of a copy of the spec.
SECTIONS='prep|build|install|check|clean|pre|post|preun|postun|pretrans|posttrans|files|changelog|description|package'
sed -E "s/^%($SECTIONS)([[:space:]].*)?\$/&\n#@@section \1/" "$SPEC" > "$WORK/marked.spec"
rpmspec -P "${DEFS[@]}" "$WORK/marked.spec" > "$WORK/marked.parsed" 2>/dev/null || true

# section NAME: the body of %NAME in the parsed spec
section() {
    awk -v want="$1" -v re="^%($SECTIONS)([[:space:]]|\$)" '
        /^#@@section / { on = ($2 == want); next }
        $0 ~ re { on = (substr($1, 2) == want); next }
        on' "$WORK/marked.parsed"
}

# ---- item: what the package requires and provides ----------------------------
BREQ=$(rpmspec -q --buildrequires "${DEFS[@]}" "$SPEC" 2>/dev/null)
PROV=$(rpmspec -q --provides "${DEFS[@]}" "$SPEC" 2>/dev/null)
check "BuildRequires has no sqlite-devel (SQLite is bundled)" eval '! grep -q sqlite <<<"$BREQ"'
check "Provides: bundled(sqlite) = VERSION" eval 'grep -Eq "^bundled\(sqlite\) = [0-9]+\.[0-9]+\.[0-9]+$" <<<"$PROV"'
# The version named must be the one libsqlite3-sys (Cargo.lock) bundles,
# where its source is in the local Cargo registry.
lsv=$(awk '/^name = "libsqlite3-sys"$/ { getline; gsub(/"/, "", $3); print $3 }' "$ROOT/Cargo.lock")
hdr=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"libsqlite3-sys-$lsv"/sqlite3/sqlite3.h 2>/dev/null | head -n1 || true)
if [ -n "$hdr" ]; then
    sv=$(sed -n 's/^#define SQLITE_VERSION[[:space:]]*"\(.*\)"/\1/p' "$hdr")
    check "bundled(sqlite) = $sv, the SQLite of libsqlite3-sys $lsv" eval 'grep -qx "bundled(sqlite) = $sv" <<<"$PROV"'
else
    note_skip "libsqlite3-sys $lsv source not in the Cargo registry: bundled SQLite version not compared"
fi

# ---- item: LICENSE --------------------------------------------------------------
check "Cargo.toml says MIT and LICENSE is the MIT license" eval 'grep -qx "license = \"MIT\"" "$ROOT/Cargo.toml" && grep -q "^MIT License" "$ROOT/LICENSE" && grep -q "Permission is hereby granted, free of charge" "$ROOT/LICENSE"'
check "%files lists LICENSE as %license" eval 'section files | grep -Eq "^%license[[:space:]]+LICENSE$"'
check "the .deb carries LICENSE as its copyright file (Cargo.toml license-file)" eval 'grep -Eq "^license-file = \[\"LICENSE\", \"0\"\]" "$ROOT/Cargo.toml"'

# ---- item: tmpfiles ---------------------------------------------------------------
check "no deprecated %tmpfiles_create" eval '! grep -q "tmpfiles_create" "$SPEC"'
check "%files: tmpfiles.d/useraudit.conf, and /var/lib/useraudit 0700 from the package" eval 'section files | grep -q "/tmpfiles.d/useraudit.conf$" && section files | grep -Eq "^%dir %attr\(0700,root,root\) /var/lib/useraudit$"'
check "%files and %install: the live log service, useraudit.service" eval 'section files | grep -q "/systemd/system/useraudit.service$" && section install | grep -q "packaging/systemd/useraudit.service"'
check "%post enables the live log service (%systemd_post)" eval 'section post | grep -q "useraudit.service"'

# ---- item: %prep keeps .cargo/config.toml -----------------------------------------
VERSION=$(rpmspec -q --qf '%{VERSION}\n' "${DEFS[@]}" "$SPEC" 2>/dev/null | head -n1)
SRC=$WORK/rpmbuild/SOURCES
mkdir -p "$SRC" "$WORK/vendor-src/vendor"
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
    | tar --null -T - --ignore-failed-read --transform "s,^,useraudit-$VERSION/," -czf "$SRC/useraudit-$VERSION.tar.gz")
echo "placeholder" > "$WORK/vendor-src/vendor/README"
tar -C "$WORK/vendor-src" -cJf "$SRC/useraudit-$VERSION-vendor.tar.xz" vendor
if rpmbuild -bp --nodeps "${DEFS[@]}" "$SPEC" >"$WORK/prep.log" 2>&1; then
    CFG=$(ls "$WORK"/rpmbuild/BUILD/useraudit-"$VERSION"/.cargo/config.toml 2>/dev/null | head -n1 || true)
    check "rpmbuild -bp: %prep keeps the project's .cargo/config.toml (SQLite build settings) and adds the vendoring" \
        python3 - "$ROOT/.cargo/config.toml" "$CFG" <<'PY'
import sys, tomllib
orig = tomllib.load(open(sys.argv[1], "rb"))
got = tomllib.load(open(sys.argv[2], "rb"))
ok = True
for key, val in orig.get("env", {}).items():
    if got.get("env", {}).get(key) != val:
        print(f"     env.{key} lost or changed by %prep"); ok = False
src = got.get("source", {})
if src.get("crates-io", {}).get("replace-with") != "vendored-sources" or src.get("vendored-sources", {}).get("directory") != "vendor":
    print("     no vendored-sources in .cargo/config.toml"); ok = False
sys.exit(0 if ok else 1)
PY
else
    echo "FAIL - rpmbuild -bp (%prep) failed:"; sed 's/^/     /' "$WORK/prep.log" | tail -n 20; FAILED=1
fi

# ---- item: %check does not compile everything again ------------------------------
if command -v cargo >/dev/null; then
    T=$WORK/toy
    mkdir -p "$T/src/bin" "$T/dep/src"
    # The project's crate types and release profile, on a crate with one
    # dependency (a path crate: no network, no registry).
    python3 - "$ROOT/Cargo.toml" > "$T/Cargo.toml" <<'PY'
import sys, tomllib
c = tomllib.load(open(sys.argv[1], "rb"))
print('[package]\nname = "toy"\nversion = "0.1.0"\nedition = "2021"\n')
print("[lib]\ncrate-type = [%s]\n" % ", ".join('"%s"' % t for t in c.get("lib", {}).get("crate-type", ["rlib"])))
print('[dependencies]\ntoydep = { path = "dep" }\n')
print("[profile.release]")
for k, v in c["profile"]["release"].items():
    print(f"{k} = " + ("true" if v is True else "false" if v is False else str(v) if isinstance(v, int) else f'"{v}"'))
PY
    printf '[package]\nname = "toydep"\nversion = "0.1.0"\nedition = "2021"\n' > "$T/dep/Cargo.toml"
    echo 'pub fn triple(x: u32) -> u32 { x.wrapping_mul(3) }' > "$T/dep/src/lib.rs"
    printf 'pub fn six() -> u32 { toydep::triple(2) }\n#[cfg(test)]\nmod t {\n    #[test]\n    fn six() { assert_eq!(super::six(), 6); }\n}\n' > "$T/src/lib.rs"
    echo 'fn main() { println!("{}", toy::six()); }' > "$T/src/bin/toy.rs"
    (cd "$T" && cargo generate-lockfile --offline -q)
    section build > "$WORK/build.sh"; section check > "$WORK/check.sh"
    if (cd "$T" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR bash -e "$WORK/build.sh") >"$WORK/build.log" 2>&1; then
        (cd "$T" && env -u CARGO_TARGET_DIR -u CARGO_BUILD_TARGET_DIR bash -e "$WORK/check.sh") >"$WORK/check.log" 2>&1 && rc=0 || rc=$?
        check "%check after %build: tests pass and no dependency is compiled again" \
            eval '[ $rc = 0 ] && grep -q "test result: ok" "$WORK/check.log" && ! grep -q "Compiling toydep" "$WORK/check.log"'
        grep -E "Compiling|error" "$WORK/check.log" | sed 's/^/     %check: /' || true
    else
        echo "FAIL - the %build commands failed on the toy project:"; tail -n 20 "$WORK/build.log" | sed 's/^/     /'; FAILED=1
    fi
else
    note_skip "cargo not found: %check not run"
fi

# ---- item: %preun refuses while PAM uses the module -----------------------------
section preun > "$WORK/preun.sh"
if ! command -v bwrap >/dev/null || ! bwrap --ro-bind / / --tmpfs /run true 2>/dev/null; then
    note_skip "bubblewrap cannot make a sandbox here: %preun and prerm not run"
else
    # new_etc NAME: an empty /etc for the sandbox (pam.d, authselect)
    new_etc() { rm -rf "${WORK:?}/$1"; mkdir -p "$WORK/$1/pam.d" "$WORK/$1/authselect"; echo "$WORK/$1"; }
    # in_etc ETC COMMAND...: run COMMAND with ETC as /etc; everything else read-only
    in_etc() {
        local e=$1; shift
        bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /run --tmpfs /tmp \
            --ro-bind "$e" /etc --ro-bind "$WORK/bin" /tmp/bin --ro-bind "$WORK/preun.sh" /tmp/preun.sh \
            --ro-bind "$HERE/debian/prerm" /tmp/prerm \
            --setenv PATH "/tmp/bin:/usr/sbin:/usr/bin:/sbin:/bin" "$@"
    }
    mkdir -p "$WORK/bin"
    printf '#!/bin/sh\nexit 0\n' > "$WORK/bin/pam-auth-update"; chmod 755 "$WORK/bin/pam-auth-update"
    preun() { local e=$1 arg=$2; in_etc "$e" sh /tmp/preun.sh "$arg" >"$WORK/out" 2>&1; }
    prerm() { local e=$1; in_etc "$e" sh /tmp/prerm remove >"$WORK/out" 2>&1; }
    says() { grep -q "$1" "$WORK/out"; }

    E=$(new_etc clean)
    printf 'auth required pam_unix.so\n# auth requisite pam_useraudit.so preauth\n-auth optional pam_useraudit.so authfail\n' > "$E/pam.d/login"
    check "%preun: erase with no pam_useraudit line (comments and -lines only): goes ahead" preun "$E" 0
    [ "$STANDIN" = no ] || check "%preun: ... and stops the timer (%systemd_preun)" says "systemd_preun stand-in useraudit-sweep.timer"

    E=$(new_etc byhand)
    printf 'auth required pam_unix.so\naccount  required  pam_useraudit.so\n' > "$E/pam.d/sshd"
    check "%preun: erase while /etc/pam.d/sshd uses the module: refused, names the line" eval '! preun "$E" 0 && says "NOT REMOVED" && says "/etc/pam.d/sshd:account  required  pam_useraudit.so"'
    check "%preun: the refusal comes before the timer is stopped" eval '! says "systemd_preun stand-in"'
    check "%preun: upgrade (\$1 = 1) with the same line: goes ahead" preun "$E" 1

    E=$(new_etc linked)
    printf 'auth        requisite      pam_useraudit.so preauth\n' > "$E/authselect/system-auth"
    ln -s /etc/authselect/system-auth "$E/pam.d/system-auth"
    check "%preun: /etc/pam.d/system-auth, authselect's link, uses the module: refused" eval '! preun "$E" 0 && says "/etc/pam.d/system-auth"'

    E=$(new_etc profile)
    mkdir -p "$E/authselect/custom/useraudit"
    printf 'custom/useraudit\nwith-useraudit\nwith-mkhomedir\n' > "$E/authselect/authselect.conf"
    printf 'auth        requisite      pam_useraudit.so preauth      {include if "with-useraudit"}\n' > "$E/authselect/custom/useraudit/system-auth"
    check "%preun: the selected authselect profile enables the module (not applied yet): refused" eval '! preun "$E" 0 && says "authselect profile custom/useraudit"'
    printf 'custom/useraudit\nwith-mkhomedir\n' > "$E/authselect/authselect.conf"
    check "%preun: the same profile with the feature disabled: goes ahead" preun "$E" 0

    E=$(new_etc deb-byhand)
    printf 'auth required pam_unix.so\nauth  requisite  pam_useraudit.so preauth\n' > "$E/pam.d/sshd"
    check "Debian prerm remove: a line pam-auth-update leaves (sshd, by hand): refused" eval '! prerm "$E" && says "NOT REMOVED" && says "/etc/pam.d/sshd"'
    E=$(new_etc deb-clean)
    printf 'auth required pam_unix.so\n' > "$E/pam.d/sshd"
    check "Debian prerm remove: no line left after pam-auth-update: goes ahead" prerm "$E"
fi

[ "$FAILED" = 0 ] && echo "PASS: rpm spec checks" || echo "FAIL: rpm spec checks (see FAIL lines)"
exit "$FAILED"
