"""Helpers shared by the deploy tests: start and stop batchd processes on loopback ports,
talk HTTP to them, and make sure nothing outlives the test.

Every process started here is registered and killed (with its process group) at exit, and
`watchdog(seconds)` bounds the whole test: on expiry it kills everything and exits 1.
Traffic goes to 127.0.0.1 only.
"""
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HOST = "127.0.0.1"
SKIP = 77  # ctest SKIP_RETURN_CODE

_procs = []
_lock = threading.Lock()


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, flush=True)


def batchd_bin():
    path = os.environ.get("BATCHD_BIN")
    if not path:
        for cand in ("build/batchd", "build-release/batchd"):
            if os.path.exists(os.path.join(ROOT, cand)):
                path = os.path.join(ROOT, cand)
                break
    if not path or not os.access(path, os.X_OK):
        log("no batchd binary: set BATCHD_BIN")
        sys.exit(1)
    return os.path.abspath(path)


def sanitized():
    return os.environ.get("BATCHD_SANITIZED", "0").lower() in ("1", "on", "true", "yes")


def _kill_all():
    with _lock:
        procs = list(_procs)
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


atexit.register(_kill_all)


def watchdog(seconds):
    """Ends the test after SECONDS whatever it is doing: kills every process it started."""

    def expire():
        log(f"watchdog: test ran past {seconds} s; killing everything")
        _kill_all()
        os._exit(1)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()
    return t


def spawn(argv, env=None, stdout=None, stderr=None, cwd=None):
    """Starts ARGV in its own process group, registered for cleanup."""
    p = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                         cwd=cwd, start_new_session=True)
    with _lock:
        _procs.append(p)
    return p


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# The server logs the port it bound when asked for port 0 (SPEC §1). Accept the shapes a
# logfmt or JSON line may give it: port=123, "port":123, listen=127.0.0.1:123, ...:123.
_PORT_RES = [
    re.compile(r'"port"\s*:\s*"?(\d{1,5})'),
    re.compile(r'\bport=(\d{1,5})'),
    re.compile(r'(?:listen\w*|addr\w*|address)[=":\s]+"?(?:127\.0\.0\.1|0\.0\.0\.0|\[?::1?\]?):(\d{1,5})'),
    re.compile(r'127\.0\.0\.1:(\d{1,5})'),
]


