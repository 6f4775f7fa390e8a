#!/usr/bin/python3
"""Microbenchmark for issue 3's "measure the difference": the raw cost of handing N bytes of
image to another process through a socketpair (copied through the kernel, as a pipe frame
would be) versus as a memfd passed with SCM_RIGHTS and mapped read-only (what batchd does).

Both sides are separate processes (fork). The receiver must end up able to read every byte:
for the socket that is recv_into a buffer; for the memfd, mmap and one read per 4 KiB page
(the decoder reads the bytes anyway; the page faults are the hand-over's share).
Usage: shm_vs_socket.py [MB] [rounds]   (default 20 MB, 15 rounds; prints medians)
"""
import array
import mmap
import os
import socket
import statistics
import sys
import time

MB = int(sys.argv[1]) if len(sys.argv) > 1 else 20
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
N = MB * 1024 * 1024
PAYLOAD = os.urandom(N)


def touch_pages(m):
    # One byte per page, so every page is mapped in, without a Python loop over every byte.
    return sum(m[::4096])


def child_socket(s):
    buf = bytearray(N)
    view = memoryview(buf)
    for _ in range(ROUNDS):
        got = 0
        while got < N:
            got += s.recv_into(view[got:], N - got)
        s.sendall(b"k")
    os._exit(0)


def child_memfd(s):
    for _ in range(ROUNDS):
        fds = array.array("i")
        msg, anc, _, _ = s.recvmsg(16, socket.CMSG_LEN(fds.itemsize))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[:fds.itemsize])
        fd = fds[0]
        size = int(msg.decode())
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
        touch_pages(m)
        m.close()
        os.close(fd)
        s.sendall(b"k")
    os._exit(0)


def run_socket():
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    pid = os.fork()
    if pid == 0:
        a.close()
        child_socket(b)
    b.close()
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        a.sendall(PAYLOAD)
        a.recv(1)
        times.append(time.perf_counter() - t)
    os.waitpid(pid, 0)
    return times


def run_memfd():
    a, b = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        a.close()
        child_memfd(b)
    b.close()
    # The bytes are in the memfd before the hand-over: the server writes uploads there as
    # they arrive (the socket path would have them in a heap buffer instead: same cost).
    fd = os.memfd_create("bench", os.MFD_CLOEXEC)
    os.write(fd, PAYLOAD)
    times = []
    for _ in range(ROUNDS):
        t = time.perf_counter()
        a.sendmsg([str(N).encode()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                       array.array("i", [fd]))])
        a.recv(1)
        times.append(time.perf_counter() - t)
    os.waitpid(pid, 0)
    os.close(fd)
    return times


if __name__ == "__main__":
    s = run_socket()
    m = run_memfd()
    ms, mm = statistics.median(s) * 1e3, statistics.median(m) * 1e3
    print("%d MB, median of %d rounds, two processes:" % (MB, ROUNDS))
    print("  socketpair copy          %8.2f ms  (%.2f GB/s)" % (ms, N / (ms / 1e3) / 1e9))
    print("  memfd + SCM_RIGHTS + mmap %8.2f ms  (pages touched)" % mm)
    print("  ratio                    %8.1fx" % (ms / mm))
