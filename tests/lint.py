#!/usr/bin/env python3
"""The project's lint (docs/STYLE.md), run by ctest (label lint) and so by CI:

  1. no banned function (sprintf, vsprintf, strcpy, strcat, strtok, atoi, atol, gets)
     called anywhere in the C sources, comments and strings aside;
  2. no assignment inside an `if (...)` condition (`=`, `+=`, ... but not `==`);
  3. clang-format (clang-format-14, the repo's .clang-format) agrees with every changed
     line: lines changed in the work tree against HEAD (new files too), lines HEAD changed
     against its first parent (on a fresh clone: the last commit or merge), lines changed
     since the merge base with --base REV when given, and every line of the files listed in
     tests/lint-formatted.txt.

    tests/lint.py                 check (exit 1 on a finding, 0 when clean)
    tests/lint.py --base main     also every line changed since the merge base with main
    tests/lint.py --fix           let clang-format rewrite the lines of check 3

Checks 1 and 2 cover the whole tree, so they never depend on history. Without git, or
without clang-format-14, check 3 is skipped with a note (never a failure).
"""
import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FOLDERS = ("api", "server", "store", "workers", "tests")
BANNED = ("sprintf", "vsprintf", "strcpy", "strcat", "strtok", "atoi", "atol", "gets")
BANNED_RE = re.compile(r"\b(%s)\s*\(" % "|".join(BANNED))
IF_RE = re.compile(r"\bif\s*\(")
ALLOW_LIST = os.path.join("tests", "lint-formatted.txt")
CLANG_FORMAT = "clang-format-14"

# Findings known and left in files that another change is rewriting: (path, check) -> the
# count tolerated. More than that fails as usual; fewer asks for the number to come down.
KNOWN = {}


def c_files():
    out = []
    for top in FOLDERS:
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            for n in names:
                if n.endswith((".c", ".h")):
                    out.append(os.path.relpath(os.path.join(d, n), ROOT))
    return sorted(out)


def blank_comments_and_strings(src):
    """SRC with comments, string and character literals replaced by spaces (newlines kept),
    so that line numbers and columns stay and only code is left to match."""
    out = []
    i, n = 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j]))
            i = j
        elif src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif c in "\"'":
            j = i + 1
            while j < n and src[j] != c and src[j] != "\n":
                j += 2 if src[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + re.sub(r"[^\n]", " ", src[i + 1:j - 1]) + c)
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def line_of(src, pos):
    return src.count("\n", 0, pos) + 1


def assignment_in(cond):
    """True when the text of a condition holds an assignment operator."""
    for k, ch in enumerate(cond):
        if ch != "=":
            continue
        prev = cond[k - 1] if k > 0 else ""
        nxt = cond[k + 1] if k + 1 < len(cond) else ""
        if nxt == "=" or prev == "=":
            continue  # == (either half)
        if prev in "!" or (prev in "<>" and cond[k - 2:k] not in ("<<", ">>")):
            continue  # != <= >=, but <<= and >>= are assignments
        return True
    return False


def check_code(path, findings, notes):
    with open(os.path.join(ROOT, path), encoding="utf-8", errors="replace") as f:
        code = blank_comments_and_strings(f.read())
    found = {"banned": [], "if-assign": []}
    for m in BANNED_RE.finditer(code):
        found["banned"].append("%s:%d: %s() is banned (docs/STYLE.md: use snprintf, explicit "
                               "lengths, strtol with checks)"
                               % (path, line_of(code, m.start()), m.group(1)))
    for m in IF_RE.finditer(code):
        depth, j = 1, m.end()
        while j < len(code) and depth > 0:
            depth += {"(": 1, ")": -1}.get(code[j], 0)
            j += 1
        if assignment_in(code[m.end():j - 1]):
            found["if-assign"].append("%s:%d: assignment inside an if condition (docs/STYLE.md)"
                                      % (path, line_of(code, m.start())))
    for check, lines in found.items():
        known = KNOWN.get((path, check), 0)
        if len(lines) > known:
            findings.extend(lines)
        elif len(lines) < known:
            notes.append("%s: %d %s findings, %d tolerated: lower KNOWN in tests/lint.py"
                         % (path, len(lines), check, known))


# ---------------------------------------------------------------- clang-format on changed lines

def git(*args):
    try:
        p = subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout if p.returncode == 0 else None


