#!/usr/bin/env python3
"""Access control (issue 4): --auth-token-file bearer tokens (one per line, so they can be
rotated) and --cors-origin with preflights, against the real server on a loopback port."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deploylib as dl  # noqa: E402

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def main():
    dl.watchdog(120)
    tmp = tempfile.mkdtemp(prefix="batchd-access-")
    tokens = os.path.join(tmp, "tokens")
    with open(tokens, "w") as f:
        f.write("old-token-0123456789\nnew-token-abcdefghij\n")
    os.chmod(tokens, 0o600)
    b = dl.Batchd("access", workers=1, env={
        "BATCHD_AUTH_TOKEN_FILE": tokens,
        "BATCHD_CORS_ORIGIN": "https://app.example, https://admin.example"})
    b.wait_ready()
    batch = {"op": "sqrt", "inputs": [4]}

    s, h, body = dl.request(b.port, "POST", "/v1/batches", body=batch)
    check(s == 401 and b'"unauthorized"' in body, f"no token -> {s}")
    for bad in ("Bearer wrong", "Bearer old-token-012345678", "Basic old-token-0123456789",
                "Bearer old-token-0123456789x"):
        s, _, _ = dl.request(b.port, "POST", "/v1/batches", body=batch,
                             headers={"Authorization": bad})
        check(s == 401, f"{bad!r} -> {s}")
    for good in ("Bearer old-token-0123456789", "bearer new-token-abcdefghij"):
        s, _, body = dl.request(b.port, "POST", "/v1/batches", body=batch,
                                headers={"Authorization": good})
        check(s == 200 and b'"summary"' in body, f"{good.split()[1][:9]}... -> {s}")
    for path in ("/healthz", "/readyz"):
        s, _, _ = dl.request(b.port, "GET", path)
        check(s == 200, f"{path} open without a token -> {s}")
    for path in ("/metrics", "/v1/ops"):
        s, _, _ = dl.request(b.port, "GET", path)
        check(s == 401, f"{path} needs the token -> {s}")

    # CORS: a preflight from an allowed origin, without a token (browsers send none).
    s, h, _ = dl.request(b.port, "OPTIONS", "/v1/batches", headers={
        "Origin": "https://admin.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    check(s in (200, 204), f"preflight -> {s}")
    check(h.get("access-control-allow-origin") == "https://admin.example",
          f"preflight Allow-Origin {h.get('access-control-allow-origin')}")
    check("POST" in h.get("access-control-allow-methods", ""), "preflight allows POST")
    allow_headers = h.get("access-control-allow-headers", "").lower()
    check("authorization" in allow_headers and "content-type" in allow_headers,
          f"preflight allows the headers: {allow_headers}")
    s, h, _ = dl.request(b.port, "OPTIONS", "/v1/batches", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    check("access-control-allow-origin" not in h, "no Allow-Origin for another origin")
    s, h, _ = dl.request(b.port, "POST", "/v1/batches", body=batch, headers={
        "Authorization": "Bearer new-token-abcdefghij", "Origin": "https://app.example"})
    check(s == 200 and h.get("access-control-allow-origin") == "https://app.example"
          and "x-request-id" in h.get("access-control-expose-headers", "").lower()
          and h.get("vary") == "Origin", "stream carries the CORS headers for its origin")
    b.signal(15)
    check(b.wait(20) == 0, "exit 0")
    b.stop()

    # A token file without a token must not start an open server.
    empty = os.path.join(tmp, "empty")
    open(empty, "w").close()
    try:
        dl.Batchd("noauth", workers=1, env={"BATCHD_AUTH_TOKEN_FILE": empty})
        started = True
    except RuntimeError:
        started = False
    check(not started, "an empty token file refuses to start")
    print("all checks passed" if not failures else "FAILED: " + "; ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
