"""Crash test of stored batches (SPEC §8, "Durable"): the real server is SIGKILLed at random
moments while async batches of mixed jobs run (numeric ops, sleep, cpu_loop, failing inputs,
small PNG/JPEG images, lua), and started again on the same --state-dir each time, with new
batches submitted between the kills (some answered 202 just before a kill, some cut off
before any answer). After the last start everything is let finish, then for EVERY batch that
got a 202: it exists and ends done; its results (GET .../results, NDJSON) hold each job index
exactly once, seq 1..N contiguous, the summary last with ok + failed = jobs matching the
lines, and each result is right (checked against Python's math, or for images against the
same job run plainly before the kills). A POST that got no answer exists afterwards,
complete, or not at all: its Idempotency-Key sent again answers for the same batch, and no
key or request id has two batches in the list.

CRASH_KILLS (default 50) sets the number of kills; CRASH_SEED the random seed (printed).
"""
import base64
import http.client
import json
import math
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, SHARED, Server, Suite, check, new_state_dir  # noqa: E402

KILLS = int(os.environ.get("CRASH_KILLS", "50"))
SEED = int(os.environ.get("CRASH_SEED", str(int(time.time() * 1000) % 1000000)))
RNG = random.Random(SEED)
SCALE = 4 if SANITIZED else 1  # sanitized builds are slower: smaller batches

LUA = ("return function(x)\n"
       "  if x < 0 then error('negative input') end\n"
       "  return x * 3 + 1\n"
       "end")


def b64(path):
    with open(os.path.join(SHARED, "data", path), "rb") as f:
        return base64.b64encode(f.read()).decode()


