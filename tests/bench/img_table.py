#!/usr/bin/python3
"""Issue 14's table from one run: batchd through its HTTP server beside Pillow and libvips,
per photo, for the whole batch on two workers, and per format and colour-profile case.

    tests/bench/img_table.py --bin build-bench/batchd [--bin-before OLD_BATCHD] [--reps 3]
    ONLY=img tests/bench/run.sh          (builds build-bench/ first)

Per photo (best of REPS; the systems alternate inside each round so that the noise of a
shared machine spreads over all of them):
  - batchd, one worker, one photo per request, multipart upload through curl (the time is
    curl's, request start to the last byte of the NDJSON stream): "blur(15)+thumbnail 1200,
    JPEG q85" and "thumbnail 256, JPEG q85"; with --bin-before, the same on a second server
    running the older binary, in the same rounds;
  - Pillow 9.4 in this process: open, GaussianBlur(15), thumbnail((1200, 1200)), save JPEG
    q85; and open, thumbnail((256, 256)) (which drafts JPEGs: DCT scaling to no less than
    twice the output), save;
  - vipsthumbnail (one process per photo, VIPS_CONCURRENCY=1, as ../shared/peers/vips.sh):
    -s 256x256 to JPEG Q=85.
The batch: all photos in one request on a two-worker batchd, against ProcessPoolExecutor(2)
+ Pillow and ../shared/peers/vips.sh with xargs -P2 (thumb: vipsthumbnail; blur+thumb: vips
gaussblur 15 then vipsthumbnail); batchd once in the given order and once largest first,
each with the share of the batch its workers were busy (busy_ms / (2 * elapsed_ms) of the
summary: the rest is the upload, the dispatch and the tail where one worker is left alone
with the last photo).

The photos are ../shared/data's (see its MANIFEST.tsv for origins); the issue's own photos
are not public, so the kinds the shared set lacks are made from its real images with Pillow
in a temporary folder at start (each row says "made"): a 5640x3172 progressive JPEG (from
Kleiber, 6028x3391), a 3840x2400 progressive JPEG of ~9 MB (from Volna), a 5120x2880 RGBA
PNG (Volna, softened by a 0.8 px blur so that it deflates like a render, alpha a gradient)
and a 2268x1512 RGBA PNG (flower.png with an alpha gradient). Format and profile rows use
Bridge (4352x2448) made into WebP, CMYK with Ghostscript's SWOP profile, and JPEGs tagged
Display P3 (built as tests/e2e/test_img_colour.py builds it: Debian ships none) and Adobe RGB
(colord-data).

Writes tests/bench/results/YYYY-MM-DD-img.md (--results) and prints it.
"""
import argparse
import datetime
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import bench  # noqa: E402  (Batchd, curl, the Pillow peers)
from PIL import Image, ImageCms, ImageFilter  # noqa: E402

SHARED = bench.SHARED
DATA = os.path.join(SHARED, "data", "photos")
ICC = "/usr/share/color/icc"
Q = 85
BLUR = {"pipeline": [{"op": "blur", "sigma": 15}, {"op": "thumbnail", "width": 1200,
                                                    "height": 1200}],
        "format": "jpeg", "quality": Q}
THUMB = {"pipeline": [{"op": "thumbnail", "width": 256, "height": 256}], "format": "jpeg",
         "quality": Q}


