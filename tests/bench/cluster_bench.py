#!/usr/bin/env python3
"""Cluster mode (SPEC §9, issue 11): what Redis costs per job, and what more replicas buy.

    ONLY=cluster tests/bench/run.sh
    /usr/bin/python3 tests/bench/cluster_bench.py --bin build-bench/batchd [--reps 3] [--out F]

Starts its own Debian redis-server on a free 127.0.0.1 port in a temporary dir (`--save ''
--appendonly yes --appendfsync always`, as the tests and the deploy files run it), and a
second one with `--appendonly no` for comparison (`--no-aof-compare` leaves it out).

(a) Overhead per job: 1M `sqrt` (range(10, 1000010)) on one replica, 2 workers, measured in
    alternated rounds (a warm-up, then REPS): plain stream (POST, NDJSON to the summary) on a
    server without --redis; the same body async (`Prefer: respond-async`, 202, then GET
    .../results?follow=true to the summary) on that server (SQLite store, --state-dir), on a
    replica with --redis (AOF always) and on one with --redis on the AOF-off Redis. Per-job
    microseconds end to end, the extra per job over the plain stream, and the ratios. Redis's
    own INFO (commands per job by command, usec_per_call, memory, AOF size) over one run.
(b) Scaling: an I/O-bound batch (120 x `sleep` 100 ms, async, submitted to a cluster's
    first replica and followed there; every replica of it claims chunks) on clusters of 1,
    2 and 3 replicas of 2 workers, all live on the AOF-always redis-server, each on its own
    logical database (/1, /2, /3; the 3-replica one also behind docker/nginx.conf), run in
    the same rounds in a rotating order beside a server without Redis; time and speed-up
    against 1 replica, the replicas that ran chunks (status `cluster.replicas`) and the
    chunks each claimed (metrics). The same for a CPU-bound batch (`cpu_loop`), which cannot
    speed up on a 2-core machine: 2 workers already fill both cores, more replicas only add
    processes on the same cores.
(c) Redis round trips as the replicas report them: batchd_redis_latency_seconds (count and
    mean per phase; quantiles per phase from a histogram's buckets, or a summary's own
    quantiles over the replica's life), per replica; beside it PING round trips from this
    script (a Python client on the same machine).

A binary whose --redis is accepted but not in effect (nothing appears in Redis) stops the
run, unless ALLOW_NO_REDIS=1 (development: the rows are then marked as not through Redis).
Prints a Markdown report (also written with --out). Uses curl; traffic to 127.0.0.1 only.
"""
import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "deploy"))
sys.path.insert(0, HERE)
import deploylib  # noqa: E402
import promtext  # noqa: E402
from stored_bench import last_line_summary, status_kb  # noqa: E402

N = 1000000
ALLOW_NO_REDIS = os.environ.get("ALLOW_NO_REDIS", "0") == "1"


