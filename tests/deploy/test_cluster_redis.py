#!/usr/bin/env python3
"""Cluster mode (SPEC §9, issue 11) end to end: a real redis-server (Debian's, AOF with fsync
always), 3 batchd replicas `--redis --replica-name rK --claim-timeout 1s --workers 2`, and
nginx with the project's docker/nginx.conf rendered for loopback. Every result is checked
against Python's own arithmetic, and every index is counted: exactly once, seq 1..N, the
summary adding up.

1. scale: 60 x sleep 200 ms as one async batch on 3 replicas takes < 0.6x the time of the
   same batch on one replica (measured here, first); each replica's metrics show it claimed
   chunks; the status names all three replicas (`cluster`).
2. submit on r1, follow on r2 (NDJSON and SSE), cancel on r3: the followers see every line
   once then the summary with cancelled:true, within about a second of the DELETE (the
   running jobs sleep 3 s: they are stopped, not waited for).
3. SIGKILL of a random replica (its whole process group) at random moments, restarted with
   the same name, >= 20 times (CLUSTER_KILLS) while async batches of numeric and sleep jobs
   run: every batch that got a 202 ends done with each index exactly once.
4. a replica SIGSTOPped past the claim timeout, then continued: exactly once still, and the
   re-claim shows in the metrics (reclaimed / duplicates).
5. redis-server kill -9 mid-batch and restarted on its dir: /readyz 503 (store) on every
   replica and new stored batches 503 store_unavailable during the outage, while a plain
   streamed batch through nginx works; after it every accepted batch completes exactly once.
6. plain streamed batches through nginx unchanged; a stored batch submitted through nginx is
   answered by each replica directly (status, NDJSON, JSON, list), Idempotency-Key across
   replicas, forget on one replica seen by another, and --cluster-max-upload's local batch.
7. a job over its timeout_ms, and a replica's workers killed under their jobs: those jobs
   fail alone (timeout, worker_crashed), the replica is not taken for dead (no re-claim).
8. fairness: a small batch behind a big one does not wait for all of it; a plain streamed
   batch is its replica's own (status there, 404 elsewhere, cancel there).
9. expiry: a batch run by a 4th replica with --result-ttl 1500ms answers 410 expired on
   every replica after it, then 404.
10. redis-server SIGSTOPped past the replicas' reply timeout (5 s) while batches run and are
   POSTed, then continued: /readyz 503 meanwhile, every accepted batch exactly once after,
   and no batch exists that its client was refused.
11. failover: an SSE follower on r2 loses r2 (SIGKILL) and resumes through nginx with
   Last-Event-ID: every line once.
12. volume: 100k sqrt jobs (20k under the sanitizers) with a replica killed mid-batch.

Environment: CLUSTER_KILLS (default 20) kills in 3; CLUSTER_SEED for the random moments;
CLUSTER_ONLY=name,name runs only those scenarios (as named in main, e.g. "redis down").
Exit 77 (skipped) only when redis-server or nginx is not installed.
"""
import concurrent.futures as cf
import http.client
import json
import math
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402
import promtext  # noqa: E402

HOST = dl.HOST
NAMES = ["r1", "r2", "r3"]
CLAIM_TIMEOUT_S = 1.0
KILLS = int(os.environ.get("CLUSTER_KILLS", "20"))
SEED = int(os.environ.get("CLUSTER_SEED", str(int(time.time()) % 100000)))
SHARED = os.environ.get("BATCHD_SHARED") or os.path.join(dl.ROOT, "..", "shared")
MAX_UPLOAD = 64 * 1024  # --cluster-max-upload for every replica (64KiB)

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


# ----------------------------------------------------------------------------- HTTP helpers


def req(port, method, path, body=None, headers=None, timeout=30):
    return dl.request(port, method, path, body=body, headers=headers, timeout=timeout)


def jdoc(data):
    try:
        return json.loads(data) if data else None
    except ValueError:
        return {"raw": data[:300].decode("utf-8", "replace")}


def err_code(data):
    doc = jdoc(data)
    return (doc or {}).get("error", {}).get("code") if isinstance(doc, dict) else None


def brief(doc):
    """An answer in a few words: its error code, or its id and state."""
    if not isinstance(doc, dict):
        return repr(doc)[:200]
    if "error" in doc:
        return f"error {doc['error'].get('code')}: {doc['error'].get('message')}"
    return f"{doc.get('id')} {doc.get('state')}"


def submit(port, batch, headers=None):
    """An async POST; returns (status, headers, doc)."""
    h = {"Prefer": "respond-async"}
    h.update(headers or {})
    s, hd, data = req(port, "POST", "/v1/batches", body=batch, headers=h)
    return s, hd, jdoc(data)


def status_of(port, bid, timeout=10):
    s, _, data = req(port, "GET", "/v1/batches/" + bid, timeout=timeout)
    return s, jdoc(data)


def ndjson(data):
    return [json.loads(l) for l in data.decode().splitlines() if l.strip()]


READ_503 = []  # (port, path): reads answered 503 store_unavailable while Redis was up


def results_of(port, bid, query="", headers=None, retry_503=0):
    """GET .../results; RETRY_503 times again (0.3 s apart) on a 503, as a client would
    after Retry-After, each such 503 kept in READ_503 (reported at the end)."""
    for attempt in range(retry_503 + 1):
        s, hd, data = req(port, "GET", f"/v1/batches/{bid}/results{query}", headers=headers,
                          timeout=60)
        if s != 503 or attempt == retry_503:
            break
        READ_503.append((port, f"/v1/batches/{bid}/results{query}"))
        time.sleep(0.3)
    return s, (ndjson(data) if s == 200 else jdoc(data))


def metrics(port):
    _, _, body = req(port, "GET", "/metrics", timeout=10)
    return promtext.parse(body.decode())


def counter(fams, family, name):
    """The sum of FAMILY's samples labelled replica=NAME (None: no such family)."""
    f = fams.get(family)
    return None if f is None else f.sum(replica=name)


def wait_state(ports, bid, states=("done", "cancelled"), timeout=60):
    """Polls the status on the replicas in turn until STATE; tolerates replicas that are
    down or 503 meanwhile. Returns the last status document (None on timeout)."""
    deadline = time.monotonic() + timeout
    k = 0
    doc = None
    while time.monotonic() < deadline:
        port = ports[k % len(ports)]
        k += 1
        try:
            s, d = status_of(port, bid, timeout=5)
        except OSError:
            time.sleep(0.05)
            continue
        if s == 200:
            doc = d
            if d.get("state") in states:
                return d
        elif s in (404, 410):  # never, for a batch that got its 202
            print(f"  batch {bid}: status {s} on port {port}: {brief(d)}")
            return None
        time.sleep(0.05)
    print(f"  batch {bid} not in {states} after {timeout} s: {brief(doc)}")
    return None


def problems(lines, n, expect=None, cancelled=False, stored=True):
    """What is wrong with a batch's result lines: every index 0..N-1 exactly once, seq 1..N
    in order (STORED; a plain stream has no seq), the summary last and adding up (cancelled
    or not as said), each result what EXPECT(i) says (when given). Returns a list of strings
    (empty: all right)."""
    out = []
    if not isinstance(lines, list) or not lines:
        return [f"no lines: {lines!r}"[:300]]
    rows = [l for l in lines if "index" in l]
    idx = [l["index"] for l in rows]
    if sorted(idx) != list(range(n)):
        seen, dup = set(), set()
        for i in idx:
            (dup if i in seen else seen).add(i)
        missing = sorted(set(range(n)) - seen)
        out.append(f"{len(idx)} result lines for {n} jobs: twice {sorted(dup)[:20]}, "
                   f"missing {missing[:20]}")
    seqs = [l.get("seq") for l in rows]
    if stored and seqs != list(range(1, len(rows) + 1)):
        out.append(f"seqs not 1..{len(rows)}: {seqs[:30]}")
    last = lines[-1]
    if "summary" not in last:
        out.append(f"last line is not the summary: {last}")
        return out
    summ = last["summary"]
    ok = sum(1 for l in rows if "result" in l)
    failed = sum(1 for l in rows if "error" in l)
    if summ.get("jobs") != n or summ.get("ok") != ok or summ.get("failed") != failed:
        out.append(f"summary {summ} does not add up: {ok} ok, {failed} failed of {n}")
    if bool(summ.get("cancelled", False)) != cancelled:
        out.append(f"summary cancelled={summ.get('cancelled')}, expected {cancelled}")
    if expect is not None:
        # A cancelled batch's jobs either ran (right) or failed cancelled; else all ran.
        wrong = [l for l in rows
                 if ("error" in l and not (cancelled and l["error"].get("code") == "cancelled"))
                 or ("error" not in l and l.get("result") != expect(l["index"]))]
        if wrong:
            out.append(f"{len(wrong)} wrong results, e.g. {wrong[:3]} "
                       f"(expected {expect(wrong[0]['index'])!r})")
    return out


