"""End-to-end through an unlucky network: every request form sent through tests/e2e/segproxy.py,
which re-sends the client's bytes in random pieces of 1..N bytes with pauses (and, in a second
pass, the server's bytes too), must get the same answer as sent directly in one write: JSON
numeric and jobs batches, image batches (base64 inputs, data-dir paths), a chunked request
body, multipart uploads of PNGs and JPEGs, NDJSON, Accept application/json and
application/x-tar, keep-alive, the small endpoints, and refusals (400, 404, 405, 413, 415).

    SEG_SEED=N     the proxies' random seed (printed)
    SEG_ROUNDS=N   send each form N times through each proxy (default 2)
"""
import json
import os
import random
import shutil
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SHARED, Server, Suite, check  # noqa: E402
from client import loads, parse_raw_response  # noqa: E402
from imglib import multipart, untar  # noqa: E402
from segproxy import SegProxy  # noqa: E402

SEED = int(os.environ.get("SEG_SEED", int(time.time()) % 100000))
ROUNDS = int(os.environ.get("SEG_ROUNDS", 2))
DATA = os.path.join(SHARED, "data")
PNGS = ["pngsuite/basn2c08.png", "pngsuite/basi6a08.png", "pngsuite/basn0g16.png",
        "pngsuite/basn3p04.png"]
JPEGS = ["jpeg/libjpeg-turbo/testorig.jpg", "jpeg/pillow/hopper_orientation_6.jpg"]
THUMB = {"pipeline": [{"op": "thumbnail", "width": 24, "height": 24}], "format": "png",
         "png_level": 1}
MAX_BODY = 256 * 1024

S = None
UP = None     # re-chunks client -> server
BOTH = None   # re-chunks both ways


