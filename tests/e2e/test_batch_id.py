"""Every batch has an id (SPEC §8), streamed ones too: `b_` + 26 Crockford base32
characters, time-ordered, named in a Content-Location header and in the summary ("batch"),
in each result format (NDJSON, JSON, tar, multipart uploads)."""
import io
import json
import os
import re
import sys
import tarfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import Server, Suite, check  # noqa: E402
from imglib import multipart  # noqa: E402

S = None
ID = re.compile(r"^b_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def location_id(hdrs):
    loc = hdrs.get("content-location", "")
    check(loc.startswith("/v1/batches/"), hdrs)
    bid = loc[len("/v1/batches/"):]
    check(ID.match(bid), bid)
    return bid


def test_ndjson_header_and_summary_agree():
    lines, status, hdrs = S.batch({"op": "sqrt", "inputs": [4, 9]})
    check(status == 200, status)
    bid = location_id(hdrs)
    summ = lines[-1]["summary"]
    check(summ["batch"] == bid, (summ, hdrs))
    check(summ["request_id"] == hdrs["x-request-id"], summ)


def test_ids_are_distinct_and_time_ordered():
    ids = []
    for _ in range(20):
        lines, status, hdrs = S.batch({"op": "square", "inputs": [1]})
        check(status == 200, status)
        ids.append(location_id(hdrs))
        check(lines[-1]["summary"]["batch"] == ids[-1], lines[-1])
    check(len(set(ids)) == len(ids), ids)
    check(ids == sorted(ids), ids)


def test_json_document_names_it():
    docs, status, hdrs = S.batch({"op": "sqrt", "inputs": [16]}, accept="application/json")
    check(status == 200, status)
    check(docs[0]["summary"]["batch"] == location_id(hdrs), (docs, hdrs))


def test_tar_summary_names_it():
    status, hdrs, data = S.request(
        "POST", "/v1/batches", body=json.dumps({"op": "sqrt", "inputs": [4]}),
        headers={"Content-Type": "application/json", "Accept": "application/x-tar"})
    check(status == 200, status)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as t:
        summ = json.loads(t.extractfile("summary.json").read())
    check(summ["batch"] == location_id(hdrs), (summ, hdrs))


def test_multipart_upload_names_it():
    body, ctype = multipart({"op": "image"}, [("bad.jpg", b"not an image")])
    status, hdrs, data = S.request("POST", "/v1/batches", body=body,
                                   headers={"Content-Type": ctype})
    check(status == 200, (status, data[:200]))
    lines = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
    check(lines[-1]["summary"]["batch"] == location_id(hdrs), lines)


def test_refused_batch_has_no_id():
    lines, status, hdrs = S.batch({"op": "no_such_op", "inputs": [1]})
    check(status == 400, status)
    check("content-location" not in hdrs, hdrs)


def test_cors_exposes_it():
    with Server(workers=1, args=["--cors-origin", "https://app.example"]) as c:
        lines, status, hdrs = c.batch({"op": "sqrt", "inputs": [1]},
                                      headers={"Origin": "https://app.example"})
        check(status == 200, status)
        exposed = hdrs.get("access-control-expose-headers", "").lower()
        check("content-location" in exposed, hdrs)
        check(lines[-1]["summary"]["batch"] == location_id(hdrs), lines)


if __name__ == "__main__":
    with Server(workers=2) as S:
        rc = Suite("test_batch_id").run(globals())
    sys.exit(rc)