def check_batch(port, bid, n, expect, what, cancelled=False):
    s, lines = results_of(port, bid)
    if not check(s == 200, f"{what}: results -> {s}"):
        print("  ", lines)
        return None
    p = problems(lines, n, expect, cancelled)
    check(not p, f"{what}: {n} jobs, each index once, seq 1..{n}, summary adds up, results "
                 f"right" + ("" if not p else ": " + "; ".join(p)))
    return lines


def sqrt_of(i):
    return math.sqrt(i)


class Follower(threading.Thread):
    """GET .../results?follow=true (NDJSON, or SSE with sse=True), each line or event kept
    with its arrival time (monotonic)."""

    def __init__(self, port, bid, sse=False, headers=None, timeout=60):
        super().__init__(daemon=True)
        self.port, self.bid, self.sse, self.timeout = port, bid, sse, timeout
        self.headers = dict(headers or {})
        if sse:
            self.headers["Accept"] = "text/event-stream"
        self.items = []  # (time, obj): obj a line, or an event {"id","event","data"}
        self.status = None
        self.error = None
        self.opened = threading.Event()

    def run(self):
        try:
            conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
            conn.request("GET", f"/v1/batches/{self.bid}/results?follow=true",
                         headers=self.headers)
            r = conn.getresponse()
            self.status = r.status
            self.opened.set()
            ev = {}
            while True:
                line = r.readline()
                if not line:
                    break
                if not self.sse:
                    if line.strip():
                        self.items.append((time.monotonic(), json.loads(line)))
                    continue
                line = line.decode().rstrip("\r\n")
                if line == "":
                    if ev:
                        self.items.append((time.monotonic(), ev))
                        ev = {}
                    continue
                if line.startswith(":"):
                    continue
                k, _, v = line.partition(":")
                ev[k] = v[1:] if v.startswith(" ") else v
            conn.close()
        except Exception as e:  # reported by the test
            self.error = repr(e)
        finally:
            self.opened.set()

    def lines(self):
        """The NDJSON lines, or the SSE events' data as lines (result and summary events)."""
        if not self.sse:
            return [o for _, o in self.items if "index" in o or "summary" in o]
        return [json.loads(e["data"]) for _, e in self.items
                if e.get("event") in ("result", "summary")]

    def summary_time(self):
        for t, o in self.items:
            if ("summary" in o) if not self.sse else (o.get("event") == "summary"):
                return t
        return None


def multipart(batch, files):
    boundary = "----clustertest%08x" % random.getrandbits(32)
    out = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"batch\"\r\n"
           f"Content-Type: application/json\r\n\r\n{json.dumps(batch)}\r\n".encode()]
    for name, data in files:
        out.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                   f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                   .encode() + data + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return b"".join(out), f"multipart/form-data; boundary={boundary}"


# ----------------------------------------------------------------------------- the cluster


class Cluster:
    def __init__(self, tmp):
        self.tmp = tmp
        self.redis = dl.RedisServer(workdir=os.path.join(tmp, "redis"))
        self.ports = [dl.free_port() for _ in NAMES]
        self.reps = [None] * len(NAMES)
        self.extra = []  # replicas started for one scenario (their logs are checked too)
        self.nginx = None
        self.lock = threading.Lock()
        print(f"  redis on {self.redis.port}, replicas {dict(zip(NAMES, self.ports))}")

    def env(self, name):
        return {"BATCHD_REDIS": self.redis.url, "BATCHD_REPLICA_NAME": name,
                "BATCHD_CLAIM_TIMEOUT": "1s", "BATCHD_LOG_FORMAT": "json",
                "BATCHD_CLUSTER_MAX_UPLOAD": "64KiB", "BATCHD_MAX_BATCHES": "256"}

    def start(self, k):
        name = NAMES[k]
        self.reps[k] = dl.Batchd(name, workers=2, port=self.ports[k], env=self.env(name),
                                 workdir=os.path.join(self.tmp, name))
        return self.reps[k]

    def restart(self, k, tries=5):
        """Starts replica K again on its port with its name (after a kill); a restart that
        races the dead process' port (EADDRINUSE) is tried again."""
        rep = self.reps[k]
        for _ in range(tries):
            rep.restart()
            time.sleep(0.1)
            if rep.proc.poll() is None:
                return rep
            time.sleep(0.3)
        raise RuntimeError(f"{NAMES[k]} does not restart:\n{rep.log()[-3000:]}")

    def alive_ports(self):
        return [p for r, p in zip(self.reps, self.ports) if r and r.proc.poll() is None]

    def wait_all_ready(self, timeout=30):
        for k, r in enumerate(self.reps):
            if r.proc.poll() is not None:
                print(f"  {NAMES[k]} had exited ({r.proc.returncode}): restarting")
                self.restart(k)
            r.wait_ready(timeout=timeout)

    def start_nginx(self):
        self.nginx = dl.Nginx(self.ports, prefix=os.path.join(self.tmp, "nginx"))
        print(f"  nginx on {self.nginx.port}")


def follow_to_end(port, bid, timeout=120):
    f = Follower(port, bid, timeout=timeout)
    f.run()
    return f


# ----------------------------------------------------------------------------- 1. scale


def scenario_scale(c):
    n, ms = 60, 200
    batch = {"op": "sleep", "inputs": [ms] * n}

    def timed(port):
        t0 = time.monotonic()
        s, _, doc = submit(port, batch)
        if not check(s == 202, f"scale: async POST -> {s} {brief(doc)}"):
            return None, None
        f = follow_to_end(port, doc["id"])
        took = time.monotonic() - t0
        if not check(f.status == 200 and f.error is None,
                     f"scale: follow -> {f.status} {f.error}"):
            return doc["id"], None
        p = problems(f.lines(), n, lambda i: ms)
        check(not p, f"scale: {n} sleeps, each once, right " + "; ".join(p))
        return doc["id"], took

    # One replica alone first (r1 is the only one started).
    _, one = timed(c.ports[0])
    c.start(1)
    c.start(2)
    c.wait_all_ready()
    c.start_nginx()
    before = [metrics(p) for p in c.ports]
    bid, three = timed(c.nginx.port)
    if one is not None and three is not None:
        check(three < 0.6 * one, f"scale: 3 replicas took {three:.2f} s, one {one:.2f} s "
                                 f"(ratio {three / one:.2f} < 0.6; ideal 0.33)")
    if bid is None:
        return
    after = [metrics(p) for p in c.ports]
    claimed = []
    for k, name in enumerate(NAMES):
        a = counter(after[k], "batchd_cluster_chunks_claimed_total", name)
        b = counter(before[k], "batchd_cluster_chunks_claimed_total", name)
        claimed.append(None if a is None else a - (b or 0))
    check(all(x is not None and x > 0 for x in claimed),
          f"scale: batchd_cluster_chunks_claimed_total{{replica}} grew on every replica: "
          f"{dict(zip(NAMES, claimed))}")
    up = [counter(after[k], "batchd_redis_up", name) for k, name in enumerate(NAMES)]
    check(up == [1, 1, 1], f"scale: batchd_redis_up{{replica}} = 1 on each: {up}")

    def delta(fam):
        return sum((counter(after[k], fam, nm) or 0) - (counter(before[k], fam, nm) or 0)
                   for k, nm in enumerate(NAMES))

    rec, dup = delta("batchd_cluster_results_recorded_total"), delta(
        "batchd_cluster_duplicates_total")
    check(rec == n and dup == 0, f"scale: the replicas recorded {rec} results for {n} jobs, "
                                 f"{dup} duplicates refused")
    cnt = [after[k]["batchd_redis_latency_seconds"].sum("_count", replica=nm)
           if "batchd_redis_latency_seconds" in after[k] else None
           for k, nm in enumerate(NAMES)]
    check(all(x is not None and x > 0 for x in cnt),
          f"scale: batchd_redis_latency_seconds counts round trips on each: {cnt}")
    unlabelled = [f"{nm}: {fam.name}" for k, nm in enumerate(NAMES) for fam in after[k].values()
                  if fam.name.startswith(("batchd_cluster_", "batchd_redis_"))
                  for (_, labels, _) in fam.samples if dict(labels).get("replica") != nm]
    check(not unlabelled, f"scale: every cluster and Redis sample carries replica=NAME "
                          f"{unlabelled[:3]}")
    s, doc = status_of(c.ports[1], bid)
    cl = (doc or {}).get("cluster")
    check(s == 200 and isinstance(cl, dict) and cl.get("queue") is True
          and sorted(cl.get("replicas", [])) == NAMES,
          f"scale: status' cluster = queue true, replicas all three: {cl}")


