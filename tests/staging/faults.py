"""TCP proxies on 127.0.0.1 for staging tests and benchmarks: one that cuts connections after
chosen byte counts (`CuttingProxy`, fault injection) and one that makes loopback a slow
network (`LatencyProxy`: a round-trip time and a bandwidth cap).

There is no netem on these machines (no `sch_netem`, no modprobe; TEST_SERVICES.md "A slow
network on loopback"), so the delay is done in user space. Run as a program the latency proxy
serves until it is stopped, for benchmarks that want it out of their own process (its CPU
then lands on another core, not under their GIL)::

    python -m tests.staging.faults --target-port 2222 --rtt-ms 30 [--rate-mbit 1000]

It prints `port N` once it listens, and stops on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import random
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any


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


# -- a slow network on loopback -------------------------------------------------------------

#: bytes one direction of a connection may hold in flight before the proxy stops reading (a
#: router's queue: the sender's TCP then sees a full window, as on a real link)
QUEUE_BYTES = 64 << 20
_EOF = b""


class _Turns:
    """Round trips one connection took, as the proxy sees them: each time the client
    sends after the server has sent since the client last did (a request that had to wait
    for an answer). Requests sent back to back are one turn, however many."""

    def __init__(self) -> None:
        self.count = 0
        self._answered = True

    def client(self) -> None:
        if self._answered:
            self.count += 1
            self._answered = False

    def server(self) -> None:
        self._answered = True


class _Direction:
    """One direction of a proxied connection: what `src` sends reaches `dst` RTT/2 later,
    no faster than the bandwidth cap (each chunk leaves once the link is free, as on a
    serial line, then travels RTT/2). Chunks are delivered in order, by one timer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        delay: float,
        rate: float | None,
        on_push: Callable[[], None] = lambda: None,
    ):
        self.on_push = on_push
        self.loop = loop
        self.delay = delay
        self.rate = rate
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.free_at = 0.0
        self.paused = False
        self.dst_blocked = False
        self.timer: asyncio.TimerHandle | None = None
        self.bytes = 0

    def push(self, data: bytes) -> None:
        self.on_push()
        now = self.loop.time()
        if self.rate:
            self.free_at = max(now, self.free_at) + len(data) / self.rate
            due = self.free_at + self.delay
        else:
            due = now + self.delay
        self.queue.append((due, data))
        self.queued += len(data)
        if self.queued > QUEUE_BYTES and not self.paused and self.src is not None:
            self.paused = True
            self.src.pause_reading()
        if self.timer is None:
            self._arm()

    def _arm(self) -> None:
        if self.queue and not self.dst_blocked and self.dst is not None:
            self.timer = self.loop.call_at(self.queue[0][0], self.flush)

    def flush(self) -> None:
        self.timer = None
        if self.dst is None or self.dst.is_closing():
            return
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now and not self.dst_blocked:
            _due, data = self.queue.popleft()
            self.queued -= len(data)
            if data is _EOF:
                with contextlib.suppress(OSError, RuntimeError):
                    if self.dst.can_write_eof():
                        self.dst.write_eof()
                    else:
                        self.dst.close()
                continue
            self.bytes += len(data)
            self.dst.write(data)
        if self.paused and self.queued < QUEUE_BYTES // 2 and self.src is not None:
            self.paused = False
            with contextlib.suppress(RuntimeError):
                self.src.resume_reading()
        self._arm()

    def block(self, blocked: bool) -> None:
        """`dst` cannot take more for now (its buffer is full) / can again."""
        self.dst_blocked = blocked
        if not blocked and self.timer is None:
            self._arm()

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class _End(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes out through `out`; when its
    writes back up, `into` stops delivering to it."""

    def __init__(self, out: _Direction, into: _Direction, on_lost: asyncio.Future[None]):
        self.out = out
        self.into = into
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.out.src = transport
        self.into.dst = transport
        self.into._arm()

    def data_received(self, data: bytes) -> None:
        self.out.push(data)

    def eof_received(self) -> bool:
        self.out.push(_EOF)
        return True  # keep the write side open until the other side's EOF arrives

    def pause_writing(self) -> None:
        self.into.block(True)

    def resume_writing(self) -> None:
        self.into.block(False)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.on_lost.done():
            self.on_lost.set_result(None)


class LatencyProxy:
    """Forwards `127.0.0.1:port` to `127.0.0.1:target_port` with `rtt_ms` of round-trip time
    (half each way) and, with `rate_mbit`, at most that many megabits per second each way.

    The connection to the target is made RTT/2 after the client's (the TCP handshake a real
    link would cost before the server's first byte). `bytes_up` / `bytes_down` count what
    was forwarded. Runs its event loop in a thread of its own; `close()` stops it and cuts
    every connection.
    """

    def __init__(self, target_port: int, *, rtt_ms: float, rate_mbit: float | None = None):
        self.target_port = target_port
        self.delay = rtt_ms / 2000.0
        self.rate = rate_mbit * 1e6 / 8 if rate_mbit else None
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        #: bytes each closed connection carried, both ways
        self.carried: list[int] = []
        #: round trips each closed connection took (`_Turns`), in the order they closed
        self.turns: list[int] = []
        #: round trips of the connections still open, so far
        self._live_turns: dict[int, _Turns] = {}
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        #: the sockets of each live connection, to cut them on `close()`
        self._links: dict[int, list[asyncio.Transport]] = {}
        self._directions: list[_Direction] = []
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="latency-proxy", daemon=True
        )
        self._thread.start()
        ready.wait(10)
        if self._server is None:
            raise RuntimeError("latency proxy did not start")
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._server = await self._loop.create_server(
                self._accepted, "127.0.0.1", 0, backlog=64
            )

        try:
            self._loop.run_until_complete(start())
        finally:
            ready.set()
        self._loop.run_forever()
        for transports in list(self._links.values()):
            for t in transports:
                t.abort()
        tasks = asyncio.all_tasks(self._loop)
        for task in tasks:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.close()

    def _accepted(self) -> asyncio.Protocol:
        self.connections += 1
        turns = _Turns()
        up = _Direction(self._loop, self.delay, self.rate, turns.client)
        down = _Direction(self._loop, self.delay, self.rate, turns.server)
        self._live_turns[id(up)] = turns
        self._directions += [up, down]
        lost: asyncio.Future[None] = self._loop.create_future()
        client = _End(up, down, lost)
        self._loop.create_task(self._link(client, up, down, lost, turns))
        return client

    async def _link(
        self,
        client: _End,
        up: _Direction,
        down: _Direction,
        lost: asyncio.Future[None],
        turns: _Turns,
    ) -> None:
        transports: list[asyncio.Transport] = []
        self._links[id(up)] = transports
        try:
            await asyncio.sleep(self.delay)  # the handshake's way there
            if client.transport is None or client.transport.is_closing():
                return
            transports.append(client.transport)
            try:
                upstream, _proto = await self._loop.create_connection(
                    lambda: _End(down, up, lost), "127.0.0.1", self.target_port
                )
            except OSError:
                client.transport.close()
                return
            transports.append(upstream)
            await lost  # either side gone: give the other side what is queued, then close
            await asyncio.sleep(self.delay + 0.05)
            for t in transports:
                t.close()
        finally:
            up.close()
            down.close()
            self.bytes_up += up.bytes
            self.bytes_down += down.bytes
            self.carried.append(up.bytes + down.bytes)
            self.turns.append(turns.count)
            self._live_turns.pop(id(up), None)
            self._links.pop(id(up), None)
            self._directions = [d for d in self._directions if d is not up and d is not down]

    def turns_now(self) -> list[int]:
        """Round trips each connection still open has taken so far."""
        return [t.count for t in list(self._live_turns.values())]

    def set_rtt(self, rtt_ms: float) -> None:
        """From now on, `rtt_ms` of round-trip time, also on the connections already open
        (what is on its way keeps its time; nothing overtakes it)."""
        delay = rtt_ms / 2000.0

        done = threading.Event()

        def apply() -> None:
            self.delay = delay
            for direction in self._directions:
                direction.delay = delay
            done.set()

        self._loop.call_soon_threadsafe(apply)
        done.wait(10)

    def close(self) -> None:
        """Stop listening and cut every connection."""
        if self._loop.is_closed():
            return
        server = self._server

        def stop() -> None:
            if server is not None:
                server.close()
            self._loop.stop()

        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)

    def __enter__(self) -> LatencyProxy:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """Run a `LatencyProxy` until SIGTERM / SIGINT (see the module doc)."""
    parser = argparse.ArgumentParser(description="a slow network on loopback")
    parser.add_argument("--target-port", type=int, required=True)
    parser.add_argument("--rtt-ms", type=float, required=True)
    parser.add_argument("--rate-mbit", type=float, default=None)
    args = parser.parse_args(argv)
    proxy = LatencyProxy(args.target_port, rtt_ms=args.rtt_ms, rate_mbit=args.rate_mbit)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_a: stop.set())
    print(f"port {proxy.port}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        proxy.close()
    print(f"up {proxy.bytes_up} down {proxy.bytes_down} connections {proxy.connections}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()


def deferred_sends(monkeypatch: Any) -> list[str]:
    """Each time a `kaic.sshkex.KexSafeTransport` queues what its reader thread had to say
    during a key exchange: "server" or "client" (the side whose reader it was)."""
    from kaic.sshkex import KexSafeTransport

    seen: list[str] = []
    real = KexSafeTransport._send_later

    def counted(self: KexSafeTransport) -> None:
        seen.append("server" if self.server_mode else "client")
        real(self)

    monkeypatch.setattr(KexSafeTransport, "_send_later", counted)
    return seen
