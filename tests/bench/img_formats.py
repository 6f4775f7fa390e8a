#!/usr/bin/python3
"""The image engine per output format and per colour-profile case, against Pillow (issue 14).

For one photo (default: a shared progressive JPEG), made into inputs with no profile, an sRGB
profile, Adobe RGB, ProPhoto and an Adobe CMYK JPEG with Ghostscript's SWOP profile, it
times build/imgrun (the image op's run() alone, no server: one core) on a thumbnail to 1200
encoded as JPEG q85, PNG, WebP q80 and lossless WebP, beside Pillow 9.4 doing the same in
process (open, ImageCms.profileToProfile to sRGB when there is a profile, thumbnail, save).
Best of REPS runs each; one line per case, Markdown.

    tests/bench/img_formats.py [--imgrun build/imgrun] [--photo PATH] [--reps 3] [--box 1200]
"""
import argparse
import io
import json
import os
import subprocess
import tempfile
import time

from PIL import Image, ImageCms

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
ICC = "/usr/share/color/icc"
SRGB = ImageCms.createProfile("sRGB")


def inputs(photo, tmp):
    """{case: path} of the inputs made from PHOTO."""
    src = Image.open(photo).convert("RGB")
    cases = {"no profile": (src, "JPEG", None),
             "sRGB profile": (src, "JPEG", ImageCms.ImageCmsProfile(SRGB).tobytes()),
             "Adobe RGB": (src, "JPEG", open(ICC + "/colord/AdobeRGB1998.icc", "rb").read()),
             "ProPhoto PNG": (src, "PNG", open(ICC + "/colord/ProPhotoRGB.icc", "rb").read()),
             "CMYK + SWOP": (src.convert("CMYK"), "JPEG",
                             open(ICC + "/ghostscript/default_cmyk.icc", "rb").read())}
    out = {}
    for name, (im, fmt, prof) in cases.items():
        path = os.path.join(tmp, name.replace(" ", "_") + "." + fmt.lower())
        kw = {"quality": 90} if fmt == "JPEG" else {"compress_level": 1}
        if prof:
            kw["icc_profile"] = prof
        im.save(path, fmt, **kw)
        out[name] = path
    return out


FORMATS = {"jpeg q85": ({"format": "jpeg", "quality": 85}, ("JPEG", {"quality": 85})),
           "png": ({"format": "png", "png_level": 3}, ("PNG", {"compress_level": 3})),
           "webp q80": ({"format": "webp", "quality": 80}, ("WEBP", {"quality": 80, "method": 4})),
           "webp lossless": ({"format": "webp", "lossless": True},
                             ("WEBP", {"lossless": True, "quality": 0, "method": 1}))}


def batchd(imgrun, path, params, reps):
    best = 1e9
    for _ in range(reps):
        p = subprocess.run([imgrun, "-p", json.dumps(params), path], capture_output=True,
                           text=True, env=dict(os.environ, IMGRUN_TIME="1"))
        best = min(best, float(p.stderr.split("imgrun:")[1].split()[0]))
    return best


def pillow(path, box, fmt, kw, reps):
    best = 1e9
    for _ in range(reps):
        t = time.perf_counter()
        im = Image.open(path)
        icc = im.info.get("icc_profile")
        im.draft(im.mode, (box, box))  # what thumbnail() does, before the conversion
        if icc:
            im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB,
                                           outputMode="RGB")
        im.thumbnail((box, box))
        im.convert("RGB").save(io.BytesIO(), fmt, **kw)
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgrun", default=os.path.join(ROOT, "build", "imgrun"))
    ap.add_argument("--photo", default=os.path.join(ROOT, "..", "shared", "data", "photos",
                                                    "Bridge_by_Sander_Klootwijk.jpg"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--box", type=int, default=1200)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ins = inputs(a.photo, tmp)
        print("| input (%s) | output | batchd s | Pillow s | speed-up |" %
              os.path.basename(a.photo))
        print("|---|---|---|---|---|")
        for case, path in ins.items():
            for fname, (params, (pfmt, pkw)) in FORMATS.items():
                params = dict(params, pipeline=[{"op": "thumbnail", "width": a.box,
                                                 "height": a.box}])
                tb = batchd(a.imgrun, path, params, a.reps)
                tp = pillow(path, a.box, pfmt, pkw, a.reps)
                print("| %s | %s | %.3f | %.3f | %.1fx |" % (case, fname, tb, tp, tp / tb),
                      flush=True)


if __name__ == "__main__":
    main()
