"""--log-level: the default (info) writes no debug line; debug adds the lines a developer
wants (a batch accepted with its size and chunk size, each chunk sent to a worker, a request
refused and why); BATCHD_LOG_LEVEL is its twin; a bad level is refused at start."""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, Server, Suite, check  # noqa: E402


def wait_for(server, pred, timeout=10):
    """The log lines once one of them matches PRED (stderr is read by a thread)."""
    end = time.time() + timeout
    while time.time() < end:
        if any(pred(l) for l in list(server.log_lines)):
            break
        time.sleep(0.05)
    return list(server.log_lines)


def drive(server):
    lines, status, _ = server.batch({"op": "square", "inputs": list(range(100)), "chunksize": 10})
    check(status == 200 and len(lines) == 101, (status, lines[-1:]))
    _, status, _ = server.batch({"op": "nope", "inputs": [1]})
    check(status == 400, status)


def test_default_writes_no_debug_line():
    with Server(workers=1) as s:
        drive(s)
        logs = wait_for(s, lambda l: "event=request" in l and "status=400" in l)
    check(any("event=request" in l for l in logs), logs)
    check(not any("level=debug" in l for l in logs), [l for l in logs if "debug" in l])


def test_debug_lines():
    with Server(workers=2, args=["--log-level", "debug"]) as s:
        drive(s)
        logs = wait_for(s, lambda l: "event=refused" in l)
    debug = [l for l in logs if "level=debug" in l]
    accepted = [l for l in debug if "event=batch_accepted" in l]
    check(len(accepted) == 1, debug)
    check("op=square" in accepted[0] and "jobs=100" in accepted[0] and
          "chunksize=10" in accepted[0], accepted)
    chunks = [l for l in debug if "event=chunk_sent" in l]
    check(len(chunks) == 10, chunks)  # 100 jobs in chunks of 10
    check(sum(int(l.split("jobs=")[1].split()[0]) for l in chunks) == 100, chunks)
    refused = [l for l in debug if "event=refused" in l]
    check(len(refused) == 1 and "code=unknown_op" in refused[0] and "status=400" in refused[0],
          refused)


def test_env_twin_and_json():
    with Server(workers=1, args=["--log-format", "json"],
                env={"BATCHD_LOG_LEVEL": "debug"}) as s:
        drive(s)
        logs = wait_for(s, lambda l: '"event":"refused"' in l)
    check(any('"level":"debug"' in l and '"event":"batch_accepted"' in l for l in logs), logs)


def test_bad_level_refused():
    p = subprocess.run([BIN, "--log-level", "loud"], capture_output=True, timeout=30)
    check(p.returncode == 2, p)
    check(b"--log-level" in p.stderr, p.stderr)


if __name__ == "__main__":
    sys.exit(Suite("log_level").run(globals()))
