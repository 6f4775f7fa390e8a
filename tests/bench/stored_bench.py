#!/usr/bin/env python3
"""Stored batches (SPEC §8) against plain streaming, on one server; and the plain path of this
tree against a baseline binary.

    tests/bench/stored_bench.py --bin build-bench/batchd [--base-bin OTHER/batchd] [--reps 5]

1. On one server (2 workers, its own --state-dir): 1M `sqrt` (range(10, 1000010)) streamed
   plainly (POST, NDJSON to the summary) and the same body async (`Prefer: respond-async`,
   202, then GET .../results?follow=true to the summary), alternated, REPS times each: best
   and median end-to-end seconds and their ratio. Also a read-back of the ended batch (GET
   results, no follow; and Accept: application/json), timed.
2. The store: rows/s written (1M / (202 -> the summary of the followed results)),
   batchd_store_rows_total and _commits_total deltas (rows per commit), the commit latency
   quantiles of batchd_store_commit_seconds.
3. RSS of the server process (VmRSS sampled every 10 ms; VmHWM) at idle, while 250k and 1M
   results are stored, while 1M are read back (NDJSON and the JSON document), per phase.
4. With --base-bin: the plain path, this binary against the other, alternated: 1M sqrt
   streamed (REPS each) and wrk -t2 -c64 (POST of 10 `square` jobs), WRK_SECS each, REPS//2+1
   rounds; best and median.

Prints a Markdown report (also written with --out). Uses curl and wrk; only 127.0.0.1.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "deploy"))
import promtext  # noqa: E402

N = 1000000


def status_kb(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    def __init__(self, binary, tmp, name, workers=2):
        self.logpath = os.path.join(tmp, name + ".log")
        self.log = open(self.logpath, "w")
        args = [binary, "--listen", "127.0.0.1:0", "--workers", str(workers)]
        # A state dir of its own, by environment: a baseline without a store ignores it (a
        # flag would be refused).
        env = dict(os.environ, BATCHD_STATE_DIR=tempfile.mkdtemp(prefix="state-", dir=tmp))
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log, env=env)
        self.port = None
        for _ in range(400):
            with open(self.logpath) as f:
                m = re.search(r"event=listening .*?port=(\d+)", f.read())
            if m:
                self.port = int(m.group(1))
                break
            time.sleep(0.05)
        if self.port is None:
            raise SystemExit("batchd did not start: see " + self.logpath)
        self.base = "http://127.0.0.1:%d" % self.port
        for _ in range(400):
            try:
                if urllib.request.urlopen(self.base + "/readyz", timeout=5).status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        self.phase = None
        self.peaks = {}
        self._stop = False
        self._t = threading.Thread(target=self._sample, daemon=True)
        self._t.start()

    def _sample(self):
        while not self._stop:
            ph = self.phase
            if ph:
                kb = status_kb(self.proc.pid, "VmRSS")
                self.peaks[ph] = max(self.peaks.get(ph, 0), kb)
            time.sleep(0.01)

    def metrics(self):
        with urllib.request.urlopen(self.base + "/metrics", timeout=30) as r:
            return promtext.parse(r.read().decode())

    def stop(self):
        self._stop = True
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def curl(args, out):
    """Runs curl; returns (wall seconds, http code)."""
    t = time.monotonic()
    cp = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}"] + args,
                        capture_output=True, text=True, timeout=600)
    dt = time.monotonic() - t
    if cp.returncode != 0:
        raise SystemExit("curl failed: %s" % cp.stderr)
    return dt, int(cp.stdout)


def last_line_summary(path, jobs):
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 4096))
        tail = f.read().decode().rstrip("\n").split("\n")[-1]
    s = json.loads(tail)["summary"]
    if s["jobs"] != jobs or s["ok"] != jobs:
        raise SystemExit("bad summary %r" % s)
    return size


def plain(srv, body, out):
    dt, code = curl(["-H", "Content-Type: application/json", "--data-binary", "@" + body,
                     srv.base + "/v1/batches"], out)
    if code != 200:
        raise SystemExit("plain: %d" % code)
    last_line_summary(out, N if "1m" in body else N // 4)
    return dt


def stored(srv, body, out, jobs):
    """Async submit, then the results followed to the summary. Returns (total s, 202 s, id)."""
    t = time.monotonic()
    dt1, code = curl(["-H", "Content-Type: application/json", "-H", "Prefer: respond-async",
                      "--data-binary", "@" + body, srv.base + "/v1/batches"], out)
    if code != 202:
        raise SystemExit("async: %d %s" % (code, open(out).read()[:300]))
    bid = json.load(open(out))["id"]
    t202 = time.monotonic()
    _, code = curl([srv.base + "/v1/batches/%s/results?follow=true" % bid], out)
    total = time.monotonic() - t
    if code != 200:
        raise SystemExit("results: %d" % code)
    last_line_summary(out, jobs)
    return total, time.monotonic() - t202, bid


def forget(srv, bid):
    req = urllib.request.Request(srv.base + "/v1/batches/" + bid, method="DELETE")
    urllib.request.urlopen(req, timeout=60).read()


def wrk(srv, secs, script):
    cp = subprocess.run(["wrk", "-t2", "-c64", "-d%ds" % secs, "--timeout", "5s", "--latency",
                         "-s", script, srv.base + "/v1/batches"], capture_output=True, text=True,
                        timeout=secs + 60)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", cp.stdout).group(1))

    def lat(p):
        m = re.search(r"\s%s%%\s+([\d.]+)(us|ms|s)\b" % p, cp.stdout)
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", cp.stdout)
    return rps, lat(50), lat(99), int(non2xx.group(1)) if non2xx else 0


def fmt(xs):
    return "%.3f / %.3f" % (min(xs), statistics.median(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--base-bin")
    ap.add_argument("--base-label", default="base")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--wrk-secs", type=int, default=int(os.environ.get("WRK_SECS", "5")))
    ap.add_argument("--out")
    ap.add_argument("--command", default="tests/bench/stored_bench.py")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="batchd-stored-bench-")
    rep = []
    try:
        body1m = os.path.join(tmp, "sqrt1m.json")
        body250k = os.path.join(tmp, "sqrt250k.json")
        with open(body1m, "w") as f:
            json.dump({"op": "sqrt", "inputs": list(range(10, N + 10))}, f)
        with open(body250k, "w") as f:
            json.dump({"op": "sqrt", "inputs": list(range(10, N // 4 + 10))}, f)
        out = os.path.join(tmp, "out")
        load0 = os.getloadavg()
        t_start = time.time()

        # ---------------------------------------------------------- 1-3: one server
        srv = Server(a.bin, tmp, "stored")
        srv.phase = "idle"
        time.sleep(0.3)
        srv.phase = "stored 250k (submit + follow)"
        _, _, bid = stored(srv, body250k, out, N // 4)
        forget(srv, bid)
        m0 = srv.metrics()
        srv.phase = "stored 1M (submit + follow)"
        total, after202, bid = stored(srv, body1m, out, N)
        m1 = srv.metrics()
        srv.phase = "read back 1M (NDJSON)"
        t = time.monotonic()
        _, code = curl([srv.base + "/v1/batches/%s/results" % bid], out)
        t_read = time.monotonic() - t
        size = last_line_summary(out, N)
        srv.phase = "read back 1M (Accept: application/json)"
        t = time.monotonic()
        _, code_j = curl(["-H", "Accept: application/json",
                          srv.base + "/v1/batches/%s/results" % bid], out)
        t_json = time.monotonic() - t
        doc = json.load(open(out))
        if code_j != 200 or len(doc["results"]) != N:
            raise SystemExit("json document: %d" % code_j)
        del doc
        srv.phase = None
        forget(srv, bid)
        store_bytes = m1["batchd_store_bytes"].value()
        rows = m1["batchd_store_rows_total"].value() - m0["batchd_store_rows_total"].value()
        commits = m1["batchd_store_commits_total"].value() - m0["batchd_store_commits_total"].value()
        q = m1["batchd_store_commit_seconds"]
        p50, p99 = q.value(quantile="0.5"), q.value(quantile="0.99")
        csum = q.value("_sum") - m0["batchd_store_commit_seconds"].value("_sum")
        # Alternated: plain stream vs async + follow, same body, same server.
        tp, ts = [], []
        for r in range(a.reps + 1):
            srv.phase = "plain 1M (stream)"
            x = plain(srv, body1m, out)
            srv.phase = "stored 1M (submit + follow)"
            y, _, bid = stored(srv, body1m, out, N)
            srv.phase = None
            forget(srv, bid)
            if r > 0:  # round 0: warm-up
                tp.append(x)
                ts.append(y)
        hwm = status_kb(srv.proc.pid, "VmHWM")
        peaks = dict(srv.peaks)
        srv.stop()

        rep.append("# batchd stored batches benchmark %s" % time.strftime("%Y-%m-%d %H:%M", time.gmtime()))
        rep.append("")
        rep.append("- command: `%s`" % a.command)
        rep.append("- machine: %d CPUs, %s; load average at start %.2f, at end %.2f "
                   "(shared with other builds: figures are noisy, best of several)" %
                   (os.cpu_count(), os.uname().release, load0[0], os.getloadavg()[0]))
        rep.append("- binary: `%s`, 2 workers, its own --state-dir (SQLite, WAL, synchronous=FULL)"
                   % a.bin)
        rep.append("")
        rep.append("## Stored vs plain, 1M sqrt, one server (%d alternated runs each after a warm-up)"
                   % a.reps)
        rep.append("")
        rep.append("| path | best s / median s |")
        rep.append("|---|---|")
        rep.append("| plain: POST, NDJSON stream to the summary | %s |" % fmt(tp))
        rep.append("| stored: POST async (202), GET results?follow=true to the summary | %s |" % fmt(ts))
        rep.append("")
        rep.append("- ratio stored/plain: best %.2f, median %.2f" %
                   (min(ts) / min(tp), statistics.median(ts) / statistics.median(tp)))
        rep.append("- first stored 1M run: %.3f s end to end, %.3f s from the 202 to the summary"
                   % (total, after202))
        rep.append("- read back of the ended batch: NDJSON %.3f s (%.1f MB, %.0f rows/s); JSON "
                   "document in input order %.3f s" % (t_read, size / 1e6, N / t_read, t_json))
        rep.append("")
        rep.append("## Store writes (the first stored 1M run)")
        rep.append("")
        rep.append("- rows/s: %.0f (1M rows from the 202 to the committed summary)" % (N / after202))
        rep.append("- batchd_store_rows_total +%d, batchd_store_commits_total +%d (%.0f rows per "
                   "commit), %.3f s in commits" % (rows, commits, rows / max(commits, 1), csum))
        rep.append("- commit latency (batchd_store_commit_seconds, over the server's life): p50 "
                   "%.2f ms, p99 %.2f ms" % (p50 * 1000, p99 * 1000))
        rep.append("- store size with 1M results held: %.1f MB" % (store_bytes / 1e6))
        rep.append("")
        rep.append("## Server RSS (VmRSS of the server process, sampled every 10 ms; workers not included)")
        rep.append("")
        rep.append("| phase | peak MB |")
        rep.append("|---|---|")
        for ph, kb in peaks.items():
            rep.append("| %s | %.1f |" % (ph, kb / 1024))
        rep.append("")
        rep.append("- VmHWM at the end: %.1f MB" % (hwm / 1024))
        rep.append("")
        print("\n".join(rep), flush=True)
        if a.out:
            with open(a.out, "w") as f:
                f.write("\n".join(rep) + "\n")

        # ---------------------------------------------------------- 4: vs the baseline
        if a.base_bin:
            script = os.path.join(tmp, "post.lua")
            with open(script, "w") as f:
                f.write('wrk.method = "POST"\n'
                        'wrk.body = \'{"op":"square","inputs":[1,2,3,4,5,6,7,8,9,10]}\'\n'
                        'wrk.headers["Content-Type"] = "application/json"\n')
            new = Server(a.bin, tmp, "new")
            base = Server(a.base_bin, tmp, "base")
            sq = {"new": [], "base": []}
            wr = {"new": [], "base": []}
            for r in range(a.reps + 1):
                for name, s in (("new", new), ("base", base)) if r % 2 == 0 else (("base", base), ("new", new)):
                    x = plain(s, body1m, out)
                    if r > 0:
                        sq[name].append(x)
            for r in range(a.reps // 2 + 1):
                for name, s in (("new", new), ("base", base)) if r % 2 == 0 else (("base", base), ("new", new)):
                    wr[name].append(wrk(s, a.wrk_secs, script))
            new.stop()
            base.stop()
            rep.append("## Plain streaming path: this tree vs %s (2 workers, alternated)" % a.base_label)
            rep.append("")
            rep.append("| | this tree | %s | this/base |" % a.base_label)
            rep.append("|---|---|---|---|")
            rep.append("| 1M sqrt streamed, best s / median s (%d runs) | %s | %s | %.2f / %.2f |" %
                       (a.reps, fmt(sq["new"]), fmt(sq["base"]), min(sq["new"]) / min(sq["base"]),
                        statistics.median(sq["new"]) / statistics.median(sq["base"])))
            bn = max(wr["new"], key=lambda x: x[0])
            bb = max(wr["base"], key=lambda x: x[0])
            rep.append("| wrk -t2 -c64 -d%ds, best req/s (of %d) | %.0f | %.0f | %.2f |" %
                       (a.wrk_secs, len(wr["new"]), bn[0], bb[0], bn[0] / bb[0]))
            rep.append("| wrk median req/s | %.0f | %.0f | %.2f |" %
                       (statistics.median(x[0] for x in wr["new"]),
                        statistics.median(x[0] for x in wr["base"]),
                        statistics.median(x[0] for x in wr["new"]) /
                        statistics.median(x[0] for x in wr["base"])))
            rep.append("| wrk p50 / p99 ms (best run) | %.2f / %.2f | %.2f / %.2f | |" %
                       (bn[1], bn[2], bb[1], bb[2]))
            rep.append("| wrk non-2xx (all runs) | %d | %d | |" %
                       (sum(x[3] for x in wr["new"]), sum(x[3] for x in wr["base"])))
            rep.append("")
            rep.append("wrk runs: this tree %s; %s %s (req/s)" %
                       ([round(x[0]) for x in wr["new"]], a.base_label, [round(x[0]) for x in wr["base"]]))
            rep.append("")
        rep.append("Wall time of the run: %.0f s." % (time.time() - t_start))
        text = "\n".join(rep) + "\n"
        print("\n".join(rep[-14:]))
        if a.out:
            with open(a.out, "w") as f:
                f.write(text)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
