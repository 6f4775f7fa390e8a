#!/usr/bin/python3
"""Image batches through the real server (issue 3, "Tests"), checked against Pillow.

Every transport (multipart file parts, base64 JSON inputs, --data-dir paths), every output
form (NDJSON inline, Accept: application/json, Accept: application/x-tar, output "path"),
both orders, variants; mixed good and bad inputs; path escapes; a server without a data dir.
The bad-file corpus, the bombs and /v1/ops are in test_img_server_bad.py.
Under BATCHD_SANITIZED=1 fewer and smaller photos are used.
"""
import base64
import io
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SANITIZED, Server, Suite, check, results_by_index  # noqa: E402
from imglib import (SOME_PHOTOS, b64, check_thumb, ndjson, open_image, photo, post,  # noqa: E402
                    post_multipart, read, ref_thumbnail, srgb, untar, psnr)

S = None
TMP = tempfile.mkdtemp(prefix="batchd-imge2e-")
DATA_DIR = os.path.join(TMP, "data")      # --data-dir
OUTSIDE = os.path.join(TMP, "outside")    # a folder next to it that nothing may reach
BOX = 256
THUMB = {"pipeline": [{"op": "thumbnail", "width": BOX, "height": BOX}], "format": "png",
         "auto_orient": False}


def setup_data_dir():
    """Plain copies (no symlinks) of a few photos under DATA_DIR, one in a sub-folder; a file
    and a folder outside it, and symlinks inside it that point at them."""
    os.makedirs(os.path.join(DATA_DIR, "photos", "deep"))
    os.makedirs(OUTSIDE)
    for name in SOME_PHOTOS:
        shutil.copyfile(photo(name), os.path.join(DATA_DIR, "photos", name))
    shutil.copyfile(photo(SOME_PHOTOS[0]), os.path.join(DATA_DIR, "photos", "deep", "x.jpg"))
    shutil.copyfile(photo(SOME_PHOTOS[0]), os.path.join(OUTSIDE, "secret.jpg"))
    os.symlink(os.path.join(OUTSIDE, "secret.jpg"), os.path.join(DATA_DIR, "link_out.jpg"))
    os.symlink(OUTSIDE, os.path.join(DATA_DIR, "linkdir"))
    os.symlink("../../outside/secret.jpg", os.path.join(DATA_DIR, "photos", "rel_link.jpg"))


def thumbs_ok(results, names, what):
    """RESULTS: {index: result object} of inline thumbnails of photos NAMES (in order)."""
    for i, name in enumerate(names):
        r = results[i]
        check("result" in r, "%s: job %d (%s) failed: %r" % (what, i, name, r))
        res = r["result"]
        ref = ref_thumbnail(photo(name), BOX)
        check(res["format"] == "png" and (res["width"], res["height"]) == ref.size, res)
        data = base64.b64decode(res["data"])
        check(len(data) == res["bytes"], (len(data), res["bytes"]))
        check_thumb(data, photo(name), BOX, what)


# ---------------------------------------------------------------- multipart


def test_multipart_ndjson_both_orders():
    files = [(n, read(photo(n))) for n in SOME_PHOTOS]
    for order in ("input", "completed"):
        status, hdrs, data = post_multipart(S, {"op": "image", "params": THUMB, "order": order},
                                            files)
        check(status == 200, (status, data[:300]))
        check(hdrs["content-type"].startswith("application/x-ndjson"), hdrs)
        lines = ndjson(data)
        res = results_by_index(lines)
        check(sorted(res) == list(range(len(files))), sorted(res))
        if order == "input":
            check([l["index"] for l in lines[:-1]] == list(range(len(files))))
        summ = lines[-1]["summary"]
        check(summ["ok"] == len(files) and summ["order"] == order, summ)
        thumbs_ok(res, SOME_PHOTOS, "multipart/" + order)


def test_multipart_curl():
    """The issue's own command line: curl -F, files by path."""
    import subprocess
    if shutil.which("curl") is None:
        print("  (no curl: skipped)")
        return
    name = SOME_PHOTOS[0]
    p = subprocess.run(["curl", "-sS", "-N", "-F", "batch=" + json.dumps({"op": "image",
                        "params": THUMB}), "-F", "file=@" + photo(name),
                        "http://127.0.0.1:%d/v1/batches" % S.port],
                       capture_output=True, timeout=120)
    check(p.returncode == 0, p.stderr)
    res = results_by_index(ndjson(p.stdout))
    thumbs_ok(res, [name], "curl -F")


# ---------------------------------------------------------------- base64, Accept: json