def changed_lines(diff_args, files, into):
    """Adds to INTO {path: set(lines)} the new-side lines of `git diff -U0 DIFF_ARGS`."""
    out = git("diff", "-U0", "--no-color", "--no-ext-diff", *diff_args, "--", "*.c", "*.h")
    if out is None:
        return False
    path = None
    for line in out.splitlines():
        if line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else None
        elif line.startswith("@@") and path in files:
            m = re.match(r"@@ -\S+ \+(\d+)(?:,(\d+))? @@", line)
            start, count = int(m.group(1)), int(m.group(2) or "1")
            into.setdefault(path, set()).update(range(start, start + count))
    return True


def ranges(lines):
    out, lines = [], sorted(lines)
    for ln in lines:
        if out and ln == out[-1][1] + 1:
            out[-1][1] = ln
        else:
            out.append([ln, ln])
    return out


def format_findings(path, lines, fix):
    """The changed lines of PATH that clang-format would change (only those: a statement
    that a changed line belongs to may have other, older lines clang-format dislikes)."""
    full = os.path.join(ROOT, path)
    with open(full, encoding="utf-8", errors="replace") as f:
        old = f.read().splitlines(keepends=True)
    lines = {ln for ln in lines if 1 <= ln <= len(old)}
    if not lines:
        return []
    args = [CLANG_FORMAT, "--style=file", "--assume-filename=" + full]
    args += ["--lines=%d:%d" % (a, b) for a, b in ranges(lines)]
    p = subprocess.run(args, input="".join(old), capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        return ["%s: clang-format failed: %s" % (path, p.stderr.strip())]
    new = p.stdout.splitlines(keepends=True)
    bad = []
    sm = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, _, _ in sm.get_opcodes():
        if tag != "equal":
            # A pure insertion (i1 == i2) touches the line it lands before.
            bad.extend(ln for ln in range(i1 + 1, max(i2, i1 + 1) + 1) if ln in lines)
    if bad and fix:
        with open(full, "w", encoding="utf-8") as f:
            f.write(p.stdout)
        return []
    return ["%s:%d: not as clang-format would write it (tests/lint.py --fix, or "
            "clang-format-diff-14 -p1 -i on your diff)" % (path, ln) for ln in sorted(set(bad))]


def check_format(files, base, fix, findings, notes):
    if shutil.which(CLANG_FORMAT) is None:
        notes.append("%s not found: the format check is skipped" % CLANG_FORMAT)
        return
    todo = {}
    listed = os.path.join(ROOT, ALLOW_LIST)
    if os.path.exists(listed):
        with open(listed, encoding="utf-8") as f:
            for entry in f:
                entry = entry.split("#", 1)[0].strip()
                if not entry:
                    continue
                if entry not in files:
                    notes.append("%s names %s, which is not there" % (ALLOW_LIST, entry))
                    continue
                with open(os.path.join(ROOT, entry), encoding="utf-8", errors="replace") as f2:
                    todo.setdefault(entry, set()).update(range(1, len(f2.readlines()) + 1))
    if git("rev-parse", "--verify", "-q", "HEAD") is None:
        notes.append("not a git checkout: only %s is format-checked" % ALLOW_LIST)
    else:
        changed_lines(["HEAD"], files, todo)
        for new in (git("ls-files", "--others", "--exclude-standard") or "").splitlines():
            if new in files:  # a new file not yet added: all of it is changed
                with open(os.path.join(ROOT, new), encoding="utf-8", errors="replace") as f:
                    todo.setdefault(new, set()).update(range(1, len(f.readlines()) + 1))
        if git("rev-parse", "--verify", "-q", "HEAD~1") is not None:
            changed_lines(["HEAD~1", "HEAD"], files, todo)
        if base:
            mb = git("merge-base", base, "HEAD")
            if mb is None:
                findings.append("--base %s: no merge base with HEAD" % base)
            else:
                changed_lines([mb.strip()], files, todo)
    for path in sorted(todo):
        findings.extend(format_findings(path, todo[path], fix))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", help="also check lines changed since the merge base with BASE")
    ap.add_argument("--fix", action="store_true", help="rewrite the badly formatted lines")
    opts = ap.parse_args()
    files = c_files()
    findings, notes = [], []
    for path in files:
        check_code(path, findings, notes)
    check_format(set(files), opts.base, opts.fix, findings, notes)
    for n in notes:
        print("lint: note: " + n)
    for f in findings:
        print(f)
    print("lint: %d files, %d findings" % (len(files), len(findings)))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
