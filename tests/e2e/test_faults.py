"""End-to-end: faults and load (SPEC §3-4, §7). Workers killed mid-batch (every job answered
exactly once, the pool heals), per-job timeouts, batch deadlines, clients that hang up, 50
concurrent clients, fairness between batches, worker recycling."""
import os
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import Stream, by_index, loads, metrics, ndjson, queue_idle, wait_for  # noqa: E402

W2 = None   # 2 workers
W1 = None   # 1 worker
REC = None  # 2 workers, --recycle-after 10


def ready(server, n, gone=()):
    """Waits until N workers are up, none of them in GONE (pids just killed), and /readyz
    says ready; returns their pids."""
    def ok():
        pids = server.worker_pids()
        if len(pids) != n or set(pids) & set(gone):
            return None
        status, _, body = server.request("GET", "/readyz")
        return pids if status == 200 else None
    pids = wait_for(ok, timeout=20)
    check(pids, "the pool did not come back to %d workers: %r" % (n, server.worker_pids()))
    return pids


def read_all(stream):
    lines = [loads(l) for _, l in stream.lines()]
    stream.close()
    return lines


def kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ crashes

def test_sigkill_mid_batch_every_job_answered_once():
    for order in ("completed", "input"):
        before = ready(W2, 2)
        st = Stream(W2, {"op": "sleep", "inputs": [400] * 8, "chunksize": 2, "order": order,
                         "timing": True})
        check(st.status == 200, st.status)
        time.sleep(0.15)  # both workers are in the middle of their first 400 ms job
        victim = before[0]
        kill(victim)
        lines = read_all(st)
        res = by_index(lines, 8)
        failed = [l for l in res.values() if "error" in l]
        check(len(failed) == 1, "%s: one job should fail, got %r" % (order, failed))
        e = failed[0]["error"]
        check(e["code"] == "worker_crashed" and "SIGKILL" in e["message"], e)
        for l in res.values():
            if "result" in l:
                check(l["result"] == 400, l)
        s = lines[-1]["summary"]
        check(s["ok"] == 7 and s["failed"] == 1, s)
        after = ready(W2, 2)
        check(victim not in after, "the killed worker %d is still listed" % victim)
        check(len(set(after) & set(before)) == 1, (before, after))
    _, lines, _ = ndjson(W2, {"op": "square", "inputs": list(range(100))})
    by_index(lines, 100)


def test_other_signals_are_named():
    # Under ASan a worker's SIGSEGV is caught by the sanitizer, which exits with status 1.
    sigs = [(signal.SIGABRT, "SIGABRT"), (signal.SIGTERM, "SIGTERM")]
    if not SANITIZED:
        sigs.insert(0, (signal.SIGSEGV, "SIGSEGV"))
    for sig, name in sigs:
        pids = ready(W1, 1)
        st = Stream(W1, {"op": "sleep", "inputs": [500, 0, 0], "chunksize": 3})
        time.sleep(0.15)
        kill(pids[0], sig)
        lines = read_all(st)
        res = by_index(lines, 3)
        check(res[0].get("error", {}).get("code") == "worker_crashed", res[0])
        check(name in res[0]["error"]["message"], res[0])
        check(res[1].get("result") == 0 and res[2].get("result") == 0,
              "the rest of the chunk must re-run: %r" % res)
    ready(W1, 1)


def test_killing_all_workers_heals():
    before = ready(W2, 2)
    for pid in before:
        kill(pid)
    after = ready(W2, 2, gone=before)
    check(not set(after) & set(before), (before, after))
    _, lines, _ = ndjson(W2, {"op": "cube", "inputs": list(range(50))})
    res = by_index(lines, 50)
    check(all(res[i]["result"] == i ** 3 for i in range(50)))
    # And all of them during a batch: the running jobs fail, the rest run on the new pool.
    before = ready(W2, 2)
    st = Stream(W2, {"op": "sleep", "inputs": [300] * 6, "chunksize": 1})
    time.sleep(0.1)
    for pid in before:
        kill(pid)
    lines = read_all(st)
    res = by_index(lines, 6)
    failed = sorted(i for i, l in res.items() if "error" in l)
    check(len(failed) == 2, "two running jobs should fail: %r" % res)
    check(all(res[i]["error"]["code"] == "worker_crashed" for i in failed), res)
    ready(W2, 2)


