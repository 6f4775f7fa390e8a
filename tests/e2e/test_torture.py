"""Allocation-failure torture (curl's torture mode; issue 8). Needs a build with
BATCHD_TORTURE (on by default in Debug builds, so in the ASan build); elsewhere it exits 77.

Server side: one server, and for N = 1, 2, ... each request carries X-Batchd-Fail-Alloc: N,
which makes the server's Nth allocation from the start of that request fail (api/torture.h);
the loop ends at the first N that the request does not reach. Worker side: for each N a
server with BATCHD_WORKER_FAIL_ALLOC_AT=N, whose workers fail the Nth allocation of every
chunk. Six requests each: a numeric batch (NDJSON and the JSON document), an image batch
(base64 PNG), the jobs form with per-job params, and a multipart upload (NDJSON and tar).

Every answer must be the right result, a 5xx JSON error, a 200 whose failed jobs carry an
error that says memory (internal_error, or the image code's too_large "out of memory"), or
a stream cut after its 200 (no summary: SPEC's signal for it). Never a wrong result, a 4xx
(out of memory is not the client's fault; the known exceptions are listed in judge()), a
dropped connection (except for the request's own first allocation), a hang or a crash.
The server must answer /healthz after each, serve every request correctly at the end, and
exit 0 on SIGTERM with no LeakSanitizer report (the harness checks the log and exit code).

Every N is run by default: the six requests make 23 to 110 allocations each on the server
side and 2 to 71 per chunk on the worker side, about 30 s in all under ASan.
TORTURE_STRIDE / TORTURE_WORKER_STRIDE step N for a quicker sample, TORTURE_WORKER_MAX caps
the worker loop (400); TORTURE=1 forces stride 1 and no cap."""
import base64
import http.client
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SHARED, Server, Suite, check  # noqa: E402
from imglib import untar  # noqa: E402

if os.environ.get("BATCHD_TORTURE", "0") not in ("1", "ON", "TRUE", "true"):
    print("torture: not a BATCHD_TORTURE build, skipped")
    sys.exit(77)

ALL = os.environ.get("TORTURE") == "1"
STRIDE = 1 if ALL else int(os.environ.get("TORTURE_STRIDE", "1"))
WORKER_STRIDE = 1 if ALL else int(os.environ.get("TORTURE_WORKER_STRIDE", "1"))
WORKER_MAX = 100000 if ALL else int(os.environ.get("TORTURE_WORKER_MAX", "400"))
SERVER_MAX = 100000  # a safety net only: the loop ends when a request stops reaching N
TIMEOUT = 30         # seconds for one request: far above any answer, so a hang is a hang

opts = os.environ.get("ASAN_OPTIONS", "")
if "detect_leaks" not in opts:
    os.environ["ASAN_OPTIONS"] = (opts + ":" if opts else "") + "detect_leaks=1"

FAIL_RE = re.compile(r"batchd-torture: pid (\d+) fails allocation (\d+) \((\w+), (\d+) bytes\)")
PNG = os.path.join(SHARED, "data", "pngsuite", "basn2c08.png")
with open(PNG, "rb") as f:
    PNG_BYTES = f.read()
THUMB = {"pipeline": [{"op": "thumbnail", "width": 16, "height": 16}], "format": "png",
         "auto_orient": False}
BOUNDARY = "batchd-torture-boundary"


NDJSON, JSON, TAR = None, "application/json", "application/x-tar"


def numeric_request():
    body = json.dumps({"op": "sqrt", "inputs": [4, 9, 16, 25]}).encode()
    return body, "application/json", NDJSON


def numeric_json_request():
    body = json.dumps({"op": "sqrt", "inputs": [4, 2.25, 16]}).encode()
    return body, "application/json", JSON


def image_request():
    b = {"op": "image", "params": THUMB,
         "inputs": [{"data": base64.b64encode(PNG_BYTES).decode()}] * 2}
    return json.dumps(b).encode(), "application/json", NDJSON


def jobs_request():
    """The jobs form, one job's params over the batch's."""
    small = {"pipeline": [{"op": "thumbnail", "width": 8, "height": 8}]}
    b = {"params": THUMB, "jobs": [
        {"op": "image", "input": {"data": base64.b64encode(PNG_BYTES).decode()}},
        {"op": "image", "input": {"data": base64.b64encode(PNG_BYTES).decode()},
         "params": small}]}
    return json.dumps(b).encode(), "application/json", NDJSON


def upload_tar_request():
    body, ctype, _ = upload_request()
    return body, ctype, TAR


def upload_request():
    batch = json.dumps({"op": "image", "params": THUMB}).encode()
    parts = [b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; name=\"batch\"\r\n"
             b"Content-Type: application/json\r\n\r\n" + batch + b"\r\n"]
    for name in ("a.png", "b.png"):
        parts.append(b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: form-data; "
                     b"name=\"file\"; filename=\"" + name.encode() + b"\"\r\n"
                     b"Content-Type: image/png\r\n\r\n" + PNG_BYTES + b"\r\n")
    parts.append(b"--" + BOUNDARY.encode() + b"--\r\n")
    return b"".join(parts), "multipart/form-data; boundary=" + BOUNDARY, NDJSON


