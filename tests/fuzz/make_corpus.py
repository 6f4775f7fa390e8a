#!/usr/bin/python3
"""Writes the seed corpora of the image fuzz targets (tests/fuzz/corpus/{png,jpeg,image,
img_params}) from scratch: small, deterministic files that reach every branch a real file
would (PNG colour types, bit depths, Adam7, filters, tRNS/PLTE/ancillary chunks, truncations;
JPEG baseline/progressive/gray/CMYK/subsamplings/EXIF orientations/restart markers) without
copying any of ../shared/data into the repository (its README forbids it: tests/fuzz/run.sh
adds the small shared files to a run's working corpus instead).

    /usr/bin/python3 tests/fuzz/make_corpus.py      # rewrites the four folders

Needs Pillow (Debian python3-pil) for the JPEGs; the PNGs are written by hand here so that
every layout libpng reads can be made."""
import io
import json
import os
import random
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


# ------------------------------------------------------------------ PNG, written by hand
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xffffffff)


CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def pack_row(samples, depth):
    if depth == 8:
        return bytes(samples)
    if depth == 16:
        return b"".join(struct.pack(">H", s) for s in samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        nbits += depth
        if nbits == 8:
            out.append(acc)
            acc, nbits = 0, 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def filter_row(row, prev, bpp, ftype):
    out = bytearray([ftype])
    for i, x in enumerate(row):
        a = row[i - bpp] if i >= bpp else 0
        b = prev[i] if prev else 0
        c = prev[i - bpp] if prev and i >= bpp else 0
        if ftype == 0:
            p = 0
        elif ftype == 1:
            p = a
        elif ftype == 2:
            p = b
        elif ftype == 3:
            p = (a + b) // 2
        else:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
        out.append((x - p) & 0xff)
    return bytes(out)


def png(w, h, ctype, depth, interlace=0, extra=b"", rng=None, plte=None, level=9):
    """A valid PNG of random pixels. EXTRA: chunks put before IDAT."""
    rng = rng or random.Random(w * 1000 + h * 10 + ctype + depth)
    ch = CHANNELS[ctype]
    maxv = (1 << depth) - 1
    if ctype == 3:
        ncol = len(plte) // 3 if plte else min(maxv + 1, 16)
        maxv = ncol - 1
        plte = plte or bytes(rng.randrange(256) for _ in range(3 * ncol))
    pix = [[[rng.randint(0, maxv) for _ in range(ch)] for _ in range(w)] for _ in range(h)]
    bpp = max(1, ch * depth // 8)
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for (x0, y0, dx, dy) in passes:
        prev = None
        for y in range(y0, h, dy):
            xs = range(x0, w, dx)
            if not xs:
                continue
            row = pack_row([s for x in xs for s in pix[y][x]], depth)
            raw += filter_row(row, prev, bpp, rng.randrange(5))
            prev = row
    data = b"\x89PNG\r\n\x1a\n"
    data += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace))
    if ctype == 3:
        data += chunk(b"PLTE", plte)
    data += extra
    z = zlib.compress(raw, level)
    # Two IDATs: the decoder must stitch them.
    data += chunk(b"IDAT", z[:len(z) // 2]) + chunk(b"IDAT", z[len(z) // 2:])
    data += chunk(b"IEND", b"")
    return data


def png_files():
    files = {}
    depths = {0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16]}
    for ctype, ds in depths.items():
        for d in ds:
            for il in (0, 1):
                files["c%d_d%d_i%d.png" % (ctype, d, il)] = png(7 + d % 5, 5 + ctype, ctype, d, il)
    trns_gray = chunk(b"tRNS", struct.pack(">H", 1))
    trns_rgb = chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))
    trns_pal = chunk(b"tRNS", bytes([0, 128, 255]))
    files["trns_gray.png"] = png(9, 9, 0, 8, extra=trns_gray)
    files["trns_rgb16.png"] = png(9, 9, 2, 16, extra=trns_rgb)
    files["trns_pal.png"] = png(9, 9, 3, 4, extra=trns_pal)
    anc = (chunk(b"gAMA", struct.pack(">I", 45455)) + chunk(b"sRGB", b"\x00") +
           chunk(b"pHYs", struct.pack(">IIB", 2835, 2835, 1)) +
           chunk(b"tEXt", b"Comment\x00fuzz") +
           chunk(b"zTXt", b"Title\x00\x00" + zlib.compress(b"z" * 200)) +
           chunk(b"iCCP", b"icc\x00\x00" + zlib.compress(b"\x00" * 128)) +
           chunk(b"eXIf", b"MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00") +
           chunk(b"prIV", b"unknown ancillary"))
    files["ancillary.png"] = png(6, 6, 6, 8, extra=anc)
    files["one_pixel.png"] = png(1, 1, 0, 1)
    files["wide.png"] = png(300, 1, 2, 8)
    files["tall.png"] = png(1, 200, 4, 8, interlace=1)
    files["level0.png"] = png(16, 16, 6, 8, level=0)
    good = png(12, 10, 2, 8)
    files["truncated_idat.png"] = good[:len(good) - 30]
    files["truncated_header.png"] = good[:20]
    bad = bytearray(good)
    bad[40] ^= 0xff  # inside the first IDAT: CRC and zlib both wrong
    files["bad_crc.png"] = bytes(bad)
    files["no_iend.png"] = good[:-12]
    files["huge_dims.png"] = (b"\x89PNG\r\n\x1a\n" +
                              chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)) +
                              chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    files["zero_width.png"] = (b"\x89PNG\r\n\x1a\n" +
                               chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 5, 8, 0, 0, 0, 0)) +
                               chunk(b"IEND", b""))
    files["bad_depth.png"] = (b"\x89PNG\r\n\x1a\n" +
                              chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 3, 2, 0, 0, 0)) +
                              chunk(b"IEND", b""))
    files["pal_index_out.png"] = png(8, 8, 3, 8, plte=bytes(6))  # 2 colours, indices up to 1
    files["extra_data.png"] = png(5, 5, 0, 8) + b"trailing garbage"
    return files


