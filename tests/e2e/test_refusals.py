"""End-to-end: every refusal of SPEC §2-3, each with the JSON error body
{"error": {"code", "message", "path"?}}, X-Request-Id on every response (given or made up),
and a server that still serves after each refusal."""
import json
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402
from client import Stream, by_index, loads, ndjson, parse_raw_response, post, raw_request  # noqa: E402

S = None        # default limits, 2 workers
SMALL = None    # --max-jobs 100 --max-body 8192
ONE = None      # 1 worker, --max-queued-jobs 20 --max-batches 2

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def check_error(status, hdrs, data, want_status, code=None, path=None, what=""):
    """Checks one refusal; returns the error object."""
    what = what or "%d %s" % (want_status, code)
    check(status == want_status, "%s: status %d, body %r" % (what, status, data[:300]))
    check(hdrs.get("content-type", "").startswith("application/json"), (what, hdrs))
    check(hdrs.get("x-request-id"), "%s: no X-Request-Id" % what)
    doc = loads(data)
    check(set(doc) == {"error"}, (what, doc))
    e = doc["error"]
    check(set(e) <= {"code", "message", "path"} and {"code", "message"} <= set(e), (what, e))
    check(isinstance(e["code"], str) and SNAKE.match(e["code"]), (what, e))
    check(isinstance(e["message"], str) and e["message"], (what, e))
    if code is not None:
        check(e["code"] == code, "%s: code %r" % (what, e))
    if path is not None:
        check(e.get("path") == path, "%s: path %r, want %r" % (what, e.get("path"), path))
    if "path" in e:
        check(isinstance(e["path"], str) and e["path"], (what, e))
    return e


def still_serves(server=None):
    server = server or S
    _, lines, _ = ndjson(server, {"op": "square", "inputs": [1, 2, 3]})
    res = by_index(lines, 3)
    check([res[i]["result"] for i in range(3)] == [1, 4, 9], res)


def refused(batch, want_status, code=None, path=None, server=None, **kw):
    server = server or S
    status, hdrs, data = post(server, batch, **kw)
    e = check_error(status, hdrs, data, want_status, code, path, what="batch %r" % (batch,))
    still_serves(server)
    return e


# ------------------------------------------------------------------ malformed batches

def test_bad_json():
    for body in ['{"op": "square", "inputs": [1, 2]', '{"op": "square" "inputs": [1]}',
                 '{"op": "square", "inputs": [1]} trailing', "", "   ", "nul",
                 '{"op": "square", "inputs": [NaN]}', '{"op": "square", "inputs": [1,]}',
                 "{'op': 'square'}", '\xff\xfe{}', '{"op": "square", "inputs": [1e400]}']:
        refused(body.encode("latin-1"), 400, "invalid_json")


def test_raw_nul_and_empty_body():
    """A raw NUL byte is never JSON (jansson's reader used to skip it: [4\\0] ran as [4]);
    the refusal names where it is. An empty body says so, not "line -1: wrong arguments"."""
    pad = " " * 70   # long enough for the integer fast path
    for body, line, col in [(b'{"op": "sqrt", "inputs": [4\0]}' + pad.encode(), 1, 28),
                            (b'{"op": "sqrt",' + pad.encode() + b'\n"inputs": [4, 9\0, 16]}', 2, 16),
                            (b'{"op": "sqrt", "inputs": [4], "timeout_ms": 100\0}', 1, 48),
                            (b'{"op": "sq\0rt", "inputs": [4]}', 1, 11),
                            (b'{"op": "sqrt", "inputs": [4]}\0', 1, 30)]:
        e = refused(body, 400, "invalid_json")
        check("NUL" in e["message"] and "line %d column %d" % (line, col) in e["message"],
              (body, e))
    for body in (b"", b"  \r\n"):
        e = refused(body, 400, "invalid_json")
        check("empty request body" in e["message"] and "-1" not in e["message"], e)


def test_not_an_object():
    for body in ([1, 2, 3], "square", 5, None):
        e = refused(json.dumps(body), 400)
        check(e["code"] in ("bad_request", "invalid_json"), e)


