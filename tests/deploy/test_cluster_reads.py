#!/usr/bin/env python3
"""Cluster mode (SPEC §9): a results stream never waits for Redis on the replica's event loop.

A replica with --redis holds an ended batch of N sqrt results. A client reads them back
(GET .../results, NDJSON) and pauses after the first lines; Redis is then stopped (SIGSTOP,
as a Redis stalled on a slow disk is) for longer than a blocking read would wait (500 ms),
and the client reads on. Meanwhile the replica answers /healthz at once, every time (its loop
is not blocked), and once Redis continues the stream carries on: every index once, seq 1..N,
each result equal to Python's math.sqrt, and the summary. The same for a follower
(?follow=true) of a batch still running when Redis stops, and a status asked for while
Redis is stopped (answered 200 once it continues; /healthz answers meanwhile).

Before results were read ahead on the async connection, the stream's next page was a
blocking read: it timed out, the stream was cut without its summary, and reads were refused
for a second."""
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

N = 60000
FAILS = []


def check(cond, msg):
    if not cond:
        FAILS.append(msg)
        print(f"FAIL: {msg}", flush=True)


class Stream:
    """A GET whose body is read line by line, at the pace the test wants."""

    def __init__(self, port, path):
        self.sock = socket.create_connection((dl.HOST, port), timeout=30)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        self.f = self.sock.makefile("rb")
        status = self.f.readline()
        check(b" 200 " in status, f"{path}: {status!r}")
        while self.f.readline() not in (b"\r\n", b""):
            pass
        self.chunked_left = 0

    def lines(self):
        """The body's lines (chunked transfer decoded), until the end or a cut."""
        buf = b""
        while True:
            size_line = self.f.readline()
            if not size_line:
                return  # cut
            size = int(size_line.strip() or b"0", 16)
            if size == 0:
                return
            buf += self.f.read(size)
            self.f.readline()
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line


def healthz_ms(port):
    t = time.monotonic()
    st, _, _ = dl.request(port, "GET", "/healthz", timeout=10)
    return st, (time.monotonic() - t) * 1000


def async_batch(port, inputs, op="sqrt"):
    st, _, body = dl.request(port, "POST", "/v1/batches",
                          body=json.dumps({"op": op, "inputs": inputs}).encode(),
                          headers={"Content-Type": "application/json",
                                   "Prefer": "respond-async"})
    check(st == 202, f"POST: {st} {body[:200]}")
    return json.loads(body)["id"]


def wait_done(port, bid, limit=120):
    t = time.monotonic()
    while time.monotonic() - t < limit:
        st, _, body = dl.request(port, "GET", f"/v1/batches/{bid}")
        if st == 200 and json.loads(body)["state"] in ("done", "cancelled"):
            return
        time.sleep(0.1)
    check(False, f"{bid} did not end")


def verify(lines, n, what):
    rows, summary = [], None
    for line in lines:
        o = json.loads(line)
        if "summary" in o:
            summary = o["summary"]
        else:
            rows.append(o)
    check(summary is not None, f"{what}: no summary (the stream was cut after {len(rows)} lines)")
    check(sorted(r["index"] for r in rows) == list(range(n)), f"{what}: indexes not 0..{n - 1} once")
    check([r["seq"] for r in rows] == list(range(1, n + 1)), f"{what}: seqs not 1..{n}")
    bad = [r for r in rows if abs(r["result"] - math.sqrt(r["index"])) > 1e-9]
    check(not bad, f"{what}: wrong results {bad[:3]}")
    if summary is not None:
        check(summary["ok"] == n and summary["failed"] == 0, f"{what}: summary {summary}")


def stall_redis(redis, port, seconds):
    """Stops Redis for SECONDS; returns the worst /healthz time seen meanwhile."""
    redis.proc.send_signal(signal.SIGSTOP)
    worst, t = 0.0, time.monotonic()
    try:
        while time.monotonic() - t < seconds:
            st, ms = healthz_ms(port)
            check(st == 200, f"/healthz during the stall: {st}")
            worst = max(worst, ms)
            time.sleep(0.05)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    return worst


