#!/usr/bin/env python3
"""GET /metrics under a strict Prometheus text-format parser (promtext.py), and its counters
checked to move by exactly the right amounts after known batches: jobs by op and outcome,
the job-duration histogram, batches by outcome, requests by route and status, bytes in and
out, worker restarts by cause (a timeout, a killed worker, recycling), and the gauges while a
batch runs and after.
"""
import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402
import promtext  # noqa: E402

REQUIRED = {
    "batchd_batches_total": "counter",
    "batchd_jobs_total": "counter",
    "batchd_job_duration_seconds": "histogram",
    "batchd_queue_depth": "gauge",
    "batchd_workers": "gauge",
    "batchd_worker_restarts_total": "counter",
    "batchd_batches_in_flight": "gauge",
    "batchd_http_requests_total": "counter",
    "batchd_http_request_bytes_total": "counter",
    "batchd_http_response_bytes_total": "counter",
}

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def scrape(port):
    status, headers, body = dl.request(port, "GET", "/metrics")
    assert status == 200, status
    assert headers["content-type"].startswith("text/plain; version=0.0.4"), headers
    return promtext.parse(body.decode("utf-8"))


def val(f, name, suffix="", **labels):
    fam = f.get(name)
    return 0 if fam is None else fam.value(suffix, default=0, **labels)


def delta(a, b, name, suffix="", **labels):
    return val(b, name, suffix, **labels) - val(a, name, suffix, **labels)


def batch(port, body):
    raw = json.dumps(body).encode()
    status, headers, data = dl.request(port, "POST", "/v1/batches", body=raw,
                                       headers={"Content-Type": "application/json"})
    return status, raw, data