def test_repeated_kills_under_load():
    """Kill a worker every 100 ms during a batch of many short jobs: every job is answered
    exactly once, and each failure is a worker_crashed."""
    n = 400
    st = Stream(W2, {"op": "sleep", "inputs": [5] * n, "chunksize": 3, "order": "completed"})
    got = []
    reader = threading.Thread(target=lambda: got.extend(read_all(st)))
    reader.start()
    for _ in range(6):
        time.sleep(0.1)
        pids = W2.worker_pids()
        if pids:
            kill(pids[0])
    reader.join(60)
    check(not reader.is_alive(), "the batch did not end")
    res = by_index(got, n)
    for l in res.values():
        check(l.get("result") == 5 or l["error"]["code"] == "worker_crashed", l)
    check(sum("error" in l for l in res.values()) <= 6, got[-1])
    ready(W2, 2)


# ------------------------------------------------------------------ timeouts and deadlines

def test_per_job_timeout():
    for cs in (1, 4):
        ready(W2, 2)
        t0 = time.monotonic()
        _, lines, _ = ndjson(W2, {"op": "sleep", "inputs": [100, 5000, 100, 100],
                                  "timeout_ms": 600, "chunksize": cs})
        took = time.monotonic() - t0
        res = by_index(lines, 4)
        check(res[1].get("error", {}).get("code") == "timeout", res[1])
        for i in (0, 2, 3):
            check(res[i].get("result") == 100, "chunksize %d: job %d %r" % (cs, i, res[i]))
        check(took < 3.0, "the 5 s job was not stopped at its 600 ms timeout (%.2fs)" % took)
        ready(W2, 2)


def test_timeout_of_a_hung_worker():
    """A worker that stops (SIGSTOP) mid-job is killed at the timeout and replaced."""
    pids = ready(W1, 1)
    st = Stream(W1, {"op": "sleep", "inputs": [300, 1], "timeout_ms": 1000, "chunksize": 2})
    time.sleep(0.1)
    kill(pids[0], signal.SIGSTOP)
    lines = read_all(st)
    res = by_index(lines, 2)
    check(res[0].get("error", {}).get("code") == "timeout", res[0])
    check(res[1].get("result") == 1, res[1])
    after = ready(W1, 1)
    check(after != pids, (pids, after))


def test_default_timeout_flag():
    with Server(workers=1, args=["--job-timeout", "300ms"]) as s:
        _, lines, _ = ndjson(s, {"op": "sleep", "inputs": [2000, 10]})
        res = by_index(lines, 2)
        check(res[0].get("error", {}).get("code") == "timeout", res[0])
        check(res[1].get("result") == 10, res[1])
        # A batch's own timeout_ms wins over the flag.
        _, lines, _ = ndjson(s, {"op": "sleep", "inputs": [500], "timeout_ms": 3000})
        check(by_index(lines, 1)[0].get("result") == 500, lines)


def test_deadline_gives_partial_results():
    for order in ("input", "completed"):
        ready(W2, 2)
        t0 = time.monotonic()
        _, lines, _ = ndjson(W2, {"op": "sleep", "inputs": [400] * 6, "chunksize": 1,
                                  "deadline_ms": 600, "order": order})
        took = time.monotonic() - t0
        res = by_index(lines, 6)
        codes = [res[i].get("error", {}).get("code", "ok") for i in range(6)]
        # 0,1 end at 400 ms; 2,3 run at 600 ms (timeout); 4,5 never start (cancelled).
        check(codes == ["ok", "ok", "timeout", "timeout", "cancelled", "cancelled"],
              "%s: %r" % (order, codes))
        s = lines[-1]["summary"]
        check(s["ok"] == 2 and s["failed"] == 4, s)
        check(took < 1.5, "a 600 ms deadline answered after %.2fs" % took)
        if order == "input":
            check([l["index"] for l in lines[:-1]] == list(range(6)))
    ready(W2, 2)


