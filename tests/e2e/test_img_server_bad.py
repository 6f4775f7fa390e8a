#!/usr/bin/python3
"""Hostile and broken images through the real server (issue 3), and the image catalogue.

- every file of data/broken (recursively) and the PngSuite x*.png in one multipart batch:
  each job gets a result or a per-job error with a known code, never worker_crashed or
  timeout; no worker dies; the server keeps serving and /readyz shows every worker;
- a 10,000 x 10,000 PNG bomb made here: too_large, fast, its neighbours unaffected;
  lottapixel.jpg: too_large;
- GET /v1/ops: image lists every pipeline step with its params, ranges and defaults, and
  what it says is what the server enforces.
"""
import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check, results_by_index  # noqa: E402
from imglib import (BAD_FILE_CODES, DATA, b64, bad_corpus, check_thumb, ndjson, photo,  # noqa
                    png_bomb, post_multipart, read, untar)

S = None
BOX = 128
THUMB = {"pipeline": [{"op": "thumbnail", "width": BOX, "height": BOX}], "format": "png",
         "auto_orient": False}
GOOD = "hdr_room.png"


def ready():
    status, _, body = S.request("GET", "/readyz")
    doc = json.loads(body)
    check(status == 200 and doc["workers_up"] == doc["workers"] == 2, (status, doc))


