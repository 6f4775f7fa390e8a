#!/usr/bin/env python3
"""Counts, not timings, of the server's work per small keep-alive batch (the HTTP workload of
bench.py: POSTs of 10 `square` jobs), for a machine too busy to time on.

    tests/bench/http_counts.py --bin build/batchd [--bin other/batchd] [--conns 4] [--n 100,400]

For each binary: the server runs under `valgrind --tool=callgrind` (instructions) and then
alone with `strace -c -f -p` attached after start-up (syscalls), while CONNS keep-alive
connections send N batches each, one at a time; every figure is the difference between the
two N given, divided by the extra batches, so start-up and shutdown cancel out. Needs
valgrind and strace (apt-get install valgrind strace). Workers run outside the count.
Instruction counts include glibc's memset of libmicrohttpd's 64 KiB connection pool, which
valgrind counts byte by byte (`rep stosb`): ~100k of the figure, the same in every build;
it is also given without it."""
import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

BODY = b'{"op":"square","inputs":[1,2,3,4,5,6,7,8,9,10]}'
REQ = (b"POST /v1/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY


def client(port, conns, n):
    bad = []

    def one():
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(n):
            s.sendall(REQ)
            buf = b""
            while not buf.endswith(b"\r\n0\r\n\r\n"):
                d = s.recv(65536)
                if not d:
                    bad.append("closed")
                    return
                buf += d
            if not buf.startswith(b"HTTP/1.1 200"):
                bad.append(buf[:60])
        s.close()
    ts = [threading.Thread(target=one) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if bad:
        raise SystemExit("bad answers: %r" % bad[:3])


def start(binary, log, wrap=()):
    env = dict(os.environ, BATCHD_WORKER_EXE=binary)
    p = subprocess.Popen(list(wrap) + [binary, "--listen", "127.0.0.1:0", "--workers", "2"],
                         stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
    for _ in range(600):
        with open(log) as f:
            m = re.search(r"event=listening .*?port=(\d+)", f.read())
        if m:
            return p, int(m.group(1))
        time.sleep(0.1)
    raise SystemExit("the server did not start: see " + log)


def callgrind(binary, conns, n, tmp):
    out = os.path.join(tmp, "cg.out")
    p, port = start(binary, os.path.join(tmp, "cg.log"),
                    ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
    client(port, 1, 1)
    client(port, conns, n)
    p.terminate()
    p.wait()
    ann = subprocess.run(["callgrind_annotate", "--auto=no", "--threshold=100", out],
                         capture_output=True, text=True).stdout
    total = memset = 0
    for line in ann.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(", line)
        if not m:
            continue
        v = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = v
        elif "memset" in line:
            memset += v
    return total, memset


def strace(binary, conns, n, tmp):
    out = os.path.join(tmp, "strace.txt")
    p, port = start(binary, os.path.join(tmp, "st.log"))
    client(port, 1, 1)
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(p.pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    client(port, conns, n)
    st.send_signal(2)
    st.wait()
    p.terminate()
    p.wait()
    calls = {}
    with open(out) as f:
        for line in f:
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
            if m and m.group(2) != "total":
                calls[m.group(2)] = int(m.group(1))
    return calls


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--n", default="100,400", help="two per-connection counts")
    a = ap.parse_args()
    n1, n2 = (int(x) for x in a.n.split(","))
    extra = a.conns * (n2 - n1)
    for b in a.bin:
        with tempfile.TemporaryDirectory() as tmp:
            (t1, m1), (t2, m2) = callgrind(b, a.conns, n1, tmp), callgrind(b, a.conns, n2, tmp)
            s1, s2 = strace(b, a.conns, n1, tmp), strace(b, a.conns, n2, tmp)
        ins = (t2 - t1) / extra
        ins_nm = ((t2 - m2) - (t1 - m1)) / extra
        sc = {k: (s2.get(k, 0) - s1.get(k, 0)) / extra for k in set(s1) | set(s2)}
        top = ", ".join("%s %.2f" % (k, v) for k, v in sorted(sc.items(), key=lambda kv: -kv[1])
                        if v >= 0.01)
        print("%s\n  instructions/batch %.0f (without the pool memset %.0f)\n"
              "  syscalls/batch %.2f: %s" % (b, ins, ins_nm, sum(sc.values()), top), flush=True)


if __name__ == "__main__":
    sys.exit(main())
