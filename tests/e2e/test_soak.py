"""End-to-end soak: wrk POSTing numeric batches on kept-alive connections (tests/e2e/soak.lua
checks every answer), while Python clients run image batches (base64 and multipart uploads,
results byte-equal to a calm run), hang up mid-stream, and read big streams slowly. Before
and after: the server's RSS, its open fds and its shared memory (fds that link to /memfd:)
must come back to their baseline (generous bounds), and it must still answer right.

    SOAK_SECONDS=N    how long the load runs (default 60; 30 under sanitizers)
    SOAK_WRK_CONN=N   wrk's connections (default 6)
Skips (exit 77, "skipped") when wrk is not installed (Debian package wrk)."""
import base64
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import by_index, loads, ndjson, parse_raw_response, queue_idle, wait_for  # noqa: E402
from imglib import multipart  # noqa: E402

SECONDS = float(os.environ.get("SOAK_SECONDS", 30 if SANITIZED else 60))
WRK_CONN = int(os.environ.get("SOAK_WRK_CONN", 6))
LUA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak.lua")
WRK = shutil.which("wrk")
MB = 1024 * 1024

S = None


# ------------------------------------------------------------------ what the server holds

def usage(server):
    """(RSS bytes, open fds, memfds) of the server process."""
    pid = server.proc.pid
    rss = 0
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    fds = memfds = 0
    d = "/proc/%d/fd" % pid
    for name in os.listdir(d):
        try:
            target = os.readlink(os.path.join(d, name))
        except OSError:
            continue
        fds += 1
        memfds += target.startswith("/memfd:")
    return rss, fds, memfds


# ------------------------------------------------------------------ the Python clients

IMAGES = []  # (name, bytes, calm result)
PARAMS = {"pipeline": [{"op": "thumbnail", "width": 32, "height": 32}], "format": "png",
          "png_level": 1}


def make_images():
    from PIL import Image
    rng = random.Random(3)
    out = []
    for k, (w, h, fmt) in enumerate([(200, 150, "PNG"), (180, 240, "JPEG"), (128, 128, "PNG")]):
        im = Image.new("RGB", (w, h))
        im.putdata([((x + k * 50) % 256, (x * y) % 256, rng.randrange(256))
                    for y in range(h) for x in range(w)])
        b = io.BytesIO()
        im.save(b, fmt)
        out.append(("img%d.%s" % (k, fmt.lower()), b.getvalue()))
    _, lines, _ = ndjson(S, {"op": "image", "params": PARAMS,
                             "inputs": [{"data": base64.b64encode(d).decode()} for _, d in out]})
    res = by_index(lines, len(out))
    for i, (name, data) in enumerate(out):
        check("result" in res[i], res[i])
        IMAGES.append((name, data, res[i]["result"]))


def image_client(rng):
    picks = [rng.randrange(len(IMAGES)) for _ in range(rng.randint(2, 8))]
    if rng.random() < 0.5:
        body = json.dumps({"op": "image", "params": PARAMS, "order": "completed",
                           "inputs": [{"data": base64.b64encode(IMAGES[p][1]).decode()}
                                      for p in picks]})
        ctype = "application/json"
    else:
        body, ctype = multipart({"op": "image", "params": PARAMS},
                                [(IMAGES[p][0], IMAGES[p][1]) for p in picks])
    status, _, data = S.request("POST", "/v1/batches", body=body,
                                headers={"Content-Type": ctype}, timeout=120)
    check(status == 200, (status, data[:200]))
    lines = [loads(l) for l in data.decode().splitlines() if l]
    res = by_index(lines, len(picks))
    for i, p in enumerate(picks):
        check(res[i].get("result") == IMAGES[p][2], "image job %d differs: %r" %
              (i, str(res[i])[:200]))


def raw_post(batch, rcvbuf=None):
    body = json.dumps(batch).encode()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(60)
    s.connect(("127.0.0.1", S.port))
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
              b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


def hangup_client(rng):
    """Hangs up before the answer, after the headers, or after some results."""
    batch = rng.choice([{"op": "sleep", "inputs": [3] * 200, "chunksize": 2},
                        {"op": "square", "inputs": list(range(100000))},
                        {"op": "image", "params": PARAMS, "inputs": [
                            {"data": base64.b64encode(IMAGES[0][1]).decode()}] * 20}])
    s = raw_post(batch)
    try:
        when = rng.choice(["before", "headers", "results"])
        if when != "before":
            got = b""
            want = b"\r\n\r\n" if when == "headers" else b'"index"'
            while want not in got:
                b = s.recv(4096)
                if not b:
                    break
                got += b
    finally:
        s.close()


