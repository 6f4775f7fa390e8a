"""Stored batches (SPEC §8) through the real server: async submission (Prefer and "async"),
status, results resumed with ?after and Last-Event-ID, followed live (NDJSON and SSE), the
JSON document and the tar of an ended batch, cancel (running and queued jobs), forget, the
list and its filters, owners per token, Idempotency-Key (replay, 422, two POSTs at once),
progress lines, retention (410) and the size cap (507). Results are checked against Python's
own arithmetic, and every line is counted: none missing, none twice."""
import io
import json
import math
import os
import socket
import sys
import tarfile
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import SHARED, Server, Suite, check  # noqa: E402
from imglib import multipart  # noqa: E402

S = None
JSON = {"Content-Type": "application/json"}


def submit(server, batch, headers=None, prefer=True):
    h = dict(JSON)
    if prefer:
        h["Prefer"] = "respond-async"
    h.update(headers or {})
    status, hdrs, data = server.request("POST", "/v1/batches", body=json.dumps(batch), headers=h)
    return status, hdrs, json.loads(data) if data else None


def accepted(server, batch, headers=None, prefer=True):
    status, hdrs, doc = submit(server, batch, headers, prefer)
    check(status == 202, (status, doc))
    check(hdrs["location"] == "/v1/batches/" + doc["id"], (hdrs, doc))
    return doc["id"]


def status_of(server, bid, headers=None):
    status, _, data = server.request("GET", "/v1/batches/" + bid, headers=headers)
    return status, json.loads(data) if data else None


def wait_state(server, bid, states=("done", "cancelled"), timeout=60, headers=None):
    end = time.time() + timeout
    while time.time() < end:
        st, doc = status_of(server, bid, headers)
        check(st == 200, (st, doc))
        if doc["state"] in states:
            return doc
        time.sleep(0.02)
    raise AssertionError("batch %s never reached %s: %r" % (bid, states, doc))


def results(server, bid, query="", headers=None):
    status, hdrs, data = server.request("GET", "/v1/batches/%s/results%s" % (bid, query),
                                        headers=headers)
    check(status == 200, (status, data[:300]))
    return [json.loads(l) for l in data.decode().splitlines() if l.strip()], hdrs


def check_complete(lines, njobs, expect=None):
    """Every index once, seqs 1..N in order, the summary last and adding up."""
    rows = [l for l in lines if "index" in l]
    idx = sorted(l["index"] for l in rows)
    check(idx == list(range(njobs)), idx[:50])
    check([l["seq"] for l in rows] == list(range(1, njobs + 1)), [l["seq"] for l in rows][:50])
    summ = lines[-1]["summary"]
    ok = sum(1 for l in rows if "result" in l)
    check(summ["jobs"] == njobs and summ["ok"] == ok and summ["failed"] == njobs - ok, summ)
    if expect is not None:
        for l in rows:
            check(l.get("result") == expect(l["index"]), l)
    return rows


