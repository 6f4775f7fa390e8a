"""batchd: a Python client for the batchd service (standard library only).

    import batchd
    c = batchd.Client("http://localhost:8080")
    c.map("sqrt", range(10))                      # like multiprocessing.Pool.map
    for r in c.imap_unordered("sleep", [300, 10]):  # like Pool.imap_unordered
        print(r)
    b = c.submit("cpu_loop", [{"n": 10**8, "x": x} for x in range(8)])
    b.wait(progress=lambda st: print(st["progress"]))
    print([r["result"] for r in b.results()])
    c.images(["a.jpg", "b.png"], pipeline=[{"op": "thumbnail", "width": 256, "height": 256}],
             out_dir="thumbs")

The contract is the service's SPEC (§3 batches, §4 results, §6 images, §8 stored batches).
Errors are exceptions: every server refusal is a batchd.Error subclass carrying the wire
.code and the HTTP .status; a failed job is a JobError (with .index); a stream that ends
without its summary line is a StreamCut, so that no call returns partial data silently.
"""
import http.client
import json
import os
import random
import shutil
import socket
import tarfile
import time
import urllib.parse
import uuid

__all__ = [
    "Client", "Batch", "Written", "Error", "BadRequest", "Unauthorized", "Forbidden",
    "NotFound", "Conflict", "Gone", "PayloadTooLarge", "Unprocessable", "Unavailable",
    "InsufficientStorage", "JobError", "StreamCut", "Unreachable", "ImageErrors",
]
__version__ = "0.1.0"

USER_AGENT = "batchd-python/" + __version__
_BLOCK = 1 << 20          # upload and download copy size
_ENDED = ("done", "cancelled")


# ---------------------------------------------------------------------------- errors
class Error(Exception):
    """A refusal of the server (4xx/5xx with the JSON error body of SPEC §2), or a client-side
    failure of the same family. .code is the wire code ("unknown_op", "invalid_param",
    "overloaded", "idempotency_key_reused", "expired", ...), .status the HTTP status (None
    when no response was involved), .message the server's text, .path the field at fault (or
    None), .retry_after the Retry-After seconds (or None), .body the whole error document."""

    def __init__(self, code, message="", status=None, path=None, retry_after=None, body=None):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = status
        self.path = path
        self.retry_after = retry_after
        self.body = body

    def __str__(self):
        s = self.code
        if self.status is not None:
            s += " (HTTP %d)" % self.status
        if self.message:
            s += ": " + self.message
        if self.path:
            s += " [at %s]" % self.path
        return s


class BadRequest(Error):
    """400: the batch was refused whole (bad JSON, unknown op, invalid param, ...)."""


class Unauthorized(Error):
    """401: no or a wrong bearer token."""


class Forbidden(Error):
    """403."""


class NotFound(Error):
    """404: no such batch (or not yours), or no such endpoint."""


class Conflict(Error):
    """409: e.g. not_finished (a JSON document asked for before the batch ended)."""


class Gone(Error):
    """410 expired: the batch outlived --result-ttl."""


class PayloadTooLarge(Error):
    """413: body or batch too large."""


class Unprocessable(Error):
    """422: e.g. idempotency_key_reused (the same key with another body)."""


class Unavailable(Error):
    """503: overloaded, draining or store_unavailable; .retry_after says when to retry."""


class InsufficientStorage(Error):
    """507: the store is full (--max-stored-bytes)."""


class JobError(Error):
    """One job failed (a per-job error line of SPEC §4). .index is the job's index, .code
    the job error code (domain_error, timeout, worker_crashed, corrupt_image, ...); .file is
    the local path for an image job of Client.images."""

    def __init__(self, code, message="", index=None, body=None, file=None):
        super().__init__(code, message, body=body)
        self.index = index
        self.file = file

    def __str__(self):
        s = "job %s failed: %s" % (self.index, self.code)
        if self.file:
            s = "job %s (%s) failed: %s" % (self.index, self.file, self.code)
        return s + (": " + self.message if self.message else "")