def test_deadline_on_a_big_batch_is_quick():
    n = 20000 if SANITIZED else 200000
    t0 = time.monotonic()
    _, lines, _ = ndjson(W2, {"op": "sleep", "inputs": [20] * n, "deadline_ms": 300},
                         timeout=120)
    took = time.monotonic() - t0
    res = by_index(lines, n)
    codes = {}
    for l in res.values():
        c = l.get("error", {}).get("code", "ok")
        codes[c] = codes.get(c, 0) + 1
    check(set(codes) <= {"ok", "timeout", "cancelled"}, codes)
    check(codes.get("cancelled", 0) >= n - 100, codes)
    check(took < (30 if SANITIZED else 10), "took %.2fs" % took)
    ready(W2, 2)


# ------------------------------------------------------------------ clients that leave

def hang_up_after_first_line(server, batch):
    """Sends BATCH on a raw socket, reads until the first result line, closes. Returns the
    seconds it took."""
    import json
    body = json.dumps(batch).encode()
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    t0 = time.monotonic()
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    got = b""
    while b'"index"' not in got:
        b = s.recv(4096)
        check(b, "the server closed before the first result")
        got += b
    s.close()
    return time.monotonic() - t0


def test_client_hangup_cancels_queued_jobs():
    ready(W1, 1)
    hang_up_after_first_line(W1, {"op": "sleep", "inputs": [500] * 20, "chunksize": 1})
    # If the gone client's 19 jobs still ran, a new batch would share the worker with them
    # (round robin): 4 x (100 + 500) ms. Cancelled, it waits at most for the one running job.
    t0 = time.monotonic()
    _, lines, _ = ndjson(W1, {"op": "sleep", "inputs": [100] * 4, "chunksize": 1})
    took = time.monotonic() - t0
    by_index(lines, 4)
    check(took < 1.6, "a batch after a hang-up took %.2fs: the gone batch still runs" % took)
    check(wait_for(lambda: queue_idle(W1), 5), "queue not empty after the hang-up: %r" %
          metrics(W1))


def test_client_hangup_before_any_result():
    ready(W1, 1)
    import json
    body = json.dumps({"op": "sleep", "inputs": [400] * 10, "chunksize": 1}).encode()
    s = socket.create_connection(("127.0.0.1", W1.port), timeout=30)
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    time.sleep(0.1)
    s.close()
    check(wait_for(lambda: queue_idle(W1), 5), "queue not empty after the hang-up: %r" %
          metrics(W1))
    _, lines, _ = ndjson(W1, {"op": "square", "inputs": [7]})
    check(by_index(lines, 1)[0]["result"] == 49)


def test_client_hangup_while_output_is_backed_up():
    """A client that stops reading a big stream, then leaves: the server cancels the batch
    and serves the next one."""
    ready(W2, 2)
    import json
    n = 50000 if SANITIZED else 300000
    body = json.dumps({"op": "square", "inputs": list(range(n))}).encode()
    s = socket.create_connection(("127.0.0.1", W2.port), timeout=30)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    s.recv(1000)
    time.sleep(0.5)  # the server's buffers fill; the batch is paused
    t0 = time.monotonic()
    _, lines, _ = ndjson(W2, {"op": "square", "inputs": [3]})
    check(time.monotonic() - t0 < 2.0, "a slow reader held up another batch")
    s.close()
    check(wait_for(lambda: queue_idle(W2), 10), "the abandoned batch is still live: %r" %
          metrics(W2))


# ------------------------------------------------------------------ load and fairness

