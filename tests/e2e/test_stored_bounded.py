"""A stored batch holds bounded memory in the server (SPEC §7 "Bounded memory", issue 10: RSS
bounded while 1M results are stored): the workers answer sqrt jobs far faster than the store
commits them, so without a brake every result of the batch waits in the store's queue, in
memory (1M sqrt: 350 MB). The stored batches are held back while the queue is long
(server/stored.c: stored_throttle), so batchd_store_pending_rows stays near its high-water
mark (64k rows) whatever the batch's size, and every result still arrives.
"""
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402

N = 200000 if SANITIZED else 300000
MAX_PENDING = 120000  # the high-water mark (65536) plus what is in flight, with room


def vmrss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def pending_rows(s):
    _, _, body = s.request("GET", "/metrics")
    m = re.search(rb"^batchd_store_pending_rows (\S+)$", body, re.M)
    return float(m.group(1))


def test_the_store_queue_stays_bounded():
    with Server(workers=2) as s:
        rss0 = vmrss_kb(s.proc.pid)
        status, hdrs, body = s.request("POST", "/v1/batches",
                                       {"op": "sqrt", "inputs": list(range(N)), "async": True})
        check(status == 202, (status, body[:200]))
        loc = hdrs["location"]
        peak = {"pending": 0.0, "rss": 0}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak["pending"] = max(peak["pending"], pending_rows(s))
                peak["rss"] = max(peak["rss"], vmrss_kb(s.proc.pid))
                time.sleep(0.005)

        th = threading.Thread(target=sample)
        th.start()
        end = time.time() + (240 if SANITIZED else 120)
        try:
            while json.loads(s.request("GET", loc)[2])["state"] != "done":
                check(time.time() < end, "not done in time")
                time.sleep(0.05)
        finally:
            stop.set()
            th.join()
        status, _, data = s.request("GET", loc + "/results")
        lines = data.split(b"\n")
        check(status == 200 and len(lines) == N + 2 and b'"ok":%d' % N in lines[-2],
              (status, len(lines), lines[-2:]))
        print("  %d results; store queue at most %d rows; server RSS %.0f -> %.0f MB at most" %
              (N, peak["pending"], rss0 / 1024, peak["rss"] / 1024))
        check(peak["pending"] <= MAX_PENDING,
              "%d results waited in the store's queue at once (bound %d)" %
              (peak["pending"], MAX_PENDING))


def test_reading_back_holds_a_page_not_the_body():
    # GET .../results of an ended batch reads the store a page at a time; what was sent must
    # leave the server's buffer (it grew to the whole body: 300k results, +18 MB). A fresh
    # server on the state dir, so that no freed memory of the run hides the growth.
    n = N // 2 if SANITIZED else N
    with Server(workers=1) as s:
        status, hdrs, body = s.request("POST", "/v1/batches",
                                       {"op": "sqrt", "inputs": list(range(n)), "async": True})
        check(status == 202, (status, body[:200]))
        loc = hdrs["location"]
        end = time.time() + (240 if SANITIZED else 120)
        while json.loads(s.request("GET", loc)[2])["state"] != "done":
            check(time.time() < end, "not done in time")
            time.sleep(0.05)
        s.stop()
        s.start()
        for accept in ("application/x-ndjson", "application/json"):
            rss0 = vmrss_kb(s.proc.pid)
            peak = [rss0]
            stop = threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], vmrss_kb(s.proc.pid))
                    time.sleep(0.002)

            th = threading.Thread(target=sample)
            th.start()
            try:
                status, _, data = s.request("GET", loc + "/results", headers={"Accept": accept})
            finally:
                stop.set()
                th.join()
            check(status == 200 and b'"ok":%d' % n in data[-400:], (status, data[-200:]))
            grew = (peak[0] - rss0) / 1024
            print("  %s: %.1f MB read back, server RSS +%.1f MB" % (accept, len(data) / 1e6, grew))
            if not SANITIZED:  # ASan's quarantine and shadow make RSS meaningless there
                check(grew < 8, "reading back %.1f MB grew the server by %.1f MB" %
                      (len(data) / 1e6, grew))


if __name__ == "__main__":
    sys.exit(Suite("stored_bounded").run(globals()))
