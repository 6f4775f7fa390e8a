"""End-to-end: result order and chunking (SPEC §3-4). Both orders with chunksize 1 / 7 /
auto answer every job exactly once; input order is 0..n-1; completed order really streams
(lines are timed as they arrive); Accept: application/json gives one document in input
order; timing fields; a big batch of tiny jobs is chunked; slow jobs spread over every
worker."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import Stream, by_index, loads, ndjson, post  # noqa: E402

S = None
WORKERS = 2


def square_batch(n, **extra):
    b = {"op": "square", "inputs": list(range(n))}
    b.update(extra)
    return b


def test_both_orders_all_chunksizes():
    n = 3001
    for order in ("input", "completed"):
        for cs in (1, 7, "auto", None):
            extra = {"order": order}
            if cs is not None:
                extra["chunksize"] = cs
            _, lines, hdrs = ndjson(S, square_batch(n, **extra))
            res = by_index(lines, n)
            what = "order=%s chunksize=%r" % (order, cs)
            for i in range(n):
                check(res[i].get("result") == i * i, (what, res[i]))
            s = lines[-1]["summary"]
            check(s["order"] == order and s["ok"] == n and s["failed"] == 0, (what, s))
            check(s["workers"] == WORKERS, (what, s))
            if isinstance(cs, int):
                check(s["chunksize"] == cs, (what, s))
            else:
                check(type(s["chunksize"]) is int and 1 <= s["chunksize"] <= n, (what, s))
            if order == "input":
                check([l["index"] for l in lines[:-1]] == list(range(n)), what)
            check(s["request_id"] == hdrs["x-request-id"], (s, hdrs))


def test_default_order_is_input_and_mixed_errors_keep_their_place():
    inputs = [4, -1, "x", 9, None, 16] * 50
    _, lines, _ = ndjson(S, {"op": "sqrt", "inputs": inputs, "chunksize": 7})
    check([l["index"] for l in lines[:-1]] == list(range(len(inputs))))
    check(lines[-1]["summary"]["order"] == "input", lines[-1])
    for l in lines[:-1]:
        x = inputs[l["index"]]
        if x in (4, 9, 16):
            check(l["result"] == float(x) ** 0.5, l)
        else:
            check(l["error"]["code"] in ("domain_error", "invalid_input"), l)
    s = lines[-1]["summary"]
    check(s["ok"] == 150 and s["failed"] == 150, s)


def timed_lines(batch, **kw):
    st = Stream(S, batch, **kw)
    check(st.status == 200, st.status)
    out = [(t, loads(line)) for t, line in st.lines()]
    st.close()
    return out


def test_completed_order_streams_each_result_as_it_ends():
    for cs in (1, "auto"):
        got = timed_lines({"op": "sleep", "inputs": [600, 50, 50], "order": "completed",
                           "chunksize": cs})
        lines = [l for _, l in got]
        by_index(lines, 3)
        first_t, first = got[0]
        check(first["index"] in (1, 2), "first result %r should be a 50 ms job" % first)
        check(first_t < 0.45, "chunksize %r: the first line came after %.3fs, not before the "
              "600 ms job ended" % (cs, first_t))
        t600 = [t for t, l in got if l.get("index") == 0][0]
        check(t600 >= 0.6, "the 600 ms job answered at %.3fs" % t600)
        check(lines[-2]["index"] == 0, "the slow job should be the last result: %r" % lines)


def test_input_order_streams_the_prefix_early():
    got = timed_lines({"op": "sleep", "inputs": [50, 50, 700], "chunksize": 1})
    lines = [l for _, l in got]
    by_index(lines, 3)
    check([l["index"] for l in lines[:-1]] == [0, 1, 2], lines)
    check(got[0][0] < 0.5, "result 0 (a 50 ms job) arrived at %.3fs: buffered?" % got[0][0])
    check(got[2][0] >= 0.7, got[2])


def test_json_document_in_input_order():
    n = 500
    inputs = list(range(n)) + [-1]
    for order in ("input", "completed"):
        status, hdrs, data = post(S, {"op": "sqrt", "inputs": inputs, "order": order,
                                      "chunksize": 3}, accept="application/json")
        check(status == 200, status)
        check(hdrs["content-type"].startswith("application/json"), hdrs)
        doc = loads(data)  # exactly one JSON document
        check(set(doc) == {"results", "summary"}, doc.keys())
        res = doc["results"]
        check(len(res) == n + 1, len(res))
        for i in range(n):
            check(set(res[i]) == {"result"} and res[i]["result"] == i ** 0.5, (i, res[i]))
        check(res[n]["error"]["code"] == "domain_error", res[n])
        s = doc["summary"]
        check(s["jobs"] == n + 1 and s["ok"] == n and s["failed"] == 1, s)
        check(s["request_id"] == hdrs["x-request-id"], s)
    # Accept with parameters and q-values still picks JSON when it is the only one offered.
    status, hdrs, data = post(S, square_batch(3), accept="application/json; charset=utf-8")
    check(status == 200 and json.loads(data)["results"][2]["result"] == 4, (status, data))


def test_accept_variants_give_ndjson():
    for accept in (None, "application/x-ndjson", "*/*", "application/x-ndjson, */*;q=0.1"):
        status, hdrs, data = post(S, square_batch(3), accept=accept)
        check(status == 200, (accept, status))
        check(hdrs["content-type"].startswith("application/x-ndjson"), (accept, hdrs))
        lines = [loads(l) for l in data.decode().splitlines()]
        by_index(lines, 3)


def test_timing_fields():
    inputs = [120, 10, 10, 60]
    _, lines, _ = ndjson(S, {"op": "sleep", "inputs": inputs, "timing": True, "chunksize": 1})
    res = by_index(lines, len(inputs))
    for i, ms in enumerate(inputs):
        l = res[i]
        check(set(l) == {"index", "result", "worker", "start_ms", "end_ms"}, l)
        check(type(l["worker"]) is int and 0 <= l["worker"] < WORKERS, l)
        check(0 <= l["start_ms"] <= l["end_ms"], l)
        took = l["end_ms"] - l["start_ms"]
        check(ms * 0.95 <= took < ms + 500, "sleep %d took %.3f ms by its timing" % (ms, took))
    elapsed = lines[-1]["summary"]["elapsed_ms"]
    check(max(l["end_ms"] for l in res.values()) <= elapsed + 1, (elapsed, res))
    # Both workers ran something, as chunks of one go to idle workers.
    check({l["worker"] for l in res.values()} == set(range(WORKERS)), res)
    _, lines, _ = ndjson(S, {"op": "sleep", "inputs": [1]})
    check(set(lines[0]) == {"index", "result"}, "timing fields without timing: %r" % lines[0])
    _, lines, _ = ndjson(S, {"op": "sqrt", "inputs": [-1, 4], "timing": True})
    res = by_index(lines, 2)
    check("worker" in res[0] and "error" in res[0], "a failed job has timing too: %r" % res[0])


def test_big_square_batch_is_chunked():
    n = 20000 if SANITIZED else 100000
    _, lines, _ = ndjson(S, square_batch(n), timeout=300)
    res = by_index(lines, n)
    check(all(res[i]["result"] == i * i for i in range(n)))
    s = lines[-1]["summary"]
    check(s["chunksize"] > 1, "auto chunksize for %d tiny jobs is %r" % (n, s["chunksize"]))
    check([l["index"] for l in lines[:-1]] == list(range(n)))
    # Completed order too: same results, some order.
    _, lines, _ = ndjson(S, square_batch(n, order="completed"), timeout=300)
    res = by_index(lines, n)
    check(all(res[i]["result"] == i * i for i in range(n)))
    check(lines[-1]["summary"]["chunksize"] > 1, lines[-1])


def test_slow_jobs_spread_over_every_worker():
    n = 10**8 // (4 if SANITIZED else 1)
    jobs = [{"n": n, "x": k} for k in range(8)]
    _, lines, _ = ndjson(S, {"op": "cpu_loop", "inputs": jobs, "timing": True}, timeout=300)
    res = by_index(lines, 8)
    for k in range(8):
        check(res[k]["result"] == n * k + n * (n - 1) // 2, res[k])
    workers = {res[k]["worker"] for k in range(8)}
    check(workers == set(range(WORKERS)), "8 cpu_loop jobs ran on workers %r" % workers)
    s = lines[-1]["summary"]
    check(s["chunksize"] <= 8 // WORKERS, "auto chunksize %r for 8 slow jobs" % s["chunksize"])
    # Spread over workers means they overlapped in time.
    spans = sorted((res[k]["start_ms"], res[k]["end_ms"]) for k in range(8))
    overlap = any(spans[i + 1][0] < spans[i][1] for i in range(7))
    check(overlap, "no two cpu_loop jobs ran at the same time: %r" % spans)


def test_empty_batch_ends_with_a_summary():
    for batch in ({"op": "square", "inputs": []}, {"jobs": []},
                  {"op": "sleep", "inputs": [], "order": "completed", "chunksize": 7}):
        _, lines, _ = ndjson(S, batch, timeout=10)
        check(len(lines) == 1, lines)
        s = lines[0]["summary"]
        check(s["jobs"] == 0 and s["ok"] == 0 and s["failed"] == 0, s)
    status, _, data = post(S, {"op": "square", "inputs": []}, accept="application/json",
                           timeout=10)
    check(status == 200, status)
    doc = loads(data)
    check(doc["results"] == [] and doc["summary"]["jobs"] == 0, doc)


def test_few_slow_jobs_get_chunksize_one():
    _, lines, _ = ndjson(S, {"op": "sleep", "inputs": [20] * 6})
    s = lines[-1]["summary"]
    check(s["chunksize"] == 1, s)


if __name__ == "__main__":
    with Server(workers=WORKERS) as S:
        code = Suite("orders_chunks").run(globals())
    sys.exit(code)
