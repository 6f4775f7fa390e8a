"""Test harness: start the real batchd on a free port and talk HTTP to it.

    from harness import Server
    with Server(workers=2) as s:
        status, headers, body = s.request("GET", "/healthz")
        lines, status, headers = s.batch({"op": "sqrt", "inputs": [4]})   # NDJSON, parsed

Environment: BATCHD_BIN (the binary), BATCHD_SHARED (../shared), BATCHD_SANITIZED=1 under
ASan/UBSan builds (tests may run smaller cases there). Only loopback is ever contacted.

Every Server gets a --state-dir of its own (a new temporary folder, removed when the Server
is left or the test ends) unless the test passes --state-dir or BATCHD_STATE_DIR: one store
per process (a second batchd on a state dir is refused), and no batchd-state/ left in the
build folder. A Server stopped and started again keeps its state dir (a restart).
"""
import atexit
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("BATCHD_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "batchd")
SHARED = os.environ.get("BATCHD_SHARED") or os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared")
SANITIZED = os.environ.get("BATCHD_SANITIZED", "0") in ("1", "ON", "TRUE", "true")

_state_dirs = []


def _remove_state_dirs():
    for d in _state_dirs:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_remove_state_dirs)


def new_state_dir():
    """A fresh temporary state dir, removed when the test process ends."""
    d = tempfile.mkdtemp(prefix="batchd-state-")
    _state_dirs.append(d)
    return d


def has_state_dir(args, env=None):
    """1 if ARGS or ENV name a state dir already."""
    return (any(a == "--state-dir" or a.startswith("--state-dir=") for a in args) or
            "BATCHD_STATE_DIR" in (env or {}))


class Server:
    """A batchd process on 127.0.0.1 with a free port; its stderr is kept in .log."""

    def __init__(self, workers=2, args=(), env=None, start_timeout=20):
        self.workers = workers
        self.args = list(args)
        self.state_dir = None  # the one made here, removed on __exit__
        if not has_state_dir(self.args, env):
            self.state_dir = new_state_dir()
            self.args += ["--state-dir", self.state_dir]
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.start_timeout = start_timeout
        self.proc = None
        self.port = None
        self.log_lines = []
        self._reader = None

    def start(self):
        cmd = [BIN, "--listen", "127.0.0.1:0", "--workers", str(self.workers)] + self.args
        self.port = None  # a restart listens on a new port
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     env=self.env)
        got = threading.Event()

        def read():
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.log_lines.append(line)
                m = re.search(r"event=listening .*port=(\d+)", line) or \
                    re.search(r'"event":"listening".*"port":"(\d+)"', line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    got.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not got.wait(self.start_timeout):
            self.stop()
            raise RuntimeError("batchd did not start:\n" + "\n".join(self.log_lines))
        self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        end = time.time() + timeout
        while time.time() < end:
            try:
                status, _, _ = self.request("GET", "/readyz")
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("batchd not ready:\n" + "\n".join(self.log_lines))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        rc = self.stop()
        # A sanitizer report or a crash of the server is a test failure wherever it happens.
        bad = [l for l in self.log_lines if "ERROR: AddressSanitizer" in l or
               "runtime error:" in l or "ERROR: LeakSanitizer" in l]
        if bad and exc[0] is None:
            raise AssertionError("sanitizer report in the server log:\n" + "\n".join(self.log_lines[-80:]))
        if self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        if rc not in (0, None) and exc[0] is None:
            raise AssertionError("batchd exited with %r:\n%s" % (rc, "\n".join(self.log_lines[-40:])))
        return False

    # ------------------------------------------------------------------ HTTP
    def connect(self, timeout=60):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """One request on a fresh connection. Returns (status, headers dict lower-cased, bytes)."""
        c = self.connect(timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body).encode()
                headers = dict(headers or {})
                headers.setdefault("Content-Type", "application/json")
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, data
        finally:
            c.close()

    def batch(self, batch, accept=None, headers=None, timeout=120):
        """POSTs a batch; returns (parsed NDJSON lines, status, headers). For a non-200
        answer the lines are [the parsed error body]."""
        h = {"Content-Type": "application/json"}
        if accept:
            h["Accept"] = accept
        h.update(headers or {})
        body = batch if isinstance(batch, (bytes, str)) else json.dumps(batch)
        status, hdrs, data = self.request("POST", "/v1/batches", body=body, headers=h,
                                          timeout=timeout)
        if status != 200 or (accept or "").startswith("application/json"):
            try:
                return [json.loads(data)], status, hdrs
            except ValueError:
                return [data], status, hdrs
        lines = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
        return lines, status, hdrs

    def worker_pids(self):
        """The pids of this server's batchd-worker processes."""
        pids = []
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % d) as f:
                    st = f.read()
                comm = st[st.index("(") + 1:st.rindex(")")]
                state, ppid = st[st.rindex(")") + 2:].split()[:2]
                ppid = int(ppid)
            except (OSError, ValueError):
                continue
            # A killed worker stays a zombie until the server reaps it: it is not a worker.
            if comm == "batchd-worker" and ppid == self.proc.pid and state != "Z":
                pids.append(int(d))
        return sorted(pids)


def results_by_index(lines):
    """{index: line} of an NDJSON stream, checking every index appears once, summary last."""
    assert lines and "summary" in lines[-1], "stream without a summary line: %r" % lines[-3:]
    out = {}
    for l in lines[:-1]:
        assert "index" in l, l
        assert l["index"] not in out, "index %d answered twice" % l["index"]
        assert ("result" in l) != ("error" in l), l
        out[l["index"]] = l
    return out


def check(cond, msg=""):
    if not cond:
        raise AssertionError(msg)


class Suite:
    """A minimal runner: test functions named test_*, closing line 'N passed, N failed'.
    run() returns the exit status: call sys.exit with it after the server is stopped, so
    that the server's exit code and sanitizer reports are checked too."""

    def __init__(self, name):
        self.name = name

    def run(self, namespace):
        tests = [(n, f) for n, f in sorted(namespace.items()) if n.startswith("test_") and callable(f)]
        only = os.environ.get("ONLY")
        passed = failed = 0
        for n, f in tests:
            if only and only not in n:
                continue
            t0 = time.time()
            try:
                f()
                passed += 1
                print("ok   %s (%.2fs)" % (n, time.time() - t0), flush=True)
            except Exception as e:  # noqa: BLE001 - report every failure and go on
                failed += 1
                import traceback
                print("FAIL %s: %s" % (n, e), flush=True)
                traceback.print_exc()
        print("%s: %d passed, %d failed" % (self.name, passed, failed))
        return 1 if failed or passed == 0 else 0