def test_base64_accept_json():
    names = SOME_PHOTOS[:3]
    batch = {"op": "image", "params": THUMB, "order": "completed",
             "inputs": [{"data": b64(read(photo(n)))} for n in names]}
    status, hdrs, data = S.request("POST", "/v1/batches", body=batch,
                                   headers={"Accept": "application/json"}, timeout=300)
    check(status == 200, (status, data[:300]))
    check(hdrs["content-type"].startswith("application/json"), hdrs)
    doc = json.loads(data)
    check(len(doc["results"]) == len(names), doc.keys())
    # One document: always input order, whatever order was asked.
    thumbs_ok(dict(enumerate(doc["results"])), names, "base64/json")
    check(doc["summary"]["ok"] == len(names), doc["summary"])


def test_base64_ndjson_completed():
    names = SOME_PHOTOS[:2]
    batch = {"op": "image", "params": THUMB, "order": "completed",
             "inputs": [{"data": b64(read(photo(n)))} for n in names]}
    lines, status, _ = S.batch(batch, timeout=300)
    check(status == 200, lines)
    thumbs_ok(results_by_index(lines), names, "base64/ndjson")


# ---------------------------------------------------------------- tar


def tar_members(status, hdrs, data):
    check(status == 200, (status, data[:300]))
    check(hdrs["content-type"] == "application/x-tar", hdrs)
    check(len(data) % 512 == 0, len(data))
    members = untar(data)
    names = [n for n, _ in members]
    check(names[-2:] == ["errors.ndjson", "summary.json"], names)
    summary = json.loads(members[-1][1])
    errors = [json.loads(l) for l in members[-2][1].decode().splitlines()]
    return dict(members[:-2]), names[:-2], errors, summary


def test_tar_multipart_uploaded_names():
    names = SOME_PHOTOS[:3]
    files = [(n, read(photo(n))) for n in names] + [("notes.txt", b"not an image")]
    params = dict(THUMB, format="jpeg", quality=95)
    for order in ("input", "completed"):
        got, order_of_names, errors, summary = tar_members(*post_multipart(
            S, {"op": "image", "params": params, "order": order}, files,
            accept="application/x-tar"))
        want = [os.path.splitext(n)[0] + ".jpeg" for n in names]
        check(sorted(order_of_names) == sorted(want), order_of_names)
        if order == "input":
            check(order_of_names == want, order_of_names)
        for n in names:
            im = open_image(got[os.path.splitext(n)[0] + ".jpeg"])
            ref = ref_thumbnail(photo(n), BOX)
            check(im.format == "JPEG" and im.size == ref.size, (im.format, im.size, ref.size))
            check(psnr(ref, im) >= 30, "jpeg q95 vs Pillow: %.1f dB" % psnr(ref, im))
        check(len(errors) == 1 and errors[0]["index"] == len(names) and
              errors[0]["error"]["code"] == "unsupported_format", errors)
        check(summary["jobs"] == len(names) + 1 and summary["ok"] == len(names) and
              summary["failed"] == 1, summary)


def test_tar_base64_index_names_and_variants():
    names = SOME_PHOTOS[:2]
    params = {"pipeline": [{"op": "thumbnail", "width": 512, "height": 512}], "auto_orient": False,
              "variants": [{"name": "small", "pipeline": [{"op": "thumbnail", "width": 128,
                                                           "height": 128}], "format": "png"},
                           {"name": "mid", "format": "jpeg", "quality": 90}]}
    batch = {"op": "image", "params": params, "inputs": [{"data": b64(read(photo(n)))}
                                                         for n in names] + [{"data": "@@@"}]}
    got, order_of_names, errors, summary = tar_members(*S.request(
        "POST", "/v1/batches", body=batch, headers={"Accept": "application/x-tar"}, timeout=300))
    want = ["0-small.png", "0-mid.jpeg", "1-small.png", "1-mid.jpeg"]
    check(order_of_names == want, order_of_names)
    from PIL import Image
    for i, n in enumerate(names):
        small = open_image(got["%d-small.png" % i])
        ref = srgb(Image.open(photo(n)))
        ref.thumbnail((512, 512))
        ref.thumbnail((128, 128))
        check(small.size == ref.size, (small.size, ref.size))
        mid = open_image(got["%d-mid.jpeg" % i])
        check(mid.format == "JPEG" and mid.size == ref_thumbnail(photo(n), 512).size, mid.size)
    check([e["index"] for e in errors] == [2] and errors[0]["error"]["code"] == "invalid_input",
          errors)
    check(summary["ok"] == 2 and summary["failed"] == 1, summary)


