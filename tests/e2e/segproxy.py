"""A TCP proxy for the tests that plays an unlucky network: it listens on 127.0.0.1 (port 0),
forwards each connection to a batchd on loopback, and re-sends the client's bytes in random
pieces of 1..MAX_PIECE bytes with random pauses of up to MAX_PAUSE seconds between them
(TCP_NODELAY on both sides, so each piece leaves as its own segment), and optionally the
server's bytes too (DOWN=True). A server that only works when a request arrives in one read
fails through it.

    with SegProxy(server.port, max_piece=40, seed=1) as p:
        http.client.HTTPConnection("127.0.0.1", p.port) ...
    p.pieces_up, p.pieces_down   # how many pieces it sent each way

A client's EOF is passed on as a full close of the upstream connection (the server then sees
a hang-up, as from a client that closed); the server's EOF as a shutdown of the client's
write side. Once the server has closed, what the client still sends is read and dropped. Only 127.0.0.1 is ever contacted."""
import random
import socket
import threading
import time


class SegProxy:
    def __init__(self, target_port, max_piece=64, max_pause=0.002, down=False,
                 down_max_piece=None, seed=None, target_host="127.0.0.1"):
        assert target_host.startswith("127."), "loopback only"
        self.target = (target_host, target_port)
        self.max_piece = max_piece
        self.max_pause = max_pause
        self.down = down
        self.down_max_piece = down_max_piece or max_piece
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.pieces_up = self.pieces_down = 0
        self.connections = 0
        self.errors = []
        self._stop = threading.Event()
        self._threads = []
        self._socks = set()
        self.lsock = None
        self.port = None

    # ------------------------------------------------------------------ lifecycle
    def start(self):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.2)
        self.port = self.lsock.getsockname()[1]
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        if self.lsock is not None:
            self.lsock.close()
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------------ pumping
    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                u = socket.create_connection(self.target, timeout=30)
            except OSError as e:
                self.errors.append("connect: %r" % e)
                c.close()
                continue
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(None)
            with self.lock:
                self.connections += 1
                self._socks.update((c, u))
                seed = self.rng.getrandbits(32)
            state = {"open": 2}
            up = threading.Thread(target=self._pump, args=(c, u, True, seed, state), daemon=True)
            dn = threading.Thread(target=self._pump, args=(u, c, False, seed + 1, state),
                                  daemon=True)
            up.start()
            dn.start()
            self._threads += [up, dn]

    def _pump(self, src, dst, upstream, seed, state):
        rng = random.Random(seed)
        rechunk = upstream or self.down
        max_piece = self.max_piece if upstream else self.down_max_piece
        sending = True
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if not sending:
                    continue  # the server is gone: drain the client so that it never blocks
                try:
                    self._send(dst, data, rng, rechunk, max_piece, upstream)
                except OSError:
                    if not upstream:
                        break
                    sending = False
        except OSError:
            pass  # the other side went away: finish below
        finally:
            try:
                # shutdown, not close: it also wakes the other pump's blocked recv.
                dst.shutdown(socket.SHUT_RDWR if upstream else socket.SHUT_WR)
            except OSError:
                pass
            with self.lock:
                state["open"] -= 1
                last = state["open"] == 0
            if last:
                for s in (src, dst):
                    try:
                        s.close()
                    except OSError:
                        pass
                with self.lock:
                    self._socks.discard(src)
                    self._socks.discard(dst)

    def _send(self, dst, data, rng, rechunk, max_piece, upstream):
        if not rechunk:
            dst.sendall(data)
            return
        i = 0
        while i < len(data):
            # Now and then a one-byte piece: boundaries inside every token.
            n = 1 if rng.random() < 0.1 else rng.randint(1, max_piece)
            dst.sendall(data[i:i + n])
            i += n
            with self.lock:
                if upstream:
                    self.pieces_up += 1
                else:
                    self.pieces_down += 1
            if self.max_pause > 0 and rng.random() < 0.5:
                time.sleep(rng.uniform(0, self.max_pause))
