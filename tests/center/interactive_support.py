"""Helpers for the interactive-session tests: a real uvicorn server on loopback for an app (as
`kaic center serve` runs it: the same WebSocket options), and a client for the exec and
forward protocols built on the `websockets` sync client (docs/interactive.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from kaic.center.server import websocket_options
from kaic.models.interactive import RESIZE, STATUS, STDERR, STDIN, STDOUT

DEADLINE = 30.0


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` (its lifespan already running elsewhere, e.g. a TestClient) with uvicorn
    on a free loopback port in a thread; yields its `ws://` base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="off", log_level="warning", access_log=False, **websocket_options()
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=lambda: asyncio.run(server.serve(sockets=[sock])), name="test-uvicorn", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + DEADLINE
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def open_ws(base: str, path: str, token: str | None, **options: Any) -> ClientConnection:
    """A WebSocket to the center (use it in a `with`), the token in the Authorization
    header."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(base + path, additional_headers=headers, open_timeout=DEADLINE, **options)


def refusal(base: str, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error body of a session refused before the upgrade."""
    try:
        with open_ws(base, path, token):
            pass
    except InvalidStatus as exc:
        body = json.loads(exc.response.body or b"{}")
        assert exc.response.headers["X-Request-ID"] == body["error"]["request_id"]
        return exc.response.status_code, body
    raise AssertionError(f"{path} was not refused")


@dataclass
class ExecResult:
    stdout: bytes
    stderr: bytes
    status: dict[str, Any] | None
    close_code: int | None
    close_reason: str = ""


@dataclass
class ExecSession:
    """An open exec session: send stdin and resizes, read output until the status."""

    ws: ClientConnection
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: dict[str, Any] | None = None

    def send(self, data: bytes) -> None:
        self.ws.send(bytes([STDIN]) + data)

    def eof(self) -> None:
        self.ws.send(bytes([STDIN]))

    def resize(self, rows: int, cols: int) -> None:
        self.ws.send(bytes([RESIZE]) + json.dumps({"rows": rows, "cols": cols}).encode())

    def _take(self, message: bytes | str) -> None:
        assert isinstance(message, bytes), message
        channel, payload = message[0], message[1:]
        if channel == STDOUT:
            self.stdout += payload
        elif channel == STDERR:
            self.stderr += payload
        elif channel == STATUS:
            self.status = json.loads(payload)
        else:
            raise AssertionError(f"unexpected channel {channel}")

    def read_until(self, text: bytes, timeout: float = DEADLINE) -> bytes:
        """Read output until `text` appears in stdout; returns stdout so far."""
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {text!r} in {bytes(self.stdout)!r}"
            try:
                self._take(self.ws.recv(timeout=remaining))
            except TimeoutError:
                continue
        return bytes(self.stdout)

    def finish(self, timeout: float = DEADLINE) -> ExecResult:
        """Read everything until the server closes."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "the session did not end"
                self._take(self.ws.recv(timeout=remaining))
        except ConnectionClosed:
            pass
        return ExecResult(
            bytes(self.stdout),
            bytes(self.stderr),
            self.status,
            self.ws.close_code,
            self.ws.close_reason or "",
        )


@contextmanager
def start_exec(
    base: str, job_id: str, token: str, argv: list[str], **start: Any
) -> Iterator[ExecSession]:
    """An exec session of `argv` (`start`: tty, rows, cols, env)."""
    with open_ws(base, f"/v1/jobs/{job_id}/exec", token) as ws:
        ws.send(json.dumps({"argv": argv, **start}))
        yield ExecSession(ws)


def run_exec(
    base: str, job_id: str, token: str, argv: list[str], stdin: bytes = b"", **start: Any
) -> ExecResult:
    """Run one command to its end: send `stdin`, then EOF, and read everything."""
    with start_exec(base, job_id, token, argv, **start) as session:
        if stdin:
            session.send(stdin)
        if not start.get("tty"):
            session.eof()
        return session.finish()


def open_forward(base: str, job_id: str, token: str, port: int, **options: Any) -> ClientConnection:
    return open_ws(base, f"/v1/jobs/{job_id}/forward?port={port}", token, **options)


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def kill_pids(pids: list[int]) -> None:
    """SIGKILL what a failed test may have left behind."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


#: a job script serving two ports on 127.0.0.1 (inside the job): an echo server (echoes
#: until EOF, then half-closes) and one that says "bye" and closes at once; it writes
#: "ECHO EARLY" to $HOME/<name> when listening
SERVER = """\
import os, socket, sys, threading

def echo(conn):
    with conn:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)

def early(conn):
    with conn:
        conn.sendall(b"bye")

def serve(sock, handler):
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()

ports = []
for handler in (echo, early):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    ports.append(sock.getsockname()[1])
    threading.Thread(target=serve, args=(sock, handler), daemon=True).start()
path = os.path.join(os.environ["HOME"], sys.argv[1])
with open(path + ".tmp", "w") as out:
    out.write("%d %d\\n" % tuple(ports))
os.rename(path + ".tmp", path)
threading.Event().wait()
"""


def server_script(name: str) -> str:
    """The job script running `SERVER`, announcing its ports in $HOME/`name`."""
    return f"python3 - {name} <<'PY'\n{SERVER}PY\n"


def server_ports(home: Path, name: str, timeout: float = DEADLINE) -> tuple[int, int]:
    """(echo port, early-close port) of a `server_script` job once it listens."""
    path = home / name
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"the job's server did not start ({path})"
        time.sleep(0.05)
    echo, early = path.read_text().split()
    return int(echo), int(early)


def forward_roundtrip(ws: ClientConnection, payload_size: int, seed: int = 0) -> tuple[str, str]:
    """Send `payload_size` pseudo-random bytes through an echo forward (then EOF) while
    reading them back until EOF; (sha256 sent, sha256 received)."""
    import hashlib
    import random

    rng = random.Random(seed)
    sent_digest = hashlib.sha256()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            left = payload_size
            while left:
                chunk = rng.randbytes(min(CHUNK, left))
                sent_digest.update(chunk)
                ws.send(chunk)
                left -= len(chunk)
            ws.send(b"")
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    thread = threading.Thread(target=sender)
    thread.start()
    received = hashlib.sha256()
    while True:
        message = ws.recv(timeout=DEADLINE)
        assert isinstance(message, bytes)
        if not message:
            break
        received.update(message)
    thread.join(DEADLINE)
    assert not errors, errors
    return sent_digest.hexdigest(), received.hexdigest()


CHUNK = 64 * 1024