def read(rel):
    with open(os.path.join(DATA, rel), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ raw HTTP, one connection

def exchange(port, raw, timeout=60):
    """Sends RAW (a whole request, Connection: close) and reads the answer until the server
    closes. Returns (status, headers, body)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass  # a refusal may come (and the connection close) before the body is sent
        got = b""
        while True:
            try:
                b = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not b:
                break
            got += b
    finally:
        s.close()
    check(got, "no answer at all")
    return parse_raw_response(got)


def request(method, path, body=b"", headers=None, chunked=False):
    h = {"Host": "127.0.0.1", "Connection": "close"}
    h.update(headers or {})
    if chunked:
        h["Transfer-Encoding"] = "chunked"
        rng = random.Random(len(body))
        out, i = b"", 0
        while i < len(body):
            n = rng.randint(1, 300)
            out += b"%x\r\n%s\r\n" % (len(body[i:i + n]), body[i:i + n])
            i += n
        body = out + b"0\r\n\r\n"
    elif (body or method == "POST") and "Content-Length" not in h:
        h["Content-Length"] = str(len(body))
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join(
        "%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    return head.encode() + body


def post_json(batch, accept=None, chunked=False):
    h = {"Content-Type": "application/json"}
    if accept:
        h["Accept"] = accept
    return request("POST", "/v1/batches", json.dumps(batch).encode(), h, chunked)


# ------------------------------------------------------------------ what must be equal

VARYING = {"elapsed_ms", "busy_ms", "request_id", "batch", "chunksize", "workers"}


def summary(s):
    return {k: v for k, v in s.items() if k not in VARYING}


def normal(status, hdrs, body):
    """What must not depend on how the bytes travelled: the status, the content type and the
    answer, with timings and ids left out and completion order sorted."""
    ctype = hdrs.get("content-type", "").split(";")[0]
    if status != 200:
        try:
            e = loads(body)["error"]
            return status, ctype, {"code": e.get("code"), "path": e.get("path")}
        except (ValueError, KeyError, TypeError):
            return status, ctype, body[:200]
    if ctype == "application/x-ndjson":
        check(body.endswith(b"\n"), "the stream does not end with a newline")
        lines = [loads(l) for l in body.decode().split("\n") if l]
        check(lines and "summary" in lines[-1], "no summary last: %r" % lines[-2:])
        res = sorted((l for l in lines[:-1] if "index" in l), key=lambda l: l["index"])
        idx = [l["index"] for l in res]
        check(len(idx) == len(set(idx)), "an index answered twice: %r" % idx)
        return status, ctype, (res, summary(lines[-1]["summary"]))
    if ctype == "application/json":
        doc = loads(body)
        if isinstance(doc, dict) and "results" in doc:
            return status, ctype, (doc["results"], summary(doc["summary"]))
        return status, ctype, doc
    if ctype == "application/x-tar":
        members = dict(untar(body))
        s = members.pop("summary.json", None)
        errs = sorted(members.pop("errors.ndjson", b"").decode().splitlines())
        return status, ctype, (members, errs, summary(loads(s)["summary"] if s and b'"summary"' in s
                                                      else loads(s or b"{}")))
    return status, ctype, body


def same_everywhere(name, raw, want_status=200, njobs=None, rounds=None):
    """RAW's answer directly, then ROUNDS times through each proxy: all equal."""
    direct = normal(*exchange(S.port, raw))
    check(direct[0] == want_status, "%s: direct status %r: %r" % (name, direct[0],
                                                                 str(direct[2])[:300]))
    if njobs is not None and direct[1] == "application/x-ndjson":
        check(len(direct[2][0]) == njobs, "%s: %d answers direct" % (name, len(direct[2][0])))
    for proxy, how in ((UP, "client->server pieces"), (BOTH, "pieces both ways")):
        for r in range(rounds or ROUNDS):
            got = normal(*exchange(proxy.port, raw))
            if got != direct:
                raise AssertionError("%s, %s, round %d: differs from the direct answer:\n"
                                     "  direct: %s\n  proxied: %s" %
                                     (name, how, r, str(direct)[:600], str(got)[:600]))
    return direct


# ------------------------------------------------------------------ the forms

def test_numeric_batches():
    same_everywhere("sqrt", post_json({"op": "sqrt", "inputs": [4, 9, 2, -1, "x", 1e300]}),
                    njobs=6)
    same_everywhere("square completed", post_json({"op": "square", "inputs": list(range(300)),
                                                   "order": "completed", "chunksize": 7}),
                    njobs=300)
    same_everywhere("is_prime json", post_json({"op": "is_prime", "inputs": [97, 98, 2 ** 61 - 1]},
                                               accept="application/json"))
    same_everywhere("stats chunked body", post_json({"op": "stats", "inputs": [[1, 2, 3.5]] * 50},
                                                    chunked=True), njobs=50)


def test_jobs_batches():
    jobs = [{"op": "sort", "input": [3, 1, 2], "params": {"reverse": True}},
            {"op": "factorial", "input": 20}, {"op": "factorial", "input": 21},
            {"op": "prime_factors", "input": 600851475143}, {"op": "mean", "input": []},
            {"op": "collatz_steps", "input": 27}, {"op": "fibonacci", "input": 92}]
    same_everywhere("jobs", post_json({"jobs": jobs}), njobs=len(jobs))
    same_everywhere("jobs json", post_json({"jobs": jobs, "order": "completed"},
                                           accept="application/json"))


def image_inputs():
    import base64
    return [{"data": base64.b64encode(read(p)).decode()} for p in PNGS + JPEGS]


def test_image_base64():
    ins = image_inputs() + [{"data": "bm90IGFuIGltYWdl"}]  # the last: not an image
    same_everywhere("image base64", post_json({"op": "image", "params": THUMB, "inputs": ins}),
                    njobs=len(ins))
    same_everywhere("image base64 json", post_json({"op": "image", "params": THUMB,
                                                    "inputs": ins[:3]},
                                                   accept="application/json"))
    same_everywhere("image base64 tar", post_json({"op": "image", "params": THUMB,
                                                   "inputs": ins, "order": "completed"},
                                                  accept="application/x-tar"))


def test_image_data_dir_paths():
    ins = [{"path": os.path.basename(p)} for p in PNGS + JPEGS] + [{"path": "../etc/passwd"},
                                                                   {"path": "missing.png"}]
    same_everywhere("image paths", post_json({"op": "image", "params": THUMB, "inputs": ins}),
                    njobs=len(ins))
    same_everywhere("image paths tar", post_json({"op": "image", "params": THUMB, "inputs": ins},
                                                 accept="application/x-tar"))


def multipart_request(accept=None, order="input"):
    files = [(os.path.basename(p), read(p)) for p in PNGS + JPEGS] + [("junk.bin", b"junk")]
    body, ctype = multipart({"op": "image", "params": THUMB, "order": order}, files)
    h = {"Content-Type": ctype}
    if accept:
        h["Accept"] = accept
    return request("POST", "/v1/batches", body, h), len(files)


def test_multipart_upload_defect1():
    # More rounds: a random cut lands just after a part's headers often, not always.
    raw, n = multipart_request()
    same_everywhere("multipart", raw, njobs=n, rounds=3 * ROUNDS)
    raw, n = multipart_request(accept="application/x-tar", order="completed")
    same_everywhere("multipart tar", raw)
    raw, n = multipart_request(accept="application/json")
    same_everywhere("multipart json", raw)


def test_small_endpoints_and_keep_alive():
    for path in ("/healthz", "/readyz", "/v1/ops"):
        same_everywhere(path, request("GET", path))
    # Several requests on one kept-alive connection, through the proxy both ways.
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", BOTH.port, timeout=60)
    try:
        for k in range(5):
            c.request("POST", "/v1/batches", body=json.dumps({"op": "cube", "inputs": [k, k + 1]}),
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            lines = [loads(l) for l in r.read().decode().splitlines() if l]
            check(r.status == 200 and [l.get("result") for l in lines[:-1]] ==
                  [k ** 3, (k + 1) ** 3], (k, r.status, lines))
    finally:
        c.close()


def test_refusals():
    same_everywhere("bad json", request("POST", "/v1/batches", b'{"op": "sqrt", "inputs": [1,',
                                        {"Content-Type": "application/json"}), 400)
    same_everywhere("unknown op", post_json({"op": "nope", "inputs": [1]}), 400)
    same_everywhere("both inputs and jobs", post_json({"op": "sqrt", "inputs": [1], "jobs": []}),
                    400)
    same_everywhere("bad param", post_json({"op": "image", "params": {"pipeline": [
        {"op": "blur", "sigma": -1}]}, "inputs": [{"path": "x.png"}]}), 400)
    # Refusals that may come before the body is read carry none (see "body too large").
    same_everywhere("wrong content type", request("POST", "/v1/batches", b"",
                                                  {"Content-Type": "text/plain"}), 415)
    same_everywhere("unknown path", request("GET", "/v2/nothing"), 404)
    same_everywhere("wrong method", request("PUT", "/v1/batches", b"",
                                            {"Content-Type": "application/json",
                                             "Content-Length": "0"}), 405)
    # Refused from the headers alone: no body is sent, so the close that follows the answer
    # cannot turn into a reset that loses it.
    same_everywhere("body too large", request("POST", "/v1/batches", b"", {
        "Content-Type": "application/json", "Content-Length": str(MAX_BODY + 1)}), 413)


def test_zz_proxy_did_cut():
    """The proxies really cut: many more pieces than requests."""
    check(UP.pieces_up > 50 * UP.connections, (UP.pieces_up, UP.connections))
    check(BOTH.pieces_down > 10 * BOTH.connections, (BOTH.pieces_down, BOTH.connections))
    check(not UP.errors and not BOTH.errors, UP.errors + BOTH.errors)
    print("segmented: seed %d, %d pieces up over %d connections; %d/%d up/down over %d" %
          (SEED, UP.pieces_up, UP.connections, BOTH.pieces_up, BOTH.pieces_down,
           BOTH.connections), flush=True)


if __name__ == "__main__":
    print("segmented: SEG_SEED=%d" % SEED, flush=True)
    data_dir = tempfile.mkdtemp(prefix="batchd-seg-")
    try:
        for p in PNGS + JPEGS:
            shutil.copy(os.path.join(DATA, p), data_dir)
        with Server(workers=2, args=["--data-dir", data_dir, "--max-body", str(MAX_BODY)]) as S, \
                SegProxy(S.port, max_piece=48, seed=SEED) as UP, \
                SegProxy(S.port, max_piece=48, down=True, down_max_piece=200,
                         seed=SEED + 1) as BOTH:
            # test_zz_proxy_did_cut sorts last (Suite runs tests by name).
            code = Suite("segmented").run(globals())
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    sys.exit(code)
