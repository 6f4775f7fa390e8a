"""The web console's files over plain HTTP (no browser; the browser test is test_console.py):
GET / and /web/NAME serve web/ byte for byte from the binary, with their Content-Type, an
ETag that answers 304, Cache-Control and a strict Content-Security-Policy; unknown files are
404; the files need no token under --auth-token-file, and /web/server.json says that the
API does."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402

WEB = os.path.join(os.path.dirname(__file__), "..", "..", "web")
S = None

TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def test_every_file_is_served_as_it_is_in_web():
    names = sorted(os.listdir(WEB))
    check("index.html" in names and "batchd.js" in names, names)
    for name in names:
        with open(os.path.join(WEB, name), "rb") as f:
            want = f.read()
        status, h, body = S.request("GET", "/web/" + name)
        check(status == 200, (name, status))
        check(body == want, "%s: %d bytes served, %d in web/" % (name, len(body), len(want)))
        check(h["content-type"] == TYPES[os.path.splitext(name)[1]], (name, h["content-type"]))
        check(h["cache-control"] == "no-cache", h)
        check(h["x-content-type-options"] == "nosniff", h)
        check(h["etag"].startswith('"') and len(h["etag"]) == 18, h["etag"])


def test_page_at_root_with_csp():
    status, h, body = S.request("GET", "/")
    check(status == 200 and body.startswith(b"<!doctype html>"), (status, body[:40]))
    csp = h["content-security-policy"]
    check("default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp)
    check("unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp, csp)
    check(b"<script>" not in body and b"style=" not in body, "inline script or style in the page")
    status2, _, body2 = S.request("GET", "/web/")
    check(status2 == 200 and body2 == body)


def test_etag_revalidation():
    _, h, _ = S.request("GET", "/web/console.js")
    etag = h["etag"]
    for inm in (etag, "W/" + etag, '"x", ' + etag, "*"):
        status, h2, body = S.request("GET", "/web/console.js", headers={"If-None-Match": inm})
        check(status == 304 and body == b"" and h2["etag"] == etag, (inm, status))
    status, _, body = S.request("GET", "/web/console.js", headers={"If-None-Match": '"other"'})
    check(status == 200 and len(body) > 0, status)
    status, _, body = S.request("GET", "/web/console.js", headers={"If-None-Match": etag[:-2] + '"'})
    check(status == 200, "a prefix of the ETag matched")


def test_head_unknown_and_methods():
    status, h, body = S.request("HEAD", "/")
    check(status == 200 and body == b"" and h["content-type"].startswith("text/html"), status)
    for path in ("/web/nope.js", "/web/../server/http.c", "/webx", "/index.html"):
        status, h, body = S.request("GET", path)
        check(status == 404 and b'"not_found"' in body, (path, status, body))
    status, h, _ = S.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json"})
    check(status == 405 and h["allow"] == "GET, HEAD", (status, h.get("allow")))
    status, _, body = S.request("GET", "/web/server.json")
    check(status == 200 and body.strip() == b'{"auth":null}', body)


def test_open_under_a_token():
    d = tempfile.mkdtemp(prefix="batchd-console-")
    path = os.path.join(d, "tokens")
    with open(path, "w") as f:
        f.write("t0ken\n")
    try:
        with Server(workers=1, args=["--auth-token-file", path]) as s2:
            for p in ("/", "/web/console.js", "/web/batchd.js"):
                status, _, _ = s2.request("GET", p)
                check(status == 200, (p, status))
            status, _, body = s2.request("GET", "/web/server.json")
            check(status == 200 and body.strip() == b'{"auth":"bearer"}', body)
            status, _, _ = s2.request("GET", "/v1/ops")
            check(status == 401, status)
            status, _, _ = s2.request("GET", "/v1/ops", headers={"Authorization": "Bearer t0ken"})
            check(status == 200, status)
    finally:
        os.unlink(path)
        os.rmdir(d)


if __name__ == "__main__":
    with Server(workers=1) as S:
        code = Suite("console_assets").run(globals())
    sys.exit(code)