def test_fifty_concurrent_clients():
    n_clients = 50
    errors = []
    ids = []

    def client(k):
        try:
            order = "completed" if k % 2 else "input"
            if k % 5 == 0:
                batch = {"op": "sleep", "inputs": [10] * 10, "order": order}
                want = [10] * 10
            elif k % 5 == 1:
                batch = {"jobs": [{"op": "is_prime", "input": p} for p in range(1000)],
                         "order": order, "chunksize": 7}
                want = [all(p % d for d in range(2, int(p ** 0.5) + 1)) and p > 1
                        for p in range(1000)]
            else:
                batch = {"op": "square", "inputs": list(range(k * 100)), "order": order}
                want = [i * i for i in range(k * 100)]
            _, lines, hdrs = ndjson(W2, batch, headers={"X-Request-Id": "client-%d" % k},
                                    timeout=120)
            res = by_index(lines, len(want))
            bad = [i for i in range(len(want)) if res[i].get("result") != want[i]]
            if bad:
                errors.append((k, "wrong results", bad[:5]))
            if lines[-1]["summary"]["request_id"] != "client-%d" % k:
                errors.append((k, "request id", lines[-1]["summary"]))
            ids.append(hdrs["x-request-id"])
        except Exception as e:  # noqa: BLE001
            errors.append((k, repr(e)))

    ready(W2, 2)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    check(not any(t.is_alive() for t in threads), "clients still waiting")
    check(not errors, errors[:5])
    check(sorted(ids) == sorted("client-%d" % k for k in range(n_clients)), ids)
    check(time.monotonic() - t0 < 120)
    check(wait_for(lambda: queue_idle(W2), 5), metrics(W2))


def small_batch_latency(server):
    t0 = time.monotonic()
    _, lines, _ = ndjson(server, {"op": "square", "inputs": [12]})
    check(by_index(lines, 1)[0]["result"] == 144)
    return time.monotonic() - t0


def test_fairness_small_batch_behind_slow_batch():
    ready(W2, 2)
    t0 = time.monotonic()
    st = Stream(W2, {"op": "sleep", "inputs": [100] * 40})
    got = []
    reader = threading.Thread(target=lambda: got.extend(read_all(st)))
    reader.start()
    time.sleep(0.15)
    lat = small_batch_latency(W2)
    reader.join(60)
    big = time.monotonic() - t0
    by_index(got, 40)
    check(big >= 1.9, "40 x 100 ms on 2 workers took only %.2fs" % big)
    check(lat < 0.5, "a 1-job batch behind 40 sleep jobs took %.3fs (the big one %.2fs)" %
          (lat, big))


def test_fairness_small_batch_behind_huge_batch():
    ready(W2, 2)
    n = 300000 if SANITIZED else 2000000
    t0 = time.monotonic()
    st = Stream(W2, {"op": "square", "inputs": list(range(n))}, timeout=300)
    count = [0]

    def reader():
        for _ in st.lines():
            count[0] += 1
        st.close()

    th = threading.Thread(target=reader)
    th.start()
    time.sleep(0.2)
    lats = [small_batch_latency(W2) for _ in range(3)]
    th.join(300)
    big = time.monotonic() - t0
    check(count[0] == n + 1, "the big batch gave %d lines" % count[0])
    check(max(lats) < min(0.5, big / 4),
          "1-job batches behind %d square jobs took %r s; the big batch %.2fs" % (n, lats, big))


def test_recycling():
    before = ready(REC, 2)
    n = 100
    seen = set(before)
    done = threading.Event()

    def watch():
        while not done.is_set():
            seen.update(REC.worker_pids())
            time.sleep(0.01)

    th = threading.Thread(target=watch)
    th.start()
    try:
        _, lines, _ = ndjson(REC, {"op": "sleep", "inputs": [10] * n, "chunksize": 1})
    finally:
        done.set()
        th.join()
    res = by_index(lines, n)
    check(all(res[i].get("result") == 10 for i in range(n)), lines[-1])
    after = ready(REC, 2)
    check(not set(after) & set(before), "worker pids did not change: %r -> %r" % (before, after))
    # 100 jobs, 10 per worker life: about 10 workers in all (some may live too briefly to be
    # seen by the poll).
    check(len(seen | set(after)) >= 7, "only %d distinct workers over %d jobs" % (len(seen), n))
    # Bigger chunks than the limit still finish; nothing fails.
    _, lines, _ = ndjson(REC, {"op": "square", "inputs": list(range(1000)), "chunksize": 25})
    res = by_index(lines, 1000)
    check(lines[-1]["summary"]["failed"] == 0, lines[-1])
    ready(REC, 2)


if __name__ == "__main__":
    with Server(workers=2) as W2, Server(workers=1) as W1, \
            Server(workers=2, args=["--recycle-after", "10"]) as REC:
        code = Suite("faults").run(globals())
    sys.exit(code)