class StreamCut(Error):
    """A response that ended (or whose connection dropped) before its summary: what came
    before it is not the whole batch. .received is the number of result lines read."""

    def __init__(self, message, received=0):
        super().__init__("stream_cut", message)
        self.received = received


class Unreachable(Error):
    """The server could not be reached (connection refused, reset before an answer, or a
    timeout); the OSError is the __cause__."""

    def __init__(self, message):
        super().__init__("unreachable", message)


class ImageErrors(Error):
    """Client.images: some inputs failed. .errors is the list of JobError (with .index and
    .file), .written the paths written for the others, .summary the batch summary."""

    def __init__(self, errors, written, summary):
        super().__init__("job_failed", "%d of %d images failed, first: %s" % (
            len(errors), (summary or {}).get("jobs", len(errors)), errors[0]))
        self.errors = errors
        self.written = written
        self.summary = summary


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
              410: Gone, 413: PayloadTooLarge, 422: Unprocessable, 503: Unavailable,
              507: InsufficientStorage}

# Failures of the transport: what a retry (same key) or a reconnect (after=seq) may cure.
_TRANSPORT = (OSError, http.client.HTTPException)


def _retry_after(resp):
    v = resp.getheader("Retry-After")
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


def _error_from(resp, data):
    status = resp.status
    doc = None
    try:
        doc = json.loads(data)
    except ValueError:
        pass
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        code, msg, path = err.get("code", "http_%d" % status), err.get("message", ""), err.get("path")
    else:
        code, msg, path = "http_%d" % status, data[:200].decode("utf-8", "replace"), None
    cls = _BY_STATUS.get(status, Error)
    return cls(code, msg, status=status, path=path, retry_after=_retry_after(resp), body=doc)


def _job_error(line, file=None):
    e = line.get("error") or {}
    return JobError(e.get("code", "error"), e.get("message", ""), index=line.get("index"),
                    body=line, file=file)


# ---------------------------------------------------------------------------- NDJSON
def _ndjson(resp):
    """The JSON objects of an NDJSON response as they arrive (see _ndjson_blocks)."""
    for lines in _ndjson_blocks(resp):
        yield from lines


def _ndjson_blocks(resp):
    """Lists of the JSON objects of an NDJSON response, one list per read, as they arrive.
    All complete lines of one read are parsed with a single json.loads (an array), so a
    5M-line stream costs a few C calls per megabyte, not one Python call per line. Raises
    StreamCut when the connection drops mid-body (the caller decides whether an end without
    summary is a cut)."""
    pending = b""
    while True:
        try:
            data = resp.read1(_BLOCK)
        except _TRANSPORT as e:
            raise StreamCut("the connection dropped mid-stream: %s" % (e,)) from e
        if not data:
            break
        pending += data
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        block, pending = pending[:cut], pending[cut + 1:]
        block = block.strip()
        if not block:
            continue
        try:
            lines = json.loads(b"[" + block.replace(b"\n", b",") + b"]")
        except ValueError:
            lines = [json.loads(l) for l in block.split(b"\n") if l.strip()]
        yield lines
    if pending.strip():
        # A last line without its newline: a cut in the middle of a line.
        raise StreamCut("the stream ended in the middle of a line")