def slow_reader(rng):
    """Reads a big stream slowly for a while, then either leaves or reads it all (and checks)."""
    n = 20000 if SANITIZED else 100000
    s = raw_post({"op": "square", "inputs": list(range(n)), "order": rng.choice(
        ["input", "completed"])}, rcvbuf=4096)
    try:
        got = b""
        t_end = time.monotonic() + rng.uniform(1, 3)
        while time.monotonic() < t_end:
            b = s.recv(2048)
            if not b:
                break
            got += b
            time.sleep(0.02)
        if rng.random() < 0.5:
            return  # leaves mid-stream
        while not got.endswith(b"\r\n0\r\n\r\n"):  # the chunked stream's last chunk
            b = s.recv(1 << 20)
            if not b:
                break
            got += b
        status, _, body = parse_raw_response(got)
        lines = [loads(l) for l in body.decode().splitlines() if l]
        check(status == 200, status)
        res = by_index(lines, n)
        check(all(res[i]["result"] == i * i for i in range(0, n, 997)), "slow reader: wrong")
    finally:
        s.close()


def loop(fn, seed, stop, errors, counts):
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            fn(rng)
            counts[fn.__name__] = counts.get(fn.__name__, 0) + 1
        except Exception as e:  # noqa: BLE001 - collected, reported at the end
            errors.append("%s: %r" % (fn.__name__, e))
            time.sleep(0.2)


# ------------------------------------------------------------------ the soak

def run_wrk(seconds):
    cmd = [WRK, "-t2", "-c%d" % WRK_CONN, "-d%ds" % max(1, int(seconds)), "--timeout", "60s",
           "-s", LUA, "http://127.0.0.1:%d/v1/batches" % S.port]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    line = [l for l in p.stdout.splitlines() if l.startswith("soak-wrk:")]
    check(p.returncode == 0 and line, "wrk failed (%d): %s %s" % (p.returncode, p.stdout,
                                                                 p.stderr))
    fields = dict(kv.split("=", 1) for kv in line[0].split()[1:4])
    return line[0], int(fields["requests"]), int(fields["bad"]), int(fields["errors"])


def test_soak():
    make_images()
    # Warm up every path once, then take the baseline when the server is idle.
    rng = random.Random(0)
    run_wrk(2)
    for fn in (image_client, hangup_client, slow_reader):
        fn(rng)
    check(wait_for(lambda: queue_idle(S), 20), "not idle after the warm-up")
    time.sleep(1)
    base = usage(S)
    print("soak: baseline RSS %.1f MB, %d fds, %d memfds; %d s of load" %
          (base[0] / MB, base[1], base[2], SECONDS), flush=True)

    stop = threading.Event()
    errors, counts, peak = [], {}, list(base)

    def sample():
        while not stop.is_set():
            u = usage(S)
            for i in range(3):
                peak[i] = max(peak[i], u[i])
            time.sleep(0.5)

    threads = [threading.Thread(target=sample)]
    for k, fn in enumerate([image_client, image_client, hangup_client, hangup_client,
                            slow_reader, slow_reader]):
        threads.append(threading.Thread(target=loop, args=(fn, 100 + k, stop, errors, counts)))
    for t in threads:
        t.start()
    try:
        line, requests, bad, wrk_errors = run_wrk(SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    print("soak: %s" % line, flush=True)
    print("soak: python clients %r; peak RSS %.1f MB, %d fds, %d memfds" %
          (counts, peak[0] / MB, peak[1], peak[2]), flush=True)
    check(not any(t.is_alive() for t in threads), "a client is stuck")
    check(not errors, "client errors: %r" % errors[:5])
    check(requests > 0 and bad == 0 and wrk_errors == 0,
          "wrk: %d requests, %d bad answers, %d errors" % (requests, bad, wrk_errors))
    check(counts.get("image_client", 0) >= 2 and counts.get("slow_reader", 0) >= 2, counts)

    # Back to the baseline: RSS within a generous bound (allocators keep some; ASan keeps a
    # quarantine), the same fds, no shared memory left.
    check(wait_for(lambda: queue_idle(S), 30), "not idle after the soak")
    rss_bound = base[0] + (512 if SANITIZED else 96) * MB

    def settled():
        u = usage(S)
        return u if u[0] <= rss_bound and u[1] <= base[1] + 2 and u[2] <= base[2] else None

    end = wait_for(settled, timeout=30, step=0.5)
    now = usage(S)
    print("soak: after RSS %.1f MB, %d fds, %d memfds" % (now[0] / MB, now[1], now[2]),
          flush=True)
    check(end, "not back to the baseline: RSS %.1f MB (bound %.1f), fds %d (baseline %d), "
               "memfds %d (baseline %d)" % (now[0] / MB, rss_bound / MB, now[1], base[1],
                                            now[2], base[2]))
    # Still right.
    _, lines, _ = ndjson(S, {"op": "square", "inputs": list(range(1000))})
    res = by_index(lines, 1000)
    check(all(res[i]["result"] == i * i for i in range(1000)), lines[-1])
    image_client(random.Random(9))


if __name__ == "__main__":
    if WRK is None:
        print("soak: skipped: wrk is not installed (Debian package wrk; tests/run-all.sh "
              "installs it)")
        print("soak: 0 passed, 0 failed, 1 skipped")
        sys.exit(77)
    with Server(workers=2) as S:
        code = Suite("soak").run(globals())
    sys.exit(code)
