#!/usr/bin/env python3
"""Graceful drain (SPEC §1, issue 4).

1. SIGTERM during a long streamed batch: /readyz turns 503 at once, new batches get 503 with
   Retry-After and the `draining` error, /healthz stays 200, the running batch completes
   with its summary, the workers exit, and the process exits 0 within --grace-period.
2. A batch longer than the grace period: the process still exits in time, and the stream
   ends without a summary (the client can tell it was cut).
3. A second SIGTERM stops at once.
4. A rolling restart of 3 replicas behind nginx (docker/nginx.conf rendered for loopback)
   under steady load loses no batch that was accepted: every 200 response ends with its
   summary and all its results; refusals (503, or nginx's 502 while a port is closed) are
   retried by the client after Retry-After, as a real client would.
"""
import json
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except OSError:
                pass
    return out


def valid(stream, n):
    """A complete stream: status 200, summary last, results 0..n-1 exactly once."""
    if stream.status != 200 or not stream.complete:
        return False
    idx = sorted(l["index"] for l in stream.lines if "index" in l)
    return idx == list(range(n)) and stream.summary.get("jobs") == n


def drain_one():
    b = dl.Batchd("drain", workers=2, env={"BATCHD_GRACE_PERIOD": "10s"})
    b.wait_ready()
    # 8 jobs of 400 ms on 2 workers: about 1.6 s.
    st = dl.Stream(b.port, {"op": "sleep", "inputs": [400] * 8, "chunksize": 1})
    check(st.status == 200 and st.headers.get("x-accel-buffering") == "no",
          "stream starts with X-Accel-Buffering: no")
    first = st.read_line()
    check(first is not None and "index" in first, "first result arrives before SIGTERM")
    workers = children(b.proc.pid)
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    time.sleep(0.05)
    s, h, body = dl.request(b.port, "GET", "/readyz", timeout=5)
    check(s == 503, f"/readyz -> {s} at once")
    s, h, body = dl.request(b.port, "POST", "/v1/batches", body={"op": "sqrt", "inputs": [4]},
                            timeout=5)
    code = json.loads(body).get("error", {}).get("code") if body else None
    check(s == 503 and "retry-after" in h and code == "draining",
          f"new batch -> {s} Retry-After={h.get('retry-after')} code={code}")
    s, _, _ = dl.request(b.port, "GET", "/healthz", timeout=5)
    check(s == 200, f"/healthz -> {s} while draining")
    st.read_all()
    check(valid(st, 8), f"the running batch completed with its summary ({len(st.lines)} lines)")
    code = b.wait(timeout=15)
    took = time.monotonic() - t0
    check(code == 0, f"exit code {code}")
    check(took < 10, f"exited {took:.1f} s after SIGTERM (grace 10 s)")
    alive = [p for p in workers if os.path.exists(f"/proc/{p}")
             and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    check(workers and not alive, f"workers {workers} exited")
    log = b.log()
    check("event=drain" in log and "message=drained" in log, "drain logged")
    b.stop()


def grace_expires():
    b = dl.Batchd("grace", workers=1, env={"BATCHD_GRACE_PERIOD": "1s"})
    b.wait_ready()
    st = dl.Stream(b.port, {"op": "sleep", "inputs": [200, 5000], "chunksize": 1})
    st.read_line()
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    st.read_all()
    try:
        code = b.wait(timeout=10)
    except Exception:
        code = None
    took = time.monotonic() - t0
    check(code == 0 and took < 4, f"grace over: exit {code} after {took:.1f} s (grace 1 s)")
    check(not st.complete, "the cut batch has no summary")
    b.stop()


def second_sigterm():
    b = dl.Batchd("twice", workers=1, env={"BATCHD_GRACE_PERIOD": "30s"})
    b.wait_ready()
    st = dl.Stream(b.port, {"op": "sleep", "inputs": [200, 20000], "chunksize": 1})
    st.read_line()
    b.signal(signal.SIGTERM)
    time.sleep(0.2)
    t0 = time.monotonic()
    b.signal(signal.SIGTERM)
    try:
        code = b.wait(timeout=10)
    except Exception:
        code = None
    took = time.monotonic() - t0
    check(code is not None and took < 3, f"second SIGTERM: exit {code} after {took:.1f} s")
    st.read_all()
    check(not st.complete, "the stopped batch has no summary")
    b.stop()


def rolling_restart():
    if not dl.which("nginx"):
        check(False, "nginx is installed (apt-get install nginx-light)")
        return
    ports = [dl.free_port() for _ in range(3)]
    env = {"BATCHD_GRACE_PERIOD": "20s"}
    reps = [dl.Batchd(f"r{i}", workers=1, env=env, port=p) for i, p in enumerate(ports)]
    for r in reps:
        r.wait_ready()
    ng = dl.Nginx(ports)
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"accepted": 0, "complete": 0, "lost": [], "refused": {}, "errors": 0}

    def client(k):
        n = 0
        while not stop.is_set():
            n += 1
            rid = f"roll-{k}-{n}"
            body = {"op": "sleep", "inputs": [100] * 4, "chunksize": 1}
            try:
                st = dl.Stream(ng.port, body, headers={"X-Request-Id": rid}, timeout=60)
            except OSError:
                with lock:
                    stats["errors"] += 1
                time.sleep(0.1)
                continue
            if st.status != 200:
                st.read_all()
                with lock:
                    stats["refused"][st.status] = stats["refused"].get(st.status, 0) + 1
                time.sleep(min(float(st.headers.get("retry-after", "1")), 0.2))
                continue
            st.read_all()
            with lock:
                stats["accepted"] += 1
                if valid(st, 4):
                    stats["complete"] += 1
                else:
                    stats["lost"].append((rid, len(st.lines)))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    codes = []
    for i in range(3):
        reps[i].signal(signal.SIGTERM)
        codes.append(reps[i].wait(timeout=30))
        reps[i].stop()
        reps[i] = dl.Batchd(f"r{i}b", workers=1, env=env, port=ports[i])
        reps[i].wait_ready()
        # As an orchestrator would: the next replica goes only once this one is back in
        # rotation (nginx.conf's fail_timeout, 3 s, has passed since it was marked down).
        time.sleep(3.5)
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    print("  rolling restart:", {k: v for k, v in stats.items() if k != "lost"},
          "lost:", stats["lost"][:5])
    check(codes == [0, 0, 0], f"each replica exited 0 on SIGTERM {codes}")
    check(stats["accepted"] >= 30, f"{stats['accepted']} batches accepted under load")
    check(not stats["lost"] and stats["complete"] == stats["accepted"],
          f"no accepted batch lost ({len(stats['lost'])} lost)")
    check(stats["errors"] == 0, f"{stats['errors']} connection errors at nginx")
    refused = sum(stats["refused"].values())
    check(refused <= stats["accepted"] // 2,
          f"{refused} refusals (503 draining / 502 no live replica) for {stats['accepted']} "
          "accepted: the balancer routes around the draining replica")
    ng.stop()
    for r in reps:
        r.signal(signal.SIGTERM)
        r.wait(timeout=30)
        r.stop()


def main():
    dl.watchdog(300)
    for step in (drain_one, grace_expires, second_sigterm, rolling_restart):
        print(f"--- {step.__name__}", flush=True)
        step()
    print("all checks passed" if not failures else "FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
