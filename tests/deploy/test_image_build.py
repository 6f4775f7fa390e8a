#!/usr/bin/env python3
"""The Docker image built for real, without a Docker engine (issue 11).

1. A Debian 12 (bookworm) minbase root filesystem made by debootstrap from the mirror apt
   uses on this host (/etc/apt/sources.list*, or BATCHD_DEBIAN_MIRROR), trimmed and
   configured like the official debian:12-slim (no docs, man pages or locales; apt's
   docker-clean settings), cached as a tarball in the build tree (BATCHD_IMAGE_CACHE) so a
   re-run skips debootstrap. It is imported into a private buildah store (under
   BATCHD_IMAGE_WORK, never the machine's /var/lib/containers) as a base image.
2. The real Dockerfile, both stages, built with `buildah bud --isolation chroot --build-arg
   BASE=<that image>`.
3. The image, checked against the Dockerfile: ENTRYPOINT, HEALTHCHECK (and its timings),
   USER (not root), ENV, WORKDIR, EXPOSE, STOPSIGNAL as written; its first layer is the base
   (the runtime stage is FROM ${BASE}) and its history holds no build-stage step. Its
   contents: the binary, the docs and the runtime libraries are there; no -dev package, no
   compiler, linker, cmake, ninja or pkg-config, no headers, no apt lists, cached .debs or
   pkgcache.bin, nothing of the build stage (/src, /out). Its size: see SIZE_* below.
4. A container from it mounted (`buildah mount`) with /proc and /dev bound in and a
   writable directory, owned by the image's user, on each VOLUME it declares. Its
   ENTRYPOINT runs chrooted into it as the image's uid:gid, in its WORKDIR, with exactly
   its environment except BATCHD_LISTEN (a free port on 127.0.0.1): master and workers run
   as that uid; a numeric batch is served over HTTP and checked against Python's math; an
   image batch reads a PNG from the image's BATCHD_DATA_DIR and writes its result there
   (so the state directory is writable by that user); the image's HEALTHCHECK command,
   run the same way, exits 0 while it serves; SIGTERM (the image's STOPSIGNAL) ends it
   with 0; the HEALTHCHECK then fails.
5. Everything is removed at the end, also on failure (containers, images, mounts, the
   store); a run killed before that is cleaned up by the next one.

Exit 77 (skipped), saying why, when the host cannot do it: no root (and no passwordless
sudo), buildah or debootstrap missing, capabilities missing, no Debian mirror reachable.
In the sanitizer build it skips too (it builds the image from the sources, not from that
build; ctest's label nosan keeps tests/run-all.sh from running it twice).

Logs of the last run (debootstrap, buildah bud, batchd, timings): BUILD/artifacts/image/.
"""
import ctypes
import glob
import hashlib
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deploylib as dl  # noqa: E402
from test_dockerfile_static import exec_form_or_shell, parse  # noqa: E402

SUITE = "bookworm"
BUILD = os.path.join(dl.ROOT, "build")
WORK = os.path.abspath(os.environ.get("BATCHD_IMAGE_WORK") or os.path.join(BUILD, "image-test"))
CACHE = os.path.abspath(os.environ.get("BATCHD_IMAGE_CACHE")
                        or os.path.join(os.path.dirname(WORK), "image-cache"))
ARTIFACTS = os.path.join(os.path.dirname(WORK), "artifacts", "image")
DOCKERFILE = os.path.abspath(os.environ.get("BATCHD_DOCKERFILE")
                             or os.path.join(dl.ROOT, "Dockerfile"))
CACHE_DAYS = 7  # a cached base older than this is made again (the mirror moves on)
WATCHDOG_S = 600  # ctest's TIMEOUT for this test is 660 s (CMakeLists.txt)

BASE_TAG = "localhost/batchd-imagetest-base:12"
IMAGE_TAG = "localhost/batchd-imagetest:latest"

# Size bounds, in bytes of file contents (hard links counted once).
# What the runtime stage adds to its base: eleven shared libraries (~5 MB installed), the
# stripped binary (0.5 MB), the docs and dpkg's records of the new packages: measured 5.9 MB.
# 20 MB leaves room for growth, while any one of the mistakes this image must not make goes
# past it: a compiler (gcc-12 alone is ~70 MB), the -dev packages, apt's lists (~45 MB) or
# its pkgcache.bin + srcpkgcache.bin (2 x 39 MB), or the build tree copied over.
SIZE_ADDED_MAX = 20 * 1000 * 1000
# The whole image: the 100 MB bar of the Dockerfile's comment and docker/README.md. The
# debootstrap base trimmed as slim is ~78 MB here, a little more than debian:12-slim's ~75.
SIZE_TOTAL_MAX = 100 * 1000 * 1000

failures = []
timings = {}


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def skip(why):
    print(f"SKIP: {why}", flush=True)
    sys.exit(dl.SKIP)


