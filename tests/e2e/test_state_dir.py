"""The store's state dir (SPEC §8, --state-dir): batchd refuses to start, exiting non-zero
with one log line that names the folder and the cause, on a state dir it cannot write, a
full file system, a damaged or foreign database, a folder another batchd holds, or one that mixes with the data
or output dir, and never starts on an empty store instead. A working store shows in /readyz
and /metrics; a plain streamed batch (no key, not async) stores nothing.

The tests run as root here, and root ignores permission bits: chmod 0500 alone does not stop
it. What does refuse root, and is used below: a file where the folder should be (ENOTDIR), a
read-only tmpfs mounted on the folder (EROFS), an immutable folder (chattr +i: EPERM), and
the 0500 folder with batchd run as the user nobody (EACCES). The mounts and chattr need
CAP_SYS_ADMIN / CAP_LINUX_IMMUTABLE and an ext4-like file system; each case says when it is
skipped.
"""
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "deploy"))
import promtext  # noqa: E402
from harness import BIN as _BIN, Server, Suite, check  # noqa: E402

BIN = os.path.abspath(_BIN)  # the tests run it from another folder

TMP = tempfile.mkdtemp(prefix="batchd-statedir-")
os.chmod(TMP, 0o755)  # the nobody case walks through it
DB = "batchd.db"  # store/store_sqlite.c: --state-dir/batchd.db


def start_refused(state_dir, args=(), preexec=None, timeout=20):
    """Starts batchd on STATE_DIR; it must exit by itself within TIMEOUT. Returns (exit
    status, its stderr as text)."""
    cmd = [BIN, "--listen", "127.0.0.1:0", "--workers", "1", "--state-dir", state_dir] + list(args)
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         preexec_fn=preexec, cwd=TMP)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError("batchd started on %s:\n%s" % (state_dir, err.decode()[-2000:]))
    return p.returncode, err.decode("utf-8", "replace")


def check_refusal(state_dir, want, **kw):
    """A refusal at start: non-zero, exactly one error line, naming STATE_DIR and WANT (a
    piece of the cause), before any worker was started."""
    rc, log = start_refused(state_dir, **kw)
    errors = [l for l in log.splitlines() if "level=error" in l]
    if os.environ.get("SHOW"):
        print("  " + (errors[0] if errors else log))
    check(rc not in (0, None), "exit %r:\n%s" % (rc, log))
    check(len(errors) == 1, "not one error line:\n%s" % log)
    check(state_dir in errors[0] and want in errors[0], "want %r and %r in:\n%s" %
          (state_dir, want, errors[0]))
    check("event=listening" not in log and "worker_start" not in log, log)
    check("AddressSanitizer" not in log and "runtime error" not in log, log)
    return errors[0]


def make_store(path):
    """A real store in PATH (a batchd started and stopped on it)."""
    with Server(workers=1, args=["--state-dir", path]):
        pass
    check(os.path.exists(os.path.join(path, DB)), os.listdir(path))


def test_a_file_in_place_of_the_dir_is_refused():
    path = os.path.join(TMP, "a-file")
    with open(path, "w") as f:
        f.write("not a folder\n")
    check_refusal(path, "not a directory")
    # And a folder that cannot be made below it.
    check_refusal(os.path.join(path, "sub"), "cannot be created")


def test_a_read_only_file_system_is_refused():
    path = os.path.join(TMP, "ro-mount")
    os.mkdir(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=16m", "tmpfs", path],
                      capture_output=True).returncode != 0:
        print("  skipped: cannot mount a read-only tmpfs here (no CAP_SYS_ADMIN)")
        return
    try:
        check_refusal(path, "Read-only file system")
    finally:
        subprocess.run(["umount", path], check=True)