class Batchd:
    """One batchd process on a loopback port, configured by environment like the image.
    Its store (BATCHD_STATE_DIR) is a folder of its own in its work dir, removed by stop(),
    unless ENV names one (a test that restarts a replica on its state passes it)."""

    def __init__(self, name="batchd", workers=1, env=None, args=(), workdir=None, port=0):
        self.name = name
        self.dir = workdir or tempfile.mkdtemp(prefix=f"{name}-")
        os.makedirs(self.dir, exist_ok=True)
        self.errpath = os.path.join(self.dir, "stderr.log")
        e = dict(os.environ)
        e.update({"BATCHD_LISTEN": f"{HOST}:{port}", "BATCHD_WORKERS": str(workers)})
        self.state_dir = None
        if "BATCHD_STATE_DIR" not in (env or {}):
            self.state_dir = os.path.join(self.dir, "state")
            e["BATCHD_STATE_DIR"] = self.state_dir
        if env:
            e.update(env)
        self.env, self.args = e, list(args)
        self.err = open(self.errpath, "wb")
        self.proc = spawn([batchd_bin(), *args], env=e, stdout=self.err, stderr=self.err,
                          cwd=self.dir)
        self.port = port or self._read_port()

    def restart(self):
        """Starts the process again (after stop() or a kill) with the same environment and
        arguments on the same port, its log appended to the same file."""
        if self.proc.poll() is None:
            raise RuntimeError(f"{self.name} is still running")
        self.err.close()
        self.env["BATCHD_LISTEN"] = f"{HOST}:{self.port}"
        self.err = open(self.errpath, "ab")
        self.proc = spawn([batchd_bin(), *self.args], env=self.env, stdout=self.err,
                          stderr=self.err, cwd=self.dir)

    def _read_port(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.errpath, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            # The listening line only: another may name another port (--redis's URL).
            for line in (l for l in text.splitlines() if "listening" in l):
                for rx in _PORT_RES:
                    m = rx.search(line)
                    if m and int(m.group(1)) != 0:
                        return int(m.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{text}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name}: no port in its log after {timeout} s:\n{text}")

    def wait_ready(self, path="/readyz", timeout=30):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _, _ = request(self.port, "GET", path, timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log()}")

    def log(self):
        with open(self.errpath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def signal_group(self, sig):
        """SIG to the server and its workers (its process group): SIGKILL is a node lost,
        SIGSTOP a node frozen."""
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def kill(self):
        """kill -9 of the server and its workers; waits for the server's exit."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def stop(self):
        self.kill()
        self.err.close()
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def request(port, method, path, body=None, headers=None, timeout=30):
    """One HTTP request; returns (status, headers as a lower-case dict, body bytes)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


class Stream:
    """A streamed POST /v1/batches: read NDJSON lines as they come. `complete` is True only
    when the stream ended cleanly with a summary line as its last line."""

    def __init__(self, port, batch, headers=None, timeout=60):
        self.conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        h = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        h.update(headers or {})
        self.conn.request("POST", "/v1/batches", body=json.dumps(batch).encode(), headers=h)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.lines = []
        self.summary = None
        self.cut = False  # the stream broke off (truncated chunked body, reset, ...)

    def read_line(self):
        try:
            line = self.resp.readline()
        except (http.client.IncompleteRead, ConnectionError, socket.timeout, OSError):
            self.cut = True
            return None
        if not line:
            return None
        if not line.endswith(b"\n"):
            self.cut = True
            return None
        obj = json.loads(line)
        self.lines.append(obj)
        if "summary" in obj:
            self.summary = obj["summary"]
        return obj

    def read_all(self):
        if self.status != 200:
            self.body = self.resp.read()
            self.close()
            return self
        while self.read_line() is not None:
            pass
        self.close()
        return self

    @property
    def complete(self):
        return (not self.cut and self.summary is not None and bool(self.lines)
                and "summary" in self.lines[-1])

    def close(self):
        try:
            self.conn.close()
        except OSError:
            pass


def which(name, extra=("/usr/sbin", "/sbin")):
    for d in os.environ.get("PATH", "").split(os.pathsep) + list(extra):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


NGINX_CONF = os.path.join(ROOT, "docker", "nginx.conf")


def render_nginx(replica_ports, listen_port, prefix, conf_path=NGINX_CONF):
    """Renders docker/nginx.conf for loopback: the lines marked `# @replica` get the
    replicas' 127.0.0.1 ports in order, the `# @listen` line gets 127.0.0.1:LISTEN_PORT, and
    the pid and temp paths move under PREFIX. Everything else stays as shipped. Returns the
    path of the rendered file."""
    with open(conf_path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    out, replicas = [], iter(replica_ports)
    n_replica = n_listen = 0
    for line in lines:
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        if "# @replica" in line:
            port = next(replicas)
            line, n = re.subn(r"server\s+\S+:\d+", f"server {HOST}:{port}", line)
            assert n == 1, line
            n_replica += 1
        elif "# @listen" in line:
            line, n = re.subn(r"listen\s+\S+;", f"listen {HOST}:{listen_port};", line)
            assert n == 1, line
            n_listen += 1
        line = line.replace("/var/cache/nginx", os.path.join(prefix, "cache"))
        line = line.replace("/var/run/nginx.pid", os.path.join(prefix, "nginx.pid"))
        out.append(line)
    assert n_replica == len(replica_ports), f"conf has {n_replica} replicas"
    assert n_listen == 1
    os.makedirs(os.path.join(prefix, "cache"), exist_ok=True)
    # nginx's workers drop to an unprivileged user when started as root: let them reach
    # their temp dirs under the test's private temp dir.
    os.chmod(prefix, 0o755)
    os.chmod(os.path.join(prefix, "cache"), 0o777)
    path = os.path.join(prefix, "nginx.conf")
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(out))
    return path


class Nginx:
    """Debian's nginx started in the foreground with a rendered docker/nginx.conf."""

    def __init__(self, replica_ports, prefix=None):
        self.bin = which("nginx")
        if not self.bin:
            raise FileNotFoundError("nginx not installed (apt-get install nginx-light)")
        self.prefix = prefix or tempfile.mkdtemp(prefix="nginx-")
        self.port = free_port()
        self.conf = render_nginx(replica_ports, self.port, self.prefix)
        self.outpath = os.path.join(self.prefix, "access.log")
        self.errpath = os.path.join(self.prefix, "error.log")
        r = subprocess.run([self.bin, "-t", "-p", self.prefix, "-c", self.conf],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{r.stderr}")
        self.out = open(self.outpath, "wb")
        self.errf = open(self.errpath, "wb")
        self.proc = spawn([self.bin, "-p", self.prefix, "-c", self.conf, "-g", "daemon off;"],
                          stdout=self.out, stderr=self.errf)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((HOST, self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"nginx did not start:\n{open(self.errpath).read()}")

    def access_log(self):
        """The JSON access log lines written so far, parsed."""
        self.out.flush()
        with open(self.outpath, "rb") as f:
            return [json.loads(l) for l in f if l.strip().startswith(b"{")]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


class RedisServer:
    """Debian's redis-server on a free 127.0.0.1 port for one test, with the persistence a
    cluster relies on (SPEC §9: AOF, fsync on every write, no RDB snapshots) in a dir of its
    own. kill() is kill -9; restart() starts it again on the same port and dir (it loads its
    AOF back); cli(...) runs redis-cli against it.

        r = RedisServer()            # started, answers PING
        r.url                        # redis://127.0.0.1:PORT
        r.cli("DBSIZE")              # '0'
        r.kill(); r.restart()
    """

    def __init__(self, port=0, workdir=None, start=True):
        self.bin = which("redis-server")
        self.cli_bin = which("redis-cli")
        if not self.bin or not self.cli_bin:
            raise FileNotFoundError("redis-server not installed (apt-get install redis-server)")
        self.dir = workdir or tempfile.mkdtemp(prefix="redis-")
        os.makedirs(self.dir, exist_ok=True)
        self.port = port or free_port()
        self.logpath = os.path.join(self.dir, "redis.log")
        self.proc = None
        self._out = None
        if start:
            self.start()

    @property
    def url(self):
        return f"redis://{HOST}:{self.port}"

    def argv(self):
        return [self.bin, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "yes", "--appendfsync", "always", "--dir", self.dir,
                "--daemonize", "no", "--logfile", "", "--protected-mode", "yes"]

    def start(self, timeout=20):
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("redis-server is still running")
        if self._out is not None:
            self._out.close()
        self._out = open(self.logpath, "ab")
        self.proc = spawn(self.argv(), stdout=self._out, stderr=self._out, cwd=self.dir)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.proc.returncode}:\n{self.log()}")
            r = subprocess.run(self._cli_argv("PING"), capture_output=True, text=True,
                               timeout=5)
            if r.returncode == 0 and r.stdout.strip() == "PONG":  # not LOADING: AOF read back
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not up after {timeout} s:\n{self.log()}")

    def _cli_argv(self, *args):
        return [self.cli_bin, "-h", HOST, "-p", str(self.port), "--raw", *map(str, args)]

    def cli(self, *args, timeout=10):
        """One redis-cli command; returns its output (--raw: one line per element)."""
        r = subprocess.run(self._cli_argv(*args), capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0 or r.stdout.startswith("ERR") or r.stdout.startswith("WRONGTYPE"):
            raise RuntimeError(f"redis-cli {' '.join(map(str, args))}: rc {r.returncode} "
                               f"{r.stdout}{r.stderr}")
        return r.stdout.rstrip("\n")

    def fill(self, nkeys, db=15, value_bytes=64):
        """Writes NKEYS keys `pad:I` into DB (one pipelined redis-cli --pipe): a restart then
        spends a while loading its AOF, answering LOADING meanwhile (300k keys: ~0.5 s)."""
        val = b"x" * value_bytes
        head = b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(db)), db)
        body = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" %
                        (len(k), k, len(val), val) for k in (b"pad:%d" % i for i in range(nkeys)))
        r = subprocess.run([self.cli_bin, "-h", HOST, "-p", str(self.port), "--pipe"],
                           input=head + body, capture_output=True, timeout=120)
        if r.returncode != 0 or b"errors: 0" not in r.stdout:
            raise RuntimeError(f"redis-cli --pipe: {r.stdout[-300:]!r} {r.stderr[-300:]!r}")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """kill -9: what the AOF has fsynced is all that survives."""
        if self.running():
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, timeout=20):
        """Starts it again on the same port and dir (after kill() or stop())."""
        self.kill()
        return self.start(timeout)

    def stop(self):
        """A clean shutdown (SIGTERM: redis-server fsyncs and exits)."""
        if self.running():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self._out is not None:
            self._out.close()
            self._out = None

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""
