#!/usr/bin/env python3
"""op lua (SPEC §10) beside Python and beside batchd's built-in ops, end to end over HTTP.

    python3 tests/bench/lua_bench.py            # REPS=3 (env), BATCHD_BIN=build/batchd

Workloads (issue 13), on batchd servers of 1 and 2 workers started here on 127.0.0.1:
- the seeds' intensive_task, sum(i + x for i in range(5_000_000)) for x in range(8): as a
  Lua op, as the built-in cpu_loop ({"n": 5000000, "x": x}), and as Python's
  multiprocessing.Pool(w).map of the same function (../shared/peers/peers.py's, pool start
  and stop included);
- per-job overhead: 1,000,000 jobs of a tiny Lua function (x * x) beside the built-in square.
A warm-up round, then REPS rounds interleaved; medians of wall time (request to last byte).
"""
import http.client
import json
import os
import statistics
import sys
import time
from multiprocessing import Pool

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from harness import Server  # noqa: E402

N = 5_000_000
XS = list(range(8))
INTENSIVE_LUA = ("return function(x) local s = 0 for i = 0, %d - 1 do s = s + (i + x) end "
                 "return s end" % N)
SQUARE_LUA = "return function(x) return x * x end"
TINY_N = 1_000_000


def intensive_task(x):
    return sum(i + x for i in range(N))


def post(srv, batch):
    body = json.dumps(batch)
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
    t = time.perf_counter()
    c.request("POST", "/v1/batches", body=body, headers={"Content-Type": "application/json"})
    data = c.getresponse().read()
    dt = time.perf_counter() - t
    c.close()
    summ = json.loads(data.rsplit(b"\n", 2)[-2])["summary"]
    assert summ["ok"] == summ["jobs"], summ
    return dt


def workloads(servers):
    out = []
    for w, srv in servers.items():
        out.append(("8 x intensive_task n=5M", w, "batchd lua",
                    lambda s=srv: post(s, {"op": "lua", "params": {"code": INTENSIVE_LUA},
                                           "inputs": XS})))
        out.append(("8 x intensive_task n=5M", w, "batchd cpu_loop",
                    lambda s=srv: post(s, {"op": "cpu_loop",
                                           "inputs": [{"n": N, "x": x} for x in XS]})))
        out.append(("8 x intensive_task n=5M", w, "Python Pool.map",
                    lambda w=w: pool_run(w)))
        out.append(("1M tiny jobs", w, "batchd lua x*x",
                    lambda s=srv: post(s, {"op": "lua", "params": {"code": SQUARE_LUA},
                                           "inputs": list(range(TINY_N))})))
        out.append(("1M tiny jobs", w, "batchd square",
                    lambda s=srv: post(s, {"op": "square", "inputs": list(range(TINY_N))})))
    return out


def pool_run(w):
    t = time.perf_counter()
    with Pool(w) as p:
        r = p.map(intensive_task, XS)
    dt = time.perf_counter() - t
    assert r[1] == N * (N - 1) // 2 + N
    return dt


def main():
    reps = int(os.environ.get("REPS", "3"))
    servers = {}
    try:
        for w in (1, 2):
            servers[w] = Server(workers=w).start()
        wl = workloads(servers)
        times = {(name, w, who): [] for name, w, who, _ in wl}
        for rnd in range(reps + 1):
            for name, w, who, f in wl:
                dt = f()
                if rnd > 0:
                    times[(name, w, who)].append(dt)
        print("| workload | workers | system | median s | all |")
        print("|---|---|---|---|---|")
        for (name, w, who), ts in times.items():
            print("| %s | %d | %s | %.3f | %s |" % (name, w, who, statistics.median(ts),
                                                   " ".join("%.3f" % t for t in ts)))
    finally:
        for s in servers.values():
            s.stop()


if __name__ == "__main__":
    main()