def test_a_full_file_system_is_refused():
    path = os.path.join(TMP, "full-mount")
    os.mkdir(path)
    # 1 MiB: less than the 8 MiB the store wants free at start (store/sq_internal.h).
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path],
                      capture_output=True).returncode != 0:
        print("  skipped: cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
        return
    try:
        check_refusal(path, "full")
    finally:
        subprocess.run(["umount", path], check=True)


def test_an_immutable_dir_is_refused():
    path = os.path.join(TMP, "immutable")
    os.mkdir(path)
    if subprocess.run(["chattr", "+i", path], capture_output=True).returncode != 0:
        print("  skipped: chattr +i is not possible here")
        return
    try:
        check_refusal(path, "not writable")
    finally:
        subprocess.run(["chattr", "-i", path], check=True)


def test_a_dir_without_write_permission_is_refused():
    path = os.path.join(TMP, "mode-0500")
    os.mkdir(path)
    os.chmod(path, 0o500)
    if os.geteuid() != 0:
        check_refusal(path, "Permission denied")
        return

    def as_nobody():
        os.setgid(65534)
        os.setgroups([])
        os.setuid(65534)

    check_refusal(path, "Permission denied", preexec=as_nobody)


def test_garbage_in_the_database_is_refused():
    path = os.path.join(TMP, "garbage")
    make_store(path)
    with open(os.path.join(path, DB), "wb") as f:
        f.write(b"this is not an sqlite database, it is garbage\n" * 2000)
    check_refusal(path, "not a batchd store or is damaged")
    # Still refused on the next try: nothing was replaced by an empty store.
    check_refusal(path, "not a batchd store or is damaged")
    with open(os.path.join(path, DB), "rb") as f:
        check(f.read(16) == b"this is not an s", "the file was replaced")


def test_damaged_pages_behind_a_good_header_are_refused():
    path = os.path.join(TMP, "damaged")
    make_store(path)
    with open(os.path.join(path, DB), "r+b") as f:
        f.seek(100)  # keep the 100-byte header, wreck the schema page and the next ones
        f.write(bytes((i * 37 + 11) & 0xFF for i in range(4096 * 3 - 100)))
    check_refusal(path, "damaged")


def test_a_foreign_sqlite_database_is_refused():
    path = os.path.join(TMP, "foreign")
    os.mkdir(path)
    db = sqlite3.connect(os.path.join(path, DB))
    db.execute("CREATE TABLE photos (name TEXT)")
    db.commit()
    db.close()
    check_refusal(path, "not a batchd store")


def test_a_dir_held_by_another_batchd_is_refused():
    path = os.path.join(TMP, "held")
    with Server(workers=1, args=["--state-dir", path]) as a:
        check_refusal(path, "in use by another process")
        status, _, _ = a.request("GET", "/readyz")
        check(status == 200, "the first server is still ready: %r" % status)
    # Once it is gone the folder is free.
    with Server(workers=1, args=["--state-dir", path]) as b:
        status, _, _ = b.request("GET", "/readyz")
        check(status == 200, status)


def test_state_dir_mixed_with_data_or_output_is_refused():
    data = os.path.join(TMP, "data")
    out = os.path.join(TMP, "outputs")
    os.makedirs(data, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    cases = [
        (data, ["--data-dir", data]),                                  # the data dir
        (data + "/", ["--data-dir", data]),
        (os.path.join(data, "state"), ["--data-dir", data]),           # inside it
        (os.path.join(TMP, "outputs", "..", "data", "st"), ["--data-dir", data]),
        (TMP, ["--data-dir", data]),                                   # holds it
        (out, ["--data-dir", data, "--output-dir", out]),              # the output dir
        (os.path.join(out, "state"), ["--data-dir", data, "--output-dir", out]),
    ]
    for state, args in cases:
        rc, log = start_refused(state, args=args)
        check(rc == 2 and "--state-dir" in log, (state, args, rc, log))
    # Through the environment twin too.
    env = dict(os.environ, BATCHD_STATE_DIR=os.path.join(data, "s"), BATCHD_DATA_DIR=data)
    p = subprocess.run([BIN, "--listen", "127.0.0.1:0", "--workers", "1"], env=env, cwd=TMP,
                       capture_output=True, text=True, timeout=20)
    check(p.returncode == 2 and "--state-dir" in p.stderr, (p.returncode, p.stderr))
    check(not os.path.exists(os.path.join(data, "s")), "a state dir was made in the data dir")
    # A folder beside them is fine.
    with Server(workers=1, args=["--data-dir", data, "--output-dir", out, "--state-dir",
                                 os.path.join(TMP, "beside")]) as s:
        status, _, _ = s.request("GET", "/readyz")
        check(status == 200, status)


def scrape(s):
    status, hdrs, body = s.request("GET", "/metrics")
    check(status == 200, status)
    return promtext.parse(body.decode())


def test_readyz_metrics_and_a_plain_batch_stores_nothing():
    import json
    with Server(workers=2) as s:
        status, _, body = s.request("GET", "/readyz")
        doc = json.loads(body)
        check(status == 200 and doc["store"] == "ok", (status, doc))
        check(os.path.exists(os.path.join(s.state_dir, DB)), os.listdir(s.state_dir))
        m0 = scrape(s)
        types = {
            "batchd_store_bytes": "gauge",
            "batchd_store_pending_rows": "gauge",
            "batchd_store_rows_total": "counter",
            "batchd_store_commits_total": "counter",
            "batchd_store_commit_seconds": "summary",
            "batchd_stored_batches": "gauge",
        }
        for name, t in types.items():
            check(name in m0 and m0[name].type == t, (name, m0.get(name) and m0[name].type))
        check(m0["batchd_stored_batches"].label_values("state") ==
              {"queued", "running", "done", "cancelled"},
              m0["batchd_stored_batches"].label_values("state"))
        q = m0["batchd_store_commit_seconds"]
        check(q.value(quantile="0.5") is not None and q.value(quantile="0.99") is not None,
              q.samples)
        check(q.value("_count") == m0["batchd_store_commits_total"].value(), q.samples)
        # Plain streamed batches: not stored (SPEC §8's last point), so the store stays empty.
        for order in ("input", "completed"):
            lines, status, _ = s.batch({"op": "sqrt", "inputs": list(range(2000)),
                                        "order": order})
            check(status == 200 and "summary" in lines[-1], (status, lines[-1:]))
        m1 = scrape(s)
        for name in ("batchd_store_rows_total", "batchd_store_pending_rows", "batchd_store_bytes"):
            check(m1[name].value() == 0, (name, m1[name].value()))
        check(m1["batchd_stored_batches"].sum() == 0, m1["batchd_stored_batches"].samples)
        p50 = m1["batchd_store_commit_seconds"].value(quantile="0.5")
        p99 = m1["batchd_store_commit_seconds"].value(quantile="0.99")
        check(0 <= p50 <= p99 < 60, (p50, p99))
        # The expiry timer, even at a short ttl, adds no commit when nothing is due.
        check(m1["batchd_store_commits_total"].value() == m0["batchd_store_commits_total"].value(),
              (m0["batchd_store_commits_total"].value(), m1["batchd_store_commits_total"].value()))


def test_short_ttl_expiry_timer_runs_quietly():
    # --result-ttl 1s: the timer runs every 250 ms; the server stays ready, logs no error.
    with Server(workers=1, args=["--result-ttl", "1s"]) as s:
        import time
        time.sleep(1.5)
        status, _, _ = s.request("GET", "/readyz")
        check(status == 200, status)
        check(not [l for l in s.log_lines if "level=error" in l], s.log_lines)


def fill(path):
    """Fills the file system of PATH with a file PATH/filler until it is full."""
    chunk = b"\0" * 65536
    fd = os.open(os.path.join(path, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 512):
            try:
                while os.write(fd, chunk[:size]) > 0:
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


def wait_ready_state(s, want_status, timeout=10):
    import json
    import time
    end = time.time() + timeout
    while True:
        status, _, body = s.request("GET", "/readyz")
        if status == want_status or time.time() > end:
            return status, json.loads(body)
        time.sleep(0.05)


def submit_async(s, inputs):
    """POSTs an async sqrt batch; returns (status, parsed body) or None when this tree has
    no stored batches yet (no 202 for Prefer: respond-async)."""
    import json
    status, hdrs, body = s.request("POST", "/v1/batches", body={"op": "sqrt", "inputs": inputs},
                                   headers={"Prefer": "respond-async"})
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if status == 200 and hdrs.get("content-type", "").startswith("application/x-ndjson"):
        return None  # streamed: this tree has no stored batches
    return status, doc


def test_readyz_is_503_while_the_state_dir_is_full():
    path = os.path.join(TMP, "fills-up")
    os.mkdir(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", path],
                      capture_output=True).returncode != 0:
        print("  skipped: cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
        return
    try:
        with Server(workers=1, args=["--state-dir", path, "--result-ttl", "1s"]) as s:
            fill(path)
            status, doc = wait_ready_state(s, 503)
            check(status == 503 and doc["store"] == "full", (status, doc))
            # A stored batch meanwhile: 507 when its commit fails (logged), or 202 when SQLite
            # could still write it into the WAL file's pages, which stay allocated between
            # checkpoints. Either way /readyz stays 503, also after the expiry timer has
            # committed again.
            sub = submit_async(s, [1, 4, 9])
            if sub is not None:
                check(sub[0] in (202, 507), sub)
                status, doc = wait_ready_state(s, 200, timeout=1.5)
                check(status == 503, (status, doc))
                if sub[0] == 507:
                    check([l for l in s.log_lines if "event=store_error" in l],
                          "no store_error logged:\n" + "\n".join(s.log_lines))
            os.unlink(os.path.join(path, "filler"))
            status, doc = wait_ready_state(s, 200)
            check(status == 200 and doc["store"] == "ok", (status, doc))
    finally:
        subprocess.run(["umount", path], check=True)


def test_data_survives_a_restart():
    """An async batch, done, then the server stopped and started again on the same state
    dir: its status and results are still there, and the metrics count it. Needs the stored
    batches (server/stored.c, SPEC §8): skipped on a tree without them."""
    import json
    import time
    path = os.path.join(TMP, "restart")
    with Server(workers=2, args=["--state-dir", path]) as s:
        sub = submit_async(s, [1, 4, 9, 16])
        if sub is None:
            print("  skipped: stored batches cannot be submitted in this tree (server/stored.c)")
            return
        check(sub[0] == 202, sub)
        bid = sub[1]["id"]
        end = time.time() + 20
        while True:
            status, _, body = s.request("GET", "/v1/batches/" + bid)
            doc = json.loads(body)
            if doc.get("state") == "done" or time.time() > end:
                break
            time.sleep(0.05)
        check(status == 200 and doc["state"] == "done", doc)
        m = scrape(s)
        check(m["batchd_stored_batches"].value(state="done") == 1,
              m["batchd_stored_batches"].samples)
        check(m["batchd_store_rows_total"].value() == 4, m["batchd_store_rows_total"].samples)
        check(m["batchd_store_bytes"].value() > 0, m["batchd_store_bytes"].samples)
        check(m["batchd_store_commits_total"].value() >= 1, "no commit counted")
    with Server(workers=1, args=["--state-dir", path]) as s:
        status, _, body = s.request("GET", "/v1/batches/" + bid)
        doc = json.loads(body)
        check(status == 200 and doc["state"] == "done" and doc["jobs"]["ok"] == 4, doc)
        status, _, body = s.request("GET", "/v1/batches/%s/results" % bid)
        lines = [json.loads(l) for l in body.decode().splitlines() if l.strip()]
        got = sorted((l["index"], l["result"]) for l in lines if "index" in l)
        check(got == [(0, 1.0), (1, 2.0), (2, 3.0), (3, 4.0)], lines)
        check("summary" in lines[-1], lines[-1:])
        m = scrape(s)
        check(m["batchd_stored_batches"].value(state="done") == 1,
              m["batchd_stored_batches"].samples)
        check(m["batchd_store_rows_total"].value() == 0, "rows_total counts since start")


def stored_batch(s, n=50):
    """An async batch of N sqrt (two failing), run to its end. Returns (id, results body)."""
    import json
    import time
    status, hdrs, body = s.request("POST", "/v1/batches", {"op": "sqrt", "async": True,
                                                            "inputs": list(range(n - 2)) + [-1, -2]})
    check(status == 202, (status, body[:200]))
    bid = hdrs["location"].rsplit("/", 1)[1]
    end = time.time() + 30
    while json.loads(s.request("GET", "/v1/batches/" + bid)[2])["state"] != "done":
        check(time.time() < end, "batch %s not done" % bid)
        time.sleep(0.02)
    status, _, data = s.request("GET", "/v1/batches/%s/results" % bid)
    check(status == 200 and data.count(b"\n") == n + 1 and b'"failed":2' in data, data[-300:])
    return bid, data


def results_of(path, bid):
    with Server(workers=1, args=["--state-dir", path]) as s:
        status, _, data = s.request("GET", "/v1/batches/%s/results" % bid)
        check(status == 200, (status, data[:200]))
        return data


def test_a_full_file_system_under_a_store_is_refused():
    # A full disk under an existing store: refused, with code=full; the store is untouched,
    # and once there is room again it starts with its batch whole. A new state dir on a file
    # system with less room than the store's minimum is refused too.
    path = os.path.join(TMP, "full-under-a-store")
    os.mkdir(path)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", path],
                      capture_output=True).returncode != 0:
        print("  skipped: cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
        return
    try:
        state = os.path.join(path, "state")
        with Server(workers=1, args=["--state-dir", state]) as s:
            bid, data = stored_batch(s)
        size = os.path.getsize(os.path.join(state, DB))
        filler = os.path.join(path, "filler")
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        check_refusal(state, "code=full")
        check(os.path.getsize(os.path.join(state, DB)) == size, "the store changed")
        os.truncate(filler, 8 << 20)  # room again, but less than the minimum for a new store
        check_refusal(os.path.join(path, "new"), "its file system is full")
        os.unlink(filler)
        check(results_of(state, bid) == data, "the results changed")
    finally:
        subprocess.run(["umount", path], check=True)


def main():
    try:
        rc = Suite("state_dir").run(globals())
    finally:
        for root, dirs, _ in os.walk(TMP):
            for d in dirs:
                subprocess.run(["chattr", "-i", os.path.join(root, d)], capture_output=True)
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
