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
