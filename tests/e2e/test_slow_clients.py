"""End-to-end: slowloris (issue 8, defect 5). --connection-timeout measures idleness only, so
a byte every now and then kept a connection forever. Request headers now have a total
deadline (--header-timeout, from accept or from a keep-alive request's first byte) and bodies
a minimum rate (--min-body-rate after a grace of --header-timeout); streams have neither."""
import json
import os
import select
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402

HEADER_TIMEOUT = 2.0
RATE = 100  # bytes/s
MARGIN = 4.0 if SANITIZED else 2.0
SRV = None


def closed_by_server(s):
    """True if the server closed or reset S (without blocking)."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(4096) == b""
    except OSError:
        return True


def drip(s, data, every, stop, until=60.0):
    """Sends DATA one byte per EVERY seconds until the server closes S (returns the seconds
    it took) or STOP is set or UNTIL passes (returns None)."""
    t0 = time.monotonic()
    i = 0
    while not stop.is_set() and time.monotonic() - t0 < until:
        try:
            s.send(data[i % len(data):i % len(data) + 1])
        except OSError:
            return time.monotonic() - t0
        i += 1
        end = time.monotonic() + every
        while time.monotonic() < end:
            if closed_by_server(s):
                return time.monotonic() - t0
            time.sleep(0.05)
    return None


HEADER_DRIP = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: abcdefghijklmnop\r\n" * 100
BODY_HEAD = (b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 10000\r\n\r\n")


def header_client(out, stop, until):
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=10)
    try:
        out.append(drip(s, HEADER_DRIP, 0.5, stop, until))
    finally:
        s.close()


def body_client(out, stop, until):
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=10)
    try:
        s.sendall(BODY_HEAD)
        out.append(drip(s, b"[" + b" " * 9999, 1.0, stop, until))
    finally:
        s.close()


def run_threads(targets):
    ths = [threading.Thread(target=t, args=a, daemon=True) for t, a in targets]
    for t in ths:
        t.start()
    return ths


def test_slow_headers_and_bodies_are_closed():
    stop = threading.Event()
    heads, bodies = [], []
    until = HEADER_TIMEOUT + MARGIN + 4
    ths = run_threads([(header_client, (heads, stop, until))] * 8 +
                      [(body_client, (bodies, stop, until))] * 4)
    for t in ths:
        t.join(until + 10)
    check(len(heads) == 8 and len(bodies) == 4, "clients did not finish")
    for name, got in (("header", heads), ("body", bodies)):
        for t in got:
            check(t is not None, "a slow %s client was never closed: %r" % (name, got))
            # The body's deadline: the grace plus 1 s per RATE bytes (a few bytes here).
            check(HEADER_TIMEOUT - 0.3 < t < HEADER_TIMEOUT + MARGIN,
                  "a slow %s client was closed after %.2fs (deadline %.1fs): %r" %
                  (name, t, HEADER_TIMEOUT, got))
    check(any("event=deadline" in l for l in SRV.log_lines), "no deadline logged")


def normal_request(timeout):
    """A small batch on a fresh connection; returns the seconds it took, or None."""
    t0 = time.monotonic()
    body = json.dumps({"op": "square", "inputs": [1, 2, 3]}).encode()
    try:
        s = socket.create_connection(("127.0.0.1", SRV.port), timeout=timeout)
        s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
        s.close()
    except OSError:
        return None
    if not got.startswith(b"HTTP/1.1 200") or b'"summary"' not in got:
        return None
    return time.monotonic() - t0


def test_normal_clients_are_served_under_slowloris():
    """30 slow-header and 10 slow-body clients against 20 connections, each reconnecting
    when it is closed: normal clients still get in."""
    stop = threading.Event()
    sink = []

    def again(target):
        def run():
            while not stop.is_set():
                try:
                    target(sink, stop, 60)
                except OSError:
                    time.sleep(0.1)
        return run

    ths = run_threads([(again(header_client), ())] * 30 + [(again(body_client), ())] * 10)
    try:
        time.sleep(1.0)  # the attackers hold every connection
        took = []
        for _ in range(4):
            took.append(normal_request(timeout=3 * HEADER_TIMEOUT + 2 * MARGIN))
            check(took[-1] is not None, "a normal client was not served: %r" % took)
        check(len(sink) >= 20, "the slow clients were not closed: %d closed" % len(sink))
    finally:
        stop.set()
        for t in ths:
            t.join(10)


def test_keepalive_idle_is_not_timed_but_the_next_request_is():
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=10)
    try:
        # (Batches here; GETs keep their connection as well: test_keepalive.)
        body = json.dumps({"op": "square", "inputs": [2]}).encode()
        for _ in range(2):
            s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            got = b""
            while not got.endswith(b"\r\n0\r\n\r\n"):
                b = s.recv(4096)
                check(b, "the server closed a keep-alive connection: %r" % got)
                got += b
            check(got.startswith(b"HTTP/1.1 200"), got[:100])
            # Idle for longer than the header deadline: --connection-timeout governs here.
            time.sleep(HEADER_TIMEOUT + 1.0)
        # The next request's headers, too slow: its deadline runs from its first byte.
        t = drip(s, HEADER_DRIP, 0.5, threading.Event(), HEADER_TIMEOUT + MARGIN + 4)
        check(t is not None and HEADER_TIMEOUT - 0.3 < t < HEADER_TIMEOUT + MARGIN,
              "a slow keep-alive request was closed after %r s" % t)
    finally:
        s.close()


def test_streams_have_no_deadline():
    """A stream that takes longer than every deadline (4 x 1 s on one worker)."""
    body = json.dumps({"op": "sleep", "inputs": [1000] * 4, "chunksize": 1}).encode()
    s = socket.create_connection(("127.0.0.1", SRV.port), timeout=30)
    try:
        s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        got = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += b
    finally:
        s.close()
    check(b'"summary"' in got and got.count(b'"index"') == 4, got[-300:])


if __name__ == "__main__":
    with Server(workers=1, args=["--max-connections", "20", "--header-timeout", "2s",
                                 "--min-body-rate", str(RATE),
                                 "--connection-timeout", "30"]) as SRV:
        code = Suite("slow_clients").run(globals())
    sys.exit(code)