def _keepalive(sock):
    """TCP keepalive after 30 s of silence, 3 probes 10 s apart: a connection whose peer
    vanished (a NAT or load balancer that dropped it) fails instead of hanging."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, v in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3)):
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), v)
    except OSError:
        pass


def _duration_ms(seconds):
    return None if seconds is None else max(0, int(round(seconds * 1000)))


# ---------------------------------------------------------------------------- the client
class Client:
    """A batchd server at URL (http:// or https://, with an optional path prefix).

    token: a bearer token (--auth-token-file). timeout: seconds for connecting, for an
    answer's head and for whole JSON documents. stream_timeout: the longest silence between
    two reads of a streamed body (map, imap, images, Batch.results); None (default) waits as
    long as the batch needs (a job may run for minutes, and in input order nothing is sent
    until it ends), while TCP keepalive still finds a dead connection in about a minute.
    retry_for: how long (s) submit() retries a POST whose connection failed (same
    Idempotency-Key) and Batch.results()/wait() keep reconnecting while the server is away
    (503, refused, reset)."""

    def __init__(self, url="http://localhost:8080", token=None, timeout=60.0, retry_for=60.0,
                 stream_timeout=None):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https"):
            raise ValueError("batchd URL must be http:// or https://: %r" % url)
        self.url = url
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._prefix = u.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.retry_for = retry_for

    # ------------------------------------------------------------------ HTTP
    def _conn(self, timeout=None):
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=timeout or self.timeout)

    def _headers(self, extra=None):
        h = {"User-Agent": USER_AGENT}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        h.update(extra or {})
        return h

    def _path(self, path):
        return self._prefix + path

    def _open(self, method, path, body=None, headers=None, stream=False):
        """Sends one request on a fresh connection; returns (conn, resp) for a 2xx answer
        (the caller reads and closes), raises the Error of a refusal, Unreachable when no
        answer came. STREAM: the body is a stream, read with stream_timeout."""
        conn = self._conn()
        try:
            conn.connect()
            _keepalive(conn.sock)
            try:
                conn.request(method, self._path(path), body=body() if callable(body) else body,
                             headers=self._headers(headers))
            except (BrokenPipeError, ConnectionResetError):
                # The server may have answered before the whole body was sent (413, 503 past
                # the upload budget) and closed: its answer is the error to report.
                pass
            resp = conn.getresponse()
        except _TRANSPORT as e:
            conn.close()
            raise Unreachable("%s %s: %s" % (method, path, e)) from e
        if resp.status >= 400:
            try:
                data = resp.read()
            except _TRANSPORT:
                data = b""
            conn.close()
            raise _error_from(resp, data)
        if stream and conn.sock is not None:
            conn.sock.settimeout(self.stream_timeout)
        return conn, resp

    def _json(self, method, path, body=None, headers=None):
        """One request whose answer is a JSON document (or nothing: 204 gives None)."""
        conn, resp = self._open(method, path, body, headers)
        try:
            data = resp.read()
        except _TRANSPORT as e:
            raise StreamCut("%s %s: the answer was cut: %s" % (method, path, e)) from e
        finally:
            conn.close()
        if resp.status == 204 or not data:
            return None
        return json.loads(data)

    def get(self, path):
        """GET PATH (e.g. "/v1/ops") as a JSON document."""
        return self._json("GET", path)

    def ops(self):
        """The catalogue of ops (GET /v1/ops)."""
        return self.get("/v1/ops")

    # ------------------------------------------------------------------ batches
    @staticmethod
    def _batch(op, inputs, chunksize=None, timeout=None, params=None, order=None,
               deadline=None, timing=False, progress_ms=None, jobs=None):
        b = {}
        if jobs is not None:
            b["jobs"] = list(jobs)
        else:
            b["op"] = op
            if inputs is not None:
                b["inputs"] = inputs if isinstance(inputs, list) else list(inputs)
        if params is not None:
            b["params"] = params
        if chunksize is not None:
            b["chunksize"] = chunksize
        if order is not None:
            b["order"] = order
        if timeout is not None:
            b["timeout_ms"] = _duration_ms(timeout)
        if deadline is not None:
            b["deadline_ms"] = _duration_ms(deadline)
        if timing:
            b["timing"] = True
        if progress_ms is not None:
            b["progress_ms"] = progress_ms
        return b

    def stream(self, batch, headers=None):
        """POSTs BATCH (a dict as in SPEC §3) and yields every NDJSON line as a dict: results,
        progress lines, and the summary last. Raises StreamCut when the stream ends without
        its summary. Closing the generator early closes the connection, which cancels the
        rest of a plain streamed batch (SPEC §7)."""
        for lines in self._stream_blocks(batch, headers):
            yield from lines

    def _stream_blocks(self, batch, headers=None):
        # stream() by lists of lines: map() walks them without a generator step per line.
        body = json.dumps(batch).encode()
        h = {"Content-Type": "application/json", "Accept": "application/x-ndjson"}
        h.update(headers or {})
        conn, resp = self._open("POST", "/v1/batches", body, h, stream=True)
        received = 0
        try:
            for lines in _ndjson_blocks(resp):
                if lines and "summary" in lines[-1]:
                    yield lines
                    return
                for n, line in enumerate(lines):
                    if "summary" in line:    # a summary before the end of a read: the end
                        yield lines[:n + 1]
                        return
                yield lines
                received += len(lines)
            raise StreamCut("the stream ended after %d lines without a summary" % received,
                            received)
        except StreamCut as e:
            e.received = received
            raise
        finally:
            conn.close()

    def _results(self, batch, return_exceptions, with_index=False):
        lines = self.stream(batch)
        try:
            for line in lines:
                if "index" not in line:
                    continue          # the summary, progress lines
                if "error" in line:
                    value = _job_error(line)
                    if not return_exceptions:
                        raise value
                else:
                    value = line.get("result")
                yield (line["index"], value) if with_index else value
        finally:
            lines.close()             # the connection too: the server cancels the rest

    def map(self, op, inputs, chunksize=None, timeout=None, params=None,
            return_exceptions=False, deadline=None):
        """The op applied to every input, as a list in input order (Pool.map).

        chunksize: jobs per dispatch (default: the server's "auto"); timeout: per-job limit
        in seconds (a job over it fails with code "timeout"); deadline: limit in seconds for
        the whole batch; params: the op's params. A failed job raises JobError (.index,
        .code, .message) and the rest of the batch is cancelled; return_exceptions=True puts
        the JobError in the list at its index instead."""
        batch = self._batch(op, inputs, chunksize, timeout, params, "input", deadline)
        n = len(batch["inputs"])
        out = [None] * n
        seen = 0
        blocks = self._stream_blocks(batch)
        try:
            for lines in blocks:
                for line in lines:
                    if "index" not in line:
                        continue          # the summary, progress lines
                    if "error" in line:
                        e = _job_error(line)
                        if not return_exceptions:
                            raise e
                        out[line["index"]] = e
                    else:
                        out[line["index"]] = line.get("result")
                    seen += 1
        finally:
            blocks.close()                # the connection too: the server cancels the rest
        if seen != n:
            raise StreamCut("%d of %d results received" % (seen, n), seen)
        return out

    def imap(self, op, inputs, chunksize=None, timeout=None, params=None,
             return_exceptions=False, deadline=None, with_index=False):
        """A generator of the results in input order (Pool.imap), each yielded as soon as the
        server streams it. Same arguments as map(); with_index=True yields (index, result).
        The batch is sent when the iteration starts; closing the generator (or leaving the
        loop) closes the connection, and the server cancels what has not run."""
        batch = self._batch(op, inputs, chunksize, timeout, params, "input", deadline)
        return self._results(batch, return_exceptions, with_index)

    def imap_unordered(self, op, inputs, chunksize=None, timeout=None, params=None,
                       return_exceptions=False, deadline=None, with_index=False):
        """A generator of the results as their jobs complete (Pool.imap_unordered /
        as_completed). with_index=True yields (index, result) pairs, so that each result can
        be matched with its input."""
        batch = self._batch(op, inputs, chunksize, timeout, params, "completed", deadline)
        return self._results(batch, return_exceptions, with_index)

    # ------------------------------------------------------------------ async (SPEC §8)
    def submit(self, op=None, inputs=None, chunksize=None, timeout=None, params=None,
               order=None, deadline=None, progress_ms=None, jobs=None, idempotency_key=None):
        """Submits a stored batch (POST with Prefer: respond-async; 202 + Location) and
        returns its Batch at once; the batch runs on even if this process goes away.

        idempotency_key: by default a fresh uuid4, so that the POST can be retried safely:
        a POST whose connection fails (refused, reset, timeout) or that gets 503 is sent
        again with the same key for up to Client.retry_for seconds, and the server answers
        for the batch it already has instead of running it twice. Pass your own key to make
        a submit idempotent across processes (the same key with another body is 422
        Unprocessable, code "idempotency_key_reused"); pass False to send none (and then the
        POST is not retried)."""
        batch = self._batch(op, inputs, chunksize, timeout, params, order, deadline,
                            progress_ms=progress_ms, jobs=jobs)
        body = json.dumps(batch).encode()
        return self._submit(body, "application/json", idempotency_key)

    def submit_images(self, paths, pipeline=None, variants=None, format=None, quality=None,
                      params=None, order=None, timeout=None, idempotency_key=None):
        """Client.images' upload as a stored batch (multipart + Prefer: respond-async):
        returns a Batch at once; fetch the outputs later with Batch.images(out_dir)."""
        paths = [os.fspath(p) for p in paths]
        batch = self._batch("image", None, None, timeout,
                            _image_params(pipeline, variants, format, quality, params), order)
        body, ctype, length = _multipart(batch, paths)
        return self._submit(body, ctype, idempotency_key, length)

    def _submit(self, body, ctype, idempotency_key, length=None):
        if idempotency_key is None:
            idempotency_key = str(uuid.uuid4())
        h = {"Content-Type": ctype, "Accept": "application/json", "Prefer": "respond-async"}
        if idempotency_key:
            h["Idempotency-Key"] = idempotency_key
        if length is not None:
            h["Content-Length"] = str(length)
        end = time.monotonic() + self.retry_for
        delay = 0.1
        while True:
            try:
                conn, resp = self._open("POST", "/v1/batches", body, h)
                if resp.status != 202:
                    # A server without SPEC §8 streams the batch instead: closing the
                    # connection unread cancels it (SPEC §7).
                    conn.close()
                    raise Error("not_async", "the server answered %d to Prefer: respond-async "
                                "(a server without SPEC §8?)" % resp.status, status=resp.status)
                try:
                    data = resp.read()
                except _TRANSPORT as e:
                    raise Unreachable("the 202 answer was cut: %s" % (e,)) from e
                finally:
                    conn.close()
                break
            except (Unreachable, Unavailable) as e:
                # The same key again answers for the batch the server may already have. Without
                # a key a retry could run the batch twice: no retry then.
                if not idempotency_key or time.monotonic() + delay > end:
                    raise
                wait = min(e.retry_after, 5.0) if getattr(e, "retry_after", None) else delay
                time.sleep(wait)
                delay = min(delay * 2, 2.0)
        doc = json.loads(data) if data else {}
        loc = resp.getheader("Location") or ""
        bid = doc.get("id") or loc.rstrip("/").rsplit("/", 1)[-1]
        return Batch(self, bid, doc, idempotency_key or None)

    def batch(self, batch_id):
        """The Batch of an id (e.g. one submitted by another process)."""
        return Batch(self, batch_id)

    def batches(self, state=None, limit=None, before=None):
        """The stored batches' status documents, newest first (GET /v1/batches)."""
        q = {k: v for k, v in (("state", state), ("limit", limit), ("before", before)) if v}
        path = "/v1/batches" + ("?" + urllib.parse.urlencode(q) if q else "")
        doc = self.get(path)
        if isinstance(doc, dict):
            for k in ("batches", "data", "items"):
                if isinstance(doc.get(k), list):
                    return doc[k]
        return doc

    # ------------------------------------------------------------------ images (SPEC §6)
    def images(self, paths, pipeline=None, variants=None, out_dir=".", format=None,
               quality=None, params=None, order="input", timeout=None, raise_errors=True):
        """Uploads the image files at PATHS (multipart, streamed from disk), runs the
        pipeline (SPEC §6: e.g. [{"op": "blur", "sigma": 15}, {"op": "thumbnail", "width":
        1200, "height": 1200}]) and optional variants, and writes the outputs into out_dir
        as the server names them in its tar stream: the uploaded file's name with the
        output's extension (<name>-<variant>.<ext> for variants; a name uploaded twice gets
        a suffix). Outputs are written as they arrive.

        format: "jpeg", "png", "webp" or "same"; quality 1..100; params: any other image
        params (merged under pipeline/variants/format/quality); timeout: per image, seconds.
        Returns the written paths (a list, with .errors and .summary). When some images
        failed (errors.ndjson in the tar) it raises ImageErrors after writing the others
        (.errors: JobError with .index and .file; .written); raise_errors=False returns
        instead and leaves the errors in the result's .errors."""
        paths = [os.fspath(p) for p in paths]
        batch = self._batch("image", None, None, timeout,
                            _image_params(pipeline, variants, format, quality, params), order)
        body, ctype, length = _multipart(batch, paths)
        h = {"Content-Type": ctype, "Content-Length": str(length), "Accept": "application/x-tar"}
        conn, resp = self._open("POST", "/v1/batches", body, h, stream=True)
        try:
            return _untar(resp, out_dir, paths, raise_errors)
        finally:
            conn.close()


# ---------------------------------------------------------------------------- images
def _image_params(pipeline, variants, format, quality, params):
    p = dict(params or {})
    if pipeline is not None:
        p["pipeline"] = pipeline
    if variants is not None:
        p["variants"] = variants
    if format is not None:
        p["format"] = format
    if quality is not None:
        p["quality"] = quality
    return p


def _quote_name(name):
    # RFC 7578 §4.2 as browsers do it: a quoted string, '"' and CR/LF percent-encoded.
    return name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _multipart(batch, paths):
    """A multipart/form-data body that streams the files from disk: returns (a function
    giving a fresh generator of the body's pieces, the content type, the exact length)."""
    boundary = "batchd-" + uuid.uuid4().hex
    head = ("--%s\r\nContent-Disposition: form-data; name=\"batch\"\r\n"
            "Content-Type: application/json\r\n\r\n" % boundary).encode() + \
        json.dumps(batch).encode() + b"\r\n"
    parts = []
    length = len(head)
    for p in paths:
        ph = ("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
              "Content-Type: application/octet-stream\r\n\r\n" % (
                  boundary, _quote_name(os.path.basename(p)))).encode("utf-8")
        size = os.stat(p).st_size
        parts.append((ph, p, size))
        length += len(ph) + size + 2
    tail = ("--%s--\r\n" % boundary).encode()
    length += len(tail)

    def body():
        yield head
        for ph, p, size in parts:
            yield ph
            sent = 0
            with open(p, "rb") as f:
                while True:
                    block = f.read(_BLOCK)
                    if not block:
                        break
                    sent += len(block)
                    yield block
            if sent != size:
                raise OSError("%s changed size during the upload" % p)
            yield b"\r\n"
        yield tail

    return body, "multipart/form-data; boundary=" + boundary, length


class Written(list):
    """The paths written by Client.images / Batch.images, in the order they arrived; .errors
    holds the JobError of the inputs that failed, .summary the batch summary."""
    errors = ()
    summary = None


def _untar(resp, out_dir, paths, raise_errors):
    """Reads an image batch's tar stream (SPEC §4: one member per output, errors.ndjson and
    summary.json last) and writes the outputs into out_dir as they arrive."""
    os.makedirs(out_dir, exist_ok=True)
    written = Written()
    errors = []
    summary = None
    try:
        with tarfile.open(fileobj=resp, mode="r|") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                src = tar.extractfile(m)
                if m.name == "errors.ndjson":
                    for l in src.read().splitlines():
                        if l.strip():
                            line = json.loads(l)
                            i = line.get("index")
                            f = paths[i] if isinstance(i, int) and 0 <= i < len(paths) else None
                            errors.append(_job_error(line, f))
                    continue
                if m.name == "summary.json":
                    summary = json.loads(src.read())
                    continue
                name = m.name
                if os.path.basename(name) != name or name in ("", ".", "..") or name.startswith("."):
                    raise Error("bad_member", "the server sent a tar member named %r" % name)
                dest = os.path.join(out_dir, name)
                tmp = dest + ".part"
                with open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, _BLOCK)
                os.replace(tmp, dest)
                written.append(dest)
    except (tarfile.TarError, EOFError) + _TRANSPORT as e:
        raise StreamCut("the tar stream was cut after %d outputs: %s" % (len(written), e),
                        len(written)) from e
    if summary is None:
        raise StreamCut("the tar stream ended without summary.json after %d outputs" %
                        len(written), len(written))
    written.errors = errors
    written.summary = summary
    if errors and raise_errors:
        raise ImageErrors(errors, written, summary)
    return written


