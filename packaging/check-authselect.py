#!/usr/bin/env python3
"""Check the PAM stacks in packaging/rpm/authselect.md.

Each stack in the document is a fenced block preceded by a line
"<!-- stack: ID TYPE -->": authselect profile lines, with the template
markup authselect knows ({include if "F"}, {exclude if "F"}, {if "F":text},
{if not "F":text}). A stack is rendered as authselect would render it for a
set of enabled features, then checked:

  every stack: each line parses, each control value is one libpam knows,
    and no jump goes past the end of the stack;
  auth and account: the lines of the feature "with-useraudit" change no
    jump of the base profile (each lands on the same line as without them),
    for several feature sets; preauth is requisite and comes before every
    password module, authfail is [default=die] and only optional lines
    follow it before pam_deny; the account line is required and first;
  password: run through the real libpam (pamtester inside bubblewrap, as
    root), with pam_matrix for pam_unix, pam_succeed_if for pam_sss (it
    knows the user "bob"), a pam_exec stub for pam_useraudit (it records
    its calls),
    and pam_localuser with its own passwd file: a local user's change
    succeeds and reaches pam_useraudit, a wrong old password fails and does
    not, an sssd user's change succeeds and reaches it, an unknown user
    fails; with the feature off, the base stack works and never calls it.

Usage: check-authselect.py authselect.md
Exit status: 0 all checks passed (a check that cannot run here says "skip"),
1 a check failed.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

REQUIRED = {
    "auth-sssd": "auth",
    "auth-fingerprint": "auth",
    "account-sssd": "account",
    "password-local": "password",
    "password-sssd-1.2": "password",
    "password-sssd-1.4.3": "password",
}
FEATURE = "with-useraudit"
PASSWORD_MODULES = {"pam_unix.so", "pam_sss.so", "pam_fprintd.so", "pam_u2f.so",
                    "pam_systemd_home.so", "pam_sss_gss.so"}
KEYWORDS = {"required", "requisite", "sufficient", "optional", "include", "substack"}
VALUES = {"success", "open_err", "symbol_err", "service_err", "system_err", "buf_err",
          "perm_denied", "auth_err", "cred_insufficient", "authinfo_unavail",
          "user_unknown", "maxtries", "new_authtok_reqd", "acct_expired",
          "session_err", "cred_unavail", "cred_expired", "cred_err", "no_module_data",
          "conv_err", "authtok_err", "authtok_recover_err", "authtok_lock_busy",
          "authtok_disable_aging", "try_again", "ignore", "abort", "authtok_expired",
          "module_unknown", "bad_item", "conv_again", "incomplete", "default"}
ACTIONS = {"ignore", "bad", "die", "ok", "done", "reset"}

failed = False


def result(ok, what):
    global failed
    print(("ok   - " if ok else "FAIL - ") + what)
    if not ok:
        failed = True
    return ok


def blocks(text):
    pat = re.compile(r"<!-- stack: (\S+) (\w+) -->\n```\n(.*?)\n```", re.S)
    return {m.group(1): (m.group(2), m.group(3).splitlines()) for m in pat.finditer(text)}


def render(lines, features):
    """The lines authselect writes for these features, as (raw, tuple) pairs."""
    out = []
    for line in lines:
        keep = True
        for kind, feat in re.findall(r'\{(include|exclude) if "([^"]+)"\}', line):
            if (kind == "include") != (feat in features):
                keep = False
        if not keep or line.startswith("{"):
            continue
        line = re.sub(r'\{(include|exclude) if "[^"]+"\}', "", line)
        line = re.sub(r'\{if not "([^"]+)":([^}]*)\}',
                      lambda m: "" if m.group(1) in features else m.group(2), line)
        line = re.sub(r'\{if "([^"]+)":([^}]*)\}',
                      lambda m: m.group(2) if m.group(1) in features else "", line)
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def parse(line):
    m = re.match(r"^(-?)(auth|account|password|session)\s+(\[[^]]*\]|\S+)\s+(\S+)\s*(.*)$", line)
    if not m:
        return None
    return {"type": m.group(2), "control": m.group(3), "module": os.path.basename(m.group(4)),
            "path": m.group(4), "args": m.group(5).split(), "line": line}


def control_ok(ctl):
    if not ctl.startswith("["):
        return ctl in KEYWORDS
    for pair in ctl[1:-1].split():
        if "=" not in pair:
            return False
        k, v = pair.split("=", 1)
        if k not in VALUES or not (v in ACTIONS or v.isdigit()):
            return False
    return True


def jumps(ctl):
    if not ctl.startswith("["):
        return []
    return [int(v) for v in re.findall(r"=(\d+)", ctl)]


def is_ua(entry):
    return entry["module"] == "pam_useraudit.so"


def static_checks(sid, typ, lines):
    feature_sets = [set(), {"with-faillock"}, {"with-smartcard"}, {"with-smartcard-required"},
                    {"with-fingerprint", "with-gssapi", "with-pam-u2f", "with-systemd-homed"},
                    {"with-faillock", "with-smartcard", "with-pam-gnome-keyring"}]
    good = True
    for fs in feature_sets:
        for on in (fs, fs | {FEATURE}):
            stack = [parse(x) for x in render(lines, on)]
            if any(e is None or e["type"] != typ for e in stack):
                print(f"     {sid}: a line does not parse as '{typ}' with {sorted(on)}")
                good = False
                continue
            for i, e in enumerate(stack):
                if not control_ok(e["control"]):
                    print(f"     {sid}: bad control {e['control']}")
                    good = False
                for n in jumps(e["control"]):
                    if i + n + 1 >= len(stack):
                        print(f"     {sid}: line {i + 1} jumps past the end with {sorted(on)}")
                        good = False
    result(good, f"{sid}: every line parses, controls are valid, no jump past the end")

    if typ == "password":
        return
    good = True
    for fs in feature_sets:
        base = [parse(x) for x in render(lines, fs)]
        full = [parse(x) for x in render(lines, fs | {FEATURE})]
        index = [i for i, e in enumerate(full) if not is_ua(e)]  # base line -> full index
        if [full[i]["line"] for i in index] != [e["line"] for e in base]:
            print(f"     {sid}: with {FEATURE} the base lines differ ({sorted(fs)})")
            good = False
            continue
        for bi, e in enumerate(base):
            for n in jumps(e["control"]):
                want = bi + n + 1          # base line it lands on
                got = index[bi] + n + 1    # full line it lands on
                # an added line directly in front of the old target is
                # passed on that path as on every other: allowed
                while got < len(full) and is_ua(full[got]):
                    got += 1
                if got >= len(full) or index.index(got) != want:
                    print(f"     {sid}: '{e['line'][:60]}...' {n} lands elsewhere with {FEATURE} ({sorted(fs)})")
                    good = False
        if typ == "auth":
            pre = [i for i, e in enumerate(full) if is_ua(e) and e["args"][:1] == ["preauth"]]
            fail = [i for i, e in enumerate(full) if is_ua(e) and e["args"][:1] == ["authfail"]]
            pw = [i for i, e in enumerate(full) if e["module"] in PASSWORD_MODULES]
            deny = [i for i, e in enumerate(full) if e["module"] == "pam_deny.so"]
            if len(pre) != 1 or full[pre[0]]["control"] != "requisite" or (pw and pre[0] > min(pw)):
                print(f"     {sid}: preauth is not one requisite line before every password module ({sorted(fs)})")
                good = False
            if len(fail) != 1 or full[fail[0]]["control"] != "[default=die]" or (pw and fail[0] < max(pw)):
                print(f"     {sid}: authfail is not one [default=die] line after every password module ({sorted(fs)})")
                good = False
            else:
                after = [d for d in deny if d > fail[0]]
                between = full[fail[0] + 1:after[0]] if after else []
                if not after or any(e["control"] != "optional" for e in between):
                    print(f"     {sid}: only optional lines may sit between authfail and pam_deny ({sorted(fs)})")
                    good = False
        if typ == "account":
            ua = [i for i, e in enumerate(full) if is_ua(e)]
            if ua != [0] or full[0]["control"] != "required":
                print(f"     {sid}: the account line is not required and first")
                good = False
    result(good, f"{sid}: the {FEATURE} lines keep every jump of the base profile; places and controls")


# ---- running the password stacks through libpam ------------------------------------

def sandbox_ready():
    if os.geteuid() != 0:
        return "needs root (bubblewrap binds over /etc/pam.d)"
    for tool in ("bwrap", "pamtester"):
        if not shutil.which(tool):
            return f"{tool} not found"
    matrix = [os.path.join(d, "pam_wrapper/pam_matrix.so") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")]
    matrix = [m for m in matrix if os.path.exists(m)]
    if not matrix:
        return "pam_matrix.so not found (libpam-wrapper)"
    if subprocess.run(["bwrap", "--ro-bind", "/", "/", "true"], capture_output=True).returncode:
        return "bwrap cannot make a sandbox here"
    return matrix[0]


def functional(sid, lines, matrix, work):
    sssd = "sssd" in sid
    root = os.path.join(work, sid)
    os.makedirs(os.path.join(root, "pam.d"))
    stub_ua = os.path.join(root, "ua")
    with open(stub_ua, "w") as f:
        f.write('#!/bin/sh\n# stands in for pam_useraudit.so: records the call\necho "ua:$PAM_TYPE:$PAM_USER" >> /tmp/root/calls\n')
    os.chmod(stub_ua, 0o755)
    with open(os.path.join(root, "passwd"), "w") as f:
        f.write("alice:x:1000:1000::/nonexistent:/bin/sh\n")

    def stack(features):
        out = []
        for line in render(lines, features):
            e = parse(line)
            mod, ctl = e["module"], e["control"]
            if mod == "pam_unix.so":
                out.append(f"password {ctl} {matrix} passdb=/tmp/root/passdb")
            elif mod == "pam_sss.so":
                # pam_sss knows bob, in both passes of the change (pam_exec
                # would succeed in the first pass whoever the user is)
                out.append(f"password {ctl} pam_succeed_if.so quiet user = bob")
            elif mod == "pam_useraudit.so":
                out.append(f"password {ctl} pam_exec.so quiet /tmp/root/ua")
            elif mod == "pam_localuser.so":
                out.append(f"password {ctl} pam_localuser.so file=/tmp/root/passwd")
            elif mod == "pam_pwquality.so":
                out.append(f"password {ctl} pam_permit.so")
            else:
                out.append(line)
        return "\n".join(out) + "\n"

    def change(user, old, features):
        with open(os.path.join(root, "pam.d", "uatest"), "w") as f:
            f.write(stack(features))
        with open(os.path.join(root, "passdb"), "w") as f:
            f.write("alice:secret:uatest\n")
        open(os.path.join(root, "calls"), "w").close()
        cmd = ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp",
               "--tmpfs", "/run", "--bind", os.path.join(root, "pam.d"), "/etc/pam.d",
               "--bind", root, "/tmp/root", "timeout", "20", "pamtester", "uatest", user, "chauthtok"]
        p = subprocess.run(cmd, input=f"{old}\nN3w-pass-word\nN3w-pass-word\n", capture_output=True, text=True)
        calls = open(os.path.join(root, "calls")).read().split()
        changed = "alice:N3w-pass-word:" in open(os.path.join(root, "passdb")).read()
        return p.returncode, calls, changed

    on = {FEATURE}
    rc, calls, changed = change("alice", "secret", on)
    result(rc == 0 and changed and calls.count("ua:password:alice") == 1,
           f"{sid}: local user, right old password: changed, pam_useraudit called once  [{' '.join(calls)}]")
    rc, calls, changed = change("alice", "wrong", on)
    result(rc != 0 and not changed and not any(c.startswith("ua:") for c in calls),
           f"{sid}: local user, wrong old password: refused, pam_useraudit not called  [{' '.join(calls)}]")
    rc, calls, _ = change("carol", "secret", on)
    result(rc != 0 and not any(c.startswith("ua:") for c in calls),
           f"{sid}: unknown user: refused, pam_useraudit not called  [{' '.join(calls)}]")
    if sssd:
        rc, calls, _ = change("bob", "secret", on)
        result(rc == 0 and calls == ["ua:password:bob"],
               f"{sid}: sssd user: changed by pam_sss, pam_useraudit called once  [{' '.join(calls)}]")
    rc, calls, changed = change("alice", "secret", set())
    ok = rc == 0 and changed and not calls
    if sssd:
        rc2, calls2, _ = change("bob", "secret", set())
        ok = ok and rc2 == 0 and not calls2
    result(ok, f"{sid}: feature off: the base stack changes passwords, never calls pam_useraudit")


def main():
    text = open(sys.argv[1]).read()
    found = blocks(text)
    for sid, typ in REQUIRED.items():
        result(sid in found and found[sid][0] == typ, f"stack {sid} ({typ}) is in the document")
    for sid, (typ, lines) in found.items():
        static_checks(sid, typ, lines)
    ready = sandbox_ready()
    if not ready.startswith("/"):
        print(f"skip - password stacks not run through libpam: {ready}")
    else:
        with tempfile.TemporaryDirectory(prefix="useraudit-authselect.") as work:
            for sid, (typ, lines) in found.items():
                if typ == "password":
                    functional(sid, lines, ready, work)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
