#!/usr/bin/python3
"""Image transport timings through the real server (not a ctest: run by hand, optimised build).

The 15 photos of data/photos on 2 workers, wall time of the whole HTTP request (client-side
encoding included), median of REPS interleaved rounds:
  - thumbnail(256) uploaded as multipart  (file parts streamed into the memfd)
  - thumbnail(256) as base64 JSON inputs  (decoded by the server into the same memfd)
  - thumbnail(256) as --data-dir paths    (workers read the files themselves)
  - blur(15) + thumbnail(1200), multipart, the issue's "Done when" job, beside
    ../shared/peers' multiprocessing.Pool(2) + Pillow on the same photos, in the same run.
Usage: BATCHD_BIN=build/batchd img_transport.py [REPS]
"""
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
from harness import SHARED, Server  # noqa: E402
from imglib import multipart, post  # noqa: E402

REPS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
PHOTOS = os.path.join(SHARED, "data", "photos")
NAMES = sorted(os.listdir(PHOTOS))
BYTES = {n: open(os.path.join(PHOTOS, n), "rb").read() for n in NAMES}
THUMB = {"pipeline": [{"op": "thumbnail", "width": 256, "height": 256}], "format": "jpeg"}
TUTORIAL = {"pipeline": [{"op": "blur", "sigma": 15},
                         {"op": "thumbnail", "width": 1200, "height": 1200}]}


def timed(fn):
    t = time.perf_counter()
    status, _, data = fn()
    dt = time.perf_counter() - t
    summary = json.loads(data.decode().strip().splitlines()[-1])["summary"]
    assert status == 200 and summary["ok"] == len(NAMES), summary
    return dt


def multipart_run(S, params):
    def fn():
        body, ctype = multipart({"op": "image", "params": params},
                                [(n, BYTES[n]) for n in NAMES])
        return post(S, body, ctype)
    return fn


def base64_run(S, params):
    def fn():
        batch = {"op": "image", "params": params,
                 "inputs": [{"data": base64.b64encode(BYTES[n]).decode()} for n in NAMES]}
        return post(S, json.dumps(batch).encode(), "application/json")
    return fn


def path_run(S, params):
    def fn():
        batch = {"op": "image", "params": params, "inputs": [{"path": n} for n in NAMES]}
        return post(S, json.dumps(batch).encode(), "application/json")
    return fn


def peers_pool():
    out = tempfile.mkdtemp(prefix="peers-")
    res = os.path.join(out, "results.tsv")
    subprocess.run(["/usr/bin/python3", os.path.join(SHARED, "peers", "peers.py"), "--photos",
                    PHOTOS, "--out", out, "--reps", "1", "--workers", "2", "--only", "image",
                    "--peers", "pool", "--results", res], check=True, capture_output=True)
    rows = [l.split("\t") for l in open(res).read().splitlines()]
    return rows


def main():
    total_mb = sum(len(b) for b in BYTES.values()) / 1e6
    print("%d photos, %.1f MB" % (len(NAMES), total_mb))
    # The photos folder is read-only input: results never go there.
    with Server(workers=2, args=["--data-dir", PHOTOS, "--output-dir",
                                 tempfile.mkdtemp(prefix="batchd-bench-out-")]) as S:
        kinds = [("thumbnail(256) multipart", multipart_run(S, THUMB)),
                 ("thumbnail(256) base64 JSON", base64_run(S, THUMB)),
                 ("thumbnail(256) data-dir paths", path_run(S, THUMB))]
        for _, fn in kinds:
            timed(fn)  # warm the page cache and the workers
        times = {k: [] for k, _ in kinds}
        for _ in range(REPS):
            for k, fn in kinds:
                times[k].append(timed(fn))
        for k, _ in kinds:
            print("  %-34s %7.3f s  (runs: %s)" % (k, statistics.median(times[k]),
                                                    " ".join("%.3f" % t for t in times[k])))
        tut = [timed(multipart_run(S, TUTORIAL)) for _ in range(REPS)]
        print("  %-34s %7.3f s  (runs: %s)" % ("blur(15)+thumbnail(1200) multipart",
                                               statistics.median(tut),
                                               " ".join("%.3f" % t for t in tut)))
    rows = peers_pool()
    print("  peers.py pool w2 (same run):", rows[-1])


if __name__ == "__main__":
    main()