# ------------------------------------------------------------------------------- Redis
class Resp:
    """A minimal RESP2 client (one connection, one command at a time)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        self.sock.sendall(b"".join(out))
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RuntimeError("redis: " + rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self._reply() for _ in range(n)]
        raise RuntimeError("bad RESP line %r" % line)

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


class RedisServer:
    """Debian's redis-server on a free loopback port, its data in a temporary dir."""

    def __init__(self, tmp, name, appendonly=True):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="redis-%s-" % name, dir=tmp)
        self.port = deploylib.free_port()
        self.appendonly = appendonly
        exe = deploylib.which("redis-server")
        if not exe:
            raise SystemExit("redis-server not installed (apt-get install redis-server)")
        self.logpath = os.path.join(self.dir, "redis.log")
        argv = [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always",
                "--dir", self.dir, "--daemonize", "no", "--logfile", self.logpath]
        self.proc = deploylib.spawn(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.c = Resp(self.port)
                if self.c.cmd("PING") == "PONG":
                    break
            except (OSError, RuntimeError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redis-server did not start: see " + self.logpath)
            time.sleep(0.05)
        self.url = "redis://127.0.0.1:%d" % self.port

    def info(self, section="all"):
        text = self.c.cmd("INFO", section).decode()
        d = {}
        for line in text.splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                d[k] = v
        return d

    def commandstats(self):
        """{command: (calls, usec)} from INFO commandstats."""
        out = {}
        for k, v in self.info("commandstats").items():
            if k.startswith("cmdstat_"):
                f = dict(x.split("=", 1) for x in v.split(","))
                out[k[len("cmdstat_"):]] = (int(f["calls"]), int(f["usec"]))
        return out

    def nkeys(self):
        """Keys in all the logical databases (INFO keyspace)."""
        n = 0
        for k, v in self.info("keyspace").items():
            if k.startswith("db"):
                n += int(dict(x.split("=", 1) for x in v.split(","))["keys"])
        return n

    def aof_bytes(self):
        total = 0
        for root, _, files in os.walk(self.dir):
            for f in files:
                if ".aof" in f:
                    total += os.path.getsize(os.path.join(root, f))
        return total

    def ping_rtts(self, n=2000):
        """N PING round trips from this process, in seconds each."""
        xs = []
        for _ in range(n):
            t = time.perf_counter()
            self.c.cmd("PING")
            xs.append(time.perf_counter() - t)
        return xs

    def stop(self):
        self.c.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# ------------------------------------------------------------------------------- batchd
class Server:
    """A batchd process (deploylib.Batchd) with 2 workers; with REDIS, a replica of it."""

    def __init__(self, tmp, name, redis=None, workers=2, claim_timeout="5s", db=0):
        args = []
        if redis is not None:
            url = redis.url + ("/%d" % db if db else "")
            args = ["--redis", url, "--replica-name", name, "--claim-timeout", claim_timeout]
        self.name = name
        self.redis = redis
        self.b = deploylib.Batchd(name=name, workers=workers, args=args,
                                  workdir=tempfile.mkdtemp(prefix=name + "-", dir=tmp))
        self.b.wait_ready()
        self.port = self.b.port
        self.base = "http://127.0.0.1:%d" % self.port

    def metrics(self):
        st, _, body = deploylib.request(self.port, "GET", "/metrics", timeout=30)
        if st != 200:
            raise SystemExit("%s /metrics: %d" % (self.name, st))
        return promtext.parse(body.decode(), require_help=False, conventions=False)

    def status(self, bid):
        st, _, body = deploylib.request(self.port, "GET", "/v1/batches/" + bid, timeout=30)
        return json.loads(body) if st == 200 else {"http": st}

    def forget(self, bid):
        deploylib.request(self.port, "DELETE", "/v1/batches/" + bid, timeout=120)

    def stop(self):
        if self.b.proc.poll() is None:
            self.b.proc.terminate()
            try:
                self.b.proc.wait(20)
            except subprocess.TimeoutExpired:
                pass
        self.b.stop()


def curl(args, out):
    """Runs curl; returns (wall seconds, http code). A failure names the URL."""
    t = time.monotonic()
    cp = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}"] + args,
                        capture_output=True, text=True, timeout=900)
    dt = time.monotonic() - t
    if cp.returncode != 0:
        raise SystemExit("curl failed after %.3f s on %s: %s" % (dt, args[-1], cp.stderr.strip()))
    return dt, int(cp.stdout)


class Via:
    """A front (nginx) that stored() can submit to; NAME for messages."""

    def __init__(self, name, port, replica):
        self.name = name
        self.base = "http://127.0.0.1:%d" % port
        self.redis = replica.redis


def plain(srv, body, out, jobs):
    dt, code = curl(["-H", "Content-Type: application/json", "--data-binary", "@" + body,
                     srv.base + "/v1/batches"], out)
    if code != 200:
        raise SystemExit("plain on %s: %d" % (srv.name, code))
    last_line_summary(out, jobs)
    return dt


def stored(srv, body, out, jobs, check=None):
    """Async submit on SRV, then its results followed there to the summary. CHECK(bid) runs
    right after the 202. Returns (total s, s from the 202 to the summary, id)."""
    t = time.monotonic()
    _, code = curl(["-H", "Content-Type: application/json", "-H", "Prefer: respond-async",
                    "--data-binary", "@" + body, srv.base + "/v1/batches"], out)
    if code != 202:
        raise SystemExit("async on %s: %d %s" % (srv.name, code, open(out).read()[:300]))
    bid = json.load(open(out))["id"]
    t202 = time.monotonic()
    if check:
        check(bid)
    follow(srv, bid, out, jobs)
    total = time.monotonic() - t
    return total, time.monotonic() - t202, bid


CUTS = []  # (server, batch, seconds into the piece, last seq received, curl's message)