def test_wrong_field_types():
    cases = [
        ({"op": 5, "inputs": [1]}, "op"),
        ({"op": "square", "inputs": "1,2"}, "inputs"),
        ({"op": "square", "inputs": {"a": 1}}, "inputs"),
        ({"op": "square", "inputs": [1], "chunksize": 0}, "chunksize"),
        ({"op": "square", "inputs": [1], "chunksize": -7}, "chunksize"),
        ({"op": "square", "inputs": [1], "chunksize": 1.5}, "chunksize"),
        ({"op": "square", "inputs": [1], "chunksize": "big"}, "chunksize"),
        ({"op": "square", "inputs": [1], "chunksize": True}, "chunksize"),
        ({"op": "square", "inputs": [1], "order": "random"}, "order"),
        ({"op": "square", "inputs": [1], "order": 1}, "order"),
        ({"op": "square", "inputs": [1], "timeout_ms": "10"}, "timeout_ms"),
        ({"op": "square", "inputs": [1], "timeout_ms": -5}, "timeout_ms"),
        ({"op": "square", "inputs": [1], "timeout_ms": 0}, "timeout_ms"),
        ({"op": "square", "inputs": [1], "deadline_ms": True}, "deadline_ms"),
        ({"op": "square", "inputs": [1], "deadline_ms": 2.5}, "deadline_ms"),
        ({"op": "square", "inputs": [1], "timing": "yes"}, "timing"),
        ({"op": "square", "inputs": [1], "timing": 1}, "timing"),
        ({"op": "sort", "inputs": [[1]], "params": [1]}, "params"),
        ({"op": "sort", "inputs": [[1]], "params": {"reverse": "yes"}}, "params.reverse"),
        ({"jobs": {"op": "square"}}, "jobs"),
        ({"jobs": [{"op": "square", "input": 1}, 7]}, "jobs[1]"),
        ({"jobs": [{"op": "square", "input": 1}, {"input": 2}]}, "jobs[1].op"),
        ({"jobs": [{"op": 3, "input": 2}]}, "jobs[0].op"),
        ({"jobs": [{"op": "square"}]}, "jobs[0].input"),
        ({"jobs": [{"op": "sort", "input": [1], "params": 5}]}, "jobs[0].params"),
    ]
    for batch, path in cases:
        e = refused(batch, 400, path=path)
        check(e["code"] in ("bad_request", "invalid_param"), (batch, e))


def test_unknown_op():
    refused({"op": "squares", "inputs": [1]}, 400, "unknown_op", "op")
    refused({"op": "", "inputs": [1]}, 400, "unknown_op", "op")
    refused({"jobs": [{"op": "square", "input": 1}, {"op": "sqrt", "input": 2},
                      {"op": "no_such_op", "input": 3}]}, 400, "unknown_op", "jobs[2].op")


def test_both_or_neither_inputs_jobs():
    e = refused({"op": "square", "inputs": [1], "jobs": [{"op": "square", "input": 1}]}, 400)
    check(e["code"] == "bad_request" and e.get("path") in ("inputs", "jobs", "op"), e)
    e = refused({"jobs": [{"op": "square", "input": 1}], "inputs": [1]}, 400)
    check(e.get("path") in ("inputs", "jobs"), e)
    e = refused({"op": "square"}, 400)
    check(e.get("path") in ("inputs", "jobs"), e)
    e = refused({}, 400)
    check(e.get("path") in ("inputs", "jobs", "op"), e)
    e = refused({"inputs": [1, 2]}, 400, path="op")


def test_unknown_field():
    e = refused({"op": "square", "inputs": [1], "chunk_size": 5}, 400, path="chunk_size")
    check(e["code"] == "bad_request", e)


def test_refused_before_any_job_runs():
    """A batch refused for its last job runs none of the others: a sleep job first would make
    the refusal wait."""
    jobs = [{"op": "sleep", "input": 3000}] + [{"op": "square", "input": i} for i in range(50)]
    jobs.append({"op": "bogus", "input": 0})
    t0 = time.monotonic()
    refused({"jobs": jobs}, 400, "unknown_op", "jobs[51].op")
    check(time.monotonic() - t0 < 2.0, "the refusal waited for a job")


def test_too_many_jobs():
    _, lines, _ = ndjson(SMALL, {"op": "square", "inputs": list(range(100))})
    by_index(lines, 100)
    e = refused({"op": "square", "inputs": list(range(101))}, 413, "too_many_jobs",
                server=SMALL)
    check("100" in e["message"], e)
    refused({"jobs": [{"op": "square", "input": 1}] * 101}, 413, "too_many_jobs", server=SMALL)


def test_body_too_large_content_length():
    body = json.dumps({"op": "square", "inputs": list(range(3000))})
    check(len(body) > 8192)
    refused(body, 413, "body_too_large", server=SMALL)
    # Much larger than the limit (the server may answer before reading it all).
    big = json.dumps({"op": "square", "inputs": [1] * 2000000}).encode()
    head = ("POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\nX-Request-Id: big-cl\r\nConnection: close\r\n\r\n" % len(big))
    status, hdrs, data = parse_raw_response(raw_request(SMALL.port, head.encode() + big))
    check_error(status, hdrs, data, 413, "body_too_large")
    check(hdrs["x-request-id"] == "big-cl", hdrs)
    still_serves(SMALL)


