"""End-to-end: a client that half-closes (issue 8, defect 6). shutdown(SHUT_WR) after the
request is legal HTTP/1.1: the client still reads, so its stream must come whole. A client
that really leaves (close, or a reset) must still cancel its batch."""
import json
import os
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from client import by_index, loads, metrics, parse_raw_response, queue_idle, wait_for  # noqa: E402

SRV = None  # 2 workers


def cancelled():
    return metrics(SRV).get('batchd_batches_total{op="sleep",outcome="cancelled"}', 0)


def send_batch(batch, accept=None):
    body = json.dumps(batch).encode()
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=30)
    extra = b"Accept: %s\r\n" % accept.encode() if accept else b""
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
              b"\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body))
    return s


def read_to_close(s):
    got = b""
    while True:
        b = s.recv(65536)
        if not b:
            return got
        got += b


def half_closed_batch(batch, n, accept=None):
    s = send_batch(batch, accept)
    try:
        s.shutdown(socket.SHUT_WR)
        got = read_to_close(s)
    finally:
        s.close()
    status, _, body = parse_raw_response(got)
    check(status == 200, got[:300])
    check(got.endswith(b"\r\n0\r\n\r\n"), "the stream was cut: %r" % got[-200:])
    return body


def test_half_close_before_any_result():
    # Longer than the first write: the FIN is seen while the stream is suspended.
    n = 8
    body = half_closed_batch({"op": "sleep", "inputs": [150] * n, "chunksize": 1}, n)
    lines = [loads(l) for l in body.decode().splitlines() if l]
    by_index(lines, n)


def test_half_close_many_results():
    n = 20
    body = half_closed_batch({"op": "sleep", "inputs": [20] * n, "chunksize": 1}, n)
    by_index([loads(l) for l in body.decode().splitlines() if l], n)


def test_half_close_json_document():
    n = 6
    body = half_closed_batch({"op": "sleep", "inputs": [100] * n, "chunksize": 1}, n,
                             accept="application/json")
    doc = loads(body)
    check(len(doc["results"]) == n and doc["summary"]["ok"] == n, doc)


def test_reset_cancels_at_once():
    """A reset (SO_LINGER 0) before any result: the batch is cancelled at once, while its
    first jobs still run."""
    before = cancelled()
    s = send_batch({"op": "sleep", "inputs": [2000] * 10, "chunksize": 1})
    time.sleep(0.3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    check(wait_for(lambda: cancelled() > before, 1.0 if not SANITIZED else 1.5),
          "the batch of a reset client was not cancelled")
    check(wait_for(lambda: queue_idle(SRV), 5), "queue not empty: %r" % metrics(SRV))


def test_close_cancels_at_the_next_write():
    """A plain close is a FIN like a half-close: the batch goes on until its next results
    meet the reset, then it is cancelled (not run to its end)."""
    before = cancelled()
    s = send_batch({"op": "sleep", "inputs": [300] * 20, "chunksize": 1})
    got = b""
    while b'"index"' not in got:
        b = s.recv(4096)
        check(b, "the server closed before the first result")
        got += b
    s.close()
    # 20 x 300 ms on 2 workers is 3 s: cancelled, the queue is empty long before.
    check(wait_for(lambda: cancelled() > before and queue_idle(SRV),
                   2.0 if not SANITIZED else 4),
          "the batch of a gone client still runs: %r" % metrics(SRV))


if __name__ == "__main__":
    with Server(workers=2) as SRV:
        code = Suite("halfclose").run(globals())
    sys.exit(code)