SCENARIOS = [("numeric", numeric_request), ("numeric_json", numeric_json_request),
             ("image", image_request), ("jobs", jobs_request), ("upload", upload_request),
             ("upload_tar", upload_tar_request)]


def send(s, body, ctype, accept, n=None):
    """POSTs a batch, N as X-Batchd-Fail-Alloc (None: no header). Returns (kind, detail,
    lines): kind "answer" with (status, headers, bytes), or "dropped"/"cut"/"timeout"."""
    c = http.client.HTTPConnection("127.0.0.1", s.port, timeout=TIMEOUT)
    h = {"Content-Type": ctype}
    if accept:
        h["Accept"] = accept
    if n is not None:
        h["X-Batchd-Fail-Alloc"] = str(n)
    try:
        c.request("POST", "/v1/batches", body=body, headers=h)
        r = c.getresponse()
        try:
            data = r.read()
        except http.client.IncompleteRead as e:
            return "cut", (r.status, e.partial[-300:])
        return "answer", (r.status, {k.lower(): v for k, v in r.getheaders()}, data)
    except TimeoutError:
        return "timeout", None
    except (http.client.RemoteDisconnected, ConnectionError) as e:
        return "dropped", repr(e)
    finally:
        c.close()


def results_of(data, accept=NDJSON):
    """{index: result or ("error", code, message)} and the summary of an answer in the
    ACCEPTed format, or None when it is not whole (no summary last)."""
    if accept == JSON:
        try:
            doc = json.loads(data)
            out = {}
            for i, l in enumerate(doc["results"]):
                out[i] = (("error", l["error"].get("code"), l["error"].get("message", ""))
                          if "error" in l else l["result"])
            return out, doc["summary"]
        except (ValueError, KeyError, TypeError):
            return None
    if accept == TAR:
        try:
            members = untar(data)
        except Exception:  # noqa: BLE001 - a broken tar is a bad answer
            return None
        names = [m for m, _ in members]
        if names[-2:] != ["errors.ndjson", "summary.json"]:
            return None
        out = {}
        index = {"a.png": 0, "b.png": 1}
        for m, content in members[:-2]:
            out[index.get(m, m)] = content
        for l in members[-2][1].decode().splitlines():
            e = json.loads(l)
            out[e["index"]] = ("error", e["error"].get("code"), e["error"].get("message", ""))
        return out, json.loads(members[-1][1])
    try:
        lines = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
    except ValueError:
        return None
    if not lines or "summary" not in lines[-1]:
        return None
    out = {}
    for l in lines[:-1]:
        if "error" in l:
            out[l["index"]] = ("error", l["error"].get("code"), l["error"].get("message", ""))
        else:
            out[l["index"]] = l.get("result")
    return out, lines[-1]["summary"]


# Per-job codes that an allocation failure may honestly give (the server's or the worker's
# fault, never the input's).
OOM_JOB_CODES = {"internal_error", "out_of_memory", "worker_crashed", "resource_exhausted"}


def judge(kind, detail, want, accept, n=None, what=None):
    """'ok' (the right results), 'error' (an honest error answer), 'tolerated' (a known
    misreport, see below) or a string saying what is wrong. N and WHAT: the allocation that
    failed (WHAT None: none did)."""
    if kind == "cut":
        # The 200 went out before the failure: a stream that ends with an error and no
        # summary is the honest signal left (SPEC §3: "a stream that ends without it was
        # cut off").
        return "error"
    if kind == "dropped" and n == 1 and what == "calloc":
        # The request's own struct: without it there is nothing to answer with, and
        # libmicrohttpd closes the connection (MHD_NO). The one place this is accepted.
        return "error"
    if kind != "answer":
        return "%s %r" % (kind, detail)
    status, hdrs, data = detail
    if status == 413 and what == "realloc" and b'"body_too_large"' in data:
        # KNOWN (server/upload.c, being rewritten as server/multipart.c): a body buffer that
        # could not grow is reported as past --max-body.
        return "tolerated"
    if status >= 500:
        try:
            doc = json.loads(data)
        except ValueError:
            return "%d without a JSON body: %r" % (status, data[:200])
        if set(doc) != {"error"} or "code" not in doc["error"]:
            return "%d, body %r" % (status, data[:200])
        return "error"
    if status != 200:
        return "%d %r" % (status, data[:300])
    got = results_of(data, accept)
    if got is None:
        return "200 answer not whole (no summary): %r" % data[-300:]
    res, summary = got
    if (accept == TAR and what == "strdup" and summary.get("jobs") == len(want) and
            len(res) == len(want) and any(isinstance(k, str) for k in res)):
        # KNOWN (server/upload.c, being rewritten as server/multipart.c): a file name whose
        # strdup failed is dropped, and the member is named by its index ("0.png").
        return "tolerated"
    if set(res) != set(want) or summary.get("jobs") != len(want):
        return "200 with indices %r, summary %r" % (sorted(map(str, res)), summary)
    failed = 0
    for i, v in res.items():
        if isinstance(v, tuple):
            failed += 1
            # The image code reports a pixel buffer it could not get as too_large (under
            # the worker's RLIMIT_AS that is what it usually is), saying "out of memory".
            oom_too_large = v[1] == "too_large" and "out of memory" in v[2]
            if v[1] not in OOM_JOB_CODES and not oom_too_large:
                return "job %d failed with %r %r" % (i, v[1], v[2])
        elif v != want[i]:
            return "job %d: %r, want %r" % (i, v, want[i])
    return "error" if failed else "ok"