def last_seq(path):
    """The seq of the last complete result line in PATH (0: none)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        lines = f.read().split(b"\n")
    for line in reversed(lines[:-1]):  # the last piece may be a cut line
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if "seq" in obj:
            return int(obj["seq"])
    return 0


def follow(srv, bid, out, jobs):
    """GET results?follow=true to the summary. A stream the server cuts is resumed with
    ?after=<last seq received>, as a client would, and recorded in CUTS (reported)."""
    after = 0
    while True:
        url = srv.base + "/v1/batches/%s/results?follow=true" % bid
        if after:
            url += "&after=%d" % after
        t = time.monotonic()
        cp = subprocess.run(["curl", "-sS", "-o", out, "-w", "%{http_code}", url],
                            capture_output=True, text=True, timeout=900)
        if cp.returncode == 0:
            code = int(cp.stdout)
            if code == 503 and len(CUTS) < 200:
                # store_unavailable: the replica's read connection is resting after a
                # failure; a client retries.
                CUTS.append((srv.name, bid, time.monotonic() - t, after,
                             "503 on the resume: " + open(out).read()[:120].strip()))
                time.sleep(0.2)
                continue
            if code != 200:
                raise SystemExit("results on %s: %d %s" % (srv.name, code, open(out).read()[:300]))
            break
        if cp.returncode not in (18, 52, 56) or len(CUTS) >= 200:
            raise SystemExit("curl failed on %s: %s" % (url, cp.stderr.strip()))
        got = last_seq(out)
        after = max(after, got)
        CUTS.append((srv.name, bid, time.monotonic() - t, after, cp.stderr.strip()))
    last_line_summary(out, jobs)



# ------------------------------------------------------------------------------- metrics
def lat(fams, name="batchd_redis_latency_seconds"):
    """A snapshot of latency family NAME (a histogram or a summary, summed over its
    series): {type, sum, count, buckets [(le, cumulative)] or quantiles {q: v}}; None when
    the family is absent."""
    f = fams.get(name)
    if f is None or f.type not in ("histogram", "summary"):
        return None
    snap = {"type": f.type, "sum": f.sum("_sum"), "count": f.sum("_count")}
    if f.type == "histogram":
        buckets = {}
        for labs, v in f.series("_bucket").items():
            le = float(dict(labs)["le"])
            buckets[le] = buckets.get(le, 0) + v
        snap["buckets"] = sorted(buckets.items())
    else:
        snap["quantiles"] = {float(dict(labs)["quantile"]): v
                             for labs, v in f.series("").items() if "quantile" in dict(labs)}
    return snap


def lat_delta(l1, l0):
    """Over the interval between two snapshots: {count, mean, q {0.5, 0.9, 0.99}, note}. A
    histogram's quantiles come from the bucket deltas (interpolated inside a bucket, as
    Prometheus does); a summary's are its own, over the replica's life (it cannot be
    differenced)."""
    if l1 is None:
        return None
    n0 = l0["count"] if l0 else 0
    s0 = l0["sum"] if l0 else 0.0
    count = l1["count"] - n0
    d = {"count": count, "mean": (l1["sum"] - s0) / count if count > 0 else math.nan}
    if l1["type"] == "histogram":
        b0 = dict(l0["buckets"]) if l0 else {}
        buckets = [(le, c - b0.get(le, 0)) for le, c in l1["buckets"]]
        d["q"] = {q: bucket_quantile(buckets, count, q) for q in (0.5, 0.9, 0.99)}
        d["note"] = "phase"
    else:
        d["q"] = l1["quantiles"]
        d["note"] = "life"
    return d


def bucket_quantile(buckets, count, q):
    if count <= 0:
        return math.nan
    rank = q * count
    prev_le, prev_c = 0.0, 0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-12)
        prev_le, prev_c = le, c
    return prev_le


def counter(fams, name, **labels):
    f = fams.get(name)
    return f.sum(**labels) if f is not None else None


def cpu_seconds(pid, children=False):
    """utime + stime of PID (and of its direct children, the workers, with CHILDREN)."""
    tick = os.sysconf("SC_CLK_TCK")

    def one(p):
        try:
            with open("/proc/%d/stat" % p) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / tick, int(fields[1])
        except (OSError, IndexError, ValueError):
            return 0.0, -1

    total = one(pid)[0]
    if children:
        for d in os.listdir("/proc"):
            if d.isdigit():
                t, ppid = one(int(d))
                if ppid == pid:
                    total += t
    return total


def loadavg():
    return "%.2f" % os.getloadavg()[0]


def us(x):
    return "%.2f" % (x * 1e6)


# ------------------------------------------------------------------------------- main
def main():
    global N
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out")
    ap.add_argument("--command", default="tests/bench/cluster_bench.py")
    ap.add_argument("--no-aof-compare", action="store_true")
    ap.add_argument("--sqrt-jobs", type=int, default=N, help="jobs of the sqrt batch in (a)")
    ap.add_argument("--sleep-jobs", type=int, default=120)
    ap.add_argument("--sleep-ms", type=int, default=100)
    ap.add_argument("--cpu-jobs", type=int, default=24)
    ap.add_argument("--cpu-n", type=int, default=300000000)
    ap.add_argument("--skip", default="", help="comma list of a,b to leave out")
    ap.add_argument("--watchdog", type=int, default=3000, help="seconds for the whole run")
    a = ap.parse_args()
    N = a.sqrt_jobs
    nlabel = "1M" if N == 1000000 else "%d" % N
    os.environ["BATCHD_BIN"] = os.path.abspath(a.bin)
    deploylib.watchdog(a.watchdog)
    skip = set(x for x in a.skip.split(",") if x)
    tmp = tempfile.mkdtemp(prefix="batchd-cluster-bench-")
    rep = []
    loads = [("start", loadavg())]
    t_start = time.time()
    servers, redises = [], []
    through_redis = {}  # server name -> True when its stored batches showed up in Redis

    def start(name, redis=None, db=0):
        s = Server(tmp, name, redis, db=db)
        servers.append(s)
        return s

    def stop(s):
        s.stop()
        servers.remove(s)

    def in_redis(srv):
        def check(bid):
            if srv.redis is None or srv.name in through_redis:
                return
            n = srv.redis.nkeys()
            through_redis[srv.name] = n > 0
            if n == 0 and not ALLOW_NO_REDIS:
                raise SystemExit("%s: --redis %s is not in effect in this binary (no key in "
                                 "Redis after a 202); ALLOW_NO_REDIS=1 to run anyway"
                                 % (srv.name, srv.redis.url))
        return check

    try:
        out = os.path.join(tmp, "out")
        r_aof = RedisServer(tmp, "aof", appendonly=True)
        redises.append(r_aof)
        r_noaof = None
        if not a.no_aof_compare:
            r_noaof = RedisServer(tmp, "noaof", appendonly=False)
            redises.append(r_noaof)
        ping_before = r_aof.ping_rtts()

        rep.append("# batchd cluster benchmark %s" % time.strftime("%Y-%m-%d %H:%M UTC",
                                                                 time.gmtime()))
        rep.append("")
        rep.append("- command: `%s`" % a.command)
        rep.append("- binary: `%s`; redis-server %s (Debian), 127.0.0.1, `--save ''`, AOF "
                   "`--appendonly yes --appendfsync always` unless said otherwise" %
                   (a.bin, r_aof.info("server").get("redis_version", "?")))
        rep.append("- machine: %d CPUs, %s" % (os.cpu_count(), os.uname().release))
        head_at = len(rep)  # the load line goes here at the end

        # ---------------------------------------------------------- (a) overhead per job
        ra = {}
        stats_a = {}
        cpu_a = {}
        readback = {}
        if "a" not in skip:
            body = os.path.join(tmp, "sqrt1m.json")
            with open(body, "w") as f:
                json.dump({"op": "sqrt", "inputs": list(range(10, N + 10))}, f)
            s_sql = start("sqlite")
            s_aof = start("r-aof", r_aof)
            s_no = start("r-noaof", r_noaof) if r_noaof else None
            paths = [("plain stream (no store)", s_sql, "plain"),
                     ("async + SQLite (--state-dir)", s_sql, "stored"),
                     ("async + Redis, AOF always", s_aof, "stored")]
            if s_no:
                paths.append(("async + Redis, AOF off", s_no, "stored"))
            ra = {p[0]: {"total": [], "after202": []} for p in paths}
            m0 = {s.name: s.metrics() for s in (s_aof, s_no) if s}
            for r in range(a.reps + 1):
                order = paths if r % 2 == 0 else paths[::-1]
                last = r == a.reps
                for label, s, kind in order:
                    if kind == "plain":
                        if last:
                            cpu0 = (cpu_seconds(s.b.proc.pid), cpu_seconds(s.b.proc.pid, True))
                        tot, aft = plain(s, body, out, N), None
                        if last:
                            cpu1 = (cpu_seconds(s.b.proc.pid), cpu_seconds(s.b.proc.pid, True))
                            cpu_a[label] = [y - x for x, y in zip(cpu0, cpu1)] + [0.0]
                    else:
                        if last:
                            cpu0 = (cpu_seconds(s.b.proc.pid), cpu_seconds(s.b.proc.pid, True),
                                    cpu_seconds(s.redis.proc.pid) if s.redis else 0.0)
                        if last and s.redis is not None:
                            cs0 = s.redis.commandstats()
                            mem0 = s.redis.info("memory")
                            rw0 = int(s.redis.info("persistence").get("aof_rewrites", 0))
                        tot, aft, bid = stored(s, body, out, N, check=in_redis(s))
                        if last:
                            cpu1 = (cpu_seconds(s.b.proc.pid), cpu_seconds(s.b.proc.pid, True),
                                    cpu_seconds(s.redis.proc.pid) if s.redis else 0.0)
                            cpu_a[label] = [y - x for x, y in zip(cpu0, cpu1)]
                        if last and s.redis is not None:
                            cs1 = s.redis.commandstats()
                            mem1 = s.redis.info("memory")
                            rw1 = int(s.redis.info("persistence").get("aof_rewrites", 0))
                            stats_a[label] = {
                                "rewrites": rw1 - rw0,
                                "cmds": {k: (v[0] - cs0.get(k, (0, 0))[0],
                                             v[1] - cs0.get(k, (0, 0))[1])
                                         for k, v in cs1.items()},
                                "keys_held": s.redis.nkeys(),
                                "mem_before": int(mem0["used_memory"]),
                                "mem_after": int(mem1["used_memory"]),
                                "peak": int(mem1["used_memory_peak"]),
                                "aof_end": s.redis.aof_bytes(),
                            }
                        if last:
                            # The ended batch read back whole (no follow), NDJSON.
                            t = time.monotonic()
                            _, code = curl([s.base + "/v1/batches/%s/results" % bid], out)
                            readback[label] = time.monotonic() - t
                            if code != 200:
                                raise SystemExit("read back on %s: %d" % (s.name, code))
                            last_line_summary(out, N)
                        s.forget(bid)
                    if r > 0:
                        ra[label]["total"].append(tot)
                        if aft is not None:
                            ra[label]["after202"].append(aft)
            loads.append(("after (a)", loadavg()))
            lat_a = {}
            for s in (s_aof, s_no):
                if s:
                    m1 = s.metrics()
                    lat_a[s.name] = lat_delta(lat(m1), lat(m0[s.name]))
            hwm = {s.name: status_kb(s.b.proc.pid, "VmHWM") for s in (s_sql, s_aof, s_no) if s}
            for s in (s_sql, s_aof, s_no):
                if s:
                    stop(s)

            base = statistics.median(ra[paths[0][0]]["total"])
            base_best = min(ra[paths[0][0]]["total"])
            sql = statistics.median(ra[paths[1][0]]["total"])
            rep.append("")
            rep.append("## (a) Overhead per job: %s `sqrt`, one server or replica, 2 workers"
                       % nlabel)
            rep.append("")
            rep.append("%d alternated rounds after a warm-up (the order reversed every other "
                       "round). End to end: from the POST to the summary line (async: the 202, "
                       "then GET .../results?follow=true on the same replica)." % a.reps)
            rep.append("")
            rep.append("| path | best s | median s | µs/job (median) | extra µs/job over plain "
                       "| ratio to plain | ratio to async+SQLite | 202 to summary, median s "
                       "| results stored/s |")
            rep.append("|---|---|---|---|---|---|---|---|---|")
            for label, s, kind in paths:
                xs = ra[label]["total"]
                med = statistics.median(xs)
                note = ""
                if s.redis is not None and not through_redis.get(s.name, False):
                    note = " (NOT through Redis: --redis not in effect)"
                aft = ra[label]["after202"]
                rep.append("| %s%s | %.3f | %.3f | %s | %s | %.2f | %s | %s | %s |" % (
                    label, note, min(xs), med, us(med / N),
                    "—" if kind == "plain" else us((med - base) / N), med / base,
                    "—" if kind == "plain" else "%.2f" % (med / sql),
                    "%.3f" % statistics.median(aft) if aft else "—",
                    "%.0f" % (N / statistics.median(aft)) if aft else "—"))
            rep.append("")
            rep.append("- every run: %s" % "; ".join(
                "%s %s" % (label, [round(x, 3) for x in ra[label]["total"]])
                for label, _, _ in paths))
            rep.append("- best plain %.3f s = %s µs/job" % (base_best, us(base_best / N)))
            rep.append("- the ended batch read back whole (GET .../results, NDJSON, once, last "
                       "round): %s" % "; ".join("%s %.3f s (%.0f results/s)" % (k, v, N / v)
                                                for k, v in readback.items()))
            rep.append("- server VmHWM (server process, not workers) at the end: %s" % ", ".join(
                "%s %.1f MB" % (k, v / 1024) for k, v in hwm.items()))
            rep.append("")
            rep.append("CPU time over the last round (utime+stime from /proc; workers = the "
                       "server's child processes):")
            rep.append("")
            rep.append("| path | server process µs/job | server + workers µs/job | "
                       "redis-server µs/job |")
            rep.append("|---|---|---|---|")
            for label, _, _ in paths:
                c = cpu_a.get(label)
                if c:
                    rep.append("| %s | %s | %s | %s |" % (label, us(c[0] / N), us(c[1] / N),
                                                          us(c[2] / N) if c[2] else "—"))
            rep.append("")
            for label, st in stats_a.items():
                # Leave out what this script sent (INFO, DBSIZE, PING).
                cmds = sorted(((k, v) for k, v in st["cmds"].items()
                               if v[0] > 0 and k not in ("info", "dbsize", "ping")),
                              key=lambda kv: -kv[1][1])
                rep.append("Redis's own count over the last run, %s (INFO commandstats deltas; "
                           "a command a Lua script calls is counted under its own name too, "
                           "and its time is inside the script's):" % label)
                rep.append("")
                rep.append("| command | calls | per job | µs/call | s in all | µs/job |")
                rep.append("|---|---|---|---|---|---|")
                for k, (calls, usec) in cmds[:10]:
                    rep.append("| %s | %d | %.4f | %.1f | %.3f | %s |" % (
                        k, calls, calls / N, usec / max(calls, 1), usec / 1e6, us(usec / 1e6 / N)))
                scripts = sum(v[1] for k, v in cmds if k in ("eval", "evalsha"))
                others = sum(v[1] for k, v in cmds if k not in ("eval", "evalsha"))
                rep.append("")
                rep.append("- scripts (eval + evalsha): %.2f s = %s µs/job; every other command "
                           "(most of them called by the scripts) %.2f s = %s µs/job" % (
                               scripts / 1e6, us(scripts / 1e6 / N), others / 1e6,
                               us(others / 1e6 / N)))
                rep.append("- used_memory %.1f MB before, %.1f MB with the 1M results held "
                           "(peak %.1f MB); AOF files %.1f MB at the end of the run, %d AOF "
                           "rewrite%s during it" % (
                               st["mem_before"] / 1e6, st["mem_after"] / 1e6, st["peak"] / 1e6,
                               st["aof_end"] / 1e6, st["rewrites"],
                               "" if st["rewrites"] == 1 else "s"))
                rep.append("")

        # ---------------------------------------------------------- (b) scaling
        rb = {}
        if "b" not in skip:
            sleep_body = os.path.join(tmp, "sleep.json")
            with open(sleep_body, "w") as f:
                json.dump({"op": "sleep", "inputs": [a.sleep_ms] * a.sleep_jobs}, f)
            cpu_body = os.path.join(tmp, "cpu.json")
            with open(cpu_body, "w") as f:
                json.dump({"op": "cpu_loop", "inputs": [{"n": a.cpu_n, "x": i}
                                                        for i in range(a.cpu_jobs)]}, f)
            workloads = [("io", sleep_body, a.sleep_jobs), ("cpu", cpu_body, a.cpu_jobs)]
            # Three clusters live at once, each on its own logical database of the one
            # redis-server (1 replica on /1, 2 on /2, 3 on /3), and one server without Redis,
            # measured in the same rounds in a rotating order, so that the load of the shared
            # machine falls on all of them alike.
            s_sql = start("sqlite-b")
            clusters = {}
            for n in (1, 2, 3):
                clusters[n] = [start("c%d-r%d" % (n, k + 1), r_aof, db=n) for k in range(n)]
            time.sleep(0.5)
            nginx_upstreams = None
            ng = None
            if "nginx" not in skip and deploylib.which("nginx"):
                # The 3-replica cluster also behind docker/nginx.conf (least_conn): the submit
                # and the follow may land on different replicas.
                ng = deploylib.Nginx([x.port for x in clusters[3]],
                                     prefix=tempfile.mkdtemp(prefix="nginx-", dir=tmp))
            setups = [("plain", None), ("sqlite", None), (1, None), (2, None), (3, None)]
            if ng:
                setups.append(("nginx", Via("nginx", ng.port, clusters[3][0])))
            claimed, ran, lat_b = {}, {}, {}
            m0 = {}
            for r in range(a.reps + 1):
                if r == 1:  # counted from after the warm-up
                    m0 = {x.name: x.metrics() for n in (1, 2, 3) for x in clusters[n]}
                k = r % len(setups)
                for setup, via in setups[k:] + setups[:k]:
                    for key, body, jobs in workloads:
                        if setup == "plain":
                            tot = plain(s_sql, body, out, jobs)
                        elif setup == "sqlite":
                            tot, _, bid = stored(s_sql, body, out, jobs)
                            s_sql.forget(bid)
                        else:
                            first = clusters[3 if setup == "nginx" else setup][0]
                            tot, _, bid = stored(via or first, body, out, jobs,
                                                 check=in_redis(first))
                            if setup != "nginx":
                                st = first.status(bid)
                                ran.setdefault((key, setup), set()).update(
                                    (st.get("cluster") or {}).get("replicas") or [])
                            first.forget(bid)
                        if r > 0:
                            rb.setdefault((key, setup), []).append(tot)
            m1 = {x.name: x.metrics() for n in (1, 2, 3) for x in clusters[n]}
            for n in (1, 2, 3):
                claimed[n] = {}
                for x in clusters[n]:
                    c1 = counter(m1[x.name], "batchd_cluster_chunks_claimed_total")
                    c0 = counter(m0[x.name], "batchd_cluster_chunks_claimed_total")
                    claimed[n][x.name] = None if c1 is None else c1 - (c0 or 0)
                    lat_b[(n, x.name)] = lat_delta(lat(m1[x.name]), lat(m0[x.name]))
            if ng:
                ups = {}
                for line in ng.access_log():
                    ups[line.get("upstream", "?")] = ups.get(line.get("upstream", "?"), 0) + 1
                nginx_upstreams = ups
                ng.stop()
            loads.append(("after (b)", loadavg()))
            stop(s_sql)
            for n in (1, 2, 3):
                for x in clusters[n]:
                    stop(x)

            rep.append("")
            rep.append("## (b) Scaling over replicas sharing one Redis (2 workers each)")
            rep.append("")
            rep.append("Three clusters live at once on the one redis-server, each on its own "
                       "logical database (`redis://127.0.0.1:PORT/N`: 1 replica on /1, 2 on /2, "
                       "3 on /3), beside one server without Redis; every round runs every "
                       "setup in a rotating order, so the load of the shared machine falls on "
                       "all alike (the idle clusters poll their queues meanwhile). Each batch "
                       "async, submitted to the cluster's first replica and followed there to "
                       "the summary; every replica of that cluster claims chunks (chunk size "
                       "ceil(jobs/64)). Best and median of %d rounds after a warm-up; speed-up "
                       "= median time of 1 replica / median time of N." % a.reps)
            rep.append("")
            io_ideal = a.sleep_jobs * a.sleep_ms / 1000.0
            names = {"io": "I/O-bound: %d x `sleep` %d ms (%.1f s of sleeping)" % (
                         a.sleep_jobs, a.sleep_ms, io_ideal),
                     "cpu": "CPU-bound: %d x `cpu_loop` n=%d" % (a.cpu_jobs, a.cpu_n)}
            for key, _, jobs in workloads:
                rep.append("### " + names[key])
                rep.append("")
                rep.append("| setup | workers | best s | median s | speed-up vs 1 replica | "
                           "ideal s | ran chunks (status, any run) | chunks claimed (metrics, "
                           "the %d measured rounds, both batches%s) |" % (
                               a.reps, "; with the nginx runs" if ng else ""))
                rep.append("|---|---|---|---|---|---|---|---|")
                one = statistics.median(rb[(key, 1)])
                for label, k in (("one server, plain stream, no Redis", "plain"),
                                 ("one server, async + SQLite, no Redis", "sqlite")):
                    xs = rb[(key, k)]
                    rep.append("| %s | 2 | %.3f | %.3f | — | %s | — | — |" % (
                        label, min(xs), statistics.median(xs),
                        "%.1f" % (io_ideal / 2) if key == "io" else "—"))
                for n in (1, 2, 3):
                    xs = rb[(key, n)]
                    cl = claimed[n]
                    note = "" if through_redis.get("c1-r1") else " (NOT through Redis)"
                    rep.append("| %d replica%s, Redis%s | %d | %.3f | %.3f | %.2fx | %s | %s "
                               "| %s |" % (
                        n, "s" if n > 1 else "", note, 2 * n, min(xs), statistics.median(xs),
                        one / statistics.median(xs),
                        "%.1f" % (io_ideal / (2 * n)) if key == "io" else "—",
                        ",".join(sorted(ran.get((key, n)) or [])) or "?",
                        ", ".join("%s %s" % (k, "?" if v is None else "%d" % v)
                                                        for k, v in cl.items())))
                if (key, "nginx") in rb:
                    xs = rb[(key, "nginx")]
                    rep.append("| 3 replicas, Redis, submitted and followed through nginx "
                               "(docker/nginx.conf, least_conn) | 6 | %.3f | %.3f | %.2fx | %s "
                               "| — | — |" % (min(xs), statistics.median(xs),
                                              one / statistics.median(xs),
                                              "%.1f" % (io_ideal / 6) if key == "io" else "—"))
                rep.append("")
            if nginx_upstreams:
                rep.append("nginx's requests by upstream (submits and follows of both workloads, "
                           "access log): %s." % ", ".join(
                               "%s %d" % kv for kv in sorted(nginx_upstreams.items())))
                rep.append("")
            rep.append("CPU-bound scaling cannot show here: the machine has %d cores, and one "
                       "replica's 2 workers already keep both busy; a second and third replica "
                       "add processes on the same cores (and their servers, Redis and curl "
                       "compete with them), so the CPU-bound batch is expected to take as long "
                       "or longer with more replicas. On N machines (or N x 2 free cores) it "
                       "would scale like the I/O-bound batch." % os.cpu_count())

        # ---------------------------------------------------------- (c) Redis latency
        ping_after = r_aof.ping_rtts()
        rep.append("")
        rep.append("## (c) Redis round trips")
        rep.append("")
        rep.append("`batchd_redis_latency_seconds` as each replica reports it: the count "
                   "and mean over the phase (deltas of `_count` and `_sum`); the quantiles "
                   "over the phase when it is a histogram (interpolated inside the buckets), "
                   "or, when it is a summary, its own quantiles over the replica's life so "
                   "far (marked *life*: a summary's quantiles cannot be differenced). Beside "
                   "it, PING round trips from this script.")
        rep.append("")
        rep.append("| phase | replica | round trips in the phase | mean ms | p50 ms | p90 ms "
                   "| p99 ms |")
        rep.append("|---|---|---|---|---|---|---|")
        rows = []
        if "a" not in skip:
            for name, h in lat_a.items():
                rows.append(("(a) %s sqrt, %s" % (nlabel, "AOF always" if name == "r-aof"
                                                  else "AOF off"), name, h))
        if "b" not in skip:
            for (n, name), h in lat_b.items():
                rows.append(("(b) cluster of %d, both batches" % n, name, h))
        any_hist = False

        def ms(x, note):
            if x is None or math.isnan(x):
                return "—"
            return "%.3f%s" % (1000 * x, " *life*" if note == "life" else "")

        for ph, name, h in rows:
            if h is None:
                rep.append("| %s | %s | (no batchd_redis_latency_seconds in /metrics) | | | | |"
                           % (ph, name))
                continue
            any_hist = True
            rep.append("| %s | %s | %d | %s | %s | %s | %s |" % (
                ph, name, h["count"], ms(h["mean"], ""), ms(h["q"].get(0.5), h["note"]),
                ms(h["q"].get(0.9), h["note"]), ms(h["q"].get(0.99), h["note"])))
        rep.append("")
        for label, xs in (("before the runs", ping_before), ("after the runs", ping_after)):
            xs = sorted(xs)
            rep.append("- PING from Python to the AOF-always Redis, %s: %d round trips, p50 "
                       "%.3f ms, p99 %.3f ms" % (label, len(xs), 1000 * xs[len(xs) // 2],
                                                1000 * xs[int(len(xs) * 0.99)]))
        if not any_hist:
            rep.append("- the binary exports no batchd_redis_latency_seconds")
        loads.append(("end", loadavg()))
        rep.insert(head_at, "- machine load (1-minute load average; the machine is shared with "
                   "other helpers' builds and tests, figures are noisy): %s" % ", ".join(
                       "%s %s" % kv for kv in loads))
        rep.append("")
        if CUTS:
            rep.append("## Follow streams the server cut")
            rep.append("")
            rep.append("GET .../results?follow=true ended before the summary (curl: transfer "
                       "closed), or its resume answered 503, %d time%s in all; each was resumed "
                       "with `?after=<last seq received>` (503: again after 200 ms), as a client "
                       "would, and the times above include the resumes:" % (
                           len(CUTS), "" if len(CUTS) == 1 else "s"))
            rep.append("")
            for name, bid, dt, seq, msg in CUTS:
                rep.append("- %s, %s: cut %.3f s into the stream, after seq %d (%s)" % (
                    name, bid, dt, seq, msg))
        else:
            rep.append("No follow stream was cut (each reached its summary in one request).")
        rep.append("")
        rep.append("Wall time of the run: %.0f s." % (time.time() - t_start))
        text = "\n".join(rep) + "\n"
        print(text, flush=True)
        if a.out:
            with open(a.out, "w") as f:
                f.write(text)
    except BaseException:
        # Keep the logs of a failed run for a look.
        keep = "/tmp/cluster-bench-failed-%s" % time.strftime("%H%M%S")
        shutil.copytree(tmp, keep, ignore=shutil.ignore_patterns("*.json", "out", "*.aof",
                                                                 "*.rdb", "state"),
                        dirs_exist_ok=True)
        print("cluster_bench: failed; logs kept in %s (servers: %s)" % (
            keep, ", ".join("%s port %d" % (x.name, x.port) for x in servers)), file=sys.stderr)
        raise
    finally:
        for s in list(servers):
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - cleanup goes on
                pass
        for r in redises:
            try:
                r.stop()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