class Stage:
    """Times a stage of the test into `timings` and prints it."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.t0 = time.monotonic()
        dl.log(f"== {self.name}")
        return self

    def __exit__(self, *exc):
        timings[self.name] = round(time.monotonic() - self.t0, 1)
        dl.log(f"== {self.name}: {timings[self.name]} s")
        return False


# ---------------------------------------------------------------- what the host can do


def reexec_with_sudo_or_skip():
    """debootstrap, mount and chroot need root: re-run under passwordless sudo if allowed."""
    if os.geteuid() == 0:
        return
    if os.environ.get("BATCHD_IMAGE_SUDO") == "1" or not dl.which("sudo"):
        skip("needs root (debootstrap, mount, chroot) and this is uid "
             f"{os.geteuid()} without sudo")
    r = subprocess.run(["sudo", "-n", "true"], capture_output=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        skip(f"needs root (debootstrap, mount, chroot); uid {os.geteuid()} may not sudo "
             "without a password")
    keep = [f"{k}={v}" for k, v in os.environ.items()
            if k.startswith("BATCHD_") or k in ("PATH", "http_proxy", "https_proxy")]
    print("re-running under sudo -n", flush=True)
    for d in (CACHE, ARTIFACTS):  # owned by the user, so that `rm -rf build` works
        os.makedirs(d, exist_ok=True)
    os.execvp("sudo", ["sudo", "-n", "env", *keep, "BATCHD_IMAGE_SUDO=1", sys.executable,
                       os.path.abspath(__file__)])


CAPS = {"CAP_CHOWN": 0, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SYS_CHROOT": 18,
        "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27}


def missing_caps():
    with open("/proc/self/status", encoding="ascii") as f:
        eff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", f.read(), re.M).group(1), 16)
    return [name for name, bit in CAPS.items() if not eff >> bit & 1]


def apt_sources():
    """(type, uri, suites, components, file) of every enabled apt source, in apt's order."""
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")
                                               + glob.glob("/etc/apt/sources.list.d/*.sources"))
    out = []
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        if path.endswith(".sources"):
            for stanza in re.split(r"\n\s*\n", text):
                fields = {}
                for line in stanza.splitlines():
                    if line.startswith("#") or ":" not in line or line[0].isspace():
                        continue
                    k, _, v = line.partition(":")
                    fields[k.strip().lower()] = v.split()
                if fields.get("enabled", ["yes"])[0].lower() == "no":
                    continue
                for t in fields.get("types", []):
                    for uri in fields.get("uris", []):
                        out.append((t, uri, fields.get("suites", []),
                                    fields.get("components", []), path))
        else:
            for line in text.splitlines():
                line = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
                if len(line) >= 3:
                    out.append((line[0], line[1], [line[2]], line[3:], path))
    return out


def debian_mirror():
    """The Debian mirror apt uses here for bookworm main: (uri, where it was read)."""
    if os.environ.get("BATCHD_DEBIAN_MIRROR"):
        return os.environ["BATCHD_DEBIAN_MIRROR"].rstrip("/"), "BATCHD_DEBIAN_MIRROR"
    for typ, uri, suites, comps, path in apt_sources():
        if typ == "deb" and SUITE in suites and "main" in comps and \
                re.match(r"https?://", uri):
            return uri.rstrip("/"), path
    return None, "no `deb URI bookworm main` source in /etc/apt/sources.list*"


def mirror_reachable(mirror):
    url = f"{mirror}/dists/{SUITE}/Release"
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            head = r.read(4096).decode("utf-8", "replace")
    except OSError as e:
        return f"{url}: {e}"
    if f"Codename: {SUITE}" not in head:
        return f"{url} is not a Debian {SUITE} Release file"
    return None


def overlay_works():
    """Whether the kernel mounts overlayfs here (not, e.g., on an overlayfs root)."""
    d = os.path.join(WORK, "overlay-probe")
    parts = [os.path.join(d, p) for p in ("lower", "upper", "work", "merged")]
    for p in parts:
        os.makedirs(p, exist_ok=True)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={parts[0]},upperdir={parts[1]},workdir={parts[2]}",
                        parts[3]], capture_output=True, text=True)
    if r.returncode == 0:
        subprocess.run(["umount", parts[3]], capture_output=True)
    shutil.rmtree(d, ignore_errors=True)
    return r.returncode == 0


# ---------------------------------------------------------------- cleanup


def _mounts_under(prefix):
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if mp == prefix or mp.startswith(prefix + "/"):
                out.append(mp)
    return sorted(set(out), key=len, reverse=True)


class Cleanup:
    """Undoes what the test made, in reverse, once, from whichever thread gets here first."""

    def __init__(self):
        self.lock = threading.Lock()
        self.binds = []  # mount points bound into the container's root
        self.containers = []
        self.images = []
        self.done = False

    def run(self):
        with self.lock:
            if self.done:
                return
            self.done = True
            dl._kill_all()
            kill_chrooted()
            for mp in reversed(self.binds):
                umount(mp)
            for c in reversed(self.containers):
                buildah("umount", c, check=False)
                buildah("rm", c, check=False)
            for img in reversed(self.images):
                buildah("rmi", "-f", img, check=False)
            wipe_work()


def umount(mp):
    r = subprocess.run(["umount", mp], capture_output=True, text=True)
    if r.returncode != 0:
        subprocess.run(["umount", "-l", mp], capture_output=True, text=True)


