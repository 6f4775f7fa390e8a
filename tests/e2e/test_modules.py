"""C modules (SPEC §10, workers/ops/batchd_module.h): the example module loads, appears in
/v1/ops with its params, has them checked by the server and runs in the workers; modules
that fail their checks (wrong ABI version, wrong struct size, no entry point, an op name
taken, a file that is not there) stop the start with exit status 2 and a message naming
them."""
import json
import os
import subprocess
import sys
import tempfile

from harness import BIN, Server, Suite, check, new_state_dir, results_by_index

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
WORDCOUNT = os.environ.get("BATCHD_WORDCOUNT") or os.path.join(ROOT, "build", "wordcount.so")

TINY = r"""
#include "batchd_module.h"
static int run(const struct batchd_host *h, struct batchd_job *j)
{
    return h->set_result(j, h->input(j));
}
static const struct batchd_module_op ops[] = {{.name = OPNAME, .summary = "echo", .run = run}};
static const struct batchd_module m = {
    .abi_version = ABI, .size = SIZE, .op_size = sizeof(struct batchd_module_op),
    .name = "tiny", .version = "0", .ops = ops, .nops = 1};
const struct batchd_module *batchd_module_init(const struct batchd_host *host)
{
    (void)host;
    return &m;
}
"""


def build_tiny(tmp, name, opname='"echo_tiny"', abi="BATCHD_MODULE_ABI_VERSION",
               size="sizeof(struct batchd_module)", entry=True):
    src = os.path.join(tmp, name + ".c")
    so = os.path.join(tmp, name + ".so")
    text = TINY if entry else TINY.replace("batchd_module_init", "not_the_entry")
    with open(src, "w") as f:
        f.write(text)
    cflags = subprocess.run(["pkg-config", "--cflags", "jansson"], capture_output=True,
                            text=True).stdout.split()
    subprocess.run(["cc", "-shared", "-fPIC", "-o", so, src, "-I",
                    os.path.join(ROOT, "workers", "ops"), "-DOPNAME=" + opname, "-DABI=" + abi,
                    "-DSIZE=" + size] + cflags, check=True)
    return so


def start_fails(args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run([BIN, "--listen", "127.0.0.1:0", "--workers", "1",
                        "--state-dir", new_state_dir()] + args,
                       capture_output=True, text=True, timeout=30, env=e)
    return p.returncode, p.stderr


def test_example_module_loads_lists_and_runs():
    with Server(workers=2, args=["--module", WORDCOUNT]) as s:
        status, _, body = s.request("GET", "/v1/ops")
        ops = {o["name"]: o for o in json.loads(body)["ops"]}
        check("wordcount" in ops and "lua" in ops and "square" in ops, sorted(ops))
        p = ops["wordcount"]["params"]
        check(p == [{"name": "min_length", "type": "integer", "help": p[0]["help"], "min": 1,
                     "max": 1000, "default": 1}], p)
        texts = ["to be or not to be", "a b\nc\n", "", 7]
        lines, status, _ = s.batch({"op": "wordcount", "inputs": texts})
        res = results_by_index(lines)
        check(res[0]["result"] == {"words": 6, "lines": 0, "bytes": 18}, res[0])
        check(res[1]["result"] == {"words": 3, "lines": 2, "bytes": 6}, res[1])
        check(res[2]["result"] == {"words": 0, "lines": 0, "bytes": 0}, res[2])
        check(res[3]["error"]["code"] == "invalid_input", res[3])
        lines, status, _ = s.batch({"op": "wordcount", "inputs": texts[:1],
                                    "params": {"min_length": 3}})
        check(results_by_index(lines)[0]["result"]["words"] == 1, lines)
        # The server checks a module op's params from its declaration, as a built-in op's.
        lines, status, _ = s.batch({"op": "wordcount", "inputs": ["x"],
                                    "params": {"min_length": 0}})
        check(status == 400 and lines[0]["error"]["path"] == "params.min_length", lines)
        lines, status, _ = s.batch({"op": "wordcount", "inputs": ["x"], "params": {"bogus": 1}})
        check(status == 400 and lines[0]["error"]["code"] == "invalid_param", lines)
        # Mixed with built-in ops, in a jobs batch, over many jobs.
        jobs = [{"op": "wordcount", "input": "w " * i} for i in range(300)]
        jobs += [{"op": "square", "input": 4}]
        lines, status, _ = s.batch({"jobs": jobs})
        res = results_by_index(lines)
        check(all(res[i]["result"]["words"] == i for i in range(300)), "word counts")
        check(res[300]["result"] == 16, res[300])


def test_modules_from_the_environment_and_repeated_flags():
    with tempfile.TemporaryDirectory() as tmp:
        tiny = build_tiny(tmp, "tiny")
        with Server(workers=1, env={"BATCHD_MODULES": WORDCOUNT + ":" + tiny}) as s:
            lines, _, _ = s.batch({"op": "echo_tiny", "inputs": [{"a": [1, 2.5]}]})
            check(lines[0]["result"] == {"a": [1, 2.5]}, lines)
            lines, _, _ = s.batch({"op": "wordcount", "inputs": ["a b"]})
            check(lines[0]["result"]["words"] == 2, lines)
        with Server(workers=1, args=["--module", WORDCOUNT, "--module", tiny]) as s:
            lines, _, _ = s.batch({"op": "echo_tiny", "inputs": [3]})
            check(lines[0]["result"] == 3, lines)


def test_bad_modules_stop_the_start():
    with tempfile.TemporaryDirectory() as tmp:
        cases = [
            (build_tiny(tmp, "abi", abi="99"), "ABI version 99"),
            (build_tiny(tmp, "size", size="8"), "sizes"),
            (build_tiny(tmp, "noentry", entry=False), "batchd_module_init"),
            (build_tiny(tmp, "taken", opname='"square"'), "square exists already"),
            (build_tiny(tmp, "badname", opname='"Bad Name"'), "op name"),
            (os.path.join(tmp, "missing.so"), "missing.so"),
        ]
        for path, why in cases:
            rc, err = start_fails(["--module", path])
            check(rc == 2, (path, rc, err))
            check(path in err and why in err, (why, err))
        rc, err = start_fails(["--module", WORDCOUNT, "--module", WORDCOUNT])
        check(rc == 2 and "exists already" in err, err)
        rc, err = start_fails([], env={"BATCHD_MODULES": os.path.join(tmp, "abi.so")})
        check(rc == 2 and "ABI version 99" in err, err)


if __name__ == "__main__":
    sys.exit(Suite("modules").run(globals()))