def test_bad_corpus_one_multipart_batch():
    files = bad_corpus()
    check(len(files) > 60, len(files))
    pids = S.worker_pids()
    t0 = time.time()
    status, _, data = post_multipart(
        S, {"op": "image", "params": THUMB, "order": "completed", "timeout_ms": 60000},
        [(os.path.relpath(f, DATA), read(f)) for f in files], timeout=600)
    dt = time.time() - t0
    check(status == 200, data[:300])
    res = results_by_index(ndjson(data))
    check(sorted(res) == list(range(len(files))), "missing jobs")
    codes = {}
    for i, f in enumerate(files):
        r = res[i]
        if "error" in r:
            code = r["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
            check(code in BAD_FILE_CODES, "%s: %r" % (f, r["error"]))
            check(r["error"].get("message"), r)
        else:
            check(r["result"]["format"] == "png" and 0 < r["result"]["width"] <= BOX, r)
            codes["ok"] = codes.get("ok", 0) + 1
            # A broken file that decodes is fine; a corrupt PngSuite image is not.
            check(not os.path.basename(f).startswith("x") or "pngsuite" not in f,
                  "%s was accepted: %r" % (f, r["result"]))
        if os.path.basename(f) == "lottapixel.jpg":
            check(r.get("error", {}).get("code") == "too_large", r)
    print("  %d files in %.2fs: %s" % (len(files), dt, codes), flush=True)
    check(S.worker_pids() == pids, "workers were replaced: %s -> %s" % (pids, S.worker_pids()))
    ready()
    # The server still serves a normal batch.
    status, _, data = post_multipart(S, {"op": "image", "params": THUMB},
                                     [(GOOD, read(photo(GOOD)))])
    check_thumb(base64.b64decode(results_by_index(ndjson(data))[0]["result"]["data"]),
                photo(GOOD), BOX, "after the corpus")


def test_bad_corpus_as_tar():
    """The same corpus as a tar stream: a valid tar, one member per good job, every error
    in errors.ndjson (file names repeat: pngsuite-x and pngsuite hold the same x*.png)."""
    files = bad_corpus()
    if SANITIZED:
        files = files[::3]
    status, hdrs, data = post_multipart(
        S, {"op": "image", "params": THUMB}, [(os.path.basename(f), read(f)) for f in files],
        accept="application/x-tar", timeout=600)
    check(status == 200 and hdrs["content-type"] == "application/x-tar", (status, hdrs))
    members = untar(data)
    names = [n for n, _ in members]
    check(names[-2:] == ["errors.ndjson", "summary.json"], names[-3:])
    check(len(set(names)) == len(names), "repeated member names")
    errors = [json.loads(l) for l in members[-2][1].decode().splitlines()]
    summary = json.loads(members[-1][1])
    check(summary["jobs"] == len(files) and summary["failed"] == len(errors), summary)
    check(summary["ok"] == len(members) - 2, (summary, len(members)))
    check(all(e["error"]["code"] in BAD_FILE_CODES for e in errors), errors)


def test_png_bomb_and_lottapixel():
    # 10,000 x 10,000 is exactly the default limit (100,000,000 pixels, SPEC §1), which is
    # allowed: "inputs over the pixel limit fail" (SPEC §6). One more row is over it.
    bomb = png_bomb(10000, 10001)
    check(len(bomb) < 200 * 1024, len(bomb))
    good = b64(read(photo(GOOD)))
    batch = {"op": "image", "params": THUMB, "timing": True, "chunksize": 1,
             "inputs": [{"data": good}, {"data": b64(bomb)}, {"data": good}]}
    t0 = time.time()
    lines, status, _ = S.batch(batch)
    dt = time.time() - t0
    check(status == 200, lines)
    res = results_by_index(lines)
    bomb_res = res[1]
    check(bomb_res.get("error", {}).get("code") == "too_large", bomb_res)
    check("10000" in bomb_res["error"]["message"], bomb_res["error"])
    job_ms = bomb_res["end_ms"] - bomb_res["start_ms"]
    check(job_ms < (2000 if SANITIZED else 200), "the bomb took %.1f ms" % job_ms)
    for i in (0, 2):
        check_thumb(base64.b64decode(res[i]["result"]["data"]), photo(GOOD), BOX, "beside bomb")
    check(dt < 30, dt)
    # The same through multipart, with lottapixel.jpg (64250 x 64250 in a 1 MB JPEG).
    lotta = os.path.join(DATA, "broken", "jpeg", "lottapixel.jpg")
    status, _, data = post_multipart(S, {"op": "image", "params": THUMB, "timing": True},
                                     [("bomb.png", bomb), ("lotta.jpg", read(lotta))])
    res = results_by_index(ndjson(data))
    for i in (0, 1):
        check(res[i].get("error", {}).get("code") == "too_large", res[i])
        check(res[i]["end_ms"] - res[i]["start_ms"] < (2000 if SANITIZED else 200), res[i])
    ready()


def test_png_bomb_at_the_limit():
    """10,000 x 10,000 all-zero pixels (100 KB of PNG): at the limit, so decoded, quickly,
    within the worker's memory, to the right thumbnail; and too_large under a lower limit."""
    bomb = b64(png_bomb(10000, 10000))
    if not SANITIZED:
        lines, status, _ = S.batch({"op": "image", "params": THUMB, "inputs": [{"data": bomb}]})
        r = results_by_index(lines)[0]
        check(r.get("result", {}).get("width") == BOX and r["result"]["height"] == BOX, r)
        ready()
    with Server(workers=1, args=["--max-input-pixels", "99999999"]) as S2:
        lines, status, _ = S2.batch({"op": "image", "params": THUMB, "timing": True,
                                     "inputs": [{"data": bomb}]})
        r = results_by_index(lines)[0]
        check(r.get("error", {}).get("code") == "too_large", r)
        check(r["end_ms"] - r["start_ms"] < (2000 if SANITIZED else 200), r)


def test_pixel_limit_flag():
    """--max-input-pixels is what too_large is measured against."""
    with Server(workers=1, args=["--max-input-pixels", "100000"]) as S2:
        lines, status, _ = S2.batch({"op": "image", "params": THUMB,
                                     "inputs": [{"data": b64(read(photo(GOOD)))}]})
        err = results_by_index(lines)[0].get("error", {})
        check(err.get("code") == "too_large", err)


# ---------------------------------------------------------------- /v1/ops

STEP_NAMES = {"resize", "thumbnail", "crop", "blur", "sharpen", "grayscale", "rotate", "flip"}


def image_entry():
    status, _, body = S.request("GET", "/v1/ops")
    check(status == 200, status)
    ops = {o["name"]: o for o in json.loads(body)["ops"]}
    check("image" in ops, list(ops))
    return ops["image"]


def test_ops_lists_steps_params_ranges_defaults():
    img = image_entry()
    check(img["image"] is True, img)
    top = {p["name"]: p for p in img["params"]}
    for name in ("pipeline", "variants", "format", "quality", "progressive", "png_level",
                 "output", "auto_orient", "exact"):
        check(name in top, (name, list(top)))
    check(top["quality"]["min"] == 1 and top["quality"]["max"] == 100 and
          top["quality"]["default"] == 85, top["quality"])
    check(top["format"]["choices"] == ["jpeg", "png", "webp", "same"] and
          top["format"]["default"] == "same", top["format"])
    steps = {s["op"]: s for s in img["steps"]}
    check(set(steps) == STEP_NAMES, sorted(steps))
    for s in steps.values():
        check(s.get("help"), s)
        for p in s["params"]:
            check(p["type"] in ("integer", "number", "string"), p)
            check(isinstance(p.get("required"), bool) and p.get("help"), p)
    P = {op: {p["name"]: p for p in s["params"]} for op, s in steps.items()}
    check(set(P["resize"]) == {"width", "height", "fit", "filter"}, P["resize"])
    check(steps["resize"]["required_one_of"] == ["width", "height"], steps["resize"])
    check(P["resize"]["width"]["min"] == 1 and P["resize"]["width"]["max"] == 65535, P["resize"])
    check(P["resize"]["fit"]["choices"] == ["fill", "contain", "cover"] and
          P["resize"]["fit"]["default"] == "fill", P["resize"]["fit"])
    check(P["resize"]["filter"]["default"] == "lanczos3" and
          set(P["resize"]["filter"]["choices"]) == {"lanczos3", "bilinear", "nearest"}, P["resize"])
    check(P["thumbnail"]["width"]["required"] and P["thumbnail"]["height"]["required"], P)
    check(set(P["crop"]) == {"x", "y", "width", "height"} and P["crop"]["x"]["default"] == 0, P)
    b = P["blur"]["sigma"]
    check(b["type"] == "number" and b["required"] and b["min"] == 0 and b["exclusive_min"] and
          b["max"] == 250, b)
    check(P["sharpen"]["sigma"]["default"] == 1.0 and P["sharpen"]["amount"]["default"] == 1.0 and
          P["sharpen"]["amount"]["max"] == 10, P["sharpen"])
    check(P["grayscale"] == {}, P["grayscale"])
    check(P["rotate"]["degrees"]["choices"] == [90, 180, 270], P["rotate"])
    check(P["flip"]["direction"]["choices"] == ["horizontal", "vertical"] and
          P["flip"]["direction"]["required"], P["flip"])


def test_ops_catalogue_is_what_the_server_enforces():
    """Every range and choice in the catalogue, probed: the edge is accepted, one past it is
    refused with the exact path; a missing required param is refused."""
    img = image_entry()
    tiny = {"data": b64(read(photo(GOOD)))}

    def status_of(step):
        st, _, body = S.request("POST", "/v1/batches", body={
            "op": "image", "inputs": [tiny], "params": {"pipeline": [step], "format": "png"}})
        return st, (json.loads(body) if st != 200 else None)

    def base(op):
        # The required params at a valid value, so that one param can be probed alone.
        step = {"op": op}
        for p in steps[op]["params"]:
            if p["required"]:
                if "choices" in p:
                    step[p["name"]] = p["choices"][0]
                elif p["type"] == "integer":
                    step[p["name"]] = max(1, p.get("min", 1))
                else:
                    step[p["name"]] = 1.0
        for name in steps[op].get("required_one_of", [])[:1]:
            step[name] = 1
        return step

    steps = {s["op"]: s for s in img["steps"]}
    probes = 0
    for op, s in steps.items():
        st, err = status_of(base(op))
        check(st == 200, (op, base(op), err))
        for p in s["params"]:
            name = p["name"]
            bad = []
            if "max" in p:
                bad.append(p["max"] + 1)
            if "min" in p:
                bad.append(p["min"] if p.get("exclusive_min") else p["min"] - 1)
            if "choices" in p:
                bad.append("no-such-choice" if p["type"] == "string" else 45)
            for v in bad:
                st, err = status_of(dict(base(op), **{name: v}))
                probes += 1
                check(st == 400 and err["error"]["code"] == "invalid_param" and
                      err["error"]["path"] == "params.pipeline[0].%s" % name, (op, name, v, st, err))
            if p["required"] or name in s.get("required_one_of", []):
                step = base(op)
                for other in s.get("required_one_of", []):
                    step.pop(other, None)
                step.pop(name, None)
                st, err = status_of(step)
                at = name if p["required"] else s["required_one_of"][0]
                check(st == 400 and err["error"]["path"] == "params.pipeline[0].%s" % at,
                      (op, name, err))
        st, err = status_of(dict(base(op), bogus=1))
        check(st == 400 and err["error"]["path"] == "params.pipeline[0].bogus", err)
    check(probes > 20, probes)


if __name__ == "__main__":
    with Server(workers=2) as S:
        code = Suite("img_server_bad").run(globals())
    sys.exit(code)