def kill_chrooted():
    """SIGKILLs the processes whose root is under WORK: what this test started in a chroot
    there (a RUN of the build, the entrypoint, debootstrap's second stage), also those of a
    run that was killed before it could clean up, and those that left its process groups."""
    for _ in range(3):
        found = []
        for d in os.listdir("/proc"):
            if not d.isdigit() or int(d) == os.getpid():
                continue
            try:
                root = os.readlink(f"/proc/{d}/root")
            except OSError:
                continue
            if root.startswith(WORK + "/"):
                found.append(int(d))
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not found:
            return
        time.sleep(0.5)


def wipe_work():
    """Removes WORK, after unmounting whatever is still mounted under it (a killed run's
    container mounts, binds, or debootstrap's /proc)."""
    kill_chrooted()
    for mp in _mounts_under(WORK):
        umount(mp)
    shutil.rmtree(WORK, ignore_errors=True)


CLEANUP = Cleanup()


def watchdog(seconds):
    def expire():
        dl.log(f"watchdog: test ran past {seconds} s; cleaning up")
        CLEANUP.run()
        os._exit(1)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()


# ---------------------------------------------------------------- buildah in a private store

BENV = {}


def setup_store(driver):
    for d in ("store", "run", "tmp"):
        os.makedirs(os.path.join(WORK, d), exist_ok=True)
    conf = os.path.join(WORK, "storage.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f'[storage]\ndriver = "{driver}"\ngraphroot = "{WORK}/store"\n'
                f'runroot = "{WORK}/run"\n')
    BENV.update(os.environ, CONTAINERS_STORAGE_CONF=conf, TMPDIR=os.path.join(WORK, "tmp"))


def buildah(*args, check=True, timeout=300):
    r = subprocess.run(["buildah", *args], env=BENV, capture_output=True, text=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"buildah {' '.join(args)} -> {r.returncode}:\n{r.stderr}")
    return r.stdout.strip()


def _die_with_parent():
    """preexec_fn: SIGKILL this child if the test is killed (prctl PR_SET_PDEATHSIG), so a
    test killed outright leaves no buildah or debootstrap running on."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


def spawn(argv, env=None, stdout=None, stderr=None):
    p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=_die_with_parent)
    with dl._lock:
        dl._procs.append(p)
    return p


def run_logged(argv, logpath, timeout, env=None):
    """Runs ARGV with its output in LOGPATH, killable by the cleanup; returns its code."""
    with open(logpath, "wb") as log:
        p = spawn(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return f"timeout after {timeout} s"


def run_timed(argv, logpath, timeout, env=None):
    """Like run_logged, each output line prefixed with the seconds since the start; returns
    (code, {step: seconds}) where the steps are buildah's `[i/n] STEP k/m: ...` lines."""
    t0 = time.monotonic()
    steps, last = {}, None
    with open(logpath, "wb") as log:
        p = spawn(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, lambda: os.killpg(p.pid, signal.SIGKILL))
        timer.start()
        try:
            for raw in p.stdout:
                now = time.monotonic() - t0
                log.write(b"%7.1f " % now + raw)
                line = raw.decode("utf-8", "replace").strip()
                m = re.match(r"\[\d+/\d+\] STEP \d+/\d+: (.*)", line)
                if m or line.startswith("[") and "COMMIT" in line.split()[1:2]:
                    if last:
                        steps[last[0]] = round(now - last[1], 1)
                    last = ((line.split(":", 1)[0] + ": " + (m.group(1) if m else "COMMIT"))[:90],
                            now)
            code = p.wait()
        finally:
            timer.cancel()
    if last:
        steps[last[0]] = round(time.monotonic() - t0 - last[1], 1)
    if code < 0:
        code = f"killed after {timeout} s"
    return code, steps


def tail(path, n=40):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + l for l in lines[-n:])


# ---------------------------------------------------------------- 1. the base image

SLIM_FILES = {
    # What the official image's build (debuerreotype) puts in debian:12-slim.
    "etc/apt/apt.conf.d/docker-clean":
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb '
        '/var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n',
    "etc/apt/apt.conf.d/docker-no-languages": 'Acquire::Languages "none";\n',
    "etc/apt/apt.conf.d/docker-autoremove-suggests":
        'Apt::AutoRemove::SuggestsImportant "false";\n',
    "etc/dpkg/dpkg.cfg.d/docker-apt-speedup": "force-unsafe-io\n",
    "etc/dpkg/dpkg.cfg.d/docker":
        "path-exclude /usr/share/doc/*\npath-include /usr/share/doc/*/copyright\n"
        "path-exclude /usr/share/man/*\npath-exclude /usr/share/groff/*\n"
        "path-exclude /usr/share/info/*\npath-exclude /usr/share/lintian/*\n"
        "path-exclude /usr/share/linda/*\npath-exclude /usr/share/locale/*\n"
        "path-include /usr/share/locale/locale.alias\n",
}