# ---------------------------------------------------------------------------- stored batches
class Batch:
    """A stored batch (SPEC §8). .id; .status() the status document; .results() its result
    lines, followed live and resumed after a dropped connection; .summary once results()
    reached it; .cancel(); .wait(progress=callback)."""

    def __init__(self, client, batch_id, status=None, idempotency_key=None):
        self.client = client
        self.id = batch_id
        self.idempotency_key = idempotency_key
        self.last_status = status or None
        self.summary = None
        self.reconnects = 0      # how many times results() had to reconnect

    def __repr__(self):
        return "<batchd.Batch %s>" % self.id

    @property
    def _path(self):
        return "/v1/batches/" + urllib.parse.quote(self.id, safe="")

    def _retrying(self, fn):
        """fn() retried while the server is away (Unreachable, 503), with backoff, for up to
        client.retry_for seconds."""
        end = time.monotonic() + self.client.retry_for
        delay = 0.1
        while True:
            try:
                return fn()
            except (Unreachable, Unavailable) as e:
                if time.monotonic() + delay > end:
                    raise
                wait = min(e.retry_after, 5.0) if getattr(e, "retry_after", None) else delay
                time.sleep(wait * (0.75 + random.random() / 2))
                delay = min(delay * 2, 2.0)

    def status(self):
        """The status document (GET /v1/batches/{id}): id, state (queued, running, done,
        cancelled), jobs {total, queued, running, ok, failed}, progress, rate_per_s, eta_ms,
        ... Retries while the server is restarting (503 or unreachable)."""
        self.last_status = self._retrying(lambda: self.client._json("GET", self._path))
        return self.last_status

    def cancel(self):
        """DELETE /v1/batches/{id}: queued jobs fail "cancelled", running ones are stopped;
        returns the final status document (None when the batch had already ended: then the
        server forgets it, 204)."""
        doc = self.client._json("DELETE", self._path)
        if doc is not None:
            self.last_status = doc
        return doc

    def forget(self):
        """DELETE on an ended batch: the server drops it and its results."""
        return self.cancel()

    def wait(self, progress=None, poll=0.5, timeout=None):
        """Polls the status every POLL seconds until the batch is done or cancelled and
        returns the final status; progress(status) is called each time the status changed
        (the first time too). timeout (s): raise TimeoutError if it has not ended by then."""
        end = None if timeout is None else time.monotonic() + timeout
        last = None
        while True:
            st = self.status()
            key = json.dumps({k: v for k, v in st.items() if k not in ("eta_ms", "rate_per_s")},
                             sort_keys=True)
            if progress is not None and key != last:
                progress(st)
            last = key
            if st.get("state") in _ENDED:
                return st
            if end is not None and time.monotonic() >= end:
                raise TimeoutError("batch %s still %s after %ss" % (self.id, st.get("state"), timeout))
            time.sleep(poll)

    def results(self, after=0, follow=True):
        """A generator of the batch's result lines as dicts ({"seq", "index", "result"} or
        {"seq", "index", "error"}), in the order the server recorded them (GET
        /v1/batches/{id}/results?follow=true). It follows the batch live until its summary
        (then in .summary) and ends there. After a dropped connection, a silent one past
        Client.stream_timeout (when set), or a 503 (server restarting) it reconnects with
        ?after=<last seq> (backoff, for up to Client.retry_for seconds without an answer),
        and never yields a line twice. Progress lines are skipped. after: start past this
        seq. follow=False: only what is recorded now (ends without a summary if the batch
        is still running). Raises StreamCut when the server stays away too long."""
        last = after
        delay = 0.1
        deadline = time.monotonic() + self.client.retry_for
        received = 0
        empty_ends = 0        # clean ends without a line since the last line
        while True:
            q = {"follow": "true"} if follow else {}
            if last:
                q["after"] = str(last)
            path = self._path + "/results" + ("?" + urllib.parse.urlencode(q) if q else "")
            try:
                conn, resp = self.client._open("GET", path, headers={"Accept": "application/x-ndjson"},
                                               stream=True)
            except (Unreachable, Unavailable) as e:
                if time.monotonic() + delay > deadline:
                    raise StreamCut("batch %s: the server stayed away (%s); %d lines received, "
                                    "last seq %s" % (self.id, e, received, last), received) from e
                wait = min(e.retry_after, 5.0) if getattr(e, "retry_after", None) else delay
                time.sleep(wait * (0.75 + random.random() / 2))
                delay = min(delay * 2, 2.0)
                self.reconnects += 1
                continue
            deadline = time.monotonic() + self.client.retry_for
            if resp.status == 204:
                # No content (SSE answers so past the summary; NDJSON repeats the summary).
                conn.close()
                return
            before = received
            lines = 0
            try:
                for line in _ndjson(resp):
                    lines += 1
                    if "summary" in line:
                        self.summary = line["summary"]
                        return
                    if "index" not in line:
                        continue          # progress lines
                    seq = line.get("seq")
                    if isinstance(seq, int):
                        if seq <= last:
                            continue      # already yielded (a server resending)
                        last = seq
                    received += 1
                    yield line
                if not follow:
                    return
                # The connection ended cleanly but without the summary (a server stopping
                # its followers): resume, but not forever from a server that keeps doing so.
                empty_ends = 0 if lines else empty_ends + 1
            except StreamCut:
                empty_ends = 0 if lines else empty_ends   # a cut: resume
            finally:
                conn.close()
            if empty_ends >= 5:
                raise StreamCut("batch %s: the server ended the stream %d times without a "
                                "line or the summary" % (self.id, empty_ends), received)
            self.reconnects += 1
            if received == before:
                # Nothing new on that connection: back off before the next one.
                time.sleep(delay * (0.75 + random.random() / 2))
                delay = min(delay * 2, 2.0)
            else:
                delay = 0.1

    def gather(self, return_exceptions=False):
        """All results in input order as a list (Pool.map's answer for a stored batch):
        follows results() to the summary; a failed job raises JobError unless
        return_exceptions."""
        lines = list(self.results())
        n = (self.summary or {}).get("jobs", len(lines))
        out = [None] * n
        seen = set()
        for l in lines:
            i = l["index"]
            seen.add(i)
            if "error" in l:
                out[i] = _job_error(l)
                if not return_exceptions:
                    raise out[i]
            else:
                out[i] = l.get("result")
        if len(seen) != n:
            raise StreamCut("%d of %d results received" % (len(seen), n), len(seen))
        return out

    def images(self, out_dir=".", paths=None, raise_errors=True):
        """An ended image batch's outputs (GET .../results, Accept: application/x-tar)
        written into out_dir, as Client.images does; paths (the uploaded files, in order)
        only name the files in the JobErrors."""
        conn, resp = self._retrying(lambda: self.client._open(
            "GET", self._path + "/results", headers={"Accept": "application/x-tar"}, stream=True))
        try:
            return _untar(resp, out_dir, [os.fspath(p) for p in paths or []], raise_errors)
        finally:
            conn.close()