def healthy(s, what):
    """The server is alive and serves (the probe disarms the counter)."""
    check(s.proc.poll() is None, "%s: the server died (exit %r):\n%s" %
          (what, s.proc.returncode, "\n".join(s.log_lines[-60:])))
    status, _, _ = s.request("GET", "/healthz", headers={"X-Batchd-Fail-Alloc": "0"},
                             timeout=TIMEOUT)
    check(status == 200, "%s: /healthz answered %d" % (what, status))


def fired(s, mark, n, pids=None):
    """What allocation N was ("malloc", "strdup", ...) if the log since line MARK says it
    failed (in one of PIDS if given), else None."""
    for line in s.log_lines[mark:]:
        m = FAIL_RE.search(line)
        if m and int(m.group(2)) == n and (pids is None or int(m.group(1)) in pids):
            return m.group(3)
    return None


def fired_wait(s, mark, n, pids=None):
    """fired(), giving the log reader up to 1 s (a loaded machine) before saying None."""
    end = time.time() + 1.0
    while True:
        what = fired(s, mark, n, pids)
        if what is not None or time.time() > end:
            return what
        time.sleep(0.02)


def baseline(s):
    want = {}
    for name, make in SCENARIOS:
        body, ctype, accept = make()
        kind, detail = send(s, body, ctype, accept)
        check(kind == "answer" and detail[0] == 200, (name, kind, str(detail)[:300]))
        got = results_of(detail[2], accept)
        check(got is not None and got[1]["failed"] == 0, (name, detail[2][-300:]))
        want[name] = got[0]
    return want


def report(side, counts, bad):
    for name, c in counts.items():
        print("torture %s %s: %s" % (side, name, c), flush=True)
    check(not bad, "%d bad answers, e.g.:\n%s" % (len(bad), "\n".join(bad[:12])))


def test_server_side():
    """One server; N over each request's server-side allocations."""
    bad = []
    counts = {}
    with Server(workers=1) as s:
        want = baseline(s)
        for name, make in SCENARIOS:
            body, ctype, accept = make()
            c = counts[name] = {"ok": 0, "error": 0, "tolerated": 0, "bad": 0,
                                "allocations": 0}
            n = 1
            while n < SERVER_MAX:
                mark = len(s.log_lines)
                kind, detail = send(s, body, ctype, accept, n)
                time.sleep(0.005)
                reached = fired(s, mark, n, {s.proc.pid})
                healthy(s, "%s N=%d" % (name, n))
                if not reached:
                    reached = fired_wait(s, mark, n, {s.proc.pid})
                verdict = judge(kind, detail, want[name], accept, n, reached)
                if verdict in c:
                    c[verdict] += 1
                else:
                    c["bad"] += 1
                    bad.append("server %s N=%d (%s): %s" % (name, n, reached, verdict[:300]))
                if not reached:
                    if verdict != "ok":
                        bad.append("server %s N=%d: no allocation failed, yet %s" %
                                   (name, n, verdict))
                    c["allocations"] = n - 1
                    break
                n += STRIDE
        # Still serving, and right, after all that.
        check(baseline(s) == want, "the answers changed after the torture")
    report("server", counts, bad)


def test_worker_side():
    """For each N a server whose workers fail the Nth allocation of every chunk."""
    bad = []
    counts = {name: {"ok": 0, "error": 0, "tolerated": 0, "bad": 0, "allocations": None}
              for name, _ in SCENARIOS}
    with Server(workers=1) as s:
        want = baseline(s)
    live = [name for name, _ in SCENARIOS]
    n = 1
    while live and n <= WORKER_MAX:
        with Server(workers=1, env={"BATCHD_WORKER_FAIL_ALLOC_AT": str(n)}) as s:
            for name, make in SCENARIOS:
                if name not in live:
                    continue
                mark = len(s.log_lines)
                body, ctype, accept = make()
                kind, detail = send(s, body, ctype, accept)
                time.sleep(0.005)
                reached = fired(s, mark, n)
                healthy(s, "worker %s N=%d" % (name, n))
                if not reached:
                    reached = fired_wait(s, mark, n)
                verdict = judge(kind, detail, want[name], accept)
                c = counts[name]
                if verdict in c:
                    c[verdict] += 1
                else:
                    c["bad"] += 1
                    bad.append("worker %s N=%d (%s): %s" % (name, n, reached, verdict[:300]))
                if not reached:
                    c["allocations"] = n - 1
                    live.remove(name)
        n += WORKER_STRIDE
    report("worker", counts, bad)


if __name__ == "__main__":
    sys.exit(Suite("torture").run(globals()))
