"""Multipart uploads sent in many small TCP writes (issue 8, defect 1): wherever the reads of
the body end, each file part is one job and each index's result is its own file's. Under
libmicrohttpd's post processor a read ending just after a part's headers made one part two
(161 PngSuite files in 200-byte segments gave 164 jobs)."""
import json
import os
import socket
import sys
import time

from PIL import Image

from harness import Server, Suite, SHARED, check
from imglib import multipart, read

PNGSUITE = os.path.join(SHARED, "data", "pngsuite")


def good_pngs(n):
    """N PngSuite files Pillow opens, with their sizes, smallest names first."""
    out = []
    for name in sorted(os.listdir(PNGSUITE)):
        if not name.endswith(".png") or name.startswith("x"):
            continue
        path = os.path.join(PNGSUITE, name)
        try:
            with Image.open(path) as im:
                size = im.size
        except Exception:  # noqa: BLE001 - not a reference we can use
            continue
        out.append((name, read(path), size))
        if len(out) == n:
            break
    return out


def dechunk(body):
    out = b""
    while True:
        line, _, body = body.partition(b"\r\n")
        n = int(line.split(b";")[0], 16)
        if n == 0:
            return out
        out += body[:n]
        body = body[n + 2:]


def send_in_pieces(port, body, ctype, cuts, pause):
    """POSTs BODY with each piece (split at the positions CUTS) in its own write, PAUSE
    seconds apart; returns (status, NDJSON lines)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    head = ("POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            "Content-Length: %d\r\nConnection: close\r\n\r\n" % (ctype, len(body))).encode()
    s.sendall(head)
    at = 0
    for c in list(cuts) + [len(body)]:
        if c > at:
            s.sendall(body[at:c])
            at = c
            time.sleep(pause)
    data = b""
    while True:
        got = s.recv(65536)
        if not got:
            break
        data += got
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    if b"chunked" in head.lower():
        rest = dechunk(rest)
    return status, [json.loads(l) for l in rest.decode().splitlines() if l.strip()]


def check_sizes(status, lines, files, what):
    check(status == 200, "%s: status %d %r" % (what, status, lines[:2]))
    summary = lines[-1].get("summary", {})
    check(summary.get("jobs") == len(files),
          "%s: %r jobs for %d files" % (what, summary.get("jobs"), len(files)))
    for l in lines[:-1]:
        i = l["index"]
        name, _, size = files[i]
        check("result" in l, "%s: job %d (%s) failed: %r" % (what, i, name, l))
        got = (l["result"]["width"], l["result"]["height"])
        check(got == size, "%s: job %d is %r, file %s is %r" % (what, i, got, name, size))


BATCH = {"op": "image", "params": {"pipeline": [], "format": "png"}}


def test_three_pngs_cut_after_each_part_header():
    """Cut a few bytes after each file part's headers: the read MHD's parser miscounted."""
    files = good_pngs(3)
    body, ctype = multipart(BATCH, [(n, d) for n, d, _ in files])
    ends = []
    at = 0
    while True:
        at = body.find(b"octet-stream\r\n\r\n", at)
        if at < 0:
            break
        at += len(b"octet-stream\r\n\r\n")
        ends.append(at)
    check(len(ends) == 3, ends)
    for k in (0, 1, 3, 8):
        status, lines = send_in_pieces(S.port, body, ctype, [e + k for e in ends], 0.02)
        check_sizes(status, lines, files, "3 PNGs cut %d bytes after the part headers" % k)


def test_forty_pngs_in_200_byte_segments():
    files = good_pngs(40)
    check(len(files) == 40, len(files))
    body, ctype = multipart(BATCH, [(n, d) for n, d, _ in files])
    cuts = range(200, len(body), 200)
    status, lines = send_in_pieces(S.port, body, ctype, cuts, 0.001)
    check_sizes(status, lines, files, "40 PNGs in 200-byte segments")


def test_all_pngsuite_in_200_byte_segments():
    """The issue's case: 161 PngSuite files in 200-byte segments gave 164 jobs."""
    files = good_pngs(1000)
    check(len(files) >= 150, len(files))
    body, ctype = multipart(BATCH, [(n, d) for n, d, _ in files])
    cuts = range(200, len(body), 200)
    status, lines = send_in_pieces(S.port, body, ctype, cuts, 0.0005)
    check_sizes(status, lines, files, "%d PNGs in 200-byte segments" % len(files))


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("upload_segments").run(globals())
    sys.exit(code)