def slim(rootfs):
    """Trims a debootstrap minbase as debian:12-slim is trimmed, and configures its apt and
    dpkg the same way, so that the Dockerfile's layers measure as they would on slim."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
                    "var/cache/apt/*.bin", "var/lib/apt/lists/*"):
        for p in glob.glob(os.path.join(rootfs, pattern)):
            if os.path.isfile(p) and not p.endswith("/lock"):
                os.unlink(p)
    doc = os.path.join(rootfs, "usr/share/doc")
    for d, _, files in os.walk(doc):
        for f in files:
            if f != "copyright":
                os.unlink(os.path.join(d, f))
    for sub in ("man", "groff", "info", "lintian", "linda"):
        shutil.rmtree(os.path.join(rootfs, "usr/share", sub), ignore_errors=True)
    loc = os.path.join(rootfs, "usr/share/locale")
    for name in os.listdir(loc) if os.path.isdir(loc) else []:
        if name != "locale.alias":
            shutil.rmtree(os.path.join(loc, name), ignore_errors=True)
    for rel, text in SLIM_FILES.items():
        path = os.path.join(rootfs, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="ascii") as f:
            f.write(text)


def base_tarball(mirror):
    """The cached, slimmed debootstrap of bookworm from MIRROR; made when missing or old."""
    key = hashlib.sha256(f"{SUITE} minbase {mirror} v1".encode()).hexdigest()[:12]
    tar = os.path.join(CACHE, f"debian-{SUITE}-minbase-{key}.tar")
    if os.path.exists(tar) and time.time() - os.path.getmtime(tar) < CACHE_DAYS * 86400:
        print(f"  cached base: {tar} ({os.path.getsize(tar) / 1e6:.0f} MB)")
        timings["debootstrap"] = "cached"
        return tar
    if not dl.which("debootstrap"):
        skip("debootstrap is not installed (apt-get install debootstrap)")
    os.makedirs(CACHE, exist_ok=True)
    rootfs = os.path.join(WORK, "rootfs")
    argv = ["debootstrap", "--variant=minbase"]
    if mirror.startswith("https:"):
        argv.append("--include=ca-certificates")
    argv += [SUITE, rootfs, mirror]
    print("  " + " ".join(argv), flush=True)
    logpath = os.path.join(ARTIFACTS, "debootstrap.log")
    with Stage("debootstrap"):
        code = run_logged(argv, logpath, timeout=WATCHDOG_S / 2)
        if code != 0:
            raise RuntimeError(f"debootstrap -> {code}:\n{tail(logpath)}")
        for mp in _mounts_under(rootfs):  # debootstrap unmounts its /proc; be sure
            umount(mp)
        slim(rootfs)
        part = tar + ".part"
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", part, "."], check=True)
        os.replace(part, tar)
        shutil.rmtree(rootfs, ignore_errors=True)
    print(f"  base cached as {tar} ({os.path.getsize(tar) / 1e6:.0f} MB)")
    return tar


def file_sizes(root):
    """{relative path: (size, mode)} of the regular files under ROOT; hard links once."""
    seen, out = set(), {}
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if not os.path.isfile(p) or os.path.islink(p) or (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            out[os.path.relpath(p, root)] = st.st_size
    return out


def import_base(tar):
    """The tarball as a buildah image: returns the base's {path: size}."""
    c = buildah("from", "--name", "batchd-imagetest-base", "scratch")
    CLEANUP.containers.append(c)
    mnt = buildah("mount", c)
    subprocess.run(["tar", "-C", mnt, "--numeric-owner", "-xpf", tar], check=True)
    sizes = file_sizes(mnt)
    buildah("umount", c)
    # As debian:12-slim says: PATH, and bash when nothing else is asked.
    buildah("config", "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--cmd", "bash", c)
    buildah("commit", "--format", "docker", "--rm", c, BASE_TAG)
    CLEANUP.containers.remove(c)
    CLEANUP.images.append(BASE_TAG)
    return sizes


# ---------------------------------------------------------------- 3. the image vs the Dockerfile