PNG = b64("pngsuite/basn2c08.png")
PNG_GRAY = b64("pngsuite/basn0g08.png")
JPG = b64("jpeg/pillow/hopper_orientation_6.jpg")
THUMB = {"pipeline": [{"op": "thumbnail", "width": 12, "height": 12}], "format": "png"}
# Image jobs and their expected results, filled in by a plain streamed run (reference()).
IMAGE_JOBS = [
    {"op": "image", "input": {"data": PNG}, "params": THUMB},
    {"op": "image", "input": {"data": PNG_GRAY}, "params": THUMB},
    {"op": "image", "input": {"data": JPG},
     "params": {"pipeline": [{"op": "thumbnail", "width": 16, "height": 16}], "format": "jpeg",
                "quality": 70}},
    {"op": "image", "input": {"data": JPG[:len(JPG) // 12 * 4]}, "params": THUMB},  # truncated
    {"op": "image", "input": {"data": "aGVsbG8gd29ybGQ="}, "params": THUMB},    # not an image
]
IMAGE_WANT = []


# ---------------------------------------------------------------- jobs and their answers

def is_prime(n):
    if n < 2:
        return False
    i = 2
    while i * i <= n:
        if n % i == 0:
            return False
        i += 1
    return True


def collatz(n):
    k = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        k += 1
    return k


def fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


I64 = 2 ** 63


def want(job):
    """('ok', value) or ('err', code) for one job; ('image', k) for IMAGE_JOBS[k]."""
    op, x = job["op"], job["input"]
    if op == "image":
        return ("image", job["_image"])
    if op == "sqrt":
        return ("ok", math.sqrt(x)) if x >= 0 else ("err", "domain_error")
    if op == "square":
        return ("ok", x * x) if abs(x * x) < I64 else ("err", "overflow")
    if op == "cube":
        return ("ok", x ** 3) if -I64 <= x ** 3 < I64 else ("err", "overflow")
    if op == "factorial":
        return ("ok", math.factorial(x)) if 0 <= x <= 20 else ("err", "domain_error")
    if op == "fibonacci":
        return ("ok", fib(x)) if 0 <= x <= 92 else ("err", "domain_error")
    if op == "is_prime":
        return ("ok", is_prime(x))
    if op == "collatz_steps":
        return ("ok", collatz(x)) if x >= 1 else ("err", "domain_error")
    if op == "sum":
        return ("ok", sum(x))
    if op == "mean":
        return ("ok", sum(x) / len(x)) if x else ("err", "domain_error")
    if op == "sort":
        return ("ok", sorted(x))
    if op == "cpu_loop":
        n, a = x["n"], x["x"]
        return ("ok", n * (n - 1) // 2 + n * a)
    if op == "sleep":
        return ("ok", x)
    if op == "lua":
        return ("ok", x * 3 + 1) if x >= 0 else ("err", "script_error")
    raise AssertionError("no answer for %r" % (job,))


def random_job(r):
    k = r.random()
    if k < 0.25:
        return {"op": "sqrt", "input": r.choice([r.randint(-50, 10 ** 9), r.random() * 1e6, -1])}
    if k < 0.35:
        return {"op": r.choice(["square", "cube"]),
                "input": r.choice([r.randint(-3000, 3000), 3037000500, 2097152, -2097153])}
    if k < 0.42:
        return {"op": r.choice(["factorial", "fibonacci"]), "input": r.randint(0, 95)}
    if k < 0.48:
        return {"op": r.choice(["is_prime", "collatz_steps"]), "input": r.randint(0, 100000)}
    if k < 0.53:
        return {"op": r.choice(["sum", "mean", "sort"]),
                "input": [r.randint(-100, 100) for _ in range(r.randint(0, 6))]}
    if k < 0.63:
        return {"op": "cpu_loop", "input": {"n": r.randint(0, 2000000 // SCALE),
                                            "x": r.randint(-5, 5)}}
    if k < 0.73:
        return {"op": "sleep", "input": r.randint(0, 25)}
    if k < 0.83:
        return {"op": "lua", "input": r.randint(-3, 1000), "params": {"code": LUA}}
    i = r.randrange(len(IMAGE_JOBS))
    return dict(IMAGE_JOBS[i], _image=i)


def random_batch(r):
    """A batch body (dict, without private fields) and its per-job answers."""
    if r.random() < 0.2:
        n = r.randint(500, 20000 // SCALE)
        xs = [r.randint(0, 10 ** 12) for _ in range(n)]
        if r.random() < 0.5:
            xs[r.randrange(n)] = -4
        body = {"op": "sqrt", "inputs": xs}
        answers = [("ok", math.sqrt(x)) if x >= 0 else ("err", "domain_error") for x in xs]
    else:
        jobs = [random_job(r) for _ in range(r.randint(1, 60))]
        answers = [want(j) for j in jobs]
        body = {"jobs": [{k: v for k, v in j.items() if not k.startswith("_")} for j in jobs]}
    if r.random() < 0.3:
        body["chunksize"] = r.choice([1, 4, 64])
    return body, answers


# ---------------------------------------------------------------- the run

class Post:
    """One POST of the run: its body, key, request id, and what came of it."""

    def __init__(self, body, answers, key, rid, header_async):
        self.body = json.dumps(body)
        self.answers = answers
        self.key = key
        self.rid = rid
        self.header_async = header_async
        self.id = None  # the batch id of a 202

    def send(self, port, timeout=30):
        """Returns (status, Location header) or raises OSError/HTTPException."""
        h = {"Content-Type": "application/json", "X-Request-Id": self.rid}
        if self.key is not None:
            h["Idempotency-Key"] = self.key
        if self.header_async:
            h["Prefer"] = "respond-async"
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            c.request("POST", "/v1/batches", body=self.body, headers=h)
            resp = c.getresponse()
            data = resp.read()
            return resp.status, resp.getheader("Location"), data
        finally:
            c.close()


def new_post(n):
    body, answers = random_batch(RNG)
    header_async = RNG.random() < 0.5
    if not header_async:
        body["async"] = True
    key = "crash-%d-%d" % (SEED, n) if RNG.random() < 0.6 else None
    return Post(body, answers, key, "crash-rid-%d-%d" % (SEED, n), header_async)


def accepted(p, status, loc, data):
    check(status == 202, "POST %s: %d %r" % (p.rid, status, data[:300]))
    check(loc and loc.startswith("/v1/batches/b_"), loc)
    bid = loc.rsplit("/", 1)[1]
    if p.id is not None:
        check(p.id == bid, "key %s answered %s, then %s" % (p.key, p.id, bid))
    p.id = bid


def reference():
    """The image jobs' results, from a plain streamed run."""
    with Server(workers=2) as s:
        lines, status, _ = s.batch({"jobs": [{k: v for k, v in j.items()} for j in IMAGE_JOBS]})
        check(status == 200, lines)
        got = {l["index"]: l for l in lines[:-1]}
        for i in range(len(IMAGE_JOBS)):
            IMAGE_WANT.append(got[i].get("result", ("err", got[i].get("error", {}).get("code"))))
    check(IMAGE_WANT[3] == ("err", "corrupt_image") and IMAGE_WANT[4] == ("err", "unsupported_format"),
          IMAGE_WANT[3:])


def wait_done(s, ids, timeout):
    end = time.time() + timeout
    pending = set(ids)
    while pending and time.time() < end:
        for bid in list(pending):
            status, _, body = s.request("GET", "/v1/batches/" + bid)
            check(status == 200, "GET %s: %d %r" % (bid, status, body[:200]))
            doc = json.loads(body)
            check(doc["state"] in ("queued", "running", "done"), doc)
            if doc["state"] == "done":
                pending.discard(bid)
        time.sleep(0.1)
    check(not pending, "%d batches not done after %ds, e.g. %r" % (len(pending), timeout,
                                                                 sorted(pending)[:3]))


def check_batch(s, p):
    bid = p.id
    status, _, body = s.request("GET", "/v1/batches/" + bid)
    check(status == 200, (bid, status, body[:200]))
    doc = json.loads(body)
    n = len(p.answers)
    check(doc["state"] == "done" and doc["jobs"]["total"] == n, doc)
    check(doc["request_id"] == p.rid, (doc["request_id"], p.rid))
    status, hdrs, data = s.request("GET", "/v1/batches/%s/results" % bid)
    check(status == 200, (bid, status, data[:200]))
    lines = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
    check(lines and "summary" in lines[-1], "%s: no summary last: %r" % (bid, lines[-2:]))
    seqs = [l.get("seq") for l in lines[:-1]]
    check(seqs == list(range(1, len(seqs) + 1)), "%s: seqs not 1..N: %r" % (bid, seqs[:20]))
    seen = {}
    for l in lines[:-1]:
        i = l["index"]
        check(type(i) is int and 0 <= i < n, (bid, l))
        check(i not in seen, "%s: index %d recorded twice: %r and %r" % (bid, i, seen.get(i), l))
        check(("result" in l) != ("error" in l), l)
        seen[i] = l
    missing = sorted(set(range(n)) - set(seen))
    check(not missing, "%s: %d of %d jobs without a result, e.g. %r" % (bid, len(missing), n,
                                                                      missing[:10]))
    summ = lines[-1]["summary"]
    nfail = sum(1 for l in seen.values() if "error" in l)
    check(summ["jobs"] == n and summ["ok"] + summ["failed"] == n and summ["failed"] == nfail,
          "%s: summary %r, %d failed lines" % (bid, summ, nfail))
    check(summ.get("batch") == bid and not summ.get("cancelled"), summ)
    check(doc["jobs"]["ok"] == summ["ok"] and doc["jobs"]["failed"] == summ["failed"],
          (doc["jobs"], summ))
    for i, l in seen.items():
        kind, v = p.answers[i]
        if kind == "image":
            v = IMAGE_WANT[v]
            kind = "err" if isinstance(v, tuple) else "ok"
            v = v[1] if kind == "err" else v
        if kind == "ok":
            got = l.get("result")
            good = "result" in l and got == v and type(got) is type(v)
            check(good, "%s job %d: want %r, got %r" % (bid, i, v, l))
        else:
            check(l.get("error", {}).get("code") == v, "%s job %d: want %s, got %r" %
                  (bid, i, v, l))


def list_all(s):
    out, before = [], None
    while True:
        path = "/v1/batches?limit=100" + ("&before=" + before if before else "")
        status, _, body = s.request("GET", path)
        check(status == 200, (status, body[:200]))
        page = json.loads(body)
        page = page.get("batches", page.get("data")) if isinstance(page, dict) else page
        out += page
        if len(page) < 100:
            return out
        before = page[-1]["id"]


def test_kill_9_at_random_moments():
    print("  CRASH_SEED=%d CRASH_KILLS=%d" % (SEED, KILLS), flush=True)
    reference()
    d = new_state_dir()
    posts = []       # every POST made
    unanswered = []  # keyed POSTs cut off by a kill: sent again after the next start
    nkill = 0
    t0 = time.time()
    modes = {"delay": 0, "after_202": 0, "in_flight": 0, "at_start": 0}
    resent = resumed = 0
    errors = []
    while nkill < KILLS:
        s = Server(workers=2, args=["--state-dir", d]).start()
        port = s.port
        # The keys cut off last time: same key and body, the same batch (or a new one if it
        # never was stored).
        again, unanswered = unanswered, []
        mode = RNG.choice(["delay", "delay", "after_202", "in_flight", "at_start"])
        modes[mode] += 1
        news = [new_post(len(posts) + k) for k in range(RNG.randint(1, 3))]
        posts += news
        queue = again + news
        got_202 = threading.Event()
        in_flight = threading.Event()

        def submit():
            for p in queue:
                try:
                    in_flight.set()
                    status, loc, data = p.send(port)
                except (OSError, http.client.HTTPException):
                    if p.key is not None:
                        unanswered.append(p)
                    continue
                if status in (503, 507):
                    continue  # overloaded or full: not accepted, nothing promised
                accepted(p, status, loc, data)
                got_202.set()

        th = threading.Thread(target=submit)
        if mode != "at_start":
            th.start()
        if mode == "delay":
            time.sleep(RNG.uniform(0.0, 0.4))
        elif mode == "after_202":
            got_202.wait(10)
            time.sleep(RNG.uniform(0, 0.003))
        elif mode == "in_flight":
            in_flight.wait(10)
            time.sleep(RNG.uniform(0, 0.004))
        else:
            time.sleep(RNG.uniform(0, 0.05))  # on resuming what was there
        s.stop(signal.SIGKILL)
        nkill += 1
        resumed += sum(1 for l in s.log_lines if "batch_resumed" in l)
        errors += [l for l in s.log_lines if "level=error" in l or "Sanitizer" in l or
                   "runtime error:" in l]
        if mode == "at_start":
            th.start()  # against a dead server: every POST is cut off
        th.join(60)
        check(not th.is_alive(), "a POST hung after the kill")
        resent += len(again)
    t_kills = time.time() - t0
    s = Server(workers=2, args=["--state-dir", d]).start()
    try:
        # Cut-off keyed POSTs sent again: the same key answers for one batch, stored now if
        # it was not before.
        for p in unanswered:
            status, loc, data = p.send(s.port)
            accepted(p, status, loc, data)
        done = [p for p in posts if p.id is not None]
        wait_done(s, [p.id for p in done], 120 if SANITIZED else 60)
        for p in done:
            check_batch(s, p)
        # Everything listed came from one POST of the run, at most one batch per POST (the
        # request id) and per key, and all of them are done: a POST cut off before any answer
        # made its batch whole or not at all.
        listed = list_all(s)
        by_rid = {p.rid: p for p in posts}
        rids = [b["request_id"] for b in listed]
        check(len(rids) == len(set(rids)), "a POST made two batches")
        for b in listed:
            check(b["request_id"] in by_rid, "a batch from nowhere: %r" % (b,))
            check(b["state"] == "done", b)
            p = by_rid[b["request_id"]]
            if p.id is None:  # unkeyed, cut off: it exists, so it must be whole
                p.id = b["id"]
                check_batch(s, p)
            check(p.id == b["id"], "request %s: batch %s, listed %s" % (p.rid, p.id, b["id"]))
        lost = [p for p in posts if p.id is not None and p.id not in {b["id"] for b in listed}]
        check(not lost, "accepted batches missing from the list: %r" % [p.id for p in lost])
        check(resumed >= KILLS // 5, "only %d batches resumed after %d kills" % (resumed, KILLS))
        errors += [l for l in s.log_lines if "level=error" in l or "Sanitizer" in l or
                   "runtime error:" in l]
        check(not errors, "errors in the server's logs:\n" + "\n".join(errors[:20]))
        njobs = sum(len(p.answers) for p in posts if p.id is not None)
        print("  %d kills in %.1fs (%r), %d batches resumed, %d POSTs, %d batches stored (%d jobs), %d cut-off keys "
              "sent again, %d unkeyed cut off never stored" %
              (nkill, t_kills, modes, resumed, len(posts), len(listed), njobs, resent + len(unanswered),
               sum(1 for p in posts if p.id is None)), flush=True)
    finally:
        rc = s.stop()
    check(rc == 0, "exit %r after the run:\n%s" % (rc, "\n".join(s.log_lines[-30:])))


def test_done_status_means_the_results_are_complete():
    # A client that polls the status until done and then reads the results (no follow) must
    # get them all and the summary: "done" is said only once the end is recorded.
    with Server(workers=2) as s:
        for k in range(30):
            status, hdrs, body = s.request("POST", "/v1/batches",
                                           {"op": "sqrt", "inputs": list(range(k + 3)),
                                            "async": True})
            check(status == 202, (status, body[:200]))
            loc = hdrs["location"]
            end = time.time() + 20
            while json.loads(s.request("GET", loc)[2])["state"] != "done":
                check(time.time() < end, "not done")
            status, _, data = s.request("GET", loc + "/results")
            lines = data.decode().splitlines()
            check(status == 200 and len(lines) == k + 4 and '"summary"' in lines[-1],
                  "batch %d: done, but its results are %d lines: %r" % (k, len(lines),
                                                                          lines[-2:]))


if __name__ == "__main__":
    sys.exit(Suite("stored_crash").run(globals()))
