#!/usr/bin/python3
"""Progressive JPEGs decoded scan by scan (issue 14, "speed where decoding is the wall"):
a thumbnail that the plan decodes at 1/8 needs only each block's DC coefficient, at 1/4 25
coefficients, and not their lowest bits at usual qualities; a progressive file sends those
in its first scans, so batchd stops reading there.

- at 1/8 the result is within the quality bar of Pillow's thumbnail (>= 40 dB): the DC's
  last bit may be missing only where its quantisation step is at most 8 (quality >= 75);
- the later scans are not read: a file whose last scan is garbage gives the same thumbnail
  as the intact file (a full decode would show the garbage);
- a progressive file cut short is still refused (corrupt_image), as the full decode does;
- at 1/4 the last scans (the lowest bits) are not read at quality 88, and are at 50;
- exact reads every scan (no shrink-on-load), and so does a 1/2 decode.
"""
import base64
import io
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402
from imglib import b64, open_image, photo, psnr  # noqa: E402
from PIL import Image  # noqa: E402

S = None
BOX = 128


def source():
    im = Image.open(photo("Wine_by_Jakkub_Mede.jpg")).convert("RGB")
    im.thumbnail((2048, 2048))  # 1367 x 2048: a 1/8 decode for a 128 box
    return im


def progressive(im, quality=88):
    b = io.BytesIO()
    im.save(b, "JPEG", quality=quality, progressive=True)
    return b.getvalue()


def scans(data):
    """Offsets of the SOS markers of DATA."""
    out, i = [], 2
    while i + 4 <= len(data):
        if data[i] == 0xFF and data[i + 1] == 0xDA:
            out.append(i)
        i += 1
    return out


def scan_body(data, sos):
    """(start, end) of the entropy-coded bytes of the scan whose SOS is at SOS."""
    start = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big")
    end = start
    while not (data[end] == 0xFF and data[end + 1] not in (0x00,) + tuple(range(0xD0, 0xD8))):
        end += 1
    return start, end


def is_dc_refinement(data, sos):
    ns = data[sos + 4]
    ss, se, ahal = data[sos + 5 + 2 * ns:sos + 8 + 2 * ns]
    return ss == 0 and se == 0 and ahal >> 4 > 0


def garbled(data, sos):
    """DATA with the scan at SOS replaced by random bytes (no 0xFF: no marker appears)."""
    start, end = scan_body(data, sos)
    rnd = random.Random(14)
    return data[:start] + bytes(rnd.randrange(0, 255) for _ in range(end - start)) + data[end:]


def job(data, params):
    lines, status, _ = S.batch({"op": "image", "params": params, "inputs": [{"data": b64(data)}]},
                               timeout=300)
    check(status == 200, (status, lines))
    return lines[0]


def thumb(data, **extra):
    r = job(data, dict({"pipeline": [{"op": "thumbnail", "width": BOX, "height": BOX}],
                        "format": "png"}, **extra))
    check("result" in r, r)
    return open_image(base64.b64decode(r["result"]["data"]))


def test_dc_scans_are_enough_at_one_eighth():
    src = source()
    # At quality 50 the DC step is 16: batchd then waits for the DC's last bit as well.
    for q in (88, 50):
        data = progressive(src, q)
        check(len(scans(data)) >= 8, len(scans(data)))
        ref = Image.open(io.BytesIO(data))
        ref.thumbnail((BOX, BOX))
        im = thumb(data)
        p = psnr(ref, im)
        print("  q%d: 1/8 from the DC scans vs Pillow's thumbnail: %.1f dB" % (q, p))
        check(im.size == ref.size and p >= 40, (im.size, ref.size, p))


def test_later_scans_not_read():
    data = progressive(source())
    # Pillow's (libjpeg's) script sends the DC's top bits first and its last bit in a later
    # refinement scan: at 1/8 batchd stops before it, so garbage there changes nothing.
    refine = [o for o in scans(data) if is_dc_refinement(data, o)]
    check(len(refine) == 1 and refine[0] != scans(data)[0], refine)
    broken = garbled(data, refine[0])
    check(len(broken) == len(data), "same length")
    a, b = thumb(data), thumb(broken)
    check(a.tobytes() == b.tobytes(), "the DC refinement scan was read at 1/8")
    # A full-size decode does read every scan: garbage in the last one shows.
    last = garbled(data, scans(data)[-1])
    full_a, full_b = thumb(data, exact=True), thumb(last, exact=True)
    print("  exact, last scan garbage vs intact: %.1f dB" % psnr(full_a, full_b))
    check(full_a.tobytes() != full_b.tobytes(), "exact must read every scan")


def test_lowest_bits_not_read_at_one_quarter():
    data = progressive(source())
    # At 1/4 the 2x2 IDCT reads 25 coefficients of each block; at quality 88 their lowest
    # bit is not needed (steps <= 64): the last scans, which carry only those bits, are not
    # read, and garbage there changes nothing. At quality 50 every scan is read.
    last = scans(data)[-1]
    ns = data[last + 4]
    check(data[last + 7 + 2 * ns] == 0x10, "the last scan refines the lowest bit")
    box = 200  # 1367 x 2048 -> 134 x 200: the plan decodes at 1/4
    params = {"pipeline": [{"op": "thumbnail", "width": box, "height": box}], "format": "png"}
    a = open_image(base64.b64decode(job(data, params)["result"]["data"]))
    b = open_image(base64.b64decode(job(garbled(data, last), params)["result"]["data"]))
    check(a.tobytes() == b.tobytes(), "the last scan was read at 1/4")
    ref = Image.open(io.BytesIO(data))
    ref.thumbnail((box, box))
    print("  1/4 without the lowest bits vs Pillow's thumbnail: %.1f dB" % psnr(ref, a))
    check(psnr(ref, a) >= 40, psnr(ref, a))
    low = progressive(source(), 50)
    a = open_image(base64.b64decode(job(low, params)["result"]["data"]))
    b = open_image(base64.b64decode(job(garbled(low, scans(low)[-1]), params)["result"]["data"]))
    check(a.tobytes() != b.tobytes(), "quality 50: the last scan must be read")


def test_truncated_progressive_still_refused():
    data = progressive(source())
    cut = data[:scans(data)[3]]  # the DC scans are complete, the file is not
    r = job(cut, {"pipeline": [{"op": "thumbnail", "width": BOX, "height": BOX}],
                  "format": "png"})
    check("error" in r and r["error"]["code"] == "corrupt_image", r)


def test_half_size_reads_every_scan():
    data = progressive(source())
    ref = Image.open(io.BytesIO(data))
    ref.thumbnail((900, 900))
    r = job(data, {"pipeline": [{"op": "thumbnail", "width": 900, "height": 900}],
                   "format": "png"})
    im = open_image(base64.b64decode(r["result"]["data"]))
    check(psnr(ref, im) >= 40, psnr(ref, im))


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("img_progressive").run(globals())
    sys.exit(code)
