#!/usr/bin/python3
"""ICC colour through the real server (SPEC §6 "Colour, formats and metadata", issue 14),
against Pillow's ImageCms (profileToProfile to sRGB, perceptual: the same lcms2).

Images are made here from a photo with real profiles from Debian's colour packages
(colord-data: Adobe RGB, ProPhoto, Wide Gamut; icc-profiles-free: compatibleWithAdobeRGB1998;
libgs-common: Ghostscript's SWOP CMYK, 187 KB, so split over three APP2 markers) and a
Display P3 profile built here (Debian ships none: P3 primaries, D65, the sRGB curve):
  - icc "srgb" (default): JPEG APP2 and PNG iCCP inputs come out converted, >= 40 dB against
    Pillow's conversion then thumbnail, and far from the unconverted picture; no profile in
    the output; also with exact (converted before the steps) and before a grayscale step;
    alpha kept;
  - "keep": pixels untouched, the profile's bytes embedded (Pillow's info['icc_profile']) in
    JPEG, PNG and WebP outputs;
  - "strip": pixels untouched, no profile;
  - Adobe CMYK JPEGs with their profile >= 40 dB against Pillow; without one, Pillow's plain
    conversion, as before;
  - an sRGB profile leaves the pixels as they are (the transform is the identity);
  - broken profiles (cut, garbage, of the wrong colour space, a device link's class, over
    the size bound) are ignored: the output is byte for byte the "strip" one, and quick.
"""
import io
import os
import random
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check  # noqa: E402
from imglib import b64, open_image, photo, psnr  # noqa: E402
from PIL import Image, ImageCms  # noqa: E402
import base64  # noqa: E402

S = None
ICC = "/usr/share/color/icc"
PROFILES = {
    "AdobeRGB1998": ICC + "/colord/AdobeRGB1998.icc",
    "ProPhotoRGB": ICC + "/colord/ProPhotoRGB.icc",
    "WideGamutRGB": ICC + "/colord/WideGamutRGB.icc",
    "compatibleWithAdobeRGB1998": ICC + "/compatibleWithAdobeRGB1998.icc",
}
CMYK = ICC + "/ghostscript/default_cmyk.icc"
SRGB = ImageCms.createProfile("sRGB")
BOX = 256
THUMB = [{"op": "thumbnail", "width": BOX, "height": BOX}]
SIDE = 400 if SANITIZED else 640
_src = []


def _mat_mul(a, b):
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]

