"""End-to-end basics: the issue's first curl, both orders, the small endpoints."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check, results_by_index  # noqa: E402

S = None


def test_is_prime_completed_order():
    lines, status, hdrs = S.batch({"op": "is_prime", "inputs": [97, 98, 2305843009213693951],
                                   "order": "completed"})
    check(status == 200, status)
    check(hdrs["content-type"].startswith("application/x-ndjson"), hdrs)
    res = results_by_index(lines)
    check({i: l["result"] for i, l in res.items()} == {0: True, 1: False, 2: True}, res)
    summ = lines[-1]["summary"]
    check(summ["jobs"] == 3 and summ["ok"] == 3 and summ["failed"] == 0, summ)
    check(summ["request_id"] == hdrs["x-request-id"], (summ, hdrs))


def test_input_order_is_input_order():
    lines, status, _ = S.batch({"op": "square", "inputs": list(range(5000)), "chunksize": 7})
    check(status == 200)
    check([l["index"] for l in lines[:-1]] == list(range(5000)))
    check(all(l["result"] == l["index"] ** 2 for l in lines[:-1]))


def test_healthz_readyz_ops():
    status, _, body = S.request("GET", "/healthz")
    check(status == 200, status)
    status, _, body = S.request("GET", "/readyz")
    check(status == 200, body)
    status, _, body = S.request("GET", "/v1/ops")
    check(status == 200 and b'"is_prime"' in body)


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("basics").run(globals())
    sys.exit(code)
