#!/usr/bin/python3
"""WebP and metadata through the real server (SPEC §6 "Colour, formats and metadata", issue
14), checked with Pillow 9.4 (Debian's python3-pil reads and writes WebP).

WebP out: lossy within 1.5 dB of Pillow's own WebP at the same quality (and >= 30 dB), lossless
pixel-exact against the PNG output, alpha kept, tar members named .webp, a side over 16383
refused before decoding. WebP in: lossless, lossy and RGBA inputs >= 40 dB against Pillow's
decode and thumbnail; "same" answers WebP; animated WebP unsupported_format, truncated and
damaged corrupt_image, the pixel limit checked from the header (too_large).
Metadata: a JPEG with EXIF (GPS, orientation 6), XMP and a comment, and a PNG with eXIf and
an XMP iTXt: by default no output (JPEG, PNG, WebP) holds any of it; keep_metadata copies EXIF
(GPS intact, orientation 1 once applied, kept as it was under auto_orient false) and XMP,
never the comment. /v1/ops lists the new params.
"""
import base64
import io
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402
from imglib import (b64, open_image, photo, post_multipart, psnr, ref_thumbnail,  # noqa: E402
                    untar)
from PIL import Image, PngImagePlugin  # noqa: E402

S = None
BOX = 256
THUMB = [{"op": "thumbnail", "width": BOX, "height": BOX}]
PHOTO = "friends_by_Aitzol_Berasategi.jpg"
GPS = {1: "N", 2: (43.0, 15.0, 30.5), 3: "W", 4: (4.0, 50.0, 12.25)}
XMP = (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
       b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
       b'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="batchd-test-14"/></rdf:RDF>'
       b'</x:xmpmeta><?xpacket end="w"?>')
COMMENT = b"secret-comment-14"


