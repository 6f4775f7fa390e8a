"""End-to-end chaos: workers SIGKILLed at random moments during numeric and image batches
(SPEC §4: every job gets exactly one result or one error; a job whose worker dies fails with
worker_crashed, the signal named, and the rest of its chunk re-runs; the dead worker is
replaced). After each batch: every job answered once, in input order where asked, results
equal to Python's (image results byte-equal to a calm run, sizes equal to Pillow's), errors
only worker_crashed naming a pid this test killed (at most one job per kill), the pool back
to N. At the end the server holds as many fds as before the first kill.

    CHAOS=1            the full run: 1,000 kills (bounded by CHAOS_SECONDS, default 900)
    CHAOS_KILLS=N      another count (default 300, 150 under sanitizers: CI's share)
    CHAOS_SECONDS=S    stop starting batches after S seconds (default 100)
    CHAOS_SEED=N       the random seed (printed; the same seed gives the same plan)
"""
import base64
import io
import math
import os
import random
import re
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import Stream, by_index, loads, ndjson, wait_for  # noqa: E402

FULL = os.environ.get("CHAOS", "0") == "1"
KILLS = int(os.environ.get("CHAOS_KILLS", 1000 if FULL else (150 if SANITIZED else 300)))
SECONDS = float(os.environ.get("CHAOS_SECONDS", 900 if FULL else 100))
SEED = int(os.environ.get("CHAOS_SEED", int(time.time()) % 100000))
NWORKERS = 3

S = None


def server_fds(server):
    return len(os.listdir("/proc/%d/fd" % server.proc.pid))


def ready(server, n, killed=()):
    """Waits until N named workers are up, none of them one in KILLED (a worker just killed
    may not be a zombie yet), and /readyz is 200; returns their pids."""
    def ok():
        pids = server.worker_pids()
        if len(pids) != n or set(pids) & set(killed):
            return None
        status, _, _ = server.request("GET", "/readyz")
        return pids if status == 200 else None
    pids = wait_for(ok, timeout=30)
    check(pids, "the pool did not come back to %d workers: %r" % (n, server.worker_pids()))
    return pids


# ------------------------------------------------------------------ the batches

