#!/usr/bin/python3
"""output "path" never loses an output and never destroys a file (issue 8, defect 7).

Outputs keep their input's folders under the output dir; two jobs of a batch never get one
name (same stem in two folders, another extension, duplicate uploads, a variant named like
another input); a file batchd did not write is never replaced (an input inside the output
folder, a user's file there); a rerun replaces its own outputs; an output dir that is the
data dir, or holds it, is refused at start; symlinks in the output tree are not followed.
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, SHARED, Server, Suite, check, new_state_dir, results_by_index  # noqa: E402
from imglib import open_image, post_multipart, read, rgb  # noqa: E402

S = None
TMP = tempfile.mkdtemp(prefix="batchd-outpaths-")
DATA = os.path.join(TMP, "data")
OUT = os.path.join(DATA, "out")
OUTSIDE = os.path.join(TMP, "outside")
SUITE = os.path.join(SHARED, "data", "pngsuite")
RGB_PNG = os.path.join(SUITE, "basn2c08.png")    # 32x32 RGB
GRAY_PNG = os.path.join(SUITE, "basn0g08.png")   # 32x32 gray
PAL_PNG = os.path.join(SUITE, "basn3p08.png")    # 32x32 palette
# No pipeline, PNG out: the output's pixels are the input's, so each output names its input.
SAME = {"format": "png", "output": "path"}


def md5(path):
    return hashlib.md5(read(path)).hexdigest()


def put(rel, src):
    path = os.path.join(DATA, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    shutil.copyfile(src, path)
    return md5(path)


def same_pixels(out_rel, src, what):
    got = rgb(open_image(read(os.path.join(DATA, out_rel))))
    want = rgb(open_image(read(src)))
    check(got.tobytes() == want.tobytes(), "%s: %s is not the output of %s" % (what, out_rel, src))


def run(batch):
    lines, status, _ = S.batch(batch, timeout=120)
    check(status == 200, lines)
    return results_by_index(lines)


def setup():
    os.makedirs(OUTSIDE)
    put("a.png", RGB_PNG)
    put("sub/a.png", GRAY_PNG)
    put("b.png", RGB_PNG)
    put("b.jpeg.png", GRAY_PNG)
    put("c.png", RGB_PNG)
    put("c-t.png", GRAY_PNG)


def test_same_stem_in_two_folders():
    res = run({"op": "image", "params": SAME, "inputs": [{"path": "a.png"}, {"path": "sub/a.png"}]})
    paths = [res[i]["result"]["path"] for i in range(2)]
    check(paths == ["out/a.png", "out/sub/a.png"], paths)
    same_pixels(paths[0], RGB_PNG, "a.png")
    same_pixels(paths[1], GRAY_PNG, "sub/a.png")


def test_two_jobs_one_name_get_two_files():
    """The same input twice, one input whose stem is another's, base64 inputs named by index
    beside a file named like an index: every job gets its own file, in input order."""
    inputs = [{"path": "b.png"}, {"path": "b.png"}, {"path": "b.jpeg.png"},
              {"data": base64.b64encode(read(PAL_PNG)).decode()}, {"path": "sub/a.png"},
              {"path": "a.png"}]
    put("3.png", GRAY_PNG)
    inputs.append({"path": "3.png"})
    res = run({"op": "image", "params": SAME, "inputs": inputs})
    paths = [res[i]["result"]["path"] for i in range(len(inputs))]
    check(len(set(paths)) == len(paths), paths)
    check(paths[:2] == ["out/b.png", "out/b-1.png"], paths)
    check(paths[3] == "out/3.png" and paths[6] == "out/3-1.png", paths)
    for p, src in zip(paths, [RGB_PNG, RGB_PNG, GRAY_PNG, PAL_PNG, GRAY_PNG, RGB_PNG, GRAY_PNG]):
        same_pixels(p, src, p)
    # Uploads of one file name (curl sends base names): one file each.
    files = [("p.png", read(RGB_PNG)), ("dir/p.png", read(GRAY_PNG)), ("p.png", read(PAL_PNG))]
    status, _, data = post_multipart(S, {"op": "image", "params": SAME}, files)
    check(status == 200, data[:300])
    res = results_by_index([json.loads(l) for l in data.decode().splitlines() if l.strip()])
    paths = [res[i]["result"]["path"] for i in range(3)]
    check(paths == ["out/p.png", "out/p-1.png", "out/p-2.png"], paths)
    for p, src in zip(paths, [RGB_PNG, GRAY_PNG, PAL_PNG]):
        same_pixels(p, src, "upload " + p)


def test_variants_never_collide():
    """c.png with a variant "t" writes c-t.png; c-t.png (its own params: no variants) must
    not write the same file."""
    jobs = [{"op": "image", "input": {"path": "c.png"},
             "params": dict(SAME, variants=[{"name": "t"}, {"name": "u", "format": "jpeg"}])},
            {"op": "image", "input": {"path": "c-t.png"}, "params": SAME}]
    res = run({"jobs": jobs})
    v = res[0]["result"]["variants"]
    p0, p1 = v["t"]["path"], res[1]["result"]["path"]
    check(p0 != p1 and v["u"]["path"] not in (p0, p1), (v, p1))
    same_pixels(p0, RGB_PNG, "variant t of c.png")
    same_pixels(p1, GRAY_PNG, "c-t.png")


def test_input_inside_the_output_folder_is_never_replaced():
    """An input in the output folder is refused (it is never read), and no output replaces
    it or any other file batchd did not write."""
    kept = put("out/keep.png", GRAY_PNG)
    mine = put("out/mine.png", GRAY_PNG)
    put("keep.png", RGB_PNG)
    put("mine.png", RGB_PNG)
    res = run({"op": "image", "params": SAME,
               "inputs": [{"path": "out/keep.png"}, {"path": "keep.png"}, {"path": "mine.png"}]})
    check(res[0].get("error", {}).get("code") == "forbidden_path", res[0])
    check("output folder" in res[0]["error"]["message"], res[0])
    check(md5(os.path.join(OUT, "keep.png")) == kept, "out/keep.png was replaced")
    # keep.png and mine.png would write out/keep.png and out/mine.png: the user's files.
    for i, name in ((1, "keep.png"), (2, "mine.png")):
        check(res[i].get("error", {}).get("code") == "forbidden_path", res[i])
        check("did not write" in res[i]["error"]["message"], res[i])
    check(md5(os.path.join(OUT, "mine.png")) == mine, "out/mine.png was replaced")
    # An input that reaches the output folder through a symlink is refused the same way.
    os.symlink("out", os.path.join(DATA, "via"))
    res = run({"op": "image", "params": SAME, "inputs": [{"path": "via/keep.png"}]})
    check(res[0].get("error", {}).get("code") == "forbidden_path", res[0])
    check(md5(os.path.join(OUT, "keep.png")) == kept, "out/keep.png was replaced")


def test_rerun_replaces_its_own_outputs():
    batch = {"op": "image", "params": SAME, "inputs": [{"path": "a.png"}, {"path": "sub/a.png"}]}
    first = run(batch)
    put("a.png", PAL_PNG)  # the input changed since
    again = run(batch)
    for i in range(2):
        check(again[i]["result"]["path"] == first[i]["result"]["path"], (first[i], again[i]))
    same_pixels("out/a.png", PAL_PNG, "rerun")
    check(not os.path.exists(os.path.join(OUT, "a-1.png")), os.listdir(OUT))
    left = [f for _, _, fs in os.walk(OUT) for f in fs if f.startswith(".")]
    check(not left, left)
    put("a.png", RGB_PNG)


def test_symlink_in_the_output_tree_is_not_followed():
    os.symlink(OUTSIDE, os.path.join(OUT, "esc"))
    os.makedirs(os.path.join(DATA, "esc"), exist_ok=True)
    shutil.copyfile(RGB_PNG, os.path.join(DATA, "esc", "z.png"))
    res = run({"op": "image", "params": SAME, "inputs": [{"path": "esc/z.png"}]})
    check(res[0].get("error", {}).get("code") == "forbidden_path", res[0])
    check(os.listdir(OUTSIDE) == [], os.listdir(OUTSIDE))


def start_fails(args):
    """Runs batchd with ARGS; returns (exit status, stderr) if it stops within 10 s."""
    p = subprocess.Popen([BIN, "--listen", "127.0.0.1:0", "--workers", "1",
                          "--state-dir", new_state_dir()] + args,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        return None, b"still running"
    return p.returncode, err


def test_output_dir_that_holds_the_inputs_is_refused_at_start():
    for out in (DATA, DATA + "/", os.path.join(DATA, "sub", ".."), TMP):
        rc, err = start_fails(["--data-dir", DATA, "--output-dir", out])
        check(rc == 2 and b"--output-dir" in err, (out, rc, err))
    # The same through the environment twin, and through a symlink to the data dir.
    link = os.path.join(TMP, "link-to-data")
    os.symlink(DATA, link)
    rc, err = start_fails(["--data-dir", DATA, "--output-dir", link])
    check(rc == 2, (rc, err))
    # A folder of its own, made later, is fine.
    with Server(workers=1, args=["--data-dir", os.path.join(DATA, "sub"),
                                 "--output-dir", os.path.join(TMP, "elsewhere")]) as s2:
        lines, status, _ = s2.batch({"op": "image", "params": SAME, "inputs": [{"path": "a.png"}]})
        res = results_by_index(lines)
        check(res[0]["result"]["path"] == os.path.join(TMP, "elsewhere", "a.png"), res[0])


if __name__ == "__main__":
    setup()
    try:
        with Server(workers=2, args=["--data-dir", DATA]) as S:
            code = Suite("img_output_paths").run(globals())
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(code)