# ------------------------------------------------------------------ JPEG, through Pillow
def jpeg_files():
    from PIL import Image
    files = {}
    rng = random.Random(7)

    def img(mode, w, h):
        im = Image.new("RGB", (w, h))
        im.putdata([(x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), rng.randrange(256))
                    for y in range(h) for x in range(w)])
        return im.convert(mode)

    def save(name, im, **kw):
        b = io.BytesIO()
        im.save(b, "JPEG", **kw)
        files[name] = b.getvalue()

    save("rgb_420.jpg", img("RGB", 33, 17), quality=75, subsampling=2)
    save("rgb_422.jpg", img("RGB", 24, 24), quality=90, subsampling=1)
    save("rgb_444.jpg", img("RGB", 17, 9), quality=50, subsampling=0)
    save("gray.jpg", img("L", 40, 13), quality=80)
    save("progressive.jpg", img("RGB", 48, 32), quality=70, progressive=True)
    save("progressive_gray.jpg", img("L", 31, 31), quality=70, progressive=True)
    save("optimized.jpg", img("RGB", 20, 20), quality=60, optimize=True)
    save("cmyk.jpg", img("CMYK", 16, 16), quality=80)
    save("q1.jpg", img("RGB", 64, 8), quality=1)
    save("q100.jpg", img("RGB", 8, 64), quality=100)
    save("one_pixel.jpg", img("RGB", 1, 1))
    for o in range(1, 9):
        ex = Image.Exif()
        ex[0x0112] = o
        save("orientation_%d.jpg" % o, img("RGB", 12, 6), quality=60, exif=ex.tobytes())
    # Restart markers (DRI), written by hand into a baseline file.
    base = files["rgb_420.jpg"]
    sos = base.index(b"\xff\xda")
    files["dri_marker_only.jpg"] = base[:sos] + b"\xff\xdd\x00\x04\x00\x01" + base[sos:]
    files["truncated.jpg"] = base[:len(base) * 2 // 3]
    files["header_only.jpg"] = base[:sos]
    files["no_eoi.jpg"] = base[:-2]
    bad = bytearray(files["progressive.jpg"])
    for i in range(len(bad) // 2, len(bad) // 2 + 20):
        bad[i] ^= 0x5a
    files["corrupt_scan.jpg"] = bytes(bad)
    # SOF claiming 60000 x 60000 (the decoder must refuse it from the header).
    b = bytearray(base)
    sof = b.index(b"\xff\xc0")
    b[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    files["huge_dims.jpg"] = bytes(b)
    # An EXIF block whose IFD offset points past its end.
    app1 = b"Exif\x00\x00MM\x00*\xff\xff\xff\x00"
    files["exif_bad_offset.jpg"] = (base[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) +
                                    app1 + base[2:])
    return files


# ------------------------------------------------------------------ params JSON
PARAMS = [
    None,
    {},
    {"pipeline": [{"op": "thumbnail", "width": 48, "height": 48}], "format": "png",
     "png_level": 1},
    {"pipeline": [{"op": "blur", "sigma": 15}, {"op": "thumbnail", "width": 64, "height": 64}],
     "format": "jpeg", "quality": 85},
    {"pipeline": [{"op": "resize", "width": 50, "fit": "cover", "filter": "bilinear"}]},
    {"pipeline": [{"op": "resize", "width": 30, "height": 70, "fit": "contain",
                   "filter": "nearest"}], "exact": True},
    {"pipeline": [{"op": "resize", "height": 65535, "fit": "fill"}], "format": "jpeg"},
    {"pipeline": [{"op": "crop", "x": 3, "y": 4, "width": 20, "height": 10},
                  {"op": "rotate", "degrees": 90}, {"op": "flip", "direction": "vertical"}],
     "format": "png", "auto_orient": False},
    {"pipeline": [{"op": "sharpen", "sigma": 2, "amount": 1.5}, {"op": "grayscale"}],
     "format": "jpeg", "progressive": True, "quality": 1},
    {"pipeline": [{"op": "rotate", "degrees": 270}],
     "variants": [{"name": "small", "pipeline": [{"op": "thumbnail", "width": 16, "height": 16}]},
                  {"name": "big-1", "pipeline": [{"op": "resize", "width": 200}],
                   "format": "png", "png_level": 9},
                  {"name": "gray_x", "pipeline": [{"op": "grayscale"}, {"op": "blur",
                                                                       "sigma": 0.5}],
                   "format": "jpeg", "quality": 100}]},
    {"variants": [{"name": "a", "pipeline": [{"op": "blur", "sigma": 250},
                                             {"op": "resize", "width": 4, "height": 4}]}]},
    {"pipeline": [{"op": "crop", "x": 1000, "y": 1000, "width": 1, "height": 1}]},
    {"pipeline": [{"op": "blur", "sigma": 0}]},
    {"pipeline": [{"op": "unknown"}], "output": "path"},
    {"format": "webp", "quality": 101},
    {"pipeline": [{"op": "thumbnail", "width": 1, "height": 65535}], "output": "inline",
     "exact": False},
    {"variants": [{"name": "x"}, {"name": "x"}]},
    [],
    "pipeline",
    3,
]


def write(folder, files):
    d = os.path.join(CORPUS, folder)
    os.makedirs(d, exist_ok=True)
    for old in os.listdir(d):
        if not old.startswith("crash-"):  # reproducers stay
            os.remove(os.path.join(d, old))
    for name, data in sorted(files.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


def main():
    pngs = png_files()
    jpegs = jpeg_files()
    write("png", pngs)
    write("jpeg", jpegs)
    # The whole image op with fixed params: a few of each, the varied ones.
    pick = ["c3_d4_i1.png", "c6_d16_i0.png", "trns_pal.png", "truncated_idat.png",
            "ancillary.png", "c0_d1_i0.png"]
    pickj = ["rgb_420.jpg", "progressive.jpg", "cmyk.jpg", "orientation_6.jpg", "truncated.jpg",
             "gray.jpg", "huge_dims.jpg"]
    image = {n: pngs[n] for n in pick}
    image.update({n: jpegs[n] for n in pickj})
    image["gif.bin"] = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    image["damaged_sig.png"] = b"\x89PNG\n\n\x1a\n" + pngs["c0_d8_i0.png"][8:]
    image["empty.bin"] = b""
    write("image", image)
    write("img_params", {"p%02d.json" % i: json.dumps(p).encode()
                         for i, p in enumerate(PARAMS)})
    total = sum(len(v) for v in list(pngs.values()) + list(jpegs.values()) + list(image.values()))
    print("wrote %d files, %d bytes" % (len(pngs) + len(jpegs) + len(image) + len(PARAMS), total))


if __name__ == "__main__":
    main()