def _mat_inv(m):
    a, b, c = m[0]; d, e, f = m[1]; g, h, i = m[2]
    det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
    return [[(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
            [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
            [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det]]

def display_p3_profile():
    """A Display P3 matrix/TRC ICC v2 profile (P3 primaries, D65, the sRGB curve), built by
    hand: Debian ships none. Colorants Bradford-adapted to the D50 PCS."""
    prim = [(0.680, 0.320), (0.265, 0.690), (0.150, 0.060)]
    wx, wy = 0.3127, 0.3290
    xyz = [[x / y, 1.0, (1 - x - y) / y] for x, y in prim]       # rows: R, G, B
    P = [[xyz[j][i] for j in range(3)] for i in range(3)]       # columns: R, G, B
    W = [wx / wy, 1.0, (1 - wx - wy) / wy]
    S = [sum(_mat_inv(P)[i][k] * W[k] for k in range(3)) for i in range(3)]
    M = [[P[i][j] * S[j] for j in range(3)] for i in range(3)]  # RGB -> XYZ (D65)
    brad = [[0.8951, 0.2664, -0.1614], [-0.7502, 1.7135, 0.0367], [0.0389, -0.0685, 1.0296]]
    D50 = [0.9642, 1.0, 0.8249]
    src = [sum(brad[i][k] * W[k] for k in range(3)) for i in range(3)]
    dst = [sum(brad[i][k] * D50[k] for k in range(3)) for i in range(3)]
    scale = [[dst[i] / src[i] if i == j else 0.0 for j in range(3)] for i in range(3)]
    A = _mat_mul(_mat_inv(brad), _mat_mul(scale, brad))
    M50 = _mat_mul(A, M)

    def s15(v):
        return struct.pack(">i", int(round(v * 65536)))

    def xyz_tag(v):
        return b"XYZ \0\0\0\0" + b"".join(s15(c) for c in v)

    desc_txt = b"Display P3 (batchd test)\0"
    desc = (b"desc\0\0\0\0" + struct.pack(">I", len(desc_txt)) + desc_txt +
            struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + bytes(67))
    cprt = b"text\0\0\0\0" + b"No copyright, test data\0"
    para = (b"para\0\0\0\0" + struct.pack(">HH", 3, 0) +
            b"".join(s15(v) for v in (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)))
    tags = [(b"desc", desc), (b"cprt", cprt), (b"wtpt", xyz_tag(D50)),
            (b"rXYZ", xyz_tag([M50[i][0] for i in range(3)])),
            (b"gXYZ", xyz_tag([M50[i][1] for i in range(3)])),
            (b"bXYZ", xyz_tag([M50[i][2] for i in range(3)])),
            (b"rTRC", para), (b"gTRC", para), (b"bTRC", para)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for sig, body in tags:
        while (offset + len(data)) % 4:
            data += b"\0"
        table += sig + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    hdr = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " +
           bytes(12) + b"acsp" + bytes(4) + bytes(4) + bytes(8) + bytes(8) + bytes(4) +
           s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(4) + bytes(16) + bytes(28))
    assert len(hdr) == 128
    return hdr + struct.pack(">I", len(tags)) + table + data


def read(path):
    with open(path, "rb") as f:
        return f.read()


def source():
    """A photo at SIDE pixels, RGB, no profile (made once)."""
    if not _src:
        im = Image.open(photo("Wine_by_Jakkub_Mede.jpg")).convert("RGB")
        im.thumbnail((SIDE, SIDE))
        _src.append(im)
    return _src[0]


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def run(data, params):
    """One image job on DATA; returns (output bytes, result) or raises with the error."""
    lines, status, _ = S.batch({"op": "image", "params": params, "inputs": [{"data": b64(data)}]},
                               timeout=300)
    check(status == 200, (status, lines))
    r = lines[0]
    check("result" in r, r)
    return base64.b64decode(r["result"]["data"]), r["result"]


def to_srgb(im, prof_bytes, mode="RGB"):
    prof = ImageCms.ImageCmsProfile(io.BytesIO(prof_bytes))
    return ImageCms.profileToProfile(im, prof, SRGB, outputMode=mode)


def thumb(im):
    im = im.copy()
    im.thumbnail((BOX, BOX))
    return im


def test_rgb_profiles_converted_to_srgb():
    profiles = dict({n: read(p) for n, p in PROFILES.items()}, DisplayP3=display_p3_profile())
    for name, prof in profiles.items():
        for fmt, kw in (("JPEG", {"quality": 95}), ("PNG", {})):
            data = encode(source(), fmt, icc_profile=prof, **kw)
            decoded = Image.open(io.BytesIO(data)).convert("RGB")
            ref, naive = thumb(to_srgb(decoded, prof)), thumb(decoded)
            out, res = run(data, {"pipeline": THUMB, "format": "png"})
            im = open_image(out)
            check(im.size == ref.size, (name, fmt, im.size, ref.size))
            p, pn = psnr(ref, im), psnr(naive, im)
            print("  %-28s %-4s vs Pillow's ImageCms %.1f dB (unconverted: %.1f dB)"
                  % (name, fmt, p, pn))
            check(p >= 40, "%s %s: %.1f dB < 40 against Pillow's conversion" % (name, fmt, p))
            check(pn < p - 5, "%s %s: not converted? %.1f vs %.1f dB" % (name, fmt, pn, p))
            check("icc_profile" not in im.info, (name, fmt, "profile in an srgb output"))


def test_exact_and_grayscale_convert_first():
    prof = read(PROFILES["ProPhotoRGB"])
    data = encode(source(), "PNG", icc_profile=prof)
    ref = thumb(to_srgb(source(), prof))
    out, _ = run(data, {"pipeline": THUMB, "format": "png", "exact": True})
    p = psnr(ref, open_image(out))
    print("  exact: %.1f dB" % p)
    check(p >= 40, "exact: %.1f dB" % p)
    gref = thumb(to_srgb(source(), prof).convert("L"))
    out, _ = run(data, {"pipeline": [{"op": "grayscale"}] + THUMB, "format": "png"})
    im = open_image(out)
    p = psnr(gref, im)
    print("  grayscale after the conversion: %.1f dB" % p)
    check(im.mode == "L" and p >= 40, (im.mode, p))


def test_alpha_kept_through_the_conversion():
    prof = read(PROFILES["AdobeRGB1998"])
    rgba = source().convert("RGBA")
    alpha = Image.linear_gradient("L").resize(rgba.size)
    rgba.putalpha(alpha)
    data = encode(rgba, "PNG", icc_profile=prof)
    out, _ = run(data, {"pipeline": THUMB, "format": "png"})
    im = open_image(out)
    ref = thumb(to_srgb(rgba, prof, "RGBA"))
    check(im.mode == "RGBA", im.mode)
    p = psnr(ref, im)
    pa = psnr(ref.getchannel("A").convert("RGB"), im.getchannel("A").convert("RGB"))
    print("  RGBA: colour over white %.1f dB, alpha %.1f dB" % (p, pa))
    check(p >= 40 and pa >= 40, (p, pa))


def test_keep_embeds_the_profile_strip_drops_it():
    prof = read(PROFILES["AdobeRGB1998"])
    naive = thumb(source())
    for src_fmt in ("JPEG", "PNG"):
        data = encode(source(), src_fmt, icc_profile=prof, **({"quality": 95} if src_fmt == "JPEG"
                                                              else {}))
        for out_fmt in ("png", "jpeg", "webp"):
            out, _ = run(data, {"pipeline": THUMB, "format": out_fmt, "icc": "keep"})
            im = open_image(out)
            check(im.info.get("icc_profile") == prof,
                  (src_fmt, out_fmt, "keep: profile not round-tripped"))
            p = psnr(naive, im)
            check(p >= (40 if out_fmt == "png" else 30), (src_fmt, out_fmt, "keep pixels", p))
            out, _ = run(data, {"pipeline": THUMB, "format": out_fmt, "icc": "strip"})
            im = open_image(out)
            check("icc_profile" not in im.info, (src_fmt, out_fmt, "strip kept a profile"))
            p = psnr(naive, im)
            check(p >= (40 if out_fmt == "png" else 30), (src_fmt, out_fmt, "strip pixels", p))


def test_cmyk_jpegs():
    prof = read(CMYK)
    cmyk = source().convert("CMYK")
    # Pillow writes CMYK JPEGs the Adobe way: inverted, with an APP14 "Adobe" marker.
    data = encode(cmyk, "JPEG", quality=95, icc_profile=prof)
    src = Image.open(io.BytesIO(data))
    check(src.mode == "CMYK" and src.info.get("adobe") is not None, (src.mode, src.info.keys()))
    ref = thumb(to_srgb(src, prof))
    naive = thumb(src.convert("RGB"))
    for icc in ("srgb", "keep", "strip"):
        out, _ = run(data, {"pipeline": THUMB, "format": "png", "icc": icc})
        im = open_image(out)
        p, pn = psnr(ref, im), psnr(naive, im)
        print("  Adobe CMYK + SWOP profile, icc %s: %.1f dB (plain conversion: %.1f dB)"
              % (icc, p, pn))
        check(p >= 40 and pn < p - 5, (icc, p, pn))
        check("icc_profile" not in im.info, "a CMYK profile on an RGB output")
    plain = encode(cmyk, "JPEG", quality=95)
    out, _ = run(plain, {"pipeline": THUMB, "format": "png"})
    ref = thumb(Image.open(io.BytesIO(plain)).convert("RGB"))
    p = psnr(ref, open_image(out))
    print("  Adobe CMYK without a profile vs Pillow's convert('RGB'): %.1f dB" % p)
    check(p >= 40, p)


def test_srgb_profile_leaves_pixels():
    prof = ImageCms.ImageCmsProfile(SRGB).tobytes()
    data = encode(source(), "PNG", icc_profile=prof)
    a, _ = run(data, {"pipeline": THUMB, "format": "png"})
    b, _ = run(data, {"pipeline": THUMB, "format": "png", "icc": "strip"})
    check(a == b, "an sRGB profile changed the pixels")


def broken_profiles():
    adobe = read(PROFILES["AdobeRGB1998"])
    rnd = random.Random(14)
    garbage = bytearray(rnd.getrandbits(8) for _ in range(3000))
    garbage[0:4] = len(garbage).to_bytes(4, "big")
    garbage[36:40] = b"acsp"
    lying = bytearray(adobe)
    lying[0:4] = (1 << 30).to_bytes(4, "big")  # declares 1 GB
    link = bytearray(adobe)
    link[12:16] = b"link"                        # a device link's class
    flipped = bytearray(read(PROFILES["WideGamutRGB"]))
    for _ in range(40):
        i = rnd.randrange(128, len(flipped))
        flipped[i] ^= 1 << rnd.randrange(8)
    big = bytearray(adobe) + bytes(5 * 1024 * 1024)
    big[0:4] = len(big).to_bytes(4, "big")       # over the 4 MB bound
    return {"cut in half": adobe[:len(adobe) // 2], "garbage": bytes(garbage),
            "CMYK profile on RGB": read(CMYK), "declares 1 GB": bytes(lying),
            "device link": bytes(link), "over 4 MB": bytes(big), "empty": b"x" * 10,
            "bits flipped": bytes(flipped)}


def test_broken_profiles_ignored():
    strip = None
    for name, prof in broken_profiles().items():
        data = encode(source(), "JPEG", quality=90, icc_profile=prof)
        if strip is None:
            strip, _ = run(data, {"pipeline": THUMB, "format": "png", "icc": "strip"})
        t = time.time()
        out, _ = run(data, {"pipeline": THUMB, "format": "png"})
        dt = time.time() - t
        same = out == strip
        print("  %-20s ignored: %s (%.2fs)" % (name, same, dt))
        if name != "bits flipped":  # a flipped bit may leave a usable profile
            check(same, "%s: not ignored" % name)
        check(dt < (20 if SANITIZED else 5), (name, dt))
        out, _ = run(data, {"pipeline": THUMB, "format": "png", "icc": "keep"})
        im = open_image(out)
        if name != "bits flipped":
            check("icc_profile" not in im.info, (name, "a broken profile embedded"))


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("img_colour").run(globals())
    sys.exit(code)