def worker_pids(server_pid):
    """The batchd-worker processes whose parent is SERVER_PID."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            with open(f"/proc/{d}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        ppid = int(st.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and comm.startswith("batchd-worker"):
            pids.append(int(d))
    return pids


def main():
    dl.watchdog(240)
    b = dl.Batchd("metrics", workers=2, env={"BATCHD_RECYCLE_AFTER": "5"})
    b.wait_ready()
    port = b.port

    m0 = scrape(port)
    for name, typ in REQUIRED.items():
        check(name in m0 and m0[name].type == typ, f"{name} is a {typ} with HELP")
    check(all(n.startswith(("batchd_", "process_")) for n in m0), "names are namespaced")

    # Known batches: 2 ok + 1 domain_error for sqrt; 4 ok for square; one refused batch.
    s1, raw1, out1 = batch(port, {"op": "sqrt", "inputs": [4, 9, -1]})
    s2, raw2, out2 = batch(port, {"op": "square", "inputs": [1, 2, 3, 4]})
    s3, raw3, out3 = batch(port, {"op": "no_such_op", "inputs": [1]})
    s4, _, _ = dl.request(port, "GET", "/nope")
    check((s1, s2, s3, s4) == (200, 200, 400, 404), f"statuses {(s1, s2, s3, s4)}")
    m1 = scrape(port)
    check(delta(m0, m1, "batchd_jobs_total", op="sqrt", outcome="ok") == 2, "sqrt ok +2")
    check(delta(m0, m1, "batchd_jobs_total", op="sqrt", outcome="domain_error") == 1,
          "sqrt domain_error +1")
    check(delta(m0, m1, "batchd_jobs_total", op="square", outcome="ok") == 4, "square ok +4")
    check(m1["batchd_jobs_total"].sum() - (m0["batchd_jobs_total"].sum()) == 7,
          "no other job counted (the refused batch ran none)")
    check(delta(m0, m1, "batchd_job_duration_seconds", "_count", op="sqrt") == 3,
          "histogram count sqrt +3")
    check(delta(m0, m1, "batchd_job_duration_seconds", "_count", op="square") == 4,
          "histogram count square +4")
    sq_sum = delta(m0, m1, "batchd_job_duration_seconds", "_sum", op="square")
    check(0 <= sq_sum < 1.0, f"histogram sum square moved by {sq_sum:.6f} s")
    check(delta(m0, m1, "batchd_batches_total", op="sqrt", outcome="completed") == 1,
          "batch sqrt completed +1")
    check(delta(m0, m1, "batchd_batches_total", op="square", outcome="completed") == 1,
          "batch square completed +1")
    check(m1["batchd_batches_total"].sum(outcome="refused")
          - (m0["batchd_batches_total"].sum(outcome="refused") if "batchd_batches_total" in m0
             else 0) == 1, "refused batches +1")
    check(delta(m0, m1, "batchd_http_requests_total", route="/v1/batches", status="200") == 2,
          "requests /v1/batches 200 +2")
    check(delta(m0, m1, "batchd_http_requests_total", route="/v1/batches", status="400") == 1,
          "requests /v1/batches 400 +1")
    check(delta(m0, m1, "batchd_http_requests_total", route="other", status="404") == 1,
          "requests other 404 +1")
    check(delta(m0, m1, "batchd_http_requests_total", route="/metrics", status="200") == 1,
          "requests /metrics 200 +1 (the previous scrape)")
    bytes_in = delta(m0, m1, "batchd_http_request_bytes_total", route="/v1/batches")
    check(bytes_in == len(raw1) + len(raw2) + len(raw3), f"bytes in +{bytes_in}")
    bytes_out = delta(m0, m1, "batchd_http_response_bytes_total", route="/v1/batches")
    check(bytes_out == len(out1) + len(out2) + len(out3), f"bytes out +{bytes_out}")

    # Gauges while a batch runs: 4 sleeps of 1.5 s on 2 workers, chunks of 1.
    st = dl.Stream(port, {"op": "sleep", "inputs": [1500] * 4, "chunksize": 1})
    time.sleep(0.5)
    g = scrape(port)
    check(val(g, "batchd_batches_in_flight") == 1, "in flight 1 during the batch")
    check(val(g, "batchd_workers", state="busy") == 2, "2 busy workers during the batch")
    check(val(g, "batchd_workers", state="idle") == 0, "0 idle workers during the batch")
    check(val(g, "batchd_queue_depth") == 4, "queue depth 4 (queued or running)")
    st.read_all()
    check(st.complete, "the sleep batch completed")
    g = scrape(port)
    check(val(g, "batchd_batches_in_flight") == 0, "in flight 0 after")
    check(val(g, "batchd_queue_depth") == 0, "queue depth 0 after")
    check(val(g, "batchd_workers", state="busy") == 0, "0 busy after")

    # Restarts by cause. Timeout: one job over its limit kills its worker.
    r0 = scrape(port)
    s, _, out = batch(port, {"op": "sleep", "inputs": [3000], "timeout_ms": 200})
    check(b'"timeout"' in out, "the slow job failed with timeout")
    time.sleep(0.3)
    r1 = scrape(port)
    check(delta(r0, r1, "batchd_worker_restarts_total", cause="timeout") == 1, "timeout +1")
    check(delta(r0, r1, "batchd_jobs_total", op="sleep", outcome="timeout") == 1,
          "jobs sleep timeout +1")
    # Crash: kill an idle worker from outside.
    pids = worker_pids(b.proc.pid)
    check(len(pids) == 2, f"two batchd-worker processes {pids}")
    os.kill(pids[0], signal.SIGKILL)
    deadline = time.monotonic() + 5
    r2 = r1
    while time.monotonic() < deadline:
        r2 = scrape(port)
        if delta(r1, r2, "batchd_worker_restarts_total", cause="crash") >= 1:
            break
        time.sleep(0.1)
    check(delta(r1, r2, "batchd_worker_restarts_total", cause="crash") == 1, "crash +1")
    # Recycle: BATCHD_RECYCLE_AFTER=5, chunks of 1: 20 jobs recycle workers about 4 times.
    before = val(r2, "batchd_worker_restarts_total", cause="recycle")
    s, _, _ = batch(port, {"op": "square", "inputs": list(range(20)), "chunksize": 1})
    time.sleep(0.5)
    r3 = scrape(port)
    recycled = val(r3, "batchd_worker_restarts_total", cause="recycle") - before
    check(3 <= recycled <= 5, f"recycle +{recycled} for 20 jobs at 5 per worker")
    check(delta(r2, r3, "batchd_worker_restarts_total", cause="crash") == 0, "no crash counted")

    b.signal(signal.SIGTERM)
    check(b.wait(20) == 0, "exit 0 after SIGTERM")
    log = b.log()
    check("event=worker_exit" in log and "cause=timeout" in log and "cause=crash" in log
          and "cause=recycle" in log, "worker exits logged with their causes")
    b.stop()
    print(f"{len(failures) == 0 and 'all checks passed' or 'FAILED: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