def raw_get(port, path, headers=(), read_bytes=None, timeout=30):
    """GET on a raw socket; with READ_BYTES, closes after that many body bytes (a client that
    drops the connection). Returns the bytes read after the headers."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    req = "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (
        path, "".join("%s: %s\r\n" % h for h in headers))
    s.sendall(req.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    while read_bytes is None or len(body) < read_bytes:
        chunk = s.recv(65536)
        if not chunk:
            break
        body += chunk
    s.close()
    return head, body


def dechunk(body):
    out, rest = b"", body
    while rest:
        line, _, rest = rest.partition(b"\r\n")
        if not line:
            continue
        n = int(line.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        rest = rest[n + 2:]
    return out


# ---------------------------------------------------------------------------- submit, read


def test_async_prefer_status_and_results():
    status, hdrs, doc = submit(S, {"op": "sqrt", "inputs": list(range(200))})
    check(status == 202 and hdrs.get("preference-applied") == "respond-async", (status, hdrs))
    for k in ("id", "state", "op", "created_at", "started_at", "finished_at", "expires_at", "jobs",
              "progress", "rate_per_s", "eta_ms", "request_id", "results"):
        check(k in doc, (k, doc))
    check(doc["jobs"]["total"] == 200 and doc["op"] == "sqrt", doc)
    check(doc["state"] == "queued" or doc["started_at"] is not None, doc)
    check(doc["results"] == "/v1/batches/%s/results" % doc["id"] and doc["stored"] is True, doc)
    check(doc["request_id"] == hdrs["x-request-id"], (doc, hdrs))
    final = wait_state(S, doc["id"])
    check(final["state"] == "done" and final["jobs"]["ok"] == 200 and final["progress"] == 1.0, final)
    check(final["finished_at"] and final["expires_at"] > final["finished_at"], final)
    lines, rh = results(S, doc["id"])
    check(rh["content-type"].startswith("application/x-ndjson"), rh)
    # the POST counts as a stored batch in the metrics, the list and status GETs as nothing
    st, _, m = S.request("GET", "/metrics")
    text = m.decode()
    mine = [l for l in text.splitlines() if l.startswith('batchd_batches_total{op="sqrt"')]
    check(any('outcome="stored"' in l for l in mine), mine)
    check(not any('outcome="refused"' in l for l in mine), mine)
    check('op="none",outcome="cut"' not in text, "the GETs of /v1/batches are not batches")
    check_complete(lines, 200, lambda i: math.sqrt(i))


def test_async_field_in_body_and_multipart():
    bid = accepted(S, {"op": "cube", "inputs": [1, 2, 3], "async": True}, prefer=False)
    wait_state(S, bid)
    check_complete(results(S, bid)[0], 3, lambda i: (i + 1) ** 3)
    png = open(os.path.join(SHARED, "data", "pngsuite", "basn6a08.png"), "rb").read()
    body, ctype = multipart({"op": "image", "async": True, "params": {"pipeline": [{"op": "thumbnail", "width": 8, "height": 8}], "format": "png"}},
                            [("a.png", png), ("b.png", png)])
    st, hdrs, data = S.request("POST", "/v1/batches", body=body, headers={"Content-Type": ctype})
    check(st == 202, (st, data[:300]))
    bid = json.loads(data)["id"]
    wait_state(S, bid)
    rows = check_complete(results(S, bid)[0], 2)
    check(all(r["result"]["width"] == 8 for r in rows), rows)


def test_resume_with_after_and_last_event_id():
    n = 300
    bid = accepted(S, {"op": "square", "inputs": list(range(n))})
    wait_state(S, bid)
    first, _ = results(S, bid, "?after=0")
    half = first[149]["seq"]
    rest, _ = results(S, bid, "?after=%d" % half)
    got = first[:150] + rest
    check_complete(got, n, lambda i: i * i)
    # the same by Last-Event-ID, as SSE
    head, body = raw_get(S.port, "/v1/batches/%s/results" % bid,
                         [("Accept", "text/event-stream"), ("Last-Event-ID", str(half))])
    check(b"text/event-stream" in head, head)
    events = [e for e in dechunk(body).decode().split("\n\n") if e.strip()]
    ids = [int(e.split("\n")[0][4:]) for e in events if e.startswith("id: ")]
    kinds = [l[7:] for e in events for l in e.split("\n") if l.startswith("event: ")]
    check(ids[:-1] == list(range(half + 1, n + 1)), ids[:10])
    check(kinds[-1] == "summary" and set(kinds[:-1]) == {"result"}, kinds[-3:])
    # an EventSource that reconnects after the summary is told to stop (204), not sent it again
    st, _, data = S.request("GET", "/v1/batches/%s/results" % bid,
                            headers={"Accept": "text/event-stream", "Last-Event-ID": str(ids[-1])})
    check(st == 204 and data == b"", (st, data))
    # a client that drops mid-stream, then resumes from the last line it read whole
    head, body = raw_get(S.port, "/v1/batches/%s/results" % bid, read_bytes=3000)
    part = dechunk(body + b"\r\n").decode(errors="replace").split("\n")[:-1]
    seen = [json.loads(l) for l in part if l.strip().endswith("}")]
    last = seen[-1]["seq"]
    more, _ = results(S, bid, "?after=%d" % last)
    check_complete(seen + more, n)


def test_follow_live_ndjson_and_sse():
    # 10 jobs of 300 ms on 2 workers: ~1.5 s. A live stream gives its first line well before
    # the summary; one that waited for the end would give them together.
    bid = accepted(S, {"op": "sleep", "inputs": [300] * 10, "chunksize": 1})
    c = S.connect()
    c.request("GET", "/v1/batches/%s/results?follow=true" % bid)
    r = c.getresponse()
    first = json.loads(r.readline())
    t_first = time.time()
    rest = [json.loads(l) for l in r.read().decode().splitlines() if l.strip()]
    t_end = time.time()
    c.close()
    check(first["seq"] == 1 and t_end - t_first > 0.6, (first, t_end - t_first))
    check_complete([first] + rest, 10, lambda i: 300)
    # SSE, following from the start
    bid = accepted(S, {"op": "sleep", "inputs": [30] * 6, "chunksize": 1})
    head, body = raw_get(S.port, "/v1/batches/%s/results?follow=true" % bid,
                         [("Accept", "text/event-stream")])
    events = [e for e in dechunk(body).decode().split("\n\n") if e.strip()]
    check(len(events) == 7 and "event: summary" in events[-1], events)


def test_json_document_and_409_before_the_end():
    bid = accepted(S, {"op": "sleep", "inputs": [400, 1], "chunksize": 1})
    st, _, data = S.request("GET", "/v1/batches/%s/results" % bid, headers={"Accept": "application/json"})
    check(st == 409 and json.loads(data)["error"]["code"] == "not_finished", (st, data))
    wait_state(S, bid)
    bid = accepted(S, {"op": "sqrt", "inputs": [9, -1, 16], "order": "completed"})
    wait_state(S, bid)
    st, _, data = S.request("GET", "/v1/batches/%s/results" % bid, headers={"Accept": "application/json"})
    check(st == 200, (st, data))
    doc = json.loads(data)
    check(doc["results"][0] == {"result": 3.0} and doc["results"][2] == {"result": 4.0}, doc)
    check(doc["results"][1]["error"]["code"] == "domain_error", doc)
    check(doc["summary"]["jobs"] == 3 and doc["summary"]["failed"] == 1, doc)


def test_image_batch_tar():
    from PIL import Image
    png = open(os.path.join(SHARED, "data", "pngsuite", "basn2c08.png"), "rb").read()
    params = {"pipeline": [{"op": "thumbnail", "width": 16, "height": 16}], "format": "jpeg"}
    body, ctype = multipart({"op": "image", "params": params},
                            [("one.png", png), ("two.png", png), ("bad.png", b"nope")])
    st, _, data = S.request("POST", "/v1/batches", body=body,
                            headers={"Content-Type": ctype, "Prefer": "respond-async"})
    check(st == 202, (st, data[:200]))
    bid = json.loads(data)["id"]
    st, _, data = S.request("GET", "/v1/batches/%s/results" % bid, headers={"Accept": "application/x-tar"})
    check(st in (200, 409), st)
    wait_state(S, bid)
    st, hdrs, data = S.request("GET", "/v1/batches/%s/results" % bid, headers={"Accept": "application/x-tar"})
    check(st == 200 and hdrs["content-type"] == "application/x-tar", (st, hdrs))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        names = t.getnames()
        check(names[-2:] == ["errors.ndjson", "summary.json"], names)
        check(sorted(names[:-2]) == ["one.jpeg", "two.jpeg"], names)
        im = Image.open(io.BytesIO(t.extractfile("one.jpeg").read()))
        check(im.format == "JPEG" and im.size[0] == 16, (im.format, im.size))
        errs = [json.loads(l) for l in t.extractfile("errors.ndjson").read().decode().splitlines()]
        check(len(errs) == 1 and errs[0]["index"] == 2, errs)
        check(errs[0]["error"]["code"] in ("unsupported_format", "corrupt_image"), errs)
        summ = json.loads(t.extractfile("summary.json").read())
        check(summ["jobs"] == 3 and summ["ok"] == 2 and summ["batch"] == bid, summ)


# ---------------------------------------------------------------------------- cancel, forget


def test_cancel_running_and_queued_jobs():
    bid = accepted(S, {"op": "sleep", "inputs": [1500] * 10, "chunksize": 1})
    wait_state(S, bid, ("running",))
    time.sleep(0.3)
    t0 = time.time()
    st, _, data = S.request("DELETE", "/v1/batches/" + bid)
    doc = json.loads(data)
    check(st == 200 and doc["state"] == "cancelled", (st, doc))
    check(doc["jobs"]["ok"] + doc["jobs"]["failed"] == 10, doc)
    final = wait_state(S, bid, ("cancelled",))
    check(time.time() - t0 < 1.2, time.time() - t0)  # running jobs were stopped, not waited for
    lines, _ = results(S, bid)
    rows = check_complete(lines, 10)
    msgs = [r["error"]["message"] for r in rows if "error" in r]
    check(all(r["error"]["code"] == "cancelled" for r in rows if "error" in r), rows)
    check(any("while this job ran" in m for m in msgs), msgs)
    check(any("before this job started" in m for m in msgs), msgs)
    check(lines[-1]["summary"].get("cancelled") is True, lines[-1])
    check(final["jobs"]["failed"] == len(msgs), final)
    # DELETE on an ended batch forgets it
    st, _, _ = S.request("DELETE", "/v1/batches/" + bid)
    check(st == 204, st)
    st, doc = status_of(S, bid)
    check(st == 404 and doc["error"]["code"] == "not_found", (st, doc))
    st, _, _ = S.request("GET", "/v1/batches/%s/results" % bid)
    check(st == 404, st)


def test_async_batch_survives_its_client():
    bid = accepted(S, {"op": "sleep", "inputs": [50] * 8, "chunksize": 1})
    # a follower that hangs up does not cancel it
    raw_get(S.port, "/v1/batches/%s/results?follow=true" % bid, read_bytes=1)
    doc = wait_state(S, bid)
    check(doc["state"] == "done" and doc["jobs"]["ok"] == 8, doc)


def test_unknown_and_malformed_ids():
    st, doc = status_of(S, "b_01M8SP58X2FEKZE5DSBPZR5650")
    check(st == 404 and doc["error"]["code"] == "not_found", (st, doc))
    st, doc = status_of(S, "nope")
    check(st == 404, (st, doc))
    st, _, _ = S.request("GET", "/v1/batches/b_01M8SP58X2FEKZE5DSBPZR5650/other")
    check(st == 404, st)
    st, _, _ = S.request("POST", "/v1/batches/b_01M8SP58X2FEKZE5DSBPZR5650", body=b"{}",
                         headers=JSON)
    check(st == 405, st)
    st, hdrs, _ = S.request("OPTIONS", "/v1/batches")
    check("GET" in hdrs.get("allow", "") and "POST" in hdrs.get("allow", ""), hdrs)


# ---------------------------------------------------------------------------- streamed batches


def test_streamed_batch_status_cancel_and_404_after():
    c = S.connect()
    c.request("POST", "/v1/batches", body=json.dumps({"op": "sleep", "inputs": [800] * 8, "chunksize": 1}),
              headers=JSON)
    r = c.getresponse()
    bid = r.getheader("Content-Location").split("/")[-1]
    st, doc = status_of(S, bid)
    check(st == 200 and doc["state"] == "running" and doc["jobs"]["total"] == 8, (st, doc))
    check(doc["stored"] is False and doc["results"] is None, doc)
    st, _, data = S.request("GET", "/v1/batches?state=running")
    check(bid in [d["id"] for d in json.loads(data)["batches"]], data)
    st, _, data = S.request("DELETE", "/v1/batches/" + bid)
    check(st == 200 and json.loads(data)["state"] == "cancelled", (st, data))
    lines = [json.loads(l) for l in r.read().decode().splitlines() if l.strip()]
    c.close()
    check(lines[-1]["summary"]["cancelled"] is True and lines[-1]["summary"]["jobs"] == 8, lines[-1])
    check(len([l for l in lines if "index" in l]) == 8, lines)
    st, _ = status_of(S, bid)
    check(st == 404, st)


def test_progress_lines():
    lines, st, _ = S.batch({"op": "sleep", "inputs": [40] * 20, "chunksize": 1, "progress_ms": 100})
    check(st == 200, st)
    prog = [l["progress"] for l in lines if "progress" in l]
    check(len(prog) >= 2, lines)
    check(all(set(p) == {"done", "total", "ok", "failed", "rate_per_s", "eta_ms"} for p in prog), prog)
    check([p["done"] for p in prog] == sorted(p["done"] for p in prog) and prog[0]["total"] == 20, prog)
    check(len([l for l in lines if "index" in l]) == 20 and "summary" in lines[-1], lines)
    # and in a stored batch's followed stream
    bid = accepted(S, {"op": "sleep", "inputs": [40] * 20, "chunksize": 1, "progress_ms": 100})
    lines, _ = results(S, bid, "?follow=true")
    check(len([l for l in lines if "progress" in l]) >= 2, lines)
    check_complete([l for l in lines if "progress" not in l], 20)


def test_list_and_filters():
    ids = [accepted(S, {"op": "square", "inputs": [i]}) for i in range(5)]
    for bid in ids:
        wait_state(S, bid)
    st, _, data = S.request("GET", "/v1/batches?limit=3")
    page = json.loads(data)
    check(st == 200 and len(page["batches"]) == 3, page)
    listed = [d["id"] for d in page["batches"]]
    check(listed == sorted(listed, reverse=True), listed)
    check(listed[0] == ids[-1], (listed, ids))
    st, _, data = S.request("GET", page["next"])
    nxt = json.loads(data)["batches"]
    check(nxt[0]["id"] < listed[-1] and listed[-1] == ids[-3], (nxt[0]["id"], listed))
    st, _, data = S.request("GET", "/v1/batches?state=done&limit=1000")
    check(all(d["state"] == "done" for d in json.loads(data)["batches"]), data[:300])
    check(set(ids) <= {d["id"] for d in json.loads(data)["batches"]}, "done list")
    st, _, data = S.request("GET", "/v1/batches?state=cancelled&limit=1000")
    check(not set(ids) & {d["id"] for d in json.loads(data)["batches"]}, "cancelled list")
    for q in ("state=bogus", "limit=0", "limit=x", "before=nope"):
        st, _, _ = S.request("GET", "/v1/batches?" + q)
        check(st == 400, (q, st))


# ---------------------------------------------------------------------------- keys


def test_idempotency_replay_and_422():
    key = {"Idempotency-Key": "replay-%f" % time.time()}
    batch = {"op": "square", "inputs": [1, 2, 3]}
    bid = accepted(S, batch, key)
    again = accepted(S, batch, key)
    check(again == bid, (again, bid))
    st, _, doc = submit(S, {"op": "square", "inputs": [1, 2, 4]}, key)
    check(st == 422 and doc["error"]["code"] == "idempotency_key_reused", (st, doc))
    # a keyed streamed POST answers with the stored stream, from the start again
    key2 = {"Idempotency-Key": "stream-%f" % time.time()}
    lines1, st, hdrs = S.batch(batch, headers=key2)
    check(st == 200, st)
    check_complete(lines1, 3, lambda i: (i + 1) ** 2)
    lines2, st, hdrs2 = S.batch(batch, headers=key2)
    check(lines2 == lines1 and hdrs2["content-location"] == hdrs["content-location"], (lines1, lines2))
    lines3, st, _ = S.batch(batch, headers=dict(key2, **{"Last-Event-ID": "2"}))
    check([l["seq"] for l in lines3 if "seq" in l] == [3], lines3)
    st, _, data = S.request("POST", "/v1/batches?after=1", body=json.dumps(batch),
                            headers=dict(JSON, **key2))
    lines4 = [json.loads(l) for l in data.decode().splitlines()]
    check(st == 200 and [l["seq"] for l in lines4 if "seq" in l] == [2, 3], lines4)
    for bad in ("", "x" * 256, "tab\there"):
        st, _, _ = submit(S, batch, {"Idempotency-Key": bad})
        check(st == 400, (bad, st))


def test_two_concurrent_posts_one_key_run_once():
    key = {"Idempotency-Key": "race-%f" % time.time()}
    batch = {"op": "sleep", "inputs": [100] * 4, "chunksize": 1}
    got = []

    def post():
        got.append(submit(S, batch, key))

    ts = [threading.Thread(target=post) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ids = {doc["id"] for st, _, doc in got}
    check(all(st == 202 for st, _, _ in got) and len(ids) == 1, got)
    bid = ids.pop()
    wait_state(S, bid)
    lines, _ = results(S, bid)
    check_complete(lines, 4)
    st, _, data = S.request("GET", "/v1/batches?limit=1000")
    check([d["id"] for d in json.loads(data)["batches"]].count(bid) == 1, "listed once")


# ---------------------------------------------------------------------------- owners, limits


def test_owners_isolated_across_tokens():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "tokens")
    with open(path, "w") as f:
        f.write("token-alice\ntoken-bob\n")
    A = {"Authorization": "Bearer token-alice"}
    B = {"Authorization": "Bearer token-bob"}
    with Server(workers=1, args=["--auth-token-file", path]) as srv:
        key = {"Idempotency-Key": "shared-key"}
        a = accepted(srv, {"op": "square", "inputs": [2]}, dict(A, **key))
        b = accepted(srv, {"op": "square", "inputs": [3]}, dict(B, **key))
        check(a != b, "a key is scoped to its token")
        wait_state(srv, a, headers=A)
        wait_state(srv, b, headers=B)
        st, _ = status_of(srv, a, B)
        check(st == 404, st)
        st, _, _ = srv.request("GET", "/v1/batches/%s/results" % a, headers=B)
        check(st == 404, st)
        st, _, _ = srv.request("DELETE", "/v1/batches/" + a, headers=B)
        check(st == 404, st)
        st, _, data = srv.request("GET", "/v1/batches", headers=B)
        check([x["id"] for x in json.loads(data)["batches"]] == [b], data)
        st, _, _ = srv.request("GET", "/v1/batches")
        check(st == 401, st)
        lines, _ = results(srv, a, headers=A)
        check(lines[0]["result"] == 4, lines)
    os.unlink(path)
    os.rmdir(d)


def test_ttl_410_and_cleanup():
    with Server(workers=1, args=["--result-ttl", "1s"]) as srv:
        bid = accepted(srv, {"op": "square", "inputs": [5]})
        wait_state(srv, bid)
        check(results(srv, bid)[0][0]["result"] == 25, "readable before the ttl")
        end = time.time() + 5  # gone 1 s after its end; the tombstone says so for 1 s more
        st, doc = status_of(srv, bid)
        while st == 200 and time.time() < end:
            time.sleep(0.05)
            st, doc = status_of(srv, bid)
        check(st == 410 and doc["error"]["code"] == "expired", (st, doc))
        st, _, _ = srv.request("GET", "/v1/batches/%s/results" % bid)
        check(st == 410, st)


def test_507_past_max_stored_bytes_nothing_lost():
    with Server(workers=1, args=["--max-stored-bytes", "20000"]) as srv:
        first = accepted(srv, {"op": "square", "inputs": list(range(50))})
        wait_state(srv, first)
        st, hdrs, doc = submit(srv, {"op": "square", "inputs": list(range(5000))})
        check(st == 507 and doc["error"]["code"] == "store_full" and "retry-after" in hdrs,
              (st, hdrs, doc))
        check_complete(results(srv, first)[0], 50, lambda i: i * i)
        # plain streamed batches are not stored: they still run
        lines, st, _ = srv.batch({"op": "square", "inputs": [7]})
        check(st == 200 and lines[0]["result"] == 49, lines)


def test_restart_carries_on_and_keeps_results():
    d = tempfile.mkdtemp(prefix="batchd-state-")
    srv = Server(workers=2, args=["--state-dir", d]).start()
    try:
        done = accepted(srv, {"op": "cube", "inputs": list(range(30))})
        wait_state(srv, done)
        slow = accepted(srv, {"op": "sleep", "inputs": [150] * 16, "chunksize": 1})
        wait_state(srv, slow, ("running",))
        time.sleep(0.5)
        srv.proc.kill()
        srv.proc.wait()
    finally:
        srv.stop()
    with Server(workers=2, args=["--state-dir", d]) as srv2:
        check_complete(results(srv2, done)[0], 30, lambda i: i ** 3)
        doc = wait_state(srv2, slow)
        check(doc["state"] == "done" and doc["jobs"]["ok"] == 16, doc)
        check_complete(results(srv2, slow)[0], 16, lambda i: 150)
        check(any("batch_resumed" in l for l in srv2.log_lines), "resumed")
    import shutil
    shutil.rmtree(d, ignore_errors=True)


def test_stop_with_followers():
    """SIGTERM while a stream follows a stored batch: the server
    still stops cleanly (libmicrohttpd aborts on suspended connections), the followed stream
    ends without a summary (cut), and the batch carries on after a restart."""
    d = tempfile.mkdtemp(prefix="batchd-state-")
    srv = Server(workers=1, args=["--state-dir", d]).start()
    bid = accepted(srv, {"op": "sleep", "inputs": [300] * 20, "chunksize": 1})
    got = []

    def follow():
        head, body = raw_get(srv.port, "/v1/batches/%s/results?follow=true" % bid)
        got.append(body)

    t = threading.Thread(target=follow)
    t.start()
    time.sleep(0.5)
    rc = srv.stop()
    t.join(10)
    check(rc == 0, (rc, srv.log_lines[-10:]))
    text = dechunk(got[0]).decode() if got else ""
    check(got and "summary" not in text, text[-300:])
    with Server(workers=2, args=["--state-dir", d]) as srv2:
        doc = wait_state(srv2, bid)
        check(doc["jobs"]["ok"] == 20, doc)
        check_complete(results(srv2, bid)[0], 20, lambda i: 300)
    import shutil
    shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    with Server(workers=2) as S:
        rc = Suite("test_stored").run(globals())
    sys.exit(rc)