def test_tar_streams():
    """A tar member is sent as soon as its job ends: the image arrives while a slow job of
    the same batch still runs."""
    import http.client
    small = b64(read(photo("hdr_room.png")))
    batch = {"jobs": [{"op": "sleep", "input": 3000},
                      {"op": "image", "input": {"data": small},
                       "params": {"pipeline": [{"op": "thumbnail", "width": 64, "height": 64}]}}],
             "order": "completed", "chunksize": 1}
    c = http.client.HTTPConnection("127.0.0.1", S.port, timeout=60)
    t0 = time.time()
    c.request("POST", "/v1/batches", body=json.dumps(batch),
              headers={"Content-Type": "application/json", "Accept": "application/x-tar"})
    r = c.getresponse()
    check(r.status == 200, r.status)
    head = r.read(512)
    t_first = time.time() - t0
    rest = r.read()
    t_all = time.time() - t0
    c.close()
    check(head[:6] == b"1.png\0", head[:16])
    check(t_first < 2.5 and t_all >= 2.9, "first member at %.2fs, end at %.2fs" % (t_first, t_all))
    members = untar(head + rest)
    check([n for n, _ in members] == ["1.png", "0.json", "errors.ndjson", "summary.json"],
          [n for n, _ in members])
    check(json.loads(members[1][1]) == 3000, members[1][1])


def test_tar_duplicate_upload_names():
    """Two uploads with the same file name must not give two members of one name (tar x
    would keep only the last)."""
    a, b = SOME_PHOTOS[0], SOME_PHOTOS[1]
    files = [("dir1/p.jpg", read(photo(a))), ("dir2/p.jpg", read(photo(b))),
             ("p.jpg", read(photo(a)))]
    got, names, errors, summary = tar_members(*post_multipart(
        S, {"op": "image", "params": THUMB}, files, accept="application/x-tar"))
    check(len(set(names)) == 3 and names[0] == "p.png", names)
    check(summary["ok"] == 3 and not errors, (summary, errors))
    check(names == ["p.png", "p-1.png", "p-2.png"], names)
    check_thumb(got[names[1]], photo(b), BOX, "second p.jpg")
    # An upload named like a closing member does not shadow it.
    got, names, errors, summary = tar_members(*post_multipart(
        S, {"op": "image", "params": dict(THUMB, output="path")},
        [("summary.jpg", read(photo(a))), ("errors.jpg", read(photo(a)))],
        accept="application/x-tar"))
    check(names == ["summary-0.json", "errors.json"], names)
    check(json.loads(got["summary-0.json"])["path"] == "out/summary.png", got)


def test_empty_upload_is_an_image_error():
    files = [("empty.jpg", b""), (SOME_PHOTOS[0], read(photo(SOME_PHOTOS[0])))]
    status, _, data = post_multipart(S, {"op": "image", "params": THUMB}, files)
    check(status == 200, data[:300])
    res = results_by_index(ndjson(data))
    check(res[0].get("error", {}).get("code") in ("unsupported_format", "corrupt_image"), res[0])
    check("result" in res[1], res[1])


# ---------------------------------------------------------------- data dir


def test_aa_inputs_never_write_the_data_dir():
    """(Runs first.) A data dir that only feeds inputs gets no output folder; the first
    output "path" job makes it."""
    lines, _, _ = S.batch({"op": "image", "params": THUMB,
                           "inputs": [{"path": "photos/" + SOME_PHOTOS[0]}]})
    check("result" in results_by_index(lines)[0], lines)
    check(not os.path.exists(os.path.join(DATA_DIR, "out")), os.listdir(DATA_DIR))


def test_datadir_inputs_inline_and_path_output():
    names = SOME_PHOTOS[:3]
    inputs = [{"path": "photos/" + n} for n in names]
    lines, status, _ = S.batch({"op": "image", "params": THUMB, "inputs": inputs,
                                "order": "completed"}, timeout=300)
    check(status == 200, lines)
    thumbs_ok(results_by_index(lines), names, "data-dir/inline")

    params = dict(THUMB, output="path",
                  variants=[{"name": "t", "format": "png"},
                            {"name": "q", "format": "jpeg",
                             "pipeline": [{"op": "thumbnail", "width": 64, "height": 64}]}])
    inputs = inputs + [{"path": "photos/deep/x.jpg"}]
    lines, status, _ = S.batch({"op": "image", "params": params, "inputs": inputs}, timeout=300)
    check(status == 200, lines)
    res = results_by_index(lines)
    for i, n in enumerate(names + [SOME_PHOTOS[0]]):
        check("result" in res[i], res[i])
        v = res[i]["result"]["variants"]
        # Outputs keep the input's folders under the output dir (README).
        stem = "photos/" + os.path.splitext(n)[0] if i < len(names) else "photos/deep/x"
        check(v["t"]["path"] == "out/%s-t.png" % stem, v["t"])
        check(v["q"]["path"] == "out/%s-q.jpeg" % stem, v["q"])
        check("data" not in v["t"], v["t"])
        written = read(os.path.join(DATA_DIR, v["t"]["path"]))
        check(len(written) == v["t"]["bytes"], (len(written), v["t"]))
        check_thumb(written, photo(n), BOX, "output path")
        q = open_image(read(os.path.join(DATA_DIR, v["q"]["path"])))
        check(q.format == "JPEG" and max(q.size) == 64, q.size)
    # No temporary file is left behind.
    left = [f for _, _, fs in os.walk(os.path.join(DATA_DIR, "out")) for f in fs
            if f.startswith(".")]
    check(not left, left)


