"""Request framing (issue 8, defect 11): a request whose body length is ambiguous is refused
with 400 and the connection closed (RFC 9112 §6.3), since a proxy in front might frame it
otherwise. libmicrohttpd 0.9.75 took the first of two Content-Lengths, kept the connection
after Content-Length with chunked, stored "Transfer-Encoding : chunked" as some other header
and hung on "identity, chunked"."""
import json
import socket
import sys

from harness import Server, Suite, check

BATCH = b'{"op":"sqrt","inputs":[4]}'


def exchange(port, head, body=b""):
    """Sends HEAD (header lines without the request line) and BODY; returns (status, headers
    dict lower-cased, body, closed) where CLOSED says the server closed after the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\n" + head + b"\r\n" + body)
    data = b""
    while b"\r\n\r\n" not in data:
        got = s.recv(65536)
        if not got:
            break
        data += got
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1]) if lines and lines[0] else 0
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    n = int(hdrs.get("content-length", "0"))
    while len(rest) < n:
        got = s.recv(65536)
        if not got:
            break
        rest += got
    closed = False
    s.settimeout(5)
    try:
        extra = s.recv(65536)
        closed = extra == b""
    except socket.timeout:
        closed = False
    except ConnectionResetError:
        closed = True
    s.close()
    return status, hdrs, rest[:n], closed


def refused(head, body, what):
    status, hdrs, data, closed = exchange(S.port, head, body)
    check(status == 400, "%s: status %d %r" % (what, status, data[:200]))
    check(closed, "%s: the connection stayed open" % what)
    err = json.loads(data)["error"]
    check(err["code"] == "bad_request", err)
    return err["message"]


def chunked(body):
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


CT = b"Content-Type: application/json\r\n"


def test_two_different_content_lengths():
    refused(CT + b"Content-Length: %d\r\nContent-Length: 3\r\n" % len(BATCH), BATCH,
            "two Content-Lengths")


def test_two_equal_content_lengths():
    refused(CT + b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(BATCH), len(BATCH)),
            BATCH, "two equal Content-Lengths")


def test_content_length_and_chunked():
    refused(CT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", chunked(BATCH),
            "Content-Length with chunked")


def test_blank_before_colon():
    msg = refused(CT + b"Transfer-Encoding : chunked\r\n", chunked(BATCH),
                  "Transfer-Encoding : chunked")
    check("blank" in msg, msg)


def test_identity_chunked():
    refused(CT + b"Transfer-Encoding: identity, chunked\r\n", chunked(BATCH),
            "Transfer-Encoding: identity, chunked")


def test_other_coding():
    refused(CT + b"Transfer-Encoding: gzip\r\n", chunked(BATCH), "Transfer-Encoding: gzip")


def test_chunked_with_a_trailing_blank():
    # MHD compares the value exactly: "chunked " would be read until the client closes.
    refused(CT + b"Transfer-Encoding: chunked \r\n", chunked(BATCH),
            "Transfer-Encoding: chunked with a trailing blank")


def test_two_transfer_encodings():
    refused(CT + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            chunked(BATCH), "two Transfer-Encodings")


def test_plain_forms_still_work():
    for head, body in ((CT + b"Content-Length: %d\r\n" % len(BATCH), BATCH),
                       (CT + b"Transfer-Encoding: chunked\r\n", chunked(BATCH)),
                       (CT + b"transfer-encoding: Chunked\r\n", chunked(BATCH))):
        s = socket.create_connection(("127.0.0.1", S.port), timeout=10)
        s.sendall(b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + head +
                  b"\r\n" + body)
        data = b""
        while True:
            got = s.recv(65536)
            if not got:
                break
            data += got
        s.close()
        check(data.startswith(b"HTTP/1.1 200"), data[:200])
        check(b'"result":2' in data, data[-300:])


if __name__ == "__main__":
    with Server(workers=1) as S:
        code = Suite("framing").run(globals())
    sys.exit(code)
