"""End-to-end: keep-alive. GETs kept no connection: answered on the access handler's first
call, before libmicrohttpd 0.9.75 had read the (empty) body, they went out with `Connection:
close`, so the console and polling clients paid a connection per request. And the cost of a
keep-alive request, counted (not timed) with strace when it is there: the socket watches of
the connection bookkeeping cost 4 epoll_ctl calls per small batch, and every batch id one
getrandom call."""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402

BATCH = json.dumps({"op": "square", "inputs": list(range(10))}).encode()


class Reader:
    """Reads responses from a socket one at a time, keeping the bytes of the next ones
    (pipelined answers may come in one segment)."""

    def __init__(self, s):
        self.s = s
        self.buf = b""

    def _fill(self):
        b = self.s.recv(65536)
        self.buf += b
        return bool(b)

    def response(self, head_only=False):
        """(status, headers dict lower-cased, body bytes) of the next response, delimited by
        Content-Length or chunked; None if the server closed first."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, v = l.split(":", 1)
            hdrs[k.strip().lower()] = v.strip()
        if head_only or status in (204, 304):
            return status, hdrs, b""
        if hdrs.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill():
                        return None
                size, rest = self.buf.split(b"\r\n", 1)
                n = int(size, 16)
                while len(rest) < n + 2:
                    if not self._fill():
                        return None
                    rest = self.buf.split(b"\r\n", 1)[1]
                body += rest[:n]
                self.buf = rest[n + 2:]
                if n == 0:
                    return status, hdrs, body
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            if not self._fill():
                return None
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body


def read_response(s, head_only=False):
    """One response from S, when nothing else follows it (see Reader)."""
    return Reader(s).response(head_only)


def post_batch():
    return (b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BATCH), BATCH))


def test_requests_without_a_body_keep_the_connection():
    with Server(workers=1) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        rd = Reader(s)
        try:
            asks = [
                (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
                (b"GET /v1/ops HTTP/1.1\r\nHost: x\r\n\r\n", 200),
                (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
                (b"OPTIONS /v1/batches HTTP/1.1\r\nHost: x\r\nOrigin: http://a.example\r\n\r\n",
                 204),
                (b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
                (post_batch(), 200),
                (b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 0\r\n\r\n", 400),
                (b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
            ]
            for i, (req, want) in enumerate(asks):
                s.sendall(req)
                got = rd.response(head_only=req.startswith(b"HEAD"))
                check(got is not None, "the server closed the connection before answer %d (%r)"
                      % (i, req[:30]))
                status, hdrs, body = got
                check(status == want, "%r: %d, not %d" % (req[:30], status, want))
                check(hdrs.get("connection", "").lower() != "close",
                      "%r answered with Connection: close" % req[:30])
                if req.startswith(b"POST") and status == 200:
                    last = json.loads(body.decode().strip().splitlines()[-1])
                    check(last["summary"]["ok"] == 10, last)
            # Two GETs at once (pipelined): both answered, in order.
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                      b"GET /v1/ops HTTP/1.1\r\nHost: x\r\n\r\n")
            a, b = rd.response(), rd.response()
            check(a is not None and b is not None and a[0] == b[0] == 200, (a, b))
            check(b"square" in b[2], b[2][:80])
        finally:
            s.close()


def test_a_get_with_a_body_is_answered():
    """A GET that carries a body is answered as before (libmicrohttpd may then close)."""
    with Server(workers=1) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
        try:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd")
            got = read_response(s)
            check(got is not None and got[0] == 200, got)
        finally:
            s.close()


def strace_counts(pid, run):
    """{syscall: calls} of process PID (all its threads) while RUN() runs, or None when
    strace is missing or may not attach."""
    if shutil.which("strace") is None:
        return None
    out = "/tmp/batchd-keepalive-strace-%d.txt" % os.getpid()
    p = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)
    if p.poll() is not None:
        return None  # no ptrace here
    try:
        run()
    finally:
        p.send_signal(2)
        p.wait(30)
    counts = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m:
                counts[m.group(2)] = int(m.group(1))
    os.unlink(out)
    return counts


def test_keepalive_batches_cost_few_syscalls():
    n_conns, per_conn = 2, 100
    n = n_conns * per_conn
    with Server(workers=2) as srv:
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=60)
                 for _ in range(n_conns)]
        readers = [Reader(s) for s in socks]

        def run():
            for _ in range(per_conn):
                for s in socks:
                    s.sendall(post_batch())
                for rd in readers:
                    got = rd.response()
                    check(got is not None and got[0] == 200, got)
        try:
            for s, rd in zip(socks, readers):  # accepted and warmed up before the count
                s.sendall(post_batch())
                rd.response()
            counts = strace_counts(srv.proc.pid, run)
        finally:
            for s in socks:
                s.close()
    if counts is None:
        print("  (strace missing or not allowed: the syscall counts were not checked)")
        return
    ctl = counts.get("epoll_ctl", 0) / n
    rnd = counts.get("getrandom", 0) / n
    print("  per batch: %.2f epoll_ctl, %.2f getrandom, %.1f syscalls" %
          (ctl, rnd, sum(counts.values()) / n))
    # Left: the dispatcher's re-arms of the worker sockets (one or two per batch); 6.0 and
    # 0.55 before (main at 4ad57f3).
    check(ctl < 3.0, "%.2f epoll_ctl calls per keep-alive batch" % ctl)
    check(rnd < 0.2, "%.2f getrandom calls per batch id" % rnd)


if __name__ == "__main__":
    sys.exit(Suite("keepalive").run(globals()))
