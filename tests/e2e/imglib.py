"""Helpers for the image e2e tests: multipart bodies, tar parsing, Pillow references, PSNR.

Only the standard library and Pillow (Debian's python3-pil, importable from /usr/bin/python3)
are used: no numpy there.
"""
import base64
import io
import json
import math
import os
import tarfile
import uuid

from PIL import Image, ImageChops, ImageCms, ImageStat

from harness import SHARED, SANITIZED

DATA = os.path.join(SHARED, "data")
PHOTOS = os.path.join(DATA, "photos")

# A few photos that cover JPEG and PNG and stay quick: the full set is for the benchmark.
SOME_PHOTOS = ["friends_by_Aitzol_Berasategi.jpg", "hdr_room.png"] if SANITIZED else [
    "Wine_by_Jakkub_Mede.jpg", "friends_by_Aitzol_Berasategi.jpg",
    "life_by_Aitzol_Berasategi.jpg", "hdr_room.png", "flower.png"]

# Per-job error codes an image job may fail with on a bad file.
BAD_FILE_CODES = {"corrupt_image", "unsupported_format", "too_large"}


def photo(name):
    return os.path.join(PHOTOS, name)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def multipart(batch, files):
    """A multipart/form-data body: part "batch" (JSON), then one "file" part per
    (filename or None, bytes). Returns (body, content type)."""
    boundary = "batchd-" + uuid.uuid4().hex
    out = io.BytesIO()
    out.write(("--%s\r\nContent-Disposition: form-data; name=\"batch\"\r\n"
               "Content-Type: application/json\r\n\r\n" % boundary).encode())
    out.write(json.dumps(batch).encode())
    out.write(b"\r\n")
    for name, data in files:
        disp = 'form-data; name="file"'
        if name is not None:
            disp += '; filename="%s"' % name
        out.write(("--%s\r\nContent-Disposition: %s\r\n"
                   "Content-Type: application/octet-stream\r\n\r\n" % (boundary, disp)).encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(("--%s--\r\n" % boundary).encode())
    return out.getvalue(), "multipart/form-data; boundary=" + boundary


def post(S, body, ctype, accept=None, timeout=300):
    h = {"Content-Type": ctype}
    if accept:
        h["Accept"] = accept
    return S.request("POST", "/v1/batches", body=body, headers=h, timeout=timeout)


def post_multipart(S, batch, files, accept=None, timeout=300):
    body, ctype = multipart(batch, files)
    return post(S, body, ctype, accept, timeout)


def ndjson(data):
    return [json.loads(l) for l in data.decode().splitlines() if l.strip()]


def b64(data):
    return base64.b64encode(data).decode()


def untar(data):
    """[(member name, bytes)] of a complete tar stream (raises on a damaged one)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        for m in t.getmembers():
            assert m.isfile(), (m.name, m.type)
            out.append((m.name, t.extractfile(m).read()))
    return out


def open_image(data):
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def rgb(im):
    if im.mode in ("RGBA", "LA", "RGBa", "La", "PA") or "transparency" in im.info:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        bg.alpha_composite(im)
        return bg.convert("RGB")
    if im.mode in ("I;16", "I;16B", "I"):
        im = im.point(lambda v: v / 256).convert("L")
    return im.convert("RGB")


def psnr(a, b):
    a, b = rgb(a), rgb(b)
    if a.size != b.size:
        return -1.0
    s = sum(ImageStat.Stat(ImageChops.difference(a, b)).sum2)
    mse = s / (a.size[0] * a.size[1] * 3)
    return math.inf if mse == 0 else 10 * math.log10(255 * 255 / mse)


SRGB = ImageCms.createProfile("sRGB")


def srgb(im):
    """IM through its embedded ICC profile to sRGB, as Pillow's ImageCms does it (batchd's
    default, SPEC §6 icc "srgb"); IM itself without a usable profile."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK"):
        return im
    try:
        prof = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        out = ImageCms.profileToProfile(im, prof, SRGB,
                                        outputMode="RGBA" if im.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError):
        return im
    out.info = {k: v for k, v in im.info.items() if k != "icc_profile"}
    return out


_refs = {}


def ref_thumbnail(path, box):
    """Pillow's Image.thumbnail((box, box)) of the file in sRGB, cached."""
    key = (path, box)
    if key not in _refs:
        im = srgb(Image.open(path))
        im.thumbnail((box, box))
        _refs[key] = im.convert("RGB")
    return _refs[key]


def check_thumb(result_bytes, path, box, what=""):
    """Asserts that encoded RESULT_BYTES are Pillow's thumbnail of PATH (size, >= 40 dB)."""
    im = open_image(result_bytes)
    ref = ref_thumbnail(path, box)
    assert im.size == ref.size, "%s %s: size %s, Pillow %s" % (what, path, im.size, ref.size)
    p = psnr(ref, im)
    assert p >= 40, "%s %s: %.2f dB < 40 against Pillow" % (what, os.path.basename(path), p)
    return im, p


def bad_corpus():
    """Every file under data/broken (recursively) and the PngSuite x*.png, sorted."""
    out = []
    for root, _, files in os.walk(os.path.join(DATA, "broken")):
        out += [os.path.join(root, f) for f in files]
    ps = os.path.join(DATA, "pngsuite")
    out += [os.path.join(ps, f) for f in os.listdir(ps) if f.startswith("x") and f.endswith(".png")]
    return sorted(out)


def png_bomb(width=10000, height=10000):
    """A valid, tiny PNG of WIDTH x HEIGHT all-zero gray pixels (one byte each plus the
    filter byte per row), compressed with zlib: a decompression bomb of ~100 MB in ~100 KB."""
    import struct
    import zlib

    def chunk(kind, payload):
        c = struct.pack(">I", len(payload)) + kind + payload
        return c + struct.pack(">I", zlib.crc32(kind + payload) & 0xffffffff)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    z = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) +
            chunk(b"IEND", b""))