def chunked(body, size=4096):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n%s\r\n" % (len(part), part)
    return out + b"0\r\n\r\n"


def test_body_too_large_chunked():
    for n in (3000, 300000):
        big = json.dumps({"op": "square", "inputs": [1] * n}).encode()
        head = (b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                b"\r\nTransfer-Encoding: chunked\r\nX-Request-Id: big-chunked\r\n"
                b"Connection: close\r\n\r\n")
        status, hdrs, data = parse_raw_response(raw_request(SMALL.port, head + chunked(big)))
        check_error(status, hdrs, data, 413, "body_too_large", what="chunked %d bytes" % len(big))
        check(hdrs["x-request-id"] == "big-chunked", hdrs)
        still_serves(SMALL)
    # A chunked body under the limit is served.
    small = json.dumps({"op": "square", "inputs": [1, 2, 3]}).encode()
    head = (b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, hdrs, data = parse_raw_response(raw_request(SMALL.port, head + chunked(small, 7)))
    check(status == 200, (status, data))
    lines = [loads(l) for l in data.decode().splitlines()]
    check([l["result"] for l in lines[:-1]] == [1, 4, 9], lines)


def test_wrong_content_type():
    body = json.dumps({"op": "square", "inputs": [1]})
    for ct in ("text/plain", "application/x-www-form-urlencoded", "application/xml",
               "application/jsonx", None):
        h = {"Content-Type": ct} if ct else {}
        status, hdrs, data = S.request("POST", "/v1/batches", body=body.encode(), headers=h)
        check_error(status, hdrs, data, 415, "unsupported_media_type", what="Content-Type %r" % ct)
        still_serves()
    # With a charset parameter JSON is still JSON.
    status, _, data = S.request("POST", "/v1/batches", body=body.encode(),
                                headers={"Content-Type": "application/json; charset=utf-8"})
    check(status == 200, (status, data))


def test_unknown_path():
    # ("GET", "/" is the web console; "/web/" and what is under it are its files.)
    for method, path in (("GET", "/index.html"), ("GET", "/web/nope"), ("GET", "/v2/batches"), ("GET", "/v1/batches/1"),
                         ("GET", "/v1/ops/square"), ("GET", "/healthz/"), ("GET", "/nope"),
                         ("POST", "/v1/batch"), ("GET", "/metrics.txt")):
        status, hdrs, data = S.request(method, path)
        check_error(status, hdrs, data, 404, "not_found", what="%s %s" % (method, path))
    still_serves()


def test_wrong_method():
    for method, path, must in (("POST", "/v1/batches/1", "GET"), ("PUT", "/v1/batches", "POST"),
                               ("DELETE", "/v1/batches", "POST"), ("POST", "/healthz", "GET"),
                               ("POST", "/readyz", "GET"), ("DELETE", "/v1/ops", "GET"),
                               ("POST", "/metrics", "GET"), ("PATCH", "/v1/ops", "GET")):
        status, hdrs, data = S.request(method, path)
        check_error(status, hdrs, data, 405, "method_not_allowed", what="%s %s" % (method, path))
        allow = [m.strip() for m in hdrs.get("allow", "").split(",")]
        check(must in allow and method not in allow, (method, path, hdrs.get("allow")))
    still_serves()


def test_bad_accept():
    for accept in ("text/html", "image/png", "text/csv", "application/xml"):
        e = refused({"op": "square", "inputs": [1]}, 406, "not_acceptable", accept=accept)
        check(e["message"], e)


def test_overload_503_with_retry_after():
    # One worker: a 1.5 s sleep holds the other 9 jobs of the batch in the queue.
    long = Stream(ONE, {"op": "sleep", "inputs": [1500] + [0] * 9, "chunksize": 1})
    try:
        check(long.status == 200, long.status)
        t0 = time.monotonic()
        status, hdrs, data = post(ONE, {"op": "square", "inputs": list(range(15))})
        check(time.monotonic() - t0 < 1.0, "the 503 waited for the queue")
        check_error(status, hdrs, data, 503, "overloaded")
        ra = hdrs.get("retry-after")
        check(ra is not None and ra.isdigit() and int(ra) >= 1, "Retry-After %r" % ra)
        # A batch that fits (10 + 5 <= 20) is taken; with it two batches are live, the limit.
        small = Stream(ONE, {"op": "square", "inputs": list(range(5))})
        check(small.status == 200, small.status)
        status, hdrs, data = post(ONE, {"op": "square", "inputs": [1]})
        check_error(status, hdrs, data, 503, "overloaded", what="third batch over --max-batches")
        check(hdrs.get("retry-after", "").isdigit(), hdrs)
        lines = [loads(l) for _, l in small.lines()]
        by_index(lines, 5)
        small.close()
        lines = [loads(l) for _, l in long.lines()]
        by_index(lines, 10)
    finally:
        long.close()
    # Once the long batch is done, the big one is taken.
    _, lines, _ = ndjson(ONE, {"op": "square", "inputs": list(range(15))})
    by_index(lines, 15)


def test_overload_frees_the_queue_on_disconnect():
    long = Stream(ONE, {"op": "sleep", "inputs": [1200] + [0] * 9, "chunksize": 1})
    check(long.status == 200, long.status)
    status, _, _ = post(ONE, {"op": "square", "inputs": list(range(15))})
    check(status == 503, status)
    long.close()  # the client goes: its queued jobs leave the queue
    t0 = time.monotonic()
    while True:
        status, _, data = post(ONE, {"op": "square", "inputs": list(range(15))})
        if status == 200 or time.monotonic() - t0 > 10:
            break
        time.sleep(0.05)
    check(status == 200, "the queue still counts a gone client's jobs: %r" % data[:200])


# ------------------------------------------------------------------ request ids

def test_request_id_echoed_everywhere():
    rid = "test-req-42.abc"
    h = {"X-Request-Id": rid}
    responses = [
        S.request("GET", "/healthz", headers=h),
        S.request("GET", "/readyz", headers=h),
        S.request("GET", "/v1/ops", headers=h),
        S.request("GET", "/metrics", headers=h),
        S.request("GET", "/nowhere", headers=h),
        S.request("DELETE", "/v1/batches", headers=h),
        S.request("POST", "/v1/batches", body=b"{", headers=dict(h, **{"Content-Type": "application/json"})),
        S.request("POST", "/v1/batches", body=b"{}", headers=dict(h, **{"Content-Type": "text/plain"})),
        post(S, {"op": "square", "inputs": [1]}, headers=h, accept="text/html"),
        post(SMALL, {"op": "square", "inputs": list(range(101))}, headers=h),
        post(S, {"op": "square", "inputs": [1]}, headers=h),
        post(S, {"op": "square", "inputs": [1]}, headers=h, accept="application/json"),
    ]
    for status, hdrs, data in responses:
        check(hdrs.get("x-request-id") == rid, "status %d: X-Request-Id %r" %
              (status, hdrs.get("x-request-id")))
    # The summary repeats it.
    _, _, data = responses[-2]
    check(loads(data.decode().splitlines()[-1])["summary"]["request_id"] == rid, data)
    check(loads(responses[-1][2])["summary"]["request_id"] == rid)


def test_request_id_generated_when_absent_or_unusable():
    seen = set()
    for req in (lambda: S.request("GET", "/healthz"),
                lambda: S.request("GET", "/nowhere"),
                lambda: post(S, "{"),
                lambda: post(S, {"op": "square", "inputs": [1]}),
                lambda: post(S, {"op": "square", "inputs": [1]},
                             headers={"X-Request-Id": "has space"}),
                lambda: post(S, {"op": "square", "inputs": [1]},
                             headers={"X-Request-Id": "x" * 500}),
                lambda: post(S, {"op": "square", "inputs": [1]},
                             headers={"X-Request-Id": 'quote"d'})):
        status, hdrs, data = req()
        rid = hdrs.get("x-request-id")
        check(rid and re.fullmatch(r"[\x21-\x7e]{1,128}", rid), "bad generated id %r" % rid)
        check(rid not in seen, "request id %r reused" % rid)
        seen.add(rid)
        if status == 200 and b'"summary"' in data:
            summ = loads(data.decode().splitlines()[-1])["summary"]
            check(summ["request_id"] == rid, (summ, rid))


def test_concurrent_refusals_and_batches():
    """Refusals interleaved with real batches on many connections leave every batch whole."""
    errors = []

    def worker(k):
        try:
            for j in range(5):
                if (k + j) % 2:
                    status, _, _ = post(S, "{bad", headers={"X-Request-Id": "c%d-%d" % (k, j)})
                    if status != 400:
                        errors.append(("bad json", status))
                else:
                    _, lines, hdrs = ndjson(S, {"op": "cube", "inputs": list(range(k * 10))})
                    res = by_index(lines, k * 10)
                    if any(res[i]["result"] != i ** 3 for i in range(k * 10)):
                        errors.append(("wrong result", k))
        except Exception as e:  # noqa: BLE001
            errors.append(("exception", repr(e)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(1, 17)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    check(not errors, errors[:5])
    still_serves()


if __name__ == "__main__":
    with Server(workers=2) as S, \
            Server(workers=2, args=["--max-jobs", "100", "--max-body", "8192"]) as SMALL, \
            Server(workers=1, args=["--max-queued-jobs", "20", "--max-batches", "2"]) as ONE:
        code = Suite("refusals").run(globals())
    sys.exit(code)
