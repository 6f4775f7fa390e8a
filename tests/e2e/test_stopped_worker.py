"""End-to-end: a worker stopped (SIGSTOP) while idle (issue 8, defect 8). The chunk sent to
it never starts, so no per-job timeout can fire; the dispatcher must notice that the worker
did not take up its chunk, replace it, and run the chunk's jobs elsewhere (they never
started, so they do not fail). Every wait here is bounded: on a dispatcher without the fix
the batch hangs, and the test fails at its own socket timeout instead of hanging."""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import Stream, by_index, loads, metrics, wait_for  # noqa: E402

W2 = None  # 2 workers

# The batch must end this long after it was sent (the pick-up bound is 1 s; the rest is
# margin for a loaded machine and a sanitized build).
LIMIT_S = 15 if SANITIZED else 8


def restarts(server):
    m = metrics(server)
    return sum(v for k, v in m.items() if k.startswith("batchd_worker_restarts_total"))


def labelled_restarts(server):
    status, _, body = server.request("GET", "/metrics")
    check(status == 200, status)
    return [l for l in body.decode().splitlines()
            if l.startswith("batchd_worker_restarts_total{")]


def ready(server, n, gone=()):
    def ok():
        pids = server.worker_pids()
        if len(pids) != n or set(pids) & set(gone):
            return None
        status, _, _ = server.request("GET", "/readyz")
        return pids if status == 200 else None
    pids = wait_for(ok, timeout=20)
    check(pids, "the pool did not come back to %d workers: %r" % (n, server.worker_pids()))
    return pids


def run_bounded(server, batch, limit):
    """Runs BATCH; returns (lines, seconds). Fails (does not hang) when the batch has not
    ended within LIMIT seconds."""
    got = []
    err = []

    def reader():
        try:
            st = Stream(server, batch, timeout=limit)
            check(st.status == 200, st.status)
            for _, line in st.lines():
                got.append(loads(line))
            st.close()
        except (socket.timeout, OSError) as e:
            err.append(e)

    t0 = time.monotonic()
    th = threading.Thread(target=reader, daemon=True)
    th.start()
    th.join(limit + 2)
    took = time.monotonic() - t0
    check(not th.is_alive() and not err,
          "the batch did not end within %ds (%d lines so far, %r): a chunk sent to the "
          "stopped worker never ran" % (limit, len(got), err))
    return got, took


def test_stopped_idle_worker_is_replaced():
    pids = ready(W2, 2)
    before = restarts(W2)
    victim = pids[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        n = 200
        # chunksize 10: twenty chunks, so both workers (the stopped one first, slot order)
        # get one at once.
        lines, took = run_bounded(W2, {"op": "square", "inputs": list(range(n)),
                                       "chunksize": 10, "timeout_ms": 1000}, LIMIT_S)
    finally:
        # On the old code the victim still lives: let it go so the server can stop.
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    res = by_index(lines, n)
    bad = [i for i in range(n) if res[i].get("result") != i * i]
    check(not bad, "jobs not answered with their result: %r" % [res[i] for i in bad[:5]])
    s = lines[-1]["summary"]
    check(s["ok"] == n and s["failed"] == 0, s)
    after = ready(W2, 2, gone=[victim])
    check(victim not in after, (pids, after))
    check(restarts(W2) >= before + 1, "no restart counted: %r" % labelled_restarts(W2))
    check(any('cause="timeout"' in l and not l.endswith(" 0") for l in labelled_restarts(W2)),
          labelled_restarts(W2))


def test_stopped_idle_worker_input_order_single_job_chunks():
    """The same with input order and one job per chunk: the stopped worker's job is the
    first in line, so every later result waits behind it."""
    pids = ready(W2, 2)
    victim = pids[0]
    os.kill(victim, signal.SIGSTOP)
    try:
        n = 20
        lines, _ = run_bounded(W2, {"op": "sleep", "inputs": [10] * n, "chunksize": 1,
                                    "order": "input", "timeout_ms": 1000}, LIMIT_S)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    check([l.get("index") for l in lines[:-1]] == list(range(n)), lines[:5])
    check(all(l.get("result") == 10 for l in lines[:-1]), lines[:5])
    ready(W2, 2, gone=[victim])


if __name__ == "__main__":
    with Server(workers=2) as W2:
        code = Suite("stopped_worker").run(globals())
    sys.exit(code)