def numeric_batch(rng):
    """A mixed jobs batch of a few dozen jobs that each take a few ms, and its answers."""
    jobs, want = [], []
    for _ in range(rng.randint(20, 60)):
        k = rng.randrange(5)
        if k == 0:
            ms = rng.randint(2, 25)
            jobs.append({"op": "sleep", "input": ms})
            want.append(ms)
        elif k == 1:
            n, x = rng.randint(50000, 400000), rng.randint(-1000, 1000)
            jobs.append({"op": "cpu_loop", "input": {"n": n, "x": x}})
            want.append(n * (n - 1) // 2 + n * x)
        elif k == 2:
            v = rng.uniform(0, 1e6)
            jobs.append({"op": "sqrt", "input": v})
            want.append(math.sqrt(v))
        elif k == 3:
            v = rng.randint(2, 10 ** 12)
            jobs.append({"op": "prime_factors", "input": v})
            want.append(factors(v))
        else:
            v = rng.randint(0, 10 ** 6)
            jobs.append({"op": "square", "input": v})
            want.append(v * v)
    return {"jobs": jobs}, want


def factors(n):
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1 if d == 2 else 2
    if n > 1:
        out.append(n)
    return out


IMAGES = []     # (base64 input, expected result) made once, from a calm run
IMG_PARAMS = {"pipeline": [{"op": "blur", "sigma": 2}, {"op": "thumbnail", "width": 40,
                                                        "height": 40}], "format": "png",
              "png_level": 1}


def make_images(server):
    from PIL import Image
    rng = random.Random(1)
    for k, (w, h, fmt) in enumerate([(320, 240, "PNG"), (300, 400, "JPEG"), (256, 256, "PNG"),
                                     (400, 200, "JPEG")]):
        im = Image.new("RGB", (w, h))
        im.putdata([((x * 7 + k) % 256, (y * 3) % 256, rng.randrange(256))
                    for y in range(h) for x in range(w)])
        b = io.BytesIO()
        im.save(b, fmt, quality=90)
        ref = im.copy()
        ref.thumbnail((40, 40))
        IMAGES.append((base64.b64encode(b.getvalue()).decode(), ref.size))
    _, lines, _ = ndjson(server, {"op": "image", "params": IMG_PARAMS,
                                  "inputs": [{"data": d} for d, _ in IMAGES]})
    res = by_index(lines, len(IMAGES))
    for i, (d, size) in enumerate(IMAGES):
        r = res[i].get("result")
        check(r is not None and (r["width"], r["height"]) == size,
              "calm image job %d: %r, Pillow says %r" % (i, res[i], size))
        IMAGES[i] = (d, r)


def image_batch(rng):
    picks = [rng.randrange(len(IMAGES)) for _ in range(rng.randint(6, 16))]
    return ({"op": "image", "params": IMG_PARAMS, "inputs": [{"data": IMAGES[p][0]} for p in picks]},
            [IMAGES[p][1] for p in picks])


# ------------------------------------------------------------------ one trial

def trial(rng, killed_all, tally):
    """One batch with kills at random moments. Returns the number of workers killed."""
    ready(S, NWORKERS, killed_all)
    image = rng.random() < 0.35
    batch, want = image_batch(rng) if image else numeric_batch(rng)
    order = rng.choice(["input", "completed"])
    batch.update({"order": order, "chunksize": rng.choice([1, 2, 3, 5, "auto"]),
                  "timing": rng.random() < 0.3})
    n = len(want)
    st = Stream(S, batch, timeout=120)
    check(st.status == 200, st.status)
    raw = []
    reader = threading.Thread(target=lambda: raw.extend(l for _, l in st.lines()))
    reader.start()
    killed = []
    for _ in range(rng.randint(1, 4)):
        time.sleep(rng.uniform(0, 0.12 if image else 0.08))
        if not reader.is_alive():
            break
        pids = [p for p in S.worker_pids() if p not in killed_all]
        if not pids:
            continue
        victim = rng.choice(pids)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(victim)
        killed_all.add(victim)
    reader.join(120)
    st.close()
    check(not reader.is_alive(), "the batch did not end")
    lines = [loads(l) for l in raw]
    res = by_index(lines, n)
    if order == "input":
        idx = [l["index"] for l in lines[:-1]]
        check(idx == sorted(idx), "order input, yet out of order: %r" % idx[:20])
    failed_pids = []
    for i, l in res.items():
        if "error" in l:
            e = l["error"]
            check(e["code"] == "worker_crashed" and "SIGKILL" in e["message"],
                  "job %d: %r (only killed jobs may fail)" % (i, e))
            m = re.search(r"pid (\d+)", e["message"])
            pid = int(m.group(1)) if m else -1 - i  # a message without the pid: count the job
            check(pid < 0 or pid in killed, "job %d failed on pid %d, not one of the killed %r" %
                  (i, pid, killed))
            failed_pids.append(pid)
        elif image:
            check(l["result"] == want[i], "image job %d differs from the calm run" % i)
        else:
            check(l["result"] == want[i], "job %d: %r, Python says %r (%r)" %
                  (i, l["result"], want[i], batch["jobs"][i]))
    check(len(failed_pids) == len(set(failed_pids)) and len(failed_pids) <= len(killed),
          "%d jobs failed for %d kills: %r" % (len(failed_pids), len(killed), failed_pids))
    s = lines[-1]["summary"]
    check(s["failed"] == len(failed_pids), s)
    kind = "image" if image else "numeric"
    tally[kind] = tally.get(kind, 0) + 1
    tally["jobs"] = tally.get("jobs", 0) + n
    tally["failed"] = tally.get("failed", 0) + len(failed_pids)
    return len(killed)


def test_chaos_kills():
    rng = random.Random(SEED)
    print("chaos: seed %d, %d kills, at most %.0f s (CHAOS_SEED=%d reruns this plan)" %
          (SEED, KILLS, SECONDS, SEED), flush=True)
    ready(S, NWORKERS)
    make_images(S)
    ndjson(S, numeric_batch(random.Random(0))[0])
    time.sleep(0.2)
    base_fds = server_fds(S)
    t0 = time.monotonic()
    kills = trials = 0
    killed_all = set()
    tally = {}
    while kills < KILLS and time.monotonic() - t0 < SECONDS:
        kills += trial(rng, killed_all, tally)
        trials += 1
    took = time.monotonic() - t0
    print("chaos: %d kills in %d batches (%d numeric, %d image; %d jobs, %d of them failed "
          "with their killed worker), %.1f s" %
          (kills, trials, tally.get("numeric", 0), tally.get("image", 0), tally.get("jobs", 0),
           tally.get("failed", 0), took), flush=True)
    check(kills >= min(KILLS, 50), "only %d kills in %.0f s" % (kills, took))
    # Healed: N workers, none of them one that was killed, and the same fds as before.
    ready(S, NWORKERS, killed_all)
    fds = wait_for(lambda: server_fds(S) <= base_fds, timeout=10)
    check(fds, "the server holds %d fds, %d before the kills" % (server_fds(S), base_fds))
    # And still answers right.
    batch, want = numeric_batch(random.Random(2))
    _, lines, _ = ndjson(S, batch)
    res = by_index(lines, len(want))
    check(all(res[i].get("result") == want[i] for i in range(len(want))), lines[-1])


if __name__ == "__main__":
    with Server(workers=NWORKERS) as S:
        code = Suite("chaos").run(globals())
    sys.exit(code)
