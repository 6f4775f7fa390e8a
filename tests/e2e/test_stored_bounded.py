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


if __name__ == "__main__":
    sys.exit(Suite("stored_bounded").run(globals()))