def scenario_read_back(redis, rep):
    bid = async_batch(rep.port, list(range(N)))
    wait_done(rep.port, bid)
    s = Stream(rep.port, f"/v1/batches/{bid}/results")
    it = s.lines()
    first = [next(it) for _ in range(500)]
    # The replica has sent what its socket takes; reading on needs new pages from Redis.
    worst = stall_redis(redis, rep.port, 1.5)
    check(worst < 400, f"read back: /healthz took {worst:.0f} ms while Redis was stopped")
    verify(first + list(it), N, "read back")
    print(f"  read back: worst /healthz {worst:.0f} ms during a 1.5 s stall", flush=True)


def scenario_status(redis, rep):
    """A status asked for while Redis is stopped waits for it (the loop does not)."""
    bid = async_batch(rep.port, [1, 4, 9])
    wait_done(rep.port, bid)
    out = {}

    def ask():
        out["st"], _, out["body"] = dl.request(rep.port, "GET", f"/v1/batches/{bid}", timeout=30)

    redis.proc.send_signal(signal.SIGSTOP)
    try:
        th = threading.Thread(target=ask, daemon=True)
        th.start()
        time.sleep(0.3)
        worst = max(healthz_ms(rep.port)[1] for _ in range(5))
        check(worst < 400, f"status: /healthz took {worst:.0f} ms while a status waited")
        time.sleep(0.7)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    th.join(30)
    check(out.get("st") == 200 and json.loads(out["body"])["state"] == "done",
          f"status after the stall: {out.get('st')} {out.get('body', b'')[:200]}")
    print(f"  status: worst /healthz {worst:.0f} ms while it waited", flush=True)


def scenario_follow(redis, rep):
    n = 400
    bid = async_batch(rep.port, [30] * n, op="sleep")
    s = Stream(rep.port, f"/v1/batches/{bid}/results?follow=true")
    got = []
    done = threading.Event()

    def reader():
        for line in s.lines():
            got.append(line)
        done.set()

    th = threading.Thread(target=reader, daemon=True)
    th.start()
    time.sleep(0.8)
    worst = stall_redis(redis, rep.port, 1.5)
    check(worst < 400, f"follow: /healthz took {worst:.0f} ms while Redis was stopped")
    check(done.wait(120), "follow: the stream did not end")
    rows = [json.loads(x) for x in got]
    summary = [r for r in rows if "summary" in r]
    rows = [r for r in rows if "index" in r]
    check(len(summary) == 1, f"follow: summary lines {len(summary)} (cut after {len(rows)})")
    check(sorted(r["index"] for r in rows) == list(range(n)), "follow: indexes not once each")
    check([r["seq"] for r in rows] == list(range(1, n + 1)), "follow: seqs not 1..n")
    print(f"  follow: worst /healthz {worst:.0f} ms during a 1.5 s stall", flush=True)


def main():
    if not dl.which("redis-server") or not dl.which("redis-cli"):
        print("skipped: redis-server is not installed (apt-get install redis-server)")
        return dl.SKIP
    dl.watchdog(300)
    tmp = tempfile.mkdtemp(prefix="cluster-reads-")
    redis = dl.RedisServer(workdir=os.path.join(tmp, "redis"))
    rep = dl.Batchd(name="r1", workers=2, workdir=os.path.join(tmp, "r1"),
                    env={"BATCHD_REDIS": redis.url, "BATCHD_REPLICA_NAME": "r1",
                         "BATCHD_CLAIM_TIMEOUT": "2s"})
    try:
        rep.wait_ready()
        scenario_read_back(redis, rep)
        scenario_status(redis, rep)
        scenario_follow(redis, rep)
    finally:
        rep.stop()
        redis.stop()
    if FAILS:
        print(f"{len(FAILS)} failure(s)")
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
