"""End-to-end: the --auth-token-file reader (issue 8, defects 9 and 12). A token line that
holds a NUL is refused at start with a message that says so (it used to be stored as a
token shorter than its length, and every authenticated request read past it); LF, CRLF and
lone-CR line ends all separate tokens."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, Server, Suite, check, new_state_dir  # noqa: E402

TMP = tempfile.mkdtemp(prefix="batchd-authfile-")


def token_file(name, data):
    path = os.path.join(TMP, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def refused_at_start(path, want):
    """Starts batchd with the token file PATH; it must exit at once, non-zero, with WANT in
    its log (before the fix it started, and every authenticated request read past the
    stored token: an ASan abort)."""
    cmd = [BIN, "--listen", "127.0.0.1:0", "--workers", "1", "--auth-token-file", path,
           "--state-dir", new_state_dir()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("batchd started with a token file holding a NUL:\n" +
                             err.decode("utf-8", "replace")[-2000:])
    log = err.decode("utf-8", "replace")
    check(proc.returncode != 0, "exit code %r:\n%s" % (proc.returncode, log))
    check(want in log, "no %r in the start-up log:\n%s" % (want, log))
    check("AddressSanitizer" not in log and "runtime error" not in log, log)


def test_nul_inside_token_refused():
    refused_at_start(token_file("nul-mid", b"abc\0defghijklmnop\nsecond-token\n"),
                     "control byte (0x00)")


def test_nul_after_token_refused():
    refused_at_start(token_file("nul-end", b"good-token\nabc\0\n"), "line 2")


def serves_tokens(path, tokens):
    with Server(workers=1, args=["--auth-token-file", path]) as s:
        for t in tokens:
            status, _, body = s.request("GET", "/v1/ops", headers={"Authorization": "Bearer " + t})
            check(status == 200, "token %r: %d %r" % (t, status, body[:200]))
        status, _, _ = s.request("GET", "/v1/ops")
        check(status == 401, "no token: %d" % status)
        for bad in (" ".join(tokens), tokens[0][:-1], tokens[0] + "x"):
            status, _, _ = s.request("GET", "/v1/ops", headers={"Authorization": "Bearer " + bad})
            check(status == 401, "token %r: %d" % (bad, status))
        lines, status, _ = s.batch({"op": "sqrt", "inputs": [4]},
                                   headers={"Authorization": "Bearer " + tokens[-1]})
        check(status == 200 and lines[0].get("result") == 2, (status, lines))


def test_cr_only_line_ends():
    serves_tokens(token_file("cr", b"tok-alpha-1\rtok-beta-22\r"), ["tok-alpha-1", "tok-beta-22"])


def test_crlf_and_mixed_line_ends():
    serves_tokens(token_file("crlf", b"tok-alpha-1\r\n\r\n  tok-beta-22 \r\n"),
                  ["tok-alpha-1", "tok-beta-22"])
    serves_tokens(token_file("mixed", b"\r tok-a1\rtok-b2\n\ttok-c3\r\n"),
                  ["tok-a1", "tok-b2", "tok-c3"])


if __name__ == "__main__":
    code = Suite("auth_file").run(globals())
    for n in os.listdir(TMP):
        os.unlink(os.path.join(TMP, n))
    os.rmdir(TMP)
    sys.exit(code)