# ----------------------------------------------------------------------------- 2. cancel


def scenario_follow_cancel(c):
    a, b, cc = c.ports
    n, ms = 30, 3000
    s, _, doc = submit(a, {"op": "sleep", "inputs": [ms] * n})
    if not check(s == 202, f"follow/cancel: POST on r1 -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    nd = Follower(b, bid)
    sse = Follower(b, bid, sse=True)
    nd.start()
    sse.start()
    # The first round of 6 jobs ends after 3 s; cancel while the second round runs.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(nd.items) < 6 and nd.is_alive():
        time.sleep(0.02)
    check(len(nd.items) >= 6, f"follow/cancel: the NDJSON follower on r2 got the first round "
                              f"({len(nd.items)} lines)")
    time.sleep(0.4)
    t0 = time.monotonic()
    s, _, data = req(cc, "DELETE", "/v1/batches/" + bid, timeout=20)
    t_del = time.monotonic() - t0
    doc = jdoc(data)
    check(s == 200 and doc.get("state") == "cancelled",
          f"follow/cancel: DELETE on r3 -> {s} state {doc.get('state') if doc else None}")
    jobs = (doc or {}).get("jobs", {})
    check(jobs.get("ok", 0) + jobs.get("failed", 0) == n,
          f"follow/cancel: the DELETE's final status counts every job: {jobs}")
    check(t_del < 1.5, f"follow/cancel: DELETE answered in {t_del:.2f} s (< 1.5 s; the "
                       f"running jobs had ~2.5 s to go)")
    nd.join(10)
    sse.join(10)
    for f, what in ((nd, "NDJSON"), (sse, "SSE")):
        check(f.status == 200 and f.error is None and not f.is_alive(),
              f"follow/cancel: {what} follower on r2 ended: {f.status} {f.error}")
        lines = f.lines()
        p = problems(lines, n, cancelled=True)
        check(not p, f"follow/cancel: {what} follower saw every line once, then the "
                     f"summary cancelled:true" + ("" if not p else ": " + "; ".join(p)))
        rows = [l for l in lines if "index" in l]
        bad = [l for l in rows if not (l.get("result") == ms or
                                       l.get("error", {}).get("code") == "cancelled")]
        check(not bad, f"follow/cancel: {what}: each line a {ms} or a cancelled error "
                       f"{bad[:3]}")
        check(any("error" in l for l in rows) and any("result" in l for l in rows),
              f"follow/cancel: {what}: some ran, some cancelled")
        ts = f.summary_time()
        check(ts is not None and ts - t0 < 1.8,
              f"follow/cancel: {what} summary {None if ts is None else round(ts - t0, 2)} s "
              f"after the DELETE (< 1.8 s)")
    ids = [int(e["id"]) for _, e in sse.items if e.get("event") == "result"]
    check(ids == list(range(1, len(ids) + 1)), f"follow/cancel: SSE ids are the seqs {ids[:10]}")
    # An EventSource that lost r2 reconnects to r3 with Last-Event-ID: the rest, nothing twice.
    first = nd.lines()
    s, hd, data = req(cc, "GET", f"/v1/batches/{bid}/results",
                      headers={"Accept": "text/event-stream", "Last-Event-ID": "4"})
    evs = [e for e in data.decode().split("\n\n") if e.strip()]
    got = [int(l[4:]) for e in evs for l in e.split("\n") if l.startswith("id: ")]
    check(s == 200 and got[:-1] == list(range(5, n + 1)) and "event: summary" in evs[-1],
          f"follow/cancel: SSE on r3 after Last-Event-ID 4 resumes at 5 {got[:5]}..")
    # Stored, the same lines on every replica.
    for port, name in zip(c.ports, NAMES):
        s, lines = results_of(port, bid)
        check(s == 200 and lines == first, f"follow/cancel: {name} serves the same lines")
    # Running jobs were stopped on every replica: no worker still sleeps 3 s.
    deadline = time.monotonic() + 1.0
    while True:
        busy = [metrics(port)["batchd_workers"].sum(state="busy") for port in c.ports]
        if all(x == 0 for x in busy) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    check(all(x == 0 for x in busy), f"follow/cancel: no worker busy on any replica after "
                                     f"the cancel {dict(zip(NAMES, busy))}")


# ----------------------------------------------------------------------------- 3. kills


def kill_batches():
    """An endless rotation of batches: (batch, njobs, expect)."""
    k = 0
    while True:
        k += 1
        base = 1000 * k
        if k % 3 == 1:
            n = 120
            yield {"op": "sleep", "inputs": [100] * n}, n, (lambda i: 100)
        elif k % 3 == 2:
            n = 200
            jobs = [{"op": "sleep", "input": 150} if i % 4 == 0 else
                    {"op": "sqrt", "input": base + i} for i in range(n)]
            yield ({"jobs": jobs}, n,
                   (lambda i, b=base: 150 if i % 4 == 0 else math.sqrt(b + i)))
        else:
            n = 3000
            yield ({"op": "sqrt", "inputs": list(range(base, base + n))}, n,
                   (lambda i, b=base: math.sqrt(b + i)))


def scenario_kills(c, rng):
    # The replica that accepted a batch dies right after its 202: the others run it all.
    n = 48
    s, _, doc = submit(c.ports[0], {"op": "sleep", "inputs": [100] * n})
    c.reps[0].kill()
    if check(s == 202, f"kills: POST on r1 -> {s} {brief(doc)}, then r1 killed"):
        d = wait_state(c.ports[1:], doc["id"], timeout=30)
        check(d is not None and d["state"] == "done",
              f"kills: r2 and r3 ran the batch of the dead r1: {d and d['jobs']}")
        check_batch(c.ports[2], doc["id"], n, lambda i: 100, "kills: r1's batch")
    c.restart(0)
    c.reps[0].wait_ready()
    inflight = 3
    accepted = []  # (bid, n, expect)
    ended = set()
    cancel_at = {}  # bid -> when to DELETE it (some sleep batches), through nginx
    cancelled = {}  # bid -> the DELETE's answer: 200 (cancelled) or 204 (it had ended: forgotten)
    tried = set()  # DELETEs sent, maybe without an answer (the replica killed under it)
    stop = threading.Event()
    gen = kill_batches()
    lock = threading.Lock()
    stats = {"refused": 0, "codes": {}}

    def submitter():
        pending = None
        while not stop.is_set():
            with lock:
                running = [a for a in accepted if a[0] not in ended]
            if len(running) < inflight:
                if pending is None:
                    pending = next(gen)
                batch, n, expect = pending
                try:
                    s, _, doc = submit(c.nginx.port, batch)
                except OSError:
                    s, doc = None, None
                if s == 202:
                    with lock:
                        accepted.append((doc["id"], n, expect))
                        if batch.get("op") == "sleep" and rng_sub.random() < 0.5:
                            cancel_at[doc["id"]] = time.monotonic() + rng_sub.uniform(0.2, 1.5)
                    pending = None
                else:
                    stats["refused"] += 1
                    stats["codes"][s] = stats["codes"].get(s, 0) + 1
                    time.sleep(0.2)
                continue
            for bid, when in list(cancel_at.items()):
                if time.monotonic() < when:
                    continue
                with lock:
                    tried.add(bid)
                try:
                    s, _, _ = req(c.nginx.port, "DELETE", "/v1/batches/" + bid, timeout=10)
                except OSError:
                    s = None
                if s in (200, 204):
                    with lock:
                        cancelled[bid] = s
                        del cancel_at[bid]
                        if s == 204:
                            ended.add(bid)
            for bid, _, _ in running:
                if cancelled.get(bid) == 204:
                    continue
                try:
                    s, d = status_of(c.nginx.port, bid, timeout=5)
                except OSError:
                    continue
                if s == 200 and d.get("state") in ("done", "cancelled"):
                    with lock:
                        ended.add(bid)
            time.sleep(0.1)

    rng_sub = random.Random(rng.random())
    th = threading.Thread(target=submitter, daemon=True)
    th.start()
    time.sleep(0.5)
    mid = ndouble = 0
    t0 = time.monotonic()
    for i in range(KILLS):
        time.sleep(rng.uniform(0.2, 1.2))
        k = rng.randrange(len(NAMES))
        with lock:
            if any(a[0] not in ended for a in accepted):
                mid += 1
        victims = [k]
        if rng.random() < 0.25:  # two of three down at once, for up to 1.5 claim timeouts
            victims.append((k + 1 + rng.randrange(len(NAMES) - 1)) % len(NAMES))
        for v in victims:
            c.reps[v].kill()
        redis_too = i == KILLS // 2  # once: Redis goes too, the replicas start without it
        if redis_too:
            c.redis.kill()
        time.sleep(rng.uniform(0.0, 0.6 if len(victims) == 1 else 1.5))
        for v in victims:
            c.restart(v)
        if redis_too:
            time.sleep(1.5)
            s_, _, body_ = req(c.ports[victims[0]], "GET", "/readyz", timeout=5)
            check(s_ == 503, f"kills: {NAMES[victims[0]]} restarted while Redis is down: "
                             f"/readyz {s_} {body_.decode().strip()}")
            c.redis.restart()
            print(f"  kill {i + 1}: Redis killed too, restarted 1.5 s after the replicas")
        ndouble += len(victims) == 2
    took = time.monotonic() - t0
    stop.set()
    th.join(30)
    print(f"  {KILLS} kills ({ndouble} of two replicas at once) in {took:.1f} s; "
          f"{len(accepted)} batches accepted, "
          f"{stats['refused']} POSTs refused or cut meanwhile {stats['codes']}")
    check(mid >= 0.8 * KILLS, f"kills: {mid} of the {KILLS} kills hit running batches "
                              f"(>= 80%)")
    c.wait_all_ready()
    wrong = []
    for bid, n, expect in accepted:
        if cancelled.get(bid) == 204:  # it had ended when the DELETE came: forgotten
            gone = [status_of(p, bid)[0] for p in c.ports]
            if gone != [404] * len(c.ports):
                wrong.append(f"{bid}: forgotten (204), yet its status is {gone}")
            continue
        want = "cancelled" if bid in cancelled else "done"
        d = wait_state(c.ports, bid, timeout=90)
        if d is not None and bid in tried and bid not in cancelled:
            want = d.get("state")  # a DELETE without an answer may or may not have cancelled
        if d is None or d.get("state") != want:
            wrong.append(f"{bid}: state {None if d is None else d.get('state')}, not {want}")
            continue
        port = rng.choice(c.ports)
        s, lines = results_of(port, bid, retry_503=10)
        p = ([f"results on {NAMES[c.ports.index(port)]} -> {s} {brief(lines)}"] if s != 200 else
             problems(lines, n, expect, cancelled=want == "cancelled"))
        if p:
            wrong.append(f"{bid} ({n} jobs): " + "; ".join(p))
            continue
        # The same count in Redis itself (the design's key schema).
        key = "batchd:{%s}:" % bid
        nb = c.redis.cli("BITCOUNT", key + "bits")
        nr = c.redis.cli("HLEN", key + "res")
        no = c.redis.cli("LLEN", key + "order")
        if (nb, nr, no) != (str(n),) * 3:
            wrong.append(f"{bid}: Redis has bits {nb}, res {nr}, order {no} for {n} jobs")
    ncan = sum(1 for v in cancelled.values() if v == 200)
    nforg = sum(1 for v in cancelled.values() if v == 204)
    check(len(accepted) >= 3 and not wrong,
          f"kills: all {len(accepted)} accepted batches ended ({ncan} cancelled mid-run "
          f"through nginx, {nforg} forgotten), each index exactly once, seq 1..N, summaries "
          f"add up, results right vs Python" +
          ("" if not wrong else ":\n    " + "\n    ".join(wrong)))
    rec = []
    for port, name in zip(c.ports, NAMES):
        rec.append(counter(metrics(port), "batchd_cluster_chunks_reclaimed_total", name))
    print(f"  reclaimed since the last restart of each replica: {dict(zip(NAMES, rec))}")


# ----------------------------------------------------------------------------- fairness


def scenario_fairness(c):
    """Batches share the cluster: a small batch submitted behind a big one is not queued
    behind all of it. A plain streamed batch is its replica's own: status there, 404 on
    the others, cancelled there."""
    big_n, ms = 120, 200  # 4 s on 6 workers
    s, _, big = submit(c.ports[0], {"op": "sleep", "inputs": [ms] * big_n})
    if not check(s == 202, f"fairness: big POST on r1 -> {s} {brief(big)}"):
        return
    time.sleep(0.3)
    t0 = time.monotonic()
    s, _, small = submit(c.ports[1], {"op": "sleep", "inputs": [ms] * 6})
    if not check(s == 202, f"fairness: small POST on r2 -> {s} {brief(small)}"):
        return
    f = follow_to_end(c.ports[2], small["id"])
    t_small = time.monotonic() - t0
    d = status_of(c.ports[0], big["id"])[1] or {}
    left = d.get("jobs", {}).get("total", 0) - d.get("jobs", {}).get("ok", 0)
    check(not problems(f.lines(), 6, lambda i: ms) and t_small < 2.0 and left > 24,
          f"fairness: 6 jobs behind {big_n} end in {t_small:.2f} s (< 2 s; FIFO: ~4 s), "
          f"{left} of the big batch's jobs still to run")
    # The streamed batch: its status on r1, 404 elsewhere, cancel on r1.
    conn = http.client.HTTPConnection(HOST, c.ports[0], timeout=30)
    conn.request("POST", "/v1/batches", body=json.dumps({"op": "sleep", "inputs": [1500] * 4}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    bid = (r.getheader("Content-Location") or "/").rsplit("/", 1)[-1]
    s1, d1 = status_of(c.ports[0], bid)
    s2, _ = status_of(c.ports[1], bid)
    check(s1 == 200 and d1.get("stored") is False and "cluster" not in d1 and s2 == 404,
          f"streamed: its status on r1 ({s1}, stored {d1.get('stored')}, cluster "
          f"{d1.get('cluster', 'absent')}), on r2 {s2}")
    s, _, _ = req(c.ports[1], "DELETE", "/v1/batches/" + bid)
    check(s == 404, f"streamed: DELETE on r2 -> {s}")
    s, _, _ = req(c.ports[0], "DELETE", "/v1/batches/" + bid)
    lines = ndjson(r.read())
    conn.close()
    check(s == 200 and lines and lines[-1].get("summary", {}).get("cancelled") is True,
          f"streamed: DELETE on r1 -> {s}, the stream ends cancelled")
    wait_state(c.ports, big["id"], timeout=30)
    check_batch(c.ports[1], big["id"], big_n, lambda i: ms, "fairness: the big batch")


# ----------------------------------------------------------------------------- failover


def scenario_follower_failover(c):
    """An EventSource following on r2 loses r2 (SIGKILL) and reconnects through nginx with
    Last-Event-ID, as a browser does: every line once, then the summary."""
    n, ms = 60, 150
    s, _, doc = submit(c.ports[0], {"op": "sleep", "inputs": [ms] * n})
    if not check(s == 202, f"failover: POST on r1 -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    f = Follower(c.ports[1], bid, sse=True)
    f.start()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and len(f.items) < 10 and f.is_alive():
        time.sleep(0.02)
    c.reps[1].kill()
    f.join(10)
    first = [e for _, e in f.items if e.get("event") == "result"]
    last = first[-1]["id"] if first else "0"
    s, _, data = req(c.nginx.port, "GET", f"/v1/batches/{bid}/results?follow=true",
                     headers={"Accept": "text/event-stream", "Last-Event-ID": last}, timeout=60)
    evs = [e for e in data.decode().split("\n\n") if e.strip()]
    rest = []
    for e in evs:
        fields = dict(l.split(": ", 1) for l in e.split("\n") if ": " in l)
        if fields.get("event") in ("result", "summary"):
            rest.append(fields)
    ids = [int(e["id"]) for e in first + rest if e.get("event") == "result"]
    lines = [json.loads(e["data"]) for e in first + rest]
    p = problems(lines, n, lambda i: ms)
    check(s == 200 and not p and ids == list(range(1, n + 1)) and len(first) >= 10,
          f"failover: {len(first)} events from r2 before its kill, the rest through nginx "
          f"after Last-Event-ID {last}: every line once " + "; ".join(p))
    c.restart(1)
    c.reps[1].wait_ready()


# ----------------------------------------------------------------------------- volume


def scenario_volume(c):
    """100k sqrt jobs as one async batch (chunks of 1563), a replica killed -9 in the middle:
    each index exactly once, every value right; and the same counts in Redis."""
    n = 20000 if dl.sanitized() else 100000
    t0 = time.monotonic()
    s, _, doc = submit(c.nginx.port, {"op": "sqrt", "inputs": list(range(n))})
    if not check(s == 202, f"volume: POST of {n} jobs -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    deadline = time.monotonic() + 30
    done = 0
    while time.monotonic() < deadline:
        st, d = status_of(c.ports[0], bid)
        done = (d or {}).get("jobs", {}).get("ok", 0)
        if st == 200 and (done >= n // 3 or d.get("state") == "done"):
            break
        time.sleep(0.01)
    c.reps[2].kill()
    print(f"  volume: r3 killed at {done} of {n} jobs recorded")
    d = wait_state(c.ports[:2], bid, timeout=120)
    took = time.monotonic() - t0
    check(d is not None and d["state"] == "done", f"volume: done in {took:.1f} s")
    check_batch(c.ports[1], bid, n, sqrt_of, f"volume: {n} sqrt")
    key = "batchd:{%s}:" % bid
    got = (c.redis.cli("BITCOUNT", key + "bits"), c.redis.cli("HLEN", key + "res"),
           c.redis.cli("LLEN", key + "order"))
    check(got == (str(n),) * 3, f"volume: Redis holds {got} bits/res/order for {n}")
    c.restart(2)
    c.reps[2].wait_ready()


# ----------------------------------------------------------------------------- expiry


def scenario_expiry(c):
    """Results expire with the batch, cluster-wide: a 4th replica r4 with --result-ttl 1500ms
    runs a batch of its own (an upload over --cluster-max-upload); 1.5 s after its end every
    replica answers 410 expired, and later 404."""
    r4 = dl.Batchd("r4", workers=1, env=dict(c.env("r4"), BATCHD_RESULT_TTL="1500ms"),
                   workdir=os.path.join(c.tmp, "r4"))
    c.extra.append(r4)
    r4.wait_ready()
    jpg = open(os.path.join(SHARED, "data", "jpeg", "libjxl-flower",
                            "flower_small.q85_420_non_interleaved.jpg"), "rb").read()
    params = {"pipeline": [{"op": "thumbnail", "width": 8, "height": 8}], "format": "png"}
    mp, ctype = multipart({"op": "image", "async": True, "params": params},
                          [("a.jpg", jpg), ("b.jpg", jpg)])
    s, _, data = req(r4.port, "POST", "/v1/batches", body=mp, headers={"Content-Type": ctype})
    doc = jdoc(data) or {}
    if not check(s == 202, f"expiry: POST on r4 -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    d = wait_state(c.ports, bid, timeout=30)
    t_end = time.monotonic()
    check(d is not None and d["state"] == "done" and (d.get("cluster") or {}).get("replicas")
          == ["r4"], f"expiry: done on r4 {d and d.get('cluster')}")
    s, lines = results_of(c.ports[0], bid)
    check(s == 200 and not problems(lines, 2), f"expiry: r1 reads its results first ({s})")
    got = {}
    deadline = t_end + 10
    while time.monotonic() < deadline and len(got) < 3:
        for port, name in zip(c.ports, NAMES):
            if name not in got:
                st, dd = status_of(port, bid)
                if st != 200:
                    got[name] = (st, (dd or {}).get("error", {}).get("code"),
                                 round(time.monotonic() - t_end, 1))
        time.sleep(0.05)
    check(len(got) == 3 and all(v[:2] == (410, "expired") and v[2] >= 1.0 for v in got.values()),
          f"expiry: 410 expired on every replica about 1.5 s after the end: {got}")
    s, _, _ = req(c.ports[1], "GET", f"/v1/batches/{bid}/results")
    check(s == 410, f"expiry: its results on r2 -> {s}")
    deadline = time.monotonic() + 10
    s = None
    while time.monotonic() < deadline:
        s, _ = status_of(c.ports[2], bid)
        if s == 404:
            break
        time.sleep(0.1)
    check(s == 404, f"expiry: later 404 on r3 (the id forgotten) -> {s}")
    r4.signal(signal.SIGTERM)
    check(r4.wait(timeout=30) == 0, "expiry: r4 exits 0 on SIGTERM")


# ----------------------------------------------------------------------------- job faults


def children(pid):
    """The pids of PID's child processes (a replica's workers)."""
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return out


def reclaimed(c):
    return {nm: counter(metrics(p), "batchd_cluster_chunks_reclaimed_total", nm) or 0
            for p, nm in zip(c.ports, NAMES)}


def scenario_job_faults(c):
    """A job that times out, and a worker killed under its job, fail that job alone: not
    taken for a dead replica (nothing re-claimed), the rest of the batch right."""
    before = reclaimed(c)
    n, long_i = 13, 6
    inputs = [300] * n
    inputs[long_i] = 4000
    s, _, doc = submit(c.ports[0], {"op": "sleep", "inputs": inputs, "timeout_ms": 1200})
    if check(s == 202, f"timeout: POST -> {s} {brief(doc)}"):
        d = wait_state(c.ports, doc["id"], timeout=30)
        check(d is not None and d["state"] == "done", "timeout: batch done")
        lines = check_batch(c.ports[1], doc["id"], n, None, "timeout")
        rows = {l["index"]: l for l in lines or [] if "index" in l}
        code = rows.get(long_i, {}).get("error", {}).get("code")
        others = all(rows.get(i, {}).get("result") == 300 for i in range(n) if i != long_i)
        check(code == "timeout" and others,
              f"timeout: job {long_i} fails timeout ({code}), the others slept 300 ms")
    # Both workers of r3 killed in the middle of their jobs.
    n, ms = 24, 600
    s, _, doc = submit(c.ports[0], {"op": "sleep", "inputs": [ms] * n})
    if not check(s == 202, f"worker crash: POST -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    victim = c.reps[2]
    deadline = time.monotonic() + 10
    busy = 0
    while time.monotonic() < deadline:
        busy = metrics(c.ports[2])["batchd_workers"].sum(state="busy")
        if busy == 2:
            break
        time.sleep(0.02)
    pids = children(victim.proc.pid)
    check(busy == 2 and len(pids) == 2, f"worker crash: r3's 2 workers busy {pids}")
    time.sleep(0.1)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    d = wait_state(c.ports, bid, timeout=30)
    check(d is not None and d["state"] == "done", "worker crash: batch done")
    lines = check_batch(c.ports[0], bid, n, None, "worker crash") or []
    rows = [l for l in lines if "index" in l]
    crashed = [l for l in rows if "error" in l]
    check(1 <= len(crashed) <= 2 and all(l["error"]["code"] == "worker_crashed" and
                                         "SIGKILL" in l["error"]["message"] for l in crashed)
          and all(l.get("result") == ms for l in rows if "error" not in l),
          f"worker crash: {len(crashed)} jobs fail worker_crashed (SIGKILL), the rest right "
          f"{[l['error'] for l in crashed][:3]}")
    after = reclaimed(c)
    check(after == before, f"job faults: no chunk re-claimed (not a dead replica): "
                           f"{before} -> {after}")


# ----------------------------------------------------------------------------- 4. SIGSTOP


def scenario_sigstop(c, victim=1, group=True):
    """GROUP: the replica and its workers frozen (a paused VM); else its main process only
    (its workers finish their jobs and wait in their pipes)."""
    name = NAMES[victim]
    what = "sigstop" if group else "sigstop (main only)"
    n, ms = 40, 400
    before = [metrics(p) for p in c.ports]
    s, _, doc = submit(c.ports[0], {"op": "sleep", "inputs": [ms] * n})
    if not check(s == 202, f"{what}: POST -> {s} {brief(doc)}"):
        return
    bid = doc["id"]
    base = counter(before[victim], "batchd_cluster_chunks_claimed_total", name) or 0
    deadline = time.monotonic() + 10
    holds = False
    while time.monotonic() < deadline and not holds:
        v = counter(metrics(c.ports[victim]), "batchd_cluster_chunks_claimed_total", name)
        holds = v is not None and v > base
        time.sleep(0.02)
    check(holds, f"{what}: {name} claimed chunks of the batch")
    time.sleep(0.1)
    send = c.reps[victim].signal_group if group else c.reps[victim].signal
    send(signal.SIGSTOP)
    time.sleep(CLAIM_TIMEOUT_S + 1.5)
    send(signal.SIGCONT)
    d = wait_state(c.ports, bid, timeout=60)
    check(d is not None and d.get("state") == "done", f"{what}: batch done {d and d['jobs']}")
    check_batch(c.ports[victim], bid, n, lambda i: ms, f"{what}: read on {name}")
    after = [metrics(p) for p in c.ports]
    recl = sum((counter(after[k], "batchd_cluster_chunks_reclaimed_total", nm) or 0) -
               (counter(before[k], "batchd_cluster_chunks_reclaimed_total", nm) or 0)
               for k, nm in enumerate(NAMES) if k != victim)
    dups = ((counter(after[victim], "batchd_cluster_duplicates_total", name) or 0) -
            (counter(before[victim], "batchd_cluster_duplicates_total", name) or 0))
    check(recl > 0, f"{what}: the others re-claimed {name}'s chunks "
                    f"(batchd_cluster_chunks_reclaimed_total +{recl}; {name}'s duplicates "
                    f"refused +{dups})")
    c.reps[victim].wait_ready(timeout=10)


# ----------------------------------------------------------------------------- 5. Redis down


def scenario_redis_down(c):
    ng = c.nginx.port
    # Padding in another DB: the restart then loads its AOF for ~0.5 s, answering LOADING to
    # the replicas that reconnect meanwhile (every 250 ms): they must try again, not hang.
    t0 = time.monotonic()
    c.redis.fill(300000)
    print(f"  300k padding keys in db 15 ({time.monotonic() - t0:.1f} s)")
    n1, n2 = 60, 128
    b1 = {"op": "sleep", "inputs": [150] * n1}
    b2 = {"jobs": [{"op": "sleep", "input": 100} if i % 2 == 0 else {"op": "sqrt", "input": i}
                   for i in range(n2)]}
    exp1 = lambda i: 150  # noqa: E731
    exp2 = lambda i: 100 if i % 2 == 0 else math.sqrt(i)  # noqa: E731
    ids = []
    for b, n, e in ((b1, n1, exp1), (b2, n2, exp2)):
        s, _, doc = submit(ng, b)
        if not check(s == 202, f"redis down: POST through nginx -> {s} {brief(doc)}"):
            return
        ids.append((doc["id"], n, e))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        s, d = status_of(c.ports[0], ids[0][0])
        if s == 200 and d["jobs"]["ok"] >= 10:
            break
        time.sleep(0.02)
    # A follower open across the outage: it carries on, or is cut and resumes with ?after.
    fol = Follower(c.ports[2], ids[0][0], timeout=60)
    fol.start()
    fol.opened.wait(5)
    c.redis.kill()
    t_down = time.monotonic()
    print("  redis-server killed (-9)")
    # /readyz turns 503 on every replica, naming the store.
    for port, name in zip(c.ports, NAMES):
        deadline = time.monotonic() + 5
        s, body = None, b""
        while time.monotonic() < deadline:
            s, _, body = req(port, "GET", "/readyz", timeout=5)
            if s == 503:
                break
            time.sleep(0.05)
        d = jdoc(body) or {}
        check(s == 503 and d.get("store") not in (None, "ok"),
              f"redis down: {name} /readyz -> {s} {body.decode().strip()}")
    up = counter(metrics(c.ports[2]), "batchd_redis_up", NAMES[2])
    check(up == 0, f"redis down: batchd_redis_up{{replica=\"r3\"}} = {up}")
    s, hd, doc = submit(c.ports[0], {"op": "sqrt", "inputs": [1, 4]})
    code = (doc or {}).get("error", {}).get("code")
    check(s == 503 and code == "store_unavailable",
          f"redis down: a new async POST on r1 -> {s} {code}")
    s, hd, doc = submit(ng, {"op": "sqrt", "inputs": [1, 4]})
    code = (doc or {}).get("error", {}).get("code")
    check(s == 503 and code == "store_unavailable",
          f"redis down: a new async POST through nginx -> {s} {code}")
    s, d = status_of(c.ports[1], ids[0][0])
    code = (d or {}).get("error", {}).get("code")
    check(s == 503 and code == "store_unavailable",
          f"redis down: status of a stored batch on r2 -> {s} {code}")
    inputs = list(range(500))
    st = dl.Stream(ng, {"op": "sqrt", "inputs": inputs}, timeout=30).read_all()
    got = [l for l in st.lines if "index" in l]
    p = (problems(st.lines, len(inputs), sqrt_of, stored=False) if st.status == 200
         else [str(st.status)])
    check(st.status == 200 and st.complete and not p and [l["index"] for l in got] == inputs,
          f"redis down: a plain streamed batch through nginx works ({st.status}, "
          f"{len(got)} results) " + "; ".join(p))
    # Down for longer than the claim timeout: the chunks held meanwhile look stale after.
    time.sleep(max(0.0, CLAIM_TIMEOUT_S + 1.0 - (time.monotonic() - t_down)))
    c.redis.restart()
    print(f"  redis-server back after {time.monotonic() - t_down:.1f} s (AOF)")
    t_back = time.monotonic()
    loads = [l for l in c.redis.log().splitlines() if "DB loaded from append only file" in l]
    loading = loads[-1].rsplit(":", 1)[-1].strip() if loads else "?"
    for r, name in zip(c.reps, NAMES):
        try:
            r.wait_ready(timeout=10)
        except RuntimeError:
            pass
        s, _, body = req(r.port, "GET", "/readyz", timeout=5)
        check(s == 200, f"redis down: {name} ready again {time.monotonic() - t_back:.1f} s "
                        f"after Redis is back (it loaded its AOF first) -> {s} "
                        f"{body.decode().strip()}")
    nload = sum(r.log().count("LOADING") for r in c.reps)
    print(f"  every replica checked {time.monotonic() - t_back:.1f} s later (AOF load "
          f"{loading}; the replicas were answered LOADING {nload} times)")
    if failures and "ready again" in failures[-1]:
        return  # the rest would only wait out its timeouts
    for bid, n, e in ids:
        d = wait_state(c.ports, bid, timeout=60)
        check(d is not None and d.get("state") == "done",
              f"redis down: accepted batch {bid} done after the outage")
        check_batch(c.ports[2], bid, n, e, f"redis down: {bid}")
    up = [counter(metrics(p), "batchd_redis_up", nm) for p, nm in zip(c.ports, NAMES)]
    check(up == [1, 1, 1], f"redis down: batchd_redis_up back to 1: {up}")
    fol.join(30)
    got = fol.lines()
    cut = not got or "summary" not in got[-1]
    if cut:
        last = max([l["seq"] for l in got if "seq" in l] or [0])
        s, more = results_of(c.ports[0], ids[0][0], f"?after={last}")
        got = got + (more if s == 200 else [])
    p = problems(got, ids[0][1], ids[0][2])
    check(fol.status == 200 and not fol.is_alive() and not p,
          f"redis down: a follower on r3 across the outage "
          f"({'cut, resumed with ?after' if cut else 'carried on'}): every line once "
          + "; ".join(p))


# ----------------------------------------------------------------------------- Redis frozen


def scenario_redis_frozen(c):
    """redis-server SIGSTOPped for longer than the replicas wait for a reply (5 s), while
    batches run and new ones are POSTed, then continued: the commands the replicas gave up
    on reach Redis after all, and are sent again on a new connection; still every accepted
    batch ends with each index exactly once."""
    n = 40
    batch = {"jobs": [{"op": "sleep", "input": 150} if i % 2 else {"op": "sqrt", "input": i}
                      for i in range(n)]}
    expect = lambda i: 150 if i % 2 else math.sqrt(i)  # noqa: E731
    ids = []
    for port in c.ports[:2]:
        s, _, doc = submit(port, batch)
        if check(s == 202, f"redis frozen: POST -> {s} {brief(doc)}"):
            ids.append(doc["id"])
    time.sleep(0.3)
    known = set(c.redis.cli("ZRANGE", "batchd:by:-", 0, -1).split())
    c.redis.proc.send_signal(signal.SIGSTOP)
    t0 = time.monotonic()
    codes = []

    def post_meanwhile(port):
        try:
            s, _, doc = submit(port, batch)
        except OSError as e:
            s, doc = repr(e), None
        codes.append(s)
        if s == 202:
            ids.append(doc["id"])

    posters = [threading.Thread(target=post_meanwhile, args=(p,), daemon=True)
               for p in c.ports]
    for t in posters:
        t.start()
    time.sleep(6.5)
    ready = [req(p, "GET", "/readyz", timeout=5)[0] for p in c.ports]
    c.redis.proc.send_signal(signal.SIGCONT)
    print(f"  redis-server stopped for {time.monotonic() - t0:.1f} s; /readyz then {ready}")
    check(ready == [503] * 3, f"redis frozen: /readyz 503 on every replica after 6.5 s {ready}")
    for t in posters:
        t.join(30)
    check(all(x in (202, 503) for x in codes),
          f"redis frozen: POSTs during the freeze answered 202 or 503: {codes}")
    for r, name in zip(c.reps, NAMES):
        try:
            r.wait_ready(timeout=15)
        except RuntimeError:
            check(False, f"redis frozen: {name} not ready 15 s after SIGCONT")
            return
    time.sleep(0.5)
    ghosts = set(c.redis.cli("ZRANGE", "batchd:by:-", 0, -1).split()) - known - set(ids)
    check(not ghosts, f"redis frozen: no batch exists that its client was refused (503) "
                      f"{sorted(ghosts)}")
    for bid in ids:
        d = wait_state(c.ports, bid, timeout=60)
        check(d is not None and d["state"] == "done", f"redis frozen: {bid} done")
        check_batch(c.ports[2], bid, n, expect, f"redis frozen: {bid}")
        # The same counts in Redis (chunks run twice would show as more results or bits).
        key = "batchd:{%s}:" % bid
        got = (c.redis.cli("BITCOUNT", key + "bits"), c.redis.cli("HLEN", key + "res"),
               c.redis.cli("LLEN", key + "order"))
        check(got == (str(n),) * 3, f"redis frozen: Redis holds {got} bits/res/order")


# ----------------------------------------------------------------------------- 6. any replica


def one_stream(ng, k):
    if k % 3 == 0:
        inputs = list(range(k, k + 300))
        st = dl.Stream(ng, {"op": "sqrt", "inputs": inputs}, timeout=60).read_all()
        return st, len(inputs), lambda i: math.sqrt(inputs[i])
    if k % 3 == 1:
        inputs = [k * 1000 + i for i in range(100)]
        st = dl.Stream(ng, {"op": "square", "inputs": inputs}, timeout=60).read_all()
        return st, len(inputs), lambda i: inputs[i] * inputs[i]
    jobs = [{"op": "sleep", "input": 20} if i % 5 == 0 else {"op": "cube", "input": i - 7}
            for i in range(40)]
    st = dl.Stream(ng, {"jobs": jobs}, timeout=60).read_all()
    return st, len(jobs), lambda i: 20 if i % 5 == 0 else (i - 7) ** 3


def scenario_any_replica(c):
    ng = c.nginx.port
    with cf.ThreadPoolExecutor(max_workers=8) as ex:
        outs = list(ex.map(lambda k: one_stream(ng, k), range(30)))
    bad = []
    for st, n, e in outs:
        p = ([f"status {st.status}"] if st.status != 200 else
             problems(st.lines, n, e, stored=False))
        if st.status == 200 and not st.complete:
            p.append("cut")
        if st.status == 200 and [l["index"] for l in st.lines if "index" in l] != list(range(n)):
            p.append("not in input order")
        if p:
            bad.append("; ".join(p))
    check(not bad, f"streamed: 30 plain batches through nginx complete, in order, right "
                   f"{bad[:3]}")
    loc = [st.headers.get("content-location", "") for st, _, _ in outs]
    check(all(l.startswith("/v1/batches/b_") for l in loc), "streamed: Content-Location names "
                                                           "each batch")

    n = 1000
    s, _, doc = submit(ng, {"op": "sqrt", "inputs": list(range(n))})
    if not check(s == 202, f"any replica: POST through nginx -> {s}"):
        return
    bid = doc["id"]
    d = wait_state([ng], bid, timeout=60)
    first = None
    for port, name in zip(c.ports, NAMES):
        s, d = status_of(port, bid)
        cl = (d or {}).get("cluster") or {}
        check(s == 200 and d["state"] == "done" and d["jobs"]["ok"] == n and d["progress"] == 1
              and cl.get("queue") is True and cl.get("replicas")
              and set(cl["replicas"]) <= set(NAMES)
              and len(set(cl["replicas"])) == len(cl["replicas"]),
              f"any replica: {name} status: done, {n} ok, cluster {cl}")
        lines = check_batch(port, bid, n, sqrt_of, f"any replica: {name} NDJSON results")
        if first is None:
            first = lines
        else:
            check(lines == first, f"any replica: {name} gives the same lines as r1")
        s, _, data = req(port, "GET", f"/v1/batches/{bid}/results",
                         headers={"Accept": "application/json"})
        jd = jdoc(data) or {}
        res = [r.get("result") for r in jd.get("results", [])]
        check(s == 200 and res == [math.sqrt(i) for i in range(n)]
              and jd.get("summary", {}).get("ok") == n,
              f"any replica: {name} JSON document in input order")
        s, _, data = req(port, "GET", "/v1/batches?limit=50")
        listed = [x.get("id") for x in (jdoc(data) or {}).get("batches", [])]
        check(s == 200 and bid in listed, f"any replica: {name} lists the batch")

    # Idempotency-Key across replicas.
    key = {"Idempotency-Key": f"clustertest-{SEED}"}
    body = {"op": "square", "inputs": [1, 2, 3, 4]}
    s1, _, d1 = submit(c.ports[0], body, key)
    s2, _, d2 = submit(c.ports[1], body, key)
    s3, _, d3 = submit(c.ports[2], {"op": "square", "inputs": [5]}, key)
    check(s1 == 202 and s2 == 202 and d1["id"] == d2["id"],
          f"idempotency: same key and body on r1 then r2 -> one batch ({s1}, {s2})")
    check(s3 == 422 and (d3 or {}).get("error", {}).get("code") == "idempotency_key_reused",
          f"idempotency: same key, other body on r3 -> {s3}")
    # The same new key on two replicas at the same moment: one batch.
    key2 = {"Idempotency-Key": f"clustertest-race-{SEED}"}
    body2 = {"op": "cube", "inputs": list(range(50))}
    with cf.ThreadPoolExecutor(max_workers=3) as ex:
        race = list(ex.map(lambda p: submit(p, body2, key2), c.ports))
    rids = {d.get("id") for st, _, d in race if st == 202}
    check([st for st, _, _ in race] == [202] * 3 and len(rids) == 1,
          f"idempotency: one new key on 3 replicas at once -> one batch "
          f"{[st for st, _, _ in race]} {rids}")
    if len(rids) == 1:
        rid = rids.pop()
        wait_state(c.ports, rid)
        check_batch(c.ports[0], rid, 50, lambda i: i ** 3, "idempotency race: results")
    if s1 == 202:
        wait_state(c.ports, d1["id"])
        check_batch(c.ports[2], d1["id"], 4, lambda i: (i + 1) ** 2, "idempotency: results")
    # Forget on r3, gone on r1.
    s, _, _ = req(c.ports[2], "DELETE", "/v1/batches/" + bid)
    check(s == 204, f"forget: DELETE of an ended batch on r3 -> {s}")
    s, d = status_of(c.ports[0], bid)
    check(s == 404, f"forget: then its status on r1 -> {s}")

    # --cluster-max-upload: a bigger upload runs on the replica that got it, and says so.
    jpg = open(os.path.join(SHARED, "data", "jpeg", "libjxl-flower",
                            "flower_small.q85_420_non_interleaved.jpg"), "rb").read()
    png = open(os.path.join(SHARED, "data", "pngsuite", "basn6a08.png"), "rb").read()
    params = {"pipeline": [{"op": "thumbnail", "width": 8, "height": 8}], "format": "png"}
    for files, local, what in (([("a.jpg", jpg), ("b.jpg", jpg)], True, "over"),
                               ([("a.png", png), ("b.png", png)], False, "under")):
        total = sum(len(d) for _, d in files)
        mp, ctype = multipart({"op": "image", "async": True, "params": params}, files)
        s, _, data = req(c.ports[1], "POST", "/v1/batches", body=mp,
                         headers={"Content-Type": ctype})
        doc = jdoc(data) or {}
        if not check(s == 202, f"upload {what} the limit ({total} B): POST on r2 -> {s} {brief(doc)}"):
            continue
        d = wait_state(c.ports, doc["id"], timeout=60)
        cl = (d or {}).get("cluster")
        if local:
            check(isinstance(cl, dict) and cl.get("queue") is False
                  and cl.get("replicas") == ["r2"],
                  f"upload over --cluster-max-upload: runs on r2 only: {cl}")
        else:
            check(isinstance(cl, dict) and cl.get("queue") is True,
                  f"upload under --cluster-max-upload: in the cluster queue: {cl}")
        s, lines = results_of(c.ports[2], doc["id"])
        p = problems(lines, 2) if s == 200 else [str(s)]
        rows = [l for l in lines if "index" in l] if s == 200 else []
        check(not p and all(l["result"]["width"] == 8 for l in rows),
              f"upload {what} the limit: results read on r3 " + "; ".join(p))


# ----------------------------------------------------------------------------- main


def logs_name_the_replica(c):
    bad, n = [], 0
    for r, name in zip(c.reps, NAMES):
        for line in r.log().splitlines():
            if not line.startswith("{"):
                continue
            try:
                d = json.loads(line)
            except ValueError:
                continue
            n += 1
            if d.get("replica") != name:
                bad.append(f"{name}: {line[:200]}")
    check(n > 0 and not bad, f"logs: every JSON log line ({n}) names its replica {bad[:3]}")


def sanitizer_reports(c):
    bad = []
    for r, name in list(zip(c.reps, NAMES)) + [(r, r.name) for r in c.extra]:
        text = r.log()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                i = text.index(marker)
                bad.append(f"{name}: {text[max(0, i - 200):i + 2000]}")
    check(not bad, "no sanitizer report in the replicas' logs" + ("\n" + "\n".join(bad)
                                                                   if bad else ""))


def main():
    for prog, pkg in (("redis-server", "redis-server"), ("redis-cli", "redis-tools"),
                      ("nginx", "nginx-light")):
        if not dl.which(prog):
            print(f"skipped: {prog} is not installed (apt-get install {pkg})")
            return dl.SKIP
    dl.watchdog(540)
    rng = random.Random(SEED)
    print(f"  CLUSTER_SEED={SEED} CLUSTER_KILLS={KILLS} sanitized={dl.sanitized()}")
    tmp = tempfile.mkdtemp(prefix="cluster-redis-")
    c = Cluster(tmp)
    t_all = time.monotonic()
    c.start(0).wait_ready()
    scenarios = [("scale", lambda: scenario_scale(c)),
                 ("follow/cancel", lambda: scenario_follow_cancel(c)),
                 ("any replica", lambda: scenario_any_replica(c)),
                 ("fairness", lambda: scenario_fairness(c)),
                 ("failover", lambda: scenario_follower_failover(c)),
                 ("volume", lambda: scenario_volume(c)),
                 ("expiry", lambda: scenario_expiry(c)),
                 ("job faults", lambda: scenario_job_faults(c)),
                 ("sigstop", lambda: scenario_sigstop(c)),
                 ("sigstop main", lambda: scenario_sigstop(c, victim=2, group=False)),
                 ("redis down", lambda: scenario_redis_down(c)),
                 ("redis frozen", lambda: scenario_redis_frozen(c)),
                 ("kills", lambda: scenario_kills(c, rng))]
    only = [x.strip() for x in os.environ.get("CLUSTER_ONLY", "").split(",") if x.strip()]
    for name, fn in scenarios:
        if only and name not in only:
            continue
        t0 = time.monotonic()
        try:
            if name != "scale" and c.nginx is None:  # scale failed before starting them
                for k in range(1, len(NAMES)):
                    if c.reps[k] is None:
                        c.start(k)
                c.wait_all_ready()
                c.start_nginx()
            fn()
        except Exception:
            check(False, f"{name}: raised\n{traceback.format_exc()}")
        print(f"  -- {name}: {time.monotonic() - t0:.1f} s", flush=True)
        try:
            if not c.redis.running():
                c.redis.restart()
            c.wait_all_ready(timeout=30)
        except Exception:
            check(False, f"after {name}: the cluster does not come back\n"
                         f"{traceback.format_exc()}")
            break
    logs_name_the_replica(c)
    written = [os.path.join(d, f) for r in c.reps if r and r.state_dir
               for d, _, fs in os.walk(r.state_dir) for f in fs]
    check(not written, f"--state-dir is not used with --redis: {written[:5]}")
    if c.nginx:
        c.nginx.stop()
    for r, name in zip(c.reps, NAMES):
        if r is None:
            continue
        if r.proc.poll() is None:
            r.signal(signal.SIGTERM)
            try:
                rc = r.wait(timeout=30)
            except Exception:
                rc = "timeout"
            check(rc == 0, f"{name} exits 0 on SIGTERM ({rc})")
    sanitizer_reports(c)
    for r in c.reps + c.extra:
        if r:
            r.stop()
    c.redis.stop()
    print(f"  whole test {time.monotonic() - t_all:.1f} s")
    rlog = c.redis.log()
    print(f"  redis-server: {rlog.count('Background append only file rewriting started')} AOF "
          f"rewrites; reads answered 503 while Redis was up (then retried): {len(READ_503)}")
    if failures:
        print(f"  logs kept in {tmp}")
        for r, name in zip(c.reps, NAMES):
            if r:
                lines = [l for l in r.log().splitlines() if '"event":"request"' not in l]
                print(f"---- {name} log (last 40 lines but requests)")
                print("\n".join(lines[-40:]))
        print("FAILED: " + "; ".join(f.splitlines()[0] for f in failures))
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