def test_datadir_tar_output_path():
    """output "path" with a tar reader: the member is the result JSON (the file is on disk)."""
    n = SOME_PHOTOS[1]
    got, names, errors, _ = tar_members(*S.request(
        "POST", "/v1/batches", body={"op": "image", "params": dict(THUMB, output="path"),
                                     "inputs": [{"path": "photos/" + n}]},
        headers={"Accept": "application/x-tar"}, timeout=300))
    check(names == ["0.json"] and not errors, (names, errors))
    res = json.loads(got["0.json"])
    check_thumb(read(os.path.join(DATA_DIR, res["path"])), photo(n), BOX, "tar+path")


def test_path_escapes():
    escapes = ["../x", "/etc/passwd", "a/../../x", "photos/../../outside/secret.jpg",
               "link_out.jpg", "linkdir/secret.jpg", "photos/rel_link.jpg", "../outside/secret.jpg"]
    missing = ["missing.jpg", "photos/nope/x.jpg"]
    good = "photos/" + SOME_PHOTOS[0]
    inputs = [{"path": p} for p in escapes + missing + [good]]
    lines, status, _ = S.batch({"op": "image", "params": THUMB, "inputs": inputs}, timeout=300)
    check(status == 200, lines)
    res = results_by_index(lines)
    for i, p in enumerate(escapes):
        check(res[i].get("error", {}).get("code") == "forbidden_path", (p, res[i]))
        check("secret" not in json.dumps(res[i]) or "leads outside" in res[i]["error"]["message"],
              res[i])
    for i, p in enumerate(missing, len(escapes)):
        check(res[i].get("error", {}).get("code") == "not_found", (p, res[i]))
    check("result" in res[len(inputs) - 1], res[len(inputs) - 1])


def test_no_data_dir():
    with Server(workers=1) as S2:
        lines, status, _ = S2.batch({"op": "image", "params": THUMB,
                                     "inputs": [{"path": "photos/" + SOME_PHOTOS[0]}]})
        check(status == 200, lines)
        err = results_by_index(lines)[0].get("error", {})
        check(err.get("code") == "invalid_input" and "--data-dir" in err.get("message", ""), err)
        lines, status, _ = S2.batch({"op": "image", "params": dict(THUMB, output="path"),
                                     "inputs": [{"data": b64(read(photo("hdr_room.png")))}]})
        err = results_by_index(lines)[0].get("error", {})
        check(err.get("code") == "invalid_input" and "--data-dir" in err.get("message", ""), err)


# ---------------------------------------------------------------- mixed


def test_mixed_good_and_bad_inputs():
    good = read(photo(SOME_PHOTOS[0]))
    bad = [
        ({"data": b64(good[:len(good) // 3])}, {"corrupt_image"}),       # truncated JPEG
        ({"data": b64(b"GIF89a" + b"\0" * 64)}, {"unsupported_format"}),
        ({"data": b64(b"hello, world")}, {"unsupported_format"}),
        ({"data": "not base64 !!"}, {"invalid_input"}),
        ({"data": ""}, {"unsupported_format", "corrupt_image", "invalid_input"}),
        ({"path": "x.jpg", "data": "AAAA"}, {"invalid_input"}),
        (42, {"invalid_input"}),
        ({"path": "photos/" + SOME_PHOTOS[1]}, None),                   # good, from the data dir
    ]
    inputs = []
    for k, (inp, _) in enumerate(bad):
        inputs += [{"data": b64(good)}, inp] if k % 2 == 0 else [inp]
    lines, status, _ = S.batch({"op": "image", "params": THUMB, "inputs": inputs,
                                "order": "completed"}, timeout=300)
    check(status == 200, lines)
    res = results_by_index(lines)
    k = 0
    for i, inp in enumerate(inputs):
        if isinstance(inp, dict) and inp.get("data") == b64(good):
            check_thumb(base64.b64decode(res[i]["result"]["data"]), photo(SOME_PHOTOS[0]), BOX,
                        "good beside bad")
            continue
        codes = bad[k][1]
        k += 1
        if codes is None:
            check("result" in res[i], res[i])
        else:
            check(res[i].get("error", {}).get("code") in codes, (i, codes, res[i]))


if __name__ == "__main__":
    setup_data_dir()
    try:
        with Server(workers=2, args=["--data-dir", DATA_DIR]) as S:
            code = Suite("img_server").run(globals())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(code)