def encode(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def jobs(inputs, params, server=None):
    """Image jobs on the byte strings INPUTS; returns their NDJSON lines (index order)."""
    lines, status, _ = (server or S).batch(
        {"op": "image", "params": params, "inputs": [{"data": b64(d)} for d in inputs]},
        timeout=300)
    check(status == 200, (status, lines))
    return sorted(lines[:-1], key=lambda l: l["index"])


def run(data, params):
    r = jobs([data], params)[0]
    check("result" in r, r)
    return base64.b64decode(r["result"]["data"]), r["result"]


def error_of(data, params, server=None):
    r = jobs([data], params, server)[0]
    check("error" in r, r)
    return r["error"]


def small_photo():
    im = Image.open(photo(PHOTO)).convert("RGB")
    im.thumbnail((640, 640))
    return im


# ---------------------------------------------------------------- WebP out


def test_webp_out_lossy_near_pillows_own():
    src = photo(PHOTO)
    ref = ref_thumbnail(src, BOX)
    data = open(src, "rb").read()
    for q in (75, 90):
        out, res = run(data, {"pipeline": THUMB, "format": "webp", "quality": q})
        im = open_image(out)
        check(res["format"] == "webp" and im.format == "WEBP" and im.size == ref.size,
              (res, im.format, im.size))
        pil = open_image(encode(ref, "WEBP", quality=q))
        p, pp = psnr(ref, im), psnr(ref, pil)
        print("  webp q%d: %.1f dB, %d bytes (Pillow's own WebP: %.1f dB)" % (q, p, len(out), pp))
        check(p >= 30 and p >= pp - 1.5, (q, p, pp))


def test_webp_out_lossless_and_alpha():
    rgba = small_photo().convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    data = encode(rgba, "PNG")
    png, _ = run(data, {"pipeline": THUMB, "format": "png"})
    out, res = run(data, {"pipeline": THUMB, "format": "webp", "lossless": True})
    a, b = open_image(png), open_image(out)
    check(b.format == "WEBP" and b.mode == "RGBA", (b.format, b.mode))
    # libwebp may zero the colour of fully transparent pixels: compare premultiplied.
    check(a.convert("RGBa").tobytes() == b.convert("RGBa").tobytes(), "lossless WebP != PNG")
    out, _ = run(data, {"pipeline": THUMB, "format": "webp", "quality": 90})
    c = open_image(out)
    pa = psnr(a.getchannel("A").convert("RGB"), c.getchannel("A").convert("RGB"))
    print("  lossy WebP with alpha: colour %.1f dB, alpha %.1f dB" % (psnr(a, c), pa))
    check(c.mode == "RGBA" and pa >= 40 and psnr(a, c) >= 30, (c.mode, pa))
    gray = encode(small_photo().convert("L"), "PNG")
    out, _ = run(gray, {"pipeline": THUMB, "format": "webp", "lossless": True})
    check(open_image(out).convert("L").tobytes() ==
          open_image(run(gray, {"pipeline": THUMB, "format": "png"})[0]).tobytes(), "gray WebP")


def test_webp_tar_members_and_variants():
    data = open(photo(PHOTO), "rb").read()
    params = {"pipeline": THUMB, "format": "webp",
              "variants": [{"name": "s", "pipeline": [{"op": "thumbnail", "width": 64,
                                                       "height": 64}]},
                           {"name": "l", "format": "webp", "lossless": True}]}
    status, _, body = post_multipart(S, {"op": "image", "params": params}, [("p.jpg", data)],
                                     accept="application/x-tar")
    check(status == 200, body[:300])
    names = [n for n, _ in untar(body)]
    check(names[:2] == ["p-s.webp", "p-l.webp"], names)
    for n, b in untar(body)[:2]:
        check(open_image(b).format == "WEBP", n)


def test_webp_side_refused_before_decoding():
    data = encode(small_photo(), "PNG")
    err = error_of(data, {"pipeline": [{"op": "resize", "width": 17000}], "format": "webp"})
    check(err["code"] == "too_large" and "16383" in err["message"], err)


# ---------------------------------------------------------------- WebP in


def test_webp_inputs():
    rgb = small_photo()
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    for what, data in (("lossless", encode(rgb, "WEBP", lossless=True)),
                       ("lossy q90", encode(rgb, "WEBP", quality=90)),
                       ("RGBA lossless", encode(rgba, "WEBP", lossless=True))):
        ref = open_image(data)
        ref.thumbnail((BOX, BOX))
        out, res = run(data, {"pipeline": THUMB, "format": "png"})
        im = open_image(out)
        p = psnr(ref, im)
        print("  WebP %s in: %.1f dB against Pillow's decode + thumbnail" % (what, p))
        check(im.size == ref.size and p >= 40, (what, im.size, ref.size, p))
        check(im.mode == ("RGBA" if "RGBA" in what else "RGB"), (what, im.mode))
        out, res = run(data, {"pipeline": THUMB})
        check(res["format"] == "webp" and open_image(out).format == "WEBP", res)


def test_webp_bad_inputs():
    rgb = small_photo()
    frames = [rgb.resize((64, 64)), rgb.resize((64, 64)).rotate(90)]
    anim = encode(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100)
    check(open_image(anim).is_animated, "Pillow made no animation")
    err = error_of(anim, {"pipeline": THUMB})
    check(err["code"] == "unsupported_format" and "animated" in err["message"], err)
    good = encode(rgb, "WEBP", quality=80)
    for what, data in (("truncated", good[:len(good) // 2]), ("header only", good[:30]),
                       ("start code damaged", good[:23] + b"\0\0\0" + good[26:])):
        err = error_of(data, {"pipeline": THUMB})
        check(err["code"] == "corrupt_image", (what, err))


def test_webp_pixel_limit_from_header():
    data = encode(small_photo(), "WEBP", quality=80)
    with Server(workers=1, args=["--max-input-pixels", "10000"]) as small:
        err = error_of(data, {"pipeline": THUMB}, small)
    check(err["code"] == "too_large" and "limit of 10000" in err["message"], err)


# ---------------------------------------------------------------- metadata


def exif_bytes(orientation):
    e = Image.Exif()
    e[0x0112] = orientation
    e[0x010F] = "batchd-camera"
    e[0x8825] = GPS
    return e.tobytes()


def with_xmp_and_comment(jpeg):
    """JPEG bytes with an XMP APP1 and a COM marker inserted after SOI."""
    app1 = b"http://ns.adobe.com/xap/1.0/\0" + XMP
    com = COMMENT
    return (jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 +
            b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com + jpeg[2:])


def tagged_jpeg():
    im = small_photo().resize((320, 200))
    return im.size, with_xmp_and_comment(encode(im, "JPEG", quality=90, exif=exif_bytes(6)))


def tagged_png():
    im = small_photo().resize((320, 200))
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    info.add_text("Comment", COMMENT.decode())
    return encode(im, "PNG", exif=exif_bytes(1), pnginfo=info)


def test_metadata_dropped_by_default():
    size, jpeg = tagged_jpeg()
    src = open_image(jpeg)
    check(src.getexif().get_ifd(0x8825) and XMP in jpeg and COMMENT in jpeg, "test input")
    for data in (jpeg, tagged_png()):
        for fmt in ("jpeg", "png", "webp"):
            out, _ = run(data, {"pipeline": THUMB, "format": fmt})
            im = open_image(out)
            check("exif" not in im.info and not im.getexif(), (fmt, "EXIF leaked", im.info.keys()))
            check(b"batchd-camera" not in out and XMP not in out and COMMENT not in out,
                  (fmt, "metadata bytes leaked"))


def test_keep_metadata():
    size, jpeg = tagged_jpeg()
    for data, rotated in ((jpeg, True), (tagged_png(), False)):
        for fmt in ("jpeg", "png", "webp"):
            out, res = run(data, {"pipeline": THUMB, "format": fmt, "keep_metadata": True})
            im = open_image(out)
            ex = im.getexif()
            check(ex.get(0x010F) == "batchd-camera", (fmt, dict(ex)))
            gps = dict(ex.get_ifd(0x8825))
            check(gps == GPS, (fmt, "GPS", gps))
            check(ex.get(0x0112) == 1, (fmt, "orientation", ex.get(0x0112)))
            check((res["height"] > res["width"]) == rotated, (fmt, res))
            check(XMP in out, (fmt, "XMP not kept"))
            check(COMMENT not in out, (fmt, "the comment kept"))
    out, res = run(jpeg, {"pipeline": THUMB, "format": "jpeg", "keep_metadata": True,
                          "auto_orient": False})
    check(open_image(out).getexif().get(0x0112) == 6 and res["width"] > res["height"],
          "orientation not applied: the tag must stay 6")


def test_ops_lists_new_params():
    status, _, body = S.request("GET", "/v1/ops")
    img = {o["name"]: o for o in json.loads(body)["ops"]}["image"]
    top = {p["name"]: p for p in img["params"]}
    check(top["icc"]["choices"] == ["srgb", "keep", "strip"] and top["icc"]["default"] == "srgb",
          top["icc"])
    check(top["keep_metadata"]["default"] is False and top["lossless"]["default"] is False, top)
    check("webp" in top["format"]["choices"], top["format"])
    for bad in ({"icc": "cmyk"}, {"keep_metadata": 1}, {"format": "avif"},
                {"variants": [{"name": "a", "lossless": "yes"}]}):
        lines, status, _ = S.batch({"op": "image", "params": bad, "inputs": [{"data": "AA=="}]})
        check(status == 400 and lines[0]["error"]["code"] == "invalid_param", (bad, lines))


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("img_formats").run(globals())
    sys.exit(code)
