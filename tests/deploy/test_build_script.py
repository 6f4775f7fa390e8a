#!/usr/bin/env python3
"""Runs docker/build.sh, the Dockerfile's build stage, on this host in a clean copy of the
repository and starts what it staged, configured by environment only as in the image.

Checks: the script builds from any cwd into a DESTDIR-style staging dir; a second run is a
no-op that still succeeds; the binary's NEEDED libraries come from exactly the runtime
packages the Dockerfile installs (plus libc); the docs are staged; the staged binary serves
/healthz with 200 on a loopback port and `batchd --healthcheck` (the image's HEALTHCHECK)
answers 0 while it serves and non-zero once it is gone.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402


def clean_copy(dst):
    """Copies the repository's files (tracked and new, not ignored) into DST: what a fresh
    clone or the Docker build context would hold, without local build trees."""
    try:
        out = subprocess.run(["git", "-C", dl.ROOT, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True).stdout
        files = [f for f in out.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):
        files = None
    if files is None:
        shutil.copytree(dl.ROOT, dst, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", "build*", "__pycache__"))
        return
    for f in files:
        src = os.path.join(dl.ROOT, f)
        if not os.path.lexists(src):
            continue  # deleted in the work tree, not yet committed
        os.makedirs(os.path.dirname(os.path.join(dst, f)), exist_ok=True)
        shutil.copy2(src, os.path.join(dst, f), follow_symlinks=False)


def runtime_packages():
    """The packages the Dockerfile's last stage installs."""
    with open(os.path.join(dl.ROOT, "Dockerfile"), encoding="utf-8") as f:
        text = f.read().replace("\\\n", " ")
    last = text.split("\nFROM ")[-1]
    m = re.search(r"apt-get install ([^&;]*)", last)
    assert m, "runtime stage installs nothing?"
    return {w for w in m.group(1).split() if not w.startswith("-")}


def needed_packages(binary):
    """Debian packages providing the binary's direct NEEDED libraries."""
    dyn = subprocess.run(["objdump", "-p", binary], check=True, capture_output=True,
                         text=True).stdout
    sonames = re.findall(r"^\s*NEEDED\s+(\S+)", dyn, re.M)
    assert sonames, dyn
    ldd = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    pkgs = {}
    for so in sonames:
        path = paths.get(so)
        assert path and path != "not", f"{so} not found by ldd:\n{ldd}"
        real = os.path.realpath(path)
        owner = None
        for cand in (path, real, "/usr" + path if not path.startswith("/usr") else path,
                     "/usr" + real if not real.startswith("/usr") else real):
            r = subprocess.run(["dpkg", "-S", cand], capture_output=True, text=True)
            if r.returncode == 0:
                owner = r.stdout.split(":")[0].strip()
                break
        assert owner, f"no package owns {path}"
        pkgs[so] = owner
    return pkgs


def main():
    if dl.sanitized():
        print("skipped: the release build is checked once, in the plain configuration")
        return dl.SKIP
    dl.watchdog(840)
    tmp = tempfile.mkdtemp(prefix="batchd-build-")
    src, stage = os.path.join(tmp, "src"), os.path.join(tmp, "stage")
    failures = []

    def check(cond, what):
        print(("ok   " if cond else "FAIL ") + what, flush=True)
        if not cond:
            failures.append(what)

    try:
        clean_copy(src)
        env = dict(os.environ, BATCHD_BUILD_DIR=os.path.join(tmp, "build"))
        t0 = time.monotonic()
        # From an unrelated cwd, with a relative DESTDIR: the script must resolve both.
        r = subprocess.run(["bash", os.path.join(src, "docker/build.sh"), "stage"], cwd=tmp,
                           env=env, stdin=subprocess.DEVNULL)
        check(r.returncode == 0, f"build.sh exits 0 ({time.monotonic() - t0:.0f} s)")
        if r.returncode != 0:
            return 1
        binary = os.path.join(stage, "usr/local/bin/batchd")
        check(os.access(binary, os.X_OK), "binary staged at DESTDIR/usr/local/bin/batchd")

        t0 = time.monotonic()
        r = subprocess.run(["bash", "docker/build.sh", stage], cwd=src, env=env,
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        check(r.returncode == 0, f"second run succeeds ({time.monotonic() - t0:.1f} s)")
        check("installing" not in r.stderr, "second run installs no packages")

        allowed = runtime_packages() | {"libc6", "libgcc-s1"}
        pkgs = needed_packages(binary)
        print("  NEEDED:", ", ".join(f"{so} ({p})" for so, p in sorted(pkgs.items())))
        extra = {p.split(":")[0] for p in pkgs.values()} - allowed
        check(not extra, f"every NEEDED library is in the runtime stage's packages {extra or ''}")

        if os.path.exists(os.path.join(src, "README.md")):
            check(os.path.exists(os.path.join(stage, "usr/local/share/doc/batchd/README.md")),
                  "README staged with the binary")
        size = os.path.getsize(binary)
        check(size < 20 * 1024 * 1024, f"binary is {size / 1e6:.1f} MB (stripped)")

        # Start it as the image does: environment only, from an unrelated cwd.
        os.environ["BATCHD_BIN"] = binary
        b = dl.Batchd("staged", workers=1, workdir=os.path.join(tmp, "run"))
        status, headers, body = dl.request(b.port, "GET", "/healthz", timeout=10)
        check(status == 200, f"GET /healthz -> {status}")
        b.wait_ready(timeout=30)
        check(True, "GET /readyz -> 200")
        hc_env = dict(os.environ, BATCHD_LISTEN=f"127.0.0.1:{b.port}")
        r = subprocess.run([binary, "--healthcheck"], env=hc_env, capture_output=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        check(r.returncode == 0, f"batchd --healthcheck -> {r.returncode} while serving "
                                 f"{r.stderr.decode(errors='replace').strip()}")
        b.signal(15)
        code = b.wait(timeout=30)
        check(code == 0, f"exit code after SIGTERM: {code}")
        r = subprocess.run([binary, "--healthcheck"], env=hc_env, capture_output=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        check(r.returncode != 0, f"batchd --healthcheck -> {r.returncode} once stopped")
        b.stop()
    finally:
        dl._kill_all()
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("FAILED:", *failures, sep="\n  ")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
