"""A TCP proxy on 127.0.0.1 that cuts connections after chosen byte counts (fault injection)."""

from __future__ import annotations

import contextlib
import random
import socket
import threading


class CuttingProxy:
    """Forwards to `127.0.0.1:target_port`, cutting connections: each new connection gets the
    next limit of `cuts` not used up yet and is cut once that many bytes (both directions)
    have passed; a connection that ends below its limit leaves it to the next one. Once
    `len(cuts)` connections were cut, traffic passes untouched."""

    def __init__(self, target_port: int, cuts: list[int]):
        self.target_port = target_port
        self.cuts = list(cuts)
        self.cut_count = 0
        self.connections = 0
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(16)
        self.port = self._server.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @classmethod
    def random(cls, target_port: int, n: int, low: int, high: int, seed: int) -> CuttingProxy:
        rng = random.Random(seed)
        return cls(target_port, [rng.randint(low, high) for _ in range(n)])

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                index = self.cut_count
            limit = self.cuts[index] if index < len(self.cuts) else None
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            state = {"bytes": 0, "cut": False}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(a, b, client, upstream, limit, state), daemon=True
                ).start()

    def _pump(self, src, dst, client, upstream, limit, state) -> None:  # type: ignore[no-untyped-def]
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None:
                    with self._lock:
                        state["bytes"] += len(data)
                        over = state["bytes"] >= limit and not state["cut"]
                        if over:
                            state["cut"] = True
                            self.cut_count += 1
                    if over or state["cut"]:
                        break
                dst.sendall(data)
        except OSError:
            pass
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._stop = True
        self._server.close()