def duration_ns(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    return int(m.group(1)) * {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}[
        m.group(2)]


def dockerfile_runtime():
    """The Dockerfile's runtime stage: a dict of what the image's config must say."""
    with open(DOCKERFILE, encoding="utf-8") as f:
        preamble, stages = parse(f.read())
    rt = stages[-1]
    want = {"env": {}, "instructions": [i for i, _, _ in rt["instructions"]], "from": rt["from"]}
    for instr, args, _ in rt["instructions"]:
        if instr == "ENTRYPOINT":
            want["entrypoint"] = exec_form_or_shell(args)
        elif instr == "USER":
            want["user"] = args
        elif instr == "WORKDIR":
            want["workdir"] = args
        elif instr == "STOPSIGNAL":
            want["stopsignal"] = args
        elif instr == "EXPOSE":
            want["expose"] = [p if "/" in p else p + "/tcp" for p in args.split()]
        elif instr == "ENV":
            for pair in exec_form_or_shell(args):
                k, _, v = pair.partition("=")
                want["env"][k] = v
        elif instr == "HEALTHCHECK":
            opts, _, cmd = args.partition("CMD")
            hc = {"Test": ["CMD", *exec_form_or_shell(cmd)]}
            for k, v in re.findall(r"--([a-z-]+)=(\S+)", opts):
                name = {"interval": "Interval", "timeout": "Timeout",
                        "start-period": "StartPeriod", "retries": "Retries"}[k]
                hc[name] = int(v) if name == "Retries" else duration_ns(v)
            want["healthcheck"] = hc
    want["base_arg"] = [a for i, a, _ in preamble if i == "ARG" and a.startswith("BASE=")]
    return want


def check_config(cfg, history, diff_ids, base_diff_ids, want):
    check(cfg.get("Entrypoint") == want["entrypoint"],
          f"ENTRYPOINT {cfg.get('Entrypoint')} as the Dockerfile says")
    check(cfg.get("Healthcheck") == want["healthcheck"],
          f"HEALTHCHECK {cfg.get('Healthcheck')} as the Dockerfile says")
    check(cfg.get("User") == want["user"], f"USER {cfg.get('User')!r}")
    uid = cfg.get("User", "").split(":")[0]
    check(uid not in ("", "0", "root"), "the image does not run as root")
    env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
    check(all(env.get(k) == v for k, v in want["env"].items()),
          f"ENV holds the Dockerfile's {sorted(want['env'])}")
    check(cfg.get("WorkingDir") == want["workdir"], f"WORKDIR {cfg.get('WorkingDir')}")
    check(cfg.get("StopSignal") == want["stopsignal"], f"STOPSIGNAL {cfg.get('StopSignal')}")
    check(sorted(cfg.get("ExposedPorts") or {}) == sorted(want["expose"]),
          f"EXPOSE {sorted(cfg.get('ExposedPorts') or {})}")
    check(want["base_arg"] and "${BASE}" in want["from"],
          f"the runtime stage is FROM an overridable base ({want['from']})")
    check(diff_ids[:len(base_diff_ids)] == base_diff_ids and len(diff_ids) > len(base_diff_ids),
          f"layers: the base's {len(base_diff_ids)} then {len(diff_ids) - len(base_diff_ids)} "
          "of the runtime stage")
    steps = [h.get("created_by", "") for h in history[len(base_diff_ids):]]
    leaked = [s for s in steps if "build.sh" in s or "/src" in s]
    check(not leaked, f"no build-stage step in the image's history {leaked or ''}")
    check(len(steps) == len(want["instructions"]),
          f"history: {len(steps)} steps after the base for the runtime stage's "
          f"{len(want['instructions'])} instructions")


def dpkg_installed(mnt):
    pkgs, name = set(), None
    with open(os.path.join(mnt, "var/lib/dpkg/status"), encoding="utf-8",
              errors="replace") as f:
        for line in f:
            if line.startswith("Package:"):
                name = line.split()[1]
            elif line.startswith("Status:") and line.split()[-1] == "installed":
                pkgs.add(name)
    return pkgs


def runtime_packages():
    with open(DOCKERFILE, encoding="utf-8") as f:
        last = f.read().replace("\\\n", " ").split("\nFROM ")[-1]
    m = re.search(r"apt-get install ([^&;]*)", last)
    return {w for w in m.group(1).split() if not w.startswith("-")}


def check_contents(mnt, base_sizes):
    binary = os.path.join(mnt, "usr/local/bin/batchd")
    ok = check(os.path.isfile(binary) and os.access(binary, os.X_OK),
               "/usr/local/bin/batchd is in the image")
    if ok:
        with open(binary, "rb") as f:
            check(f.read(4) == b"\x7fELF", "  and is an ELF binary")
        size = os.path.getsize(binary)
        check(size < 20 * 1000 * 1000, f"  of {size / 1e6:.1f} MB (stripped)")
    check(os.path.isfile(os.path.join(mnt, "usr/local/share/doc/batchd/README.md")),
          "the docs are in /usr/local/share/doc/batchd")
    pkgs = dpkg_installed(mnt)
    missing = runtime_packages() - pkgs
    check(not missing, f"the runtime packages are installed {sorted(missing) or ''}")
    banned = {"gcc", "cpp", "binutils", "make", "cmake", "ninja-build", "pkg-config",
              "pkgconf", "build-essential", "libc6-dev"}
    bad = sorted(p for p in pkgs if p.split(":")[0] in banned or re.match(r"gcc-\d+$|cpp-\d+$", p)
                 or p.split(":")[0].endswith("-dev"))
    check(not bad, f"no compiler or -dev package among the {len(pkgs)} installed {bad or ''}")
    tools = [t for t in ("cc", "gcc", "cpp", "ld", "as", "cmake", "ninja", "pkg-config", "make")
             if any(os.path.lexists(os.path.join(mnt, d, t)) for d in ("usr/bin", "usr/local/bin"))]
    check(not tools, f"no build tool on PATH {tools or ''}")
    headers = glob.glob(os.path.join(mnt, "usr/include/**/*.h"), recursive=True)
    check(not headers, f"no C headers ({len(headers)})")
    leftovers = [p for p in ("src", "out", "tmp/build") if os.path.lexists(os.path.join(mnt, p))]
    check(not leftovers, f"nothing of the build stage {leftovers or ''}")
    apt = [p for pat in ("var/lib/apt/lists/*", "var/cache/apt/*.bin",
                         "var/cache/apt/archives/*.deb")
           for p in glob.glob(os.path.join(mnt, pat))
           if os.path.isfile(p) and not p.endswith("/lock")]
    check(not apt, f"no apt lists, package caches or .debs {apt[:3] or ''}")

    sizes = file_sizes(mnt)
    total = sum(sizes.values())
    added = {p: s for p, s in sizes.items() if base_sizes.get(p) != s}
    added_total = sum(added.values())
    by_dir = {}
    for p, s in added.items():
        top = "/".join(p.split("/")[:3])
        by_dir[top] = by_dir.get(top, 0) + s
    biggest = sorted(by_dir.items(), key=lambda kv: -kv[1])[:6]
    print("  added by the runtime stage: " +
          ", ".join(f"/{d} {s / 1e6:.1f} MB" for d, s in biggest))
    check(added_total <= SIZE_ADDED_MAX, f"the runtime stage adds {added_total / 1e6:.1f} MB "
          f"to its base (bound {SIZE_ADDED_MAX / 1e6:.0f} MB)")
    check(total <= SIZE_TOTAL_MAX, f"the image holds {total / 1e6:.1f} MB "
          f"(base {sum(base_sizes.values()) / 1e6:.1f} MB; bound {SIZE_TOTAL_MAX / 1e6:.0f} MB)")
    timings["image_bytes"] = total
    timings["added_bytes"] = added_total


# ---------------------------------------------------------------- 4. run it


def user_ids(mnt, user):
    """USER (name or number, with an optional group) as numbers, from the image's files."""
    name, _, group = user.partition(":")

    def lookup(path, key):
        with open(os.path.join(mnt, path), encoding="utf-8") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields[0] == key:
                    return fields
        raise KeyError(f"{key} not in /{path}")

    if name.isdigit():
        uid = int(name)
    else:
        uid = int(lookup("etc/passwd", name)[2])
    if group:
        gid = int(group) if group.isdigit() else int(lookup("etc/group", group)[2])
    else:
        gid = int(lookup("etc/passwd", name)[3])
    return uid, gid


def in_image(mnt, uid, gid, workdir):
    """A preexec_fn: the child enters the image's root as its user, in its WORKDIR."""

    def enter():
        os.chroot(mnt)
        os.chdir(workdir or "/")
        os.setgroups([gid])
        os.setgid(gid)
        os.setuid(uid)

    return enter


def png_rgb(width, height):
    """A PNG (8-bit RGB) of a gradient, made without any library."""
    rows = b"".join(b"\0" + bytes(v for x in range(width)
                                  for v in (x * 255 // width, y * 255 // height, 128))
                    for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                               0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def png_size(data):
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def is_prime(n):
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def prime_factors(n):
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out + ([n] if n > 1 else [])


def numeric_batch(port):
    floats = [2, 3.5, 1e10, 0.1, 12345.678]
    jobs = ([{"op": "sqrt", "input": x} for x in floats]
            + [{"op": "factorial", "input": n} for n in (0, 5, 20)]
            + [{"op": "fibonacci", "input": n} for n in (1, 50, 92)]
            + [{"op": "is_prime", "input": n} for n in (1, 2, 1_000_000_007, 1_000_000_011)]
            + [{"op": "prime_factors", "input": n} for n in (600851475143, 2**40 + 1)]
            + [{"op": "sum", "input": list(range(101))},
               {"op": "cpu_loop", "input": {"n": 1_000_000, "x": 3}},
               {"op": "sqrt", "input": -1}])
    fib = [0, 1]
    while len(fib) < 93:
        fib.append(fib[-1] + fib[-2])
    want = ([math.sqrt(x) for x in floats] + [math.factorial(n) for n in (0, 5, 20)]
            + [fib[n] for n in (1, 50, 92)]
            + [is_prime(n) for n in (1, 2, 1_000_000_007, 1_000_000_011)]
            + [prime_factors(n) for n in (600851475143, 2**40 + 1)]
            + [5050, 1_000_000 * 999_999 // 2 + 3 * 1_000_000, None])
    st = dl.Stream(port, {"jobs": jobs}, timeout=60).read_all()
    check(st.status == 200 and st.complete, f"numeric batch: {st.status}, summary last")
    got = {l["index"]: l for l in st.lines if "index" in l}
    wrong = []
    for i, w in enumerate(want):
        line = got.get(i, {})
        if w is None:
            ok = line.get("error", {}).get("code") == "domain_error"
        else:
            r = line.get("result")
            ok = r == w and type(r) is type(w)
        if not ok:
            wrong.append((jobs[i], line, w))
    check(not wrong, f"{len(jobs)} results equal Python's math "
          f"(sqrt of -1: domain_error) {wrong[:3] or ''}")
    s = st.summary or {}
    check(s.get("jobs") == len(jobs) and s.get("ok") == len(jobs) - 1 and s.get("failed") == 1,
          f"summary {s}")


def image_batch(port, mnt, data_dir, uid, gid):
    """A PNG under the image's data dir, resized and written back there by the server."""
    src = os.path.join(mnt, data_dir.lstrip("/"), "imagetest-in.png")
    with open(src, "wb") as f:
        f.write(png_rgb(64, 32))
    os.chown(src, uid, gid)
    batch = {"op": "image", "inputs": [{"path": "imagetest-in.png"}] * 2,
             "params": {"pipeline": [{"op": "resize", "width": 32, "height": 16}],
                        "format": "png", "output": "path"}}
    st = dl.Stream(port, batch, timeout=60).read_all()
    check(st.status == 200 and st.complete, f"image batch: {st.status}, summary last")
    res = [l.get("result") or {} for l in st.lines if "index" in l]
    check(len(res) == 2 and all(r.get("width") == 32 and r.get("height") == 16 for r in res),
          f"image results 32x16 {[l for l in st.lines if 'index' in l][:2]}")
    for r in res:
        rel = r.get("path", "")  # relative to the data dir: out/NAME.png
        out = os.path.join(mnt, data_dir.lstrip("/"), rel)
        if not check(bool(rel) and os.path.isfile(out), f"output {rel!r} under {data_dir}"):
            continue
        with open(out, "rb") as f:
            size = png_size(f.read())
        owner = os.stat(out).st_uid
        check(size == (32, 16) and owner == uid, f"  a {size} PNG written by uid {owner}")
    # A JPEG inline: libjpeg-turbo in the image too.
    st = dl.Stream(port, {"op": "image", "inputs": [{"path": "imagetest-in.png"}],
                          "params": {"format": "jpeg", "quality": 80}}, timeout=60).read_all()
    r = next((l.get("result") for l in st.lines if "index" in l), None) or {}
    check(st.complete and r.get("format") == "jpeg" and r.get("width") == 64,
          f"inline JPEG of the PNG: {str(r)[:120]}")


def proc_ids(pid):
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        text = f.read()
    uids = [int(x) for x in re.search(r"^Uid:\s+(.*)$", text, re.M).group(1).split()]
    gids = [int(x) for x in re.search(r"^Gid:\s+(.*)$", text, re.M).group(1).split()]
    return set(uids), set(gids)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", encoding="ascii", errors="replace") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def run_image(mnt, cfg):
    uid, gid = user_ids(mnt, cfg["User"])
    workdir = cfg.get("WorkingDir") or "/"
    for sub in ("proc", "dev"):
        target = os.path.join(mnt, sub)
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "--bind", f"/{sub}", target], check=True)
        CLEANUP.binds.append(target)
    # What an engine gives each VOLUME: an empty directory the user may write (a fresh named
    # volume, a k8s emptyDir with fsGroup).
    for i, path in enumerate(sorted(cfg.get("Volumes") or {})):
        host = os.path.join(WORK, f"volume{i}")
        os.makedirs(host)
        os.chown(host, uid, gid)
        target = os.path.join(mnt, path.lstrip("/"))
        os.makedirs(target, exist_ok=True)
        subprocess.run(["mount", "--bind", host, target], check=True)
        CLEANUP.binds.append(target)
        print(f"  VOLUME {path}: a writable directory owned by {uid}:{gid}")
    env = dict(e.partition("=")[::2] for e in cfg.get("Env") or [])
    # The image's directories for state and data must be writable by its user: there and
    # its own, or (for one batchd makes at start) under a directory of its own.
    for k, v in sorted(env.items()):
        if k.startswith("BATCHD_") and k.endswith("_DIR") and v.startswith("/"):
            p = os.path.join(mnt, v.lstrip("/"))
            while not os.path.lexists(p) and p != mnt:
                p = os.path.dirname(p)
            st = os.stat(p)
            check(os.path.isdir(p) and st.st_uid == uid and st.st_mode & 0o200,
                  f"{k}={v}: /{os.path.relpath(p, mnt)} is a directory the user {uid} owns "
                  "and may write")
    port = dl.free_port()
    env["BATCHD_LISTEN"] = f"{dl.HOST}:{port}"
    argv = list(cfg["Entrypoint"]) + list(cfg.get("Cmd") or [])
    logpath = os.path.join(ARTIFACTS, "batchd.log")
    log = open(logpath, "wb")
    print(f"  chroot {mnt} as {uid}:{gid} in {workdir}: {' '.join(argv)} "
          f"(BATCHD_LISTEN={env['BATCHD_LISTEN']})", flush=True)
    p = subprocess.Popen(argv, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=in_image(mnt, uid, gid, workdir))
    with dl._lock:
        dl._procs.append(p)
    try:
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and p.poll() is None:
            try:
                ready = dl.request(port, "GET", "/readyz", timeout=2)[0] == 200
            except OSError:
                pass
            if ready:
                break
            time.sleep(0.1)
        if not check(ready, f"the entrypoint serves /readyz 200 on {dl.HOST}:{port}"):
            print(tail(logpath))
            return
        uids, gids = proc_ids(p.pid)
        workers = children(p.pid)
        wids = [proc_ids(w) for w in workers]
        check(uids == {uid} and gids == {gid} and all(w == ({uid}, {gid}) for w in wids),
              f"master and its {len(workers)} workers run as {uid}:{gid}")
        numeric_batch(port)
        data_dir = env.get("BATCHD_DATA_DIR")
        if check(bool(data_dir), "the image names a BATCHD_DATA_DIR"):
            image_batch(port, mnt, data_dir, uid, gid)

        hc = cfg["Healthcheck"]["Test"]
        hc_argv = hc[1:] if hc[0] == "CMD" else ["/bin/sh", "-c", hc[1]]
        hc_timeout = max(cfg["Healthcheck"].get("Timeout", 0) / 1e9, 10)

        def healthcheck():
            t0 = time.monotonic()
            r = subprocess.run(hc_argv, env=env, capture_output=True, timeout=hc_timeout,
                               stdin=subprocess.DEVNULL,
                               preexec_fn=in_image(mnt, uid, gid, workdir))
            return r.returncode, time.monotonic() - t0, r.stderr.decode(errors="replace")

        code, took, err = healthcheck()
        check(code == 0, f"HEALTHCHECK {' '.join(hc_argv)} in the image -> {code} "
              f"in {took:.2f} s while serving {err.strip()[:200]}")
        stop = getattr(signal, cfg.get("StopSignal") or "SIGTERM")
        t0 = time.monotonic()
        p.send_signal(stop)
        try:
            rc = p.wait(timeout=45)
        except subprocess.TimeoutExpired:
            rc = "still running after 45 s"
        check(rc == 0, f"{stop.name}: exit {rc} in {time.monotonic() - t0:.1f} s")
        code, took, _ = healthcheck()
        check(code != 0, f"HEALTHCHECK -> {code} once it stopped")
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        log.close()
        if failures:
            print("  batchd's log:\n" + tail(logpath, 20))


# ---------------------------------------------------------------- main


def preflight():
    if dl.sanitized():
        skip("the image is built from the sources, not from this sanitizer build: it is "
             "checked once, in the plain configuration (label nosan)")
    reexec_with_sudo_or_skip()
    if not dl.which("buildah"):
        skip("buildah is not installed (apt-get install buildah)")
    for tool in ("mount", "umount", "tar"):
        if not dl.which(tool):
            skip(f"{tool} is not installed")
    caps = missing_caps()
    if caps:
        skip(f"root here lacks {', '.join(caps)} (debootstrap, mount and chroot need them)")
    mirror, where = debian_mirror()
    if not mirror:
        skip(f"no Debian mirror: {where}; set BATCHD_DEBIAN_MIRROR")
    err = mirror_reachable(mirror)
    if err:
        skip(f"the Debian mirror (from {where}) is not reachable: {err}")
    print(f"  mirror {mirror} (from {where})")
    return mirror


def main():
    mirror = preflight()
    watchdog(WATCHDOG_S)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally below
    wipe_work()  # what a killed run left
    os.makedirs(WORK)
    os.makedirs(ARTIFACTS, exist_ok=True)
    t_all = time.monotonic()
    try:
        driver = "overlay" if overlay_works() else "vfs"
        print(f"  buildah storage: {driver}, private, under {WORK}")
        setup_store(driver)
        buildah_version = buildah("--version")
        print(f"  {buildah_version}")
        tar = base_tarball(mirror)
        with Stage("import"):
            base_sizes = import_base(tar)
        base_info = json.loads(buildah("inspect", "--type", "image", BASE_TAG))

        logpath = os.path.join(ARTIFACTS, "bud.log")
        argv = ["buildah", "bud", "--isolation", "chroot", "--network", "host",
                "--format", "docker", "--pull=never", "--build-arg", f"BASE={BASE_TAG}",
                "-f", DOCKERFILE, "-t", IMAGE_TAG, dl.ROOT]
        print("  " + " ".join(argv), flush=True)
        with Stage("bud"):
            code, steps = run_timed(argv, logpath, timeout=WATCHDOG_S * 0.7, env=BENV)
        for step, took in steps.items():
            if took >= 1:
                print(f"  {took:6.1f} s  {step}")
        timings["bud_steps"] = steps
        CLEANUP.images.append(IMAGE_TAG)
        if not check(code == 0, f"buildah bud -> {code}"):
            print(tail(logpath, 60))
            return 1
        info = json.loads(buildah("inspect", "--type", "image", IMAGE_TAG))
        cfg = info["Docker"]["config"]
        want = dockerfile_runtime()
        check_config(cfg, info["Docker"].get("history") or [],
                     info["Docker"]["rootfs"]["diff_ids"],
                     base_info["Docker"]["rootfs"]["diff_ids"], want)
        c = buildah("from", "--pull=never", "--name", "batchd-imagetest", IMAGE_TAG)
        CLEANUP.containers.append(c)
        mnt = buildah("mount", c)
        print(f"  buildah mount {c}: {mnt}")
        check_contents(mnt, base_sizes)
        with Stage("run"):
            run_image(mnt, cfg)
    finally:
        CLEANUP.run()
        left = _mounts_under(WORK)
        check(not left and not os.path.exists(WORK), f"cleaned up {left or ''}")
        timings["total"] = round(time.monotonic() - t_all, 1)
        with open(os.path.join(ARTIFACTS, "timings.json"), "w", encoding="utf-8") as f:
            json.dump(timings, f, indent=1)
        print("  timings (s):", json.dumps(timings))
    if failures:
        print("FAILED:", *failures, sep="\n  ")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
