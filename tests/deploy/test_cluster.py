#!/usr/bin/env python3
"""3 batchd replicas on loopback ports behind a real nginx (Debian's package) started with
the project's docker/nginx.conf, rendered for those ports.

1. 200 concurrent batches through nginx: every one completes with correct results, and they
   are spread over all replicas (read from each replica's /metrics, and cross-checked with
   nginx's access log).
2. One replica is killed with SIGKILL while batches stream through all three: new batches
   keep succeeding (nginx skips the dead replica); the batches that were on the dead replica
   end without a summary line, so the client can tell; every batch a client saw as complete
   really is complete (all results, right values, summary last).
"""
import concurrent.futures as cf
import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402
import promtext  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def completed_batches(port):
    _, _, body = dl.request(port, "GET", "/metrics", timeout=10)
    fams = promtext.parse(body.decode())
    return fams["batchd_batches_total"].sum(outcome="completed")


def correct(st, inputs):
    """Complete and right: summary last, one result per index, each the square."""
    if st.status != 200 or not st.complete:
        return False
    got = {l["index"]: l.get("result") for l in st.lines if "index" in l}
    return (len(got) == len(inputs) and all(got.get(i) == x * x for i, x in enumerate(inputs))
            and st.summary["jobs"] == len(inputs) and st.summary["ok"] == len(inputs))


def main():
    if dl.sanitized():
        print("skipped: 3 sanitized servers and 200 clients overload 2 cores")
        return dl.SKIP
    dl.watchdog(300)
    if not dl.which("nginx"):
        print("FAIL nginx is not installed (apt-get install nginx-light)")
        return 1
    ports = [dl.free_port() for _ in range(3)]
    reps = [dl.Batchd(f"replica{i}", workers=1, port=p,
                      env={"BATCHD_MAX_BATCHES": "1024", "BATCHD_LOG_FORMAT": "json"})
            for i, p in enumerate(ports)]
    for r in reps:
        r.wait_ready()
    ng = dl.Nginx(ports)
    print(f"  replicas on {ports}, nginx on {ng.port}")

    # ---- 1. 200 concurrent batches. Each sleeps 50 ms per job so that they overlap and
    # least_conn has connection counts to balance on.
    before = [completed_batches(p) for p in ports]

    def one(k):
        inputs = [k, k + 1]
        body = {"jobs": [{"op": "sleep", "input": 50}, {"op": "sleep", "input": 50}]}
        body = {"op": "square", "inputs": inputs} if k % 2 else body
        st = dl.Stream(ng.port, body, headers={"X-Request-Id": f"c-{k}"}, timeout=120)
        st.read_all()
        if k % 2:
            return correct(st, inputs), st
        ok = st.complete and [l.get("result") for l in st.lines[:-1]] == [50, 50]
        return ok, st

    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(max_workers=200) as ex:
        results = list(ex.map(one, range(200)))
    took = time.monotonic() - t0
    good = sum(ok for ok, _ in results)
    check(good == 200, f"200 concurrent batches through nginx: {good} complete and correct "
                       f"({took:.1f} s)")
    ids = [st.headers.get("x-request-id") for _, st in results]
    check(ids == [f"c-{k}" for k in range(200)], "X-Request-Id passes through nginx both ways")
    after = [completed_batches(p) for p in ports]
    per = [a - b for a, b in zip(after, before)]
    check(sum(per) == 200, f"replicas' metrics count 200 completed batches: {per}")
    check(min(per) >= 20, f"spread over all replicas (each >= 10%): {per}")
    ups = {}
    for line in ng.access_log():
        if line["uri"] == "/v1/batches":
            ups[line["upstream"]] = ups.get(line["upstream"], 0) + 1
    check(len(ups) == 3, f"nginx's access log shows all 3 upstreams: {ups}")

    # ---- 2. SIGKILL one replica mid-run. Long batches: 10 jobs of 300 ms, chunks of 1,
    # so each takes ~3 s on its replica's single worker.
    victim = 1
    long_results = {}
    lock = threading.Lock()

    def long_batch(k):
        rid = f"long-{k}"
        st = dl.Stream(ng.port, {"op": "sleep", "inputs": [300] * 10, "chunksize": 1},
                       headers={"X-Request-Id": rid}, timeout=60)
        st.read_all()
        with lock:
            long_results[rid] = st

    threads = [threading.Thread(target=long_batch, args=(k,), daemon=True) for k in range(9)]
    for t in threads:
        t.start()
    # Wait until every replica runs some of them (in flight, from its own metrics).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        inflight = []
        for p in ports:
            _, _, body = dl.request(p, "GET", "/metrics", timeout=5)
            inflight.append(promtext.parse(body.decode())["batchd_batches_in_flight"].value())
        if all(n >= 1 for n in inflight):
            break
        time.sleep(0.05)
    check(all(n >= 1 for n in inflight), f"long batches on every replica {inflight}")
    time.sleep(0.5)
    reps[victim].proc.send_signal(signal.SIGKILL)
    reps[victim].proc.wait(timeout=5)
    print(f"  killed replica {victim} (port {ports[victim]})")

    # New batches right after the kill keep succeeding.
    with cf.ThreadPoolExecutor(max_workers=20) as ex:
        after_kill = list(ex.map(lambda k: one(1000 + 2 * k + 1), range(40)))
    ok_after = sum(ok for ok, _ in after_kill)
    check(ok_after == 40, f"new batches after the kill: {ok_after}/40 complete and correct")

    for t in threads:
        t.join(timeout=60)
    # Which replica served each long batch: nginx's access log, by request id.
    served = {}
    for line in ng.access_log():
        if line["request_id"].startswith("long-"):
            served[line["request_id"]] = line["upstream"].split(", ")[-1]
    dead = f"127.0.0.1:{ports[victim]}"
    on_dead = [rid for rid, up in served.items() if up == dead]
    on_live = [rid for rid, up in served.items() if up != dead]
    check(len(served) == 9, f"nginx logged all 9 long batches ({len(served)})")
    check(on_dead, f"some long batches were on the killed replica: {on_dead}")
    cut_ok = all(not long_results[rid].complete and long_results[rid].summary is None
                 for rid in on_dead)
    check(cut_ok, "batches on the killed replica ended without a summary line: "
                  + str({rid: len(long_results[rid].lines) for rid in on_dead}))
    live_ok = all(long_results[rid].complete and len(long_results[rid].lines) == 11
                  for rid in on_live)
    check(live_ok, f"batches on the live replicas completed ({len(on_live)})")
    # Nothing is reported complete when it was not: every stream with a summary has all
    # its results before it.
    lying = [rid for rid, st in long_results.items()
             if st.summary is not None and len([l for l in st.lines if "index" in l]) != 10]
    check(not lying, f"no incomplete batch carries a summary {lying}")

    ng.stop()
    for i, r in enumerate(reps):
        if i != victim:
            r.signal(signal.SIGTERM)
            check(r.wait(timeout=30) == 0, f"replica {i} exits 0 on SIGTERM")
        r.stop()
    print("all checks passed" if not failures else "FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
