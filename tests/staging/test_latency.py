"""The latency proxy (`tests/staging/faults.py`, "a slow network on loopback") delays as told:
what the WAN benchmarks measure through it is only as good as its round-trip time."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from tests.staging.faults import LatencyProxy

RTT_MS = 50.0


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on 127.0.0.1 (one connection at a time), stopped by the test."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _addr = server.accept()
            except OSError:
                return  # closed: the test is over
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, name="echo", daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        server.close()
        thread.join(5)
        assert not thread.is_alive()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    got = b""
    while len(got) < n:
        part = sock.recv(n - len(got))
        assert part, "the proxy closed the connection"
        got += part
    return got


def test_latency_proxy_round_trip_is_the_setting(echo_port: int) -> None:
    """A small message and its echo take the set RTT (median of 15, within 20 %), and the
    bytes arrive unchanged and are counted each way."""
    with LatencyProxy(echo_port, rtt_ms=RTT_MS) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(b"hello")  # the first one also pays the connect to the target
            assert _recv_exactly(sock, 5) == b"hello"
            rtts = []
            for i in range(15):
                message = f"ping {i:04d}".encode()
                started = time.monotonic()
                sock.sendall(message)
                assert _recv_exactly(sock, len(message)) == message
                rtts.append((time.monotonic() - started) * 1000)
        measured = statistics.median(rtts)
        assert RTT_MS * 0.8 <= measured <= RTT_MS * 1.2, rtts
    assert proxy.connections == 1
    assert proxy.bytes_up == proxy.bytes_down == 5 + 15 * 9
