#!/usr/bin/python3
"""Output limits of the image op that are known from the header alone (issue 8, defect 12):
a JPEG has at most 65,500 pixels on a side (libjpeg's JPEG_MAX_DIMENSION), so a plan that
would make a larger JPEG fails as too_large before any pixel is decoded, in the shared
pipeline or a variant, while the same size as PNG is made (within --max-output-pixels).
"""
import base64
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check, results_by_index  # noqa: E402

S = None
WIDE = [{"op": "resize", "width": 65501, "height": 1, "fit": "fill"}]


def tiny_png(w=2, h=1):
    def chunk(kind, payload):
        return (struct.pack(">I", len(payload)) + kind + payload +
                struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff))
    raw = b"".join(b"\x00" + bytes([40, 80, 120]) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def run(data, params):
    lines, status, _ = S.batch({"op": "image", "params": params, "inputs": [{"data": base64.b64encode(data).decode()}]})
    check(status == 200, (status, lines))
    return results_by_index(lines)[0]


def test_jpeg_side_is_too_large():
    t0 = time.time()
    r = run(tiny_png(), {"pipeline": WIDE, "format": "jpeg"})
    check(r.get("error", {}).get("code") == "too_large", r)
    check("65501x1" in r["error"]["message"] and "65500" in r["error"]["message"], r)
    check(time.time() - t0 < 20, "took %.1fs" % (time.time() - t0))
    r = run(tiny_png(), {"pipeline": WIDE, "format": "png"})
    check(r.get("result", {}).get("width") == 65501, r)


def test_jpeg_side_of_a_variant():
    r = run(tiny_png(), {"format": "jpeg", "variants": [
        {"name": "small"}, {"name": "strip", "pipeline": WIDE}]})
    check(r.get("error", {}).get("code") == "too_large" and "strip" in r["error"]["message"], r)


def test_known_before_the_pixels():
    """The pixel data cut off: the plan refuses the JPEG output from the header before the
    decoder meets the damage; as PNG the damage is what the job reports."""
    cut = tiny_png()[:-20]
    r = run(cut, {"pipeline": WIDE, "format": "jpeg"})
    check(r.get("error", {}).get("code") == "too_large", r)
    r = run(cut, {"pipeline": WIDE, "format": "png"})
    check(r.get("error", {}).get("code") == "corrupt_image", r)


if __name__ == "__main__":
    with Server(workers=1, args=["--max-output-pixels", "70000"]) as S:
        code = Suite("img_limits").run(globals())
    sys.exit(code)