def _alpha(im):
    w, h = im.size
    a = Image.linear_gradient("L").resize((w, h)).point(lambda v: 128 + v // 2)
    im = im.convert("RGBA")
    im.putalpha(a)
    return im


def make_photos(tmp):
    """[(label, path, made)] in TMP/photos: the shared photos and the ones made from them."""
    d = os.path.join(tmp, "photos")
    os.makedirs(d)
    out = []

    def real(name, label):
        dst = os.path.join(d, name)
        shutil.copy(os.path.join(DATA, name), dst)  # vips.sh finds files, not links
        out.append((label, dst, False))

    def made(name, label, im, **kw):
        dst = os.path.join(d, name)
        im.save(dst, **kw)
        out.append((label, dst, True))

    t = time.time()
    k = Image.open(os.path.join(DATA, "Kleiber_by_Lukas_Baubkus.jpg")).convert("RGB")
    made("kleiber_5640x3172_prog.jpg", "5640x3172 progressive JPEG",
         k.resize((5640, 3172), Image.LANCZOS), quality=98, subsampling=0, progressive=True)
    volna = Image.open(os.path.join(DATA, "Volna_5120x2880.jpg")).convert("RGB")
    made("volna_5120x2880_rgba.png", "5120x2880 RGBA PNG",
         _alpha(volna.filter(ImageFilter.GaussianBlur(0.8))), compress_level=6)
    made("flower_2268x1512_rgba.png", "2268x1512 RGBA PNG",
         _alpha(Image.open(os.path.join(DATA, "flower.png")).convert("RGB")), compress_level=6)
    made("volna_3840x2400_prog.jpg", "3840x2400 progressive JPEG",
         volna.resize((3840, 2400), Image.LANCZOS), quality=100, subsampling=0,
         progressive=True)
    real("Dragonfly_by_Bolly.jpg", "4224x3168 progressive JPEG")
    real("Bridge_by_Sander_Klootwijk.jpg", "4352x2448 progressive JPEG")
    real("Infinite-Sea_by_Aury88.jpg", "4096x4096 progressive JPEG")
    real("Altai_5120x2880.png", "5120x2880 RGB PNG, iCCP")
    print("made the inputs in %.1f s" % (time.time() - t), flush=True)
    return out


def make_cases(tmp):
    """[(label, path, params, pillow-format, pillow-kw, vips-suffix)] for the format rows."""
    from test_img_colour import display_p3_profile
    d = os.path.join(tmp, "cases")
    os.makedirs(d)
    src = Image.open(os.path.join(DATA, "Bridge_by_Sander_Klootwijk.jpg")).convert("RGB")
    jpeg_out = ({"format": "jpeg", "quality": Q}, "JPEG", {"quality": Q}, ".jpg[Q=85]")
    webp_out = ({"format": "webp", "quality": 80}, "WEBP", {"quality": 80, "method": 4},
                ".webp[Q=80]")
    inputs = [("JPEG, no profile", "plain.jpg", src, {"quality": 92}),
              ("WebP in (q90)", "bridge.webp", src, {"quality": 90, "method": 4}),
              ("CMYK JPEG + SWOP profile", "cmyk.jpg", src.convert("CMYK"),
               {"quality": 92, "icc_profile": open(ICC + "/ghostscript/default_cmyk.icc",
                                                  "rb").read()}),
              ("Display P3 JPEG", "p3.jpg", src, {"quality": 92,
                                                  "icc_profile": display_p3_profile()}),
              ("Adobe RGB JPEG", "adobe.jpg", src,
               {"quality": 92, "icc_profile": open(ICC + "/colord/AdobeRGB1998.icc",
                                                  "rb").read()})]
    out = []
    for label, name, im, kw in inputs:
        path = os.path.join(d, name)
        im.save(path, **kw)
        out.append((label + " -> JPEG q85", path) + jpeg_out)
        if name == "plain.jpg":
            out.append(("JPEG, no profile -> WebP q80", path) + webp_out)
    return out


# ---------------------------------------------------------------- the systems
def batchd_one(srv, path, params, tmp):
    return bench.batchd_images(srv, [path], params, os.path.join(tmp, "out.ndjson"))


def pil_blur(path):
    t = time.perf_counter()
    im = Image.open(path)
    im = im.filter(ImageFilter.GaussianBlur(15))
    im.thumbnail((1200, 1200))
    bench._rgb(im).save(io.BytesIO(), "JPEG", quality=Q)
    return time.perf_counter() - t


def pil_thumb(path, box=256, fmt="JPEG", kw=None):
    """Pillow as a user writes a thumbnail; with a profile, converted to sRGB as batchd
    does by default. The draft is the one thumbnail() itself asks for (reducing_gap=2: DCT
    scaling down to no less than twice the output), made before the conversion."""
    t = time.perf_counter()
    im = Image.open(path)
    icc = im.info.get("icc_profile")
    r = min(box / im.width, box / im.height)
    im.draft(im.mode, (2 * round(im.width * r), 2 * round(im.height * r)))
    if icc:
        im = ImageCms.profileToProfile(im, ImageCms.ImageCmsProfile(io.BytesIO(icc)),
                                       ImageCms.createProfile("sRGB"), outputMode="RGB")
    im.thumbnail((box, box))
    bench._rgb(im).save(io.BytesIO(), fmt, **(kw or {"quality": Q}))
    return time.perf_counter() - t


def vips_thumb(path, box, suffix, tmp):
    env = dict(os.environ, VIPS_CONCURRENCY="1")
    t = time.perf_counter()
    subprocess.run(["vipsthumbnail", path, "-s", "%dx%d" % (box, box), "-o",
                    os.path.join(tmp, "vips-out" + suffix)], check=True, env=env)
    return time.perf_counter() - t


def vips_batch(mode, box, photos_dir, tmp):
    p = subprocess.run([os.path.join(bench.PEERS_DIR, "vips.sh"), mode, "2", photos_dir,
                        os.path.join(tmp, "vips-batch")], check=True, capture_output=True,
                       text=True, env=dict(os.environ, SIZE=str(box)))
    return float(p.stdout.split("\t")[5])


def batchd_batch(srv, paths, params, tmp, util):
    """The batch in one request; UTIL[secs] = busy_ms / (workers * elapsed_ms) of the
    summary: how much of the batch the workers were busy (the rest is the upload, the
    dispatch and the tail, when one worker is left with the last photo)."""
    out = os.path.join(tmp, "out.ndjson")
    secs = bench.batchd_images(srv, paths, params, out)
    with open(out, "rb") as f:
        f.seek(max(0, os.path.getsize(out) - 4096))
        summ = json.loads(f.read().splitlines()[-1])["summary"]
    util[secs] = summ["busy_ms"] / (summ["workers"] * summ["elapsed_ms"])
    return secs


def pool_batch(fn, photos, tmp):
    return bench.run_pil(fn, "ppe", 2, photos, os.path.join(tmp, "pil-batch"))


# ---------------------------------------------------------------- the run
def best_of(reps, jobs):
    """JOBS: {key: fn}. Runs every fn once per round, in an order rotated each round;
    returns {key: best seconds}."""
    keys = list(jobs)
    best = {k: float("inf") for k in keys}
    for r in range(reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            best[k] = min(best[k], jobs[k]())
    return best


def greedy(times, workers=2):
    """The makespan of TIMES dispatched in that order, each to the first idle worker."""
    free = [0.0] * workers
    for t in times:
        i = free.index(min(free))
        free[i] += t
    return max(free)


def fmt(s):
    return "%.3f" % s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the batchd to measure")
    ap.add_argument("--bin-before", help="an older batchd, measured in the same rounds")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--only", default="photos,batch,formats")
    ap.add_argument("--command", default="tests/bench/img_table.py")
    a = ap.parse_args()
    only = set(a.only.split(","))
    tmp = tempfile.mkdtemp(prefix="batchd-img-")
    srv = {}
    lines = []
    try:
        photos = make_photos(tmp)
        cases = make_cases(tmp) if "formats" in only else []
        bins = {"after": a.bin}
        if a.bin_before:
            bins["before"] = a.bin_before
        for tag, b in bins.items():
            srv[tag, 1] = bench.Batchd(b, 1, tmp)
            if "batch" in only:
                srv[tag, 2] = bench.Batchd(b, 2, tmp)
        tags = list(bins)[::-1]  # before, after
        for _, p, _ in photos:  # warm-up: page cache, servers, Pillow, vips
            batchd_one(srv["after", 1], p, THUMB, tmp)
        started = time.time()

        def w(s):
            print(s, flush=True)
            lines.append(s)

        single = {"blur": [], "thumb": []}  # per-photo seconds of batchd after, one worker
        if "photos" in only:
            w("## Per photo: one worker, one photo per request, best of %d\n" % a.reps)
            bt = " / ".join("batchd %s" % t for t in tags)
            w("| photo | MB | blur(15)+thumb 1200: %s / Pillow (speed-up) | thumb 256: %s / "
              "Pillow (draft) / vipsthumbnail |" % (bt, bt))
            w("|---|---|---|---|")
            for label, p, made in photos:
                jobs = {}
                for t in tags:
                    jobs["blur", t] = (lambda s=srv[t, 1], p=p: batchd_one(s, p, BLUR, tmp))
                    jobs["thumb", t] = (lambda s=srv[t, 1], p=p: batchd_one(s, p, THUMB, tmp))
                jobs["blur", "pil"] = lambda p=p: pil_blur(p)
                jobs["thumb", "pil"] = lambda p=p: pil_thumb(p)
                jobs["thumb", "vips"] = lambda p=p: vips_thumb(p, 256, ".jpg[Q=85]", tmp)
                r = best_of(a.reps, jobs)
                mb = os.path.getsize(p) / 1e6
                single["blur"].append(r["blur", "after"])
                single["thumb"].append(r["thumb", "after"])
                blur = " / ".join(fmt(r["blur", t]) for t in tags)
                thumb = " / ".join(fmt(r["thumb", t]) for t in tags)
                w("| %s%s | %.1f | %s / %s s (%.1fx) | %s / %s / %s s |" % (
                    label, " (made)" if made else "", mb, blur, fmt(r["blur", "pil"]),
                    r["blur", "pil"] / r["blur", "after"], thumb, fmt(r["thumb", "pil"]),
                    fmt(r["thumb", "vips"])))
        if "batch" in only:
            paths = [p for _, p, _ in photos]
            pdir = os.path.dirname(paths[0])
            w("\n## The batch of these %d photos on two workers, best of %d\n" %
              (len(paths), a.reps))
            # Largest first (by pixels, from the headers): the order a client can pick to
            # shorten the tail where one worker finishes the last big photo alone.
            big = sorted(paths, key=lambda p: -Image.open(p).size[0] * Image.open(p).size[1])
            jobs, util = {}, {}
            for t in tags:
                for k, par in (("blur", BLUR), ("thumb", THUMB)):
                    util[k, t], util[k, t, "big"] = {}, {}
                    jobs[k, t] = (lambda s=srv[t, 2], par=par, u=util[k, t]:
                                  batchd_batch(s, paths, par, tmp, u))
                    jobs[k, t, "big"] = (lambda s=srv[t, 2], par=par, u=util[k, t, "big"]:
                                         batchd_batch(s, big, par, tmp, u))
            jobs["blur", "pool"] = lambda: pool_batch(bench.pil_blur_thumb, paths, tmp)
            jobs["thumb", "pool"] = lambda: pool_batch(bench.pil_thumb256, paths, tmp)
            jobs["blur", "vips"] = lambda: vips_batch("blur+thumb", 1200, pdir, tmp)
            jobs["thumb", "vips"] = lambda: vips_batch("thumb", 256, pdir, tmp)
            r = best_of(a.reps, jobs)
            w("| workload | %s | ProcessPoolExecutor(2) + Pillow | vips, xargs -P2 | "
              "batchd %s vs pool / vs vips |" % (" | ".join("batchd %s" % t for t in tags),
                                                 tags[-1]))
            w("|---|%s---|---|---|" % ("---|" * len(tags)))
            for k, name in (("blur", "blur(15)+thumb 1200"), ("thumb", "thumb 256")):
                for order in ((), ("big",)):
                    cells = ["%s s (busy %.0f%%)" % (fmt(r[(k, t) + order]),
                                                    100 * util[(k, t) + order][r[(k, t) + order]])
                             for t in tags]
                    after = r[(k, "after") + order]
                    w("| %s%s | %s | %s s | %s s | %.1fx / %.1fx |" % (
                        name, ", largest first" if order else "", " | ".join(cells),
                        fmt(r[k, "pool"]), fmt(r[k, "vips"]), r[k, "pool"] / after,
                        r[k, "vips"] / after))
            if single["blur"]:
                w("\nThe tail, from the per-photo times above (one worker each): what two workers "
                  "could reach at best, and what the order costs.\n")
                w("| workload | sum / 2 | longest photo | given order (greedy) | largest first "
                  "(greedy) | measured, given order |")
                w("|---|---|---|---|---|---|")
                for k, name in (("blur", "blur(15)+thumb 1200"), ("thumb", "thumb 256")):
                    t = single[k]
                    w("| %s | %s s | %s s | %s s | %s s | %s s |" % (
                        name, fmt(sum(t) / 2), fmt(max(t)), fmt(greedy(t)),
                        fmt(greedy(sorted(t, reverse=True))), fmt(r[k, "after"])))
        if "formats" in only:
            w("\n## Formats and colour profiles: Bridge (4352x2448), thumbnail 1200, one "
              "worker, best of %d\n" % a.reps)
            w("| input -> output | %s | Pillow (ImageCms to sRGB) | vipsthumbnail | "
              "speed-up vs Pillow |" % " | ".join("batchd %s" % t for t in tags))
            w("|---|%s---|---|---|" % ("---|" * len(tags)))
            for label, p, params, pfmt, pkw, vsuf in cases:
                par = dict(params, pipeline=[{"op": "thumbnail", "width": 1200,
                                              "height": 1200}])
                jobs = {t: (lambda s=srv[t, 1], p=p, par=par: batchd_one(s, p, par, tmp))
                        for t in tags}
                jobs["pil"] = lambda p=p, pfmt=pfmt, pkw=pkw: pil_thumb(p, 1200, pfmt, pkw)
                jobs["vips"] = lambda p=p, vsuf=vsuf: vips_thumb(p, 1200, vsuf, tmp)
                r = best_of(a.reps, jobs)
                w("| %s | %s | %s s | %s s | %.1fx |" % (
                    label, " | ".join(fmt(r[t]) + " s" for t in tags), fmt(r["pil"]),
                    fmt(r["vips"]), r["pil"] / r["after"]))
        elapsed = time.time() - started
    finally:
        for s in srv.values():
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    head = ["# Images (issue 14): batchd beside Pillow and libvips, %s" %
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "",
            "Command: `%s` (%d rounds, %.0f s). Machine: %s, %d cores, load average %.1f at "
            "the end: a shared machine, so the figures are best of %d with the systems "
            "alternating in every round, and the ratios matter more than the seconds." % (
                a.command, a.reps, elapsed, platform.processor() or platform.machine(),
                os.cpu_count(), os.getloadavg()[0], a.reps),
            "batchd after: `%s`%s. Pillow %s (in this process), %s." % (
                a.bin, "; before: `%s`" % a.bin_before if a.bin_before else "",
                Image.__version__,
                subprocess.run(["vips", "--version"], capture_output=True,
                               text=True).stdout.strip()),
            "Inputs: ../shared/data/photos; \"made\" = made from those at start with Pillow "
            "(see the script's docstring). Times: batchd end to end through curl, Pillow "
            "in-process, vipsthumbnail one process per photo.", ""]
    text = "\n".join(head + lines) + "\n"
    os.makedirs(a.results, exist_ok=True)
    path = os.path.join(a.results, datetime.date.today().isoformat() + "-img.md")
    with open(path, "w") as f:
        f.write(text)
    print("\nwrote " + path)


if __name__ == "__main__":
    main()
