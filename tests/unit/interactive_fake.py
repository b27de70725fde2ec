"""A tiny server of the interactive protocol (docs/interactive.md), for the client's unit
tests: `websockets.sync.server` on 127.0.0.1, running exec commands as local processes (on a
pty for `tty`) and forwarding to local ports. The real center is the e2e tests' business
(tests/e2e/test_interactive*.py); this one lets a test refuse, drop or misbehave on purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pty
import socket
import struct
import subprocess
import termios
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.sync.server import ServerConnection, serve

from kaic.models.interactive import RESIZE, STATUS, STDERR, STDIN, STDOUT, ExecStart

TOKEN = "kaic_" + "t" * 40


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message, "request_id": "req-9"}})
    headers = Headers([("Content-Type", "application/json"), ("X-Request-ID", "req-9")])
    return Response(status, "refused", headers, body.encode())


@dataclass
class FakeSessions:
    """The server: `jobs` maps a job id to its state; `tokens` are accepted bearer tokens."""

    jobs: dict[str, str] = field(default_factory=lambda: {"42": "RUNNING"})
    tokens: set[str] = field(default_factory=lambda: {TOKEN})
    #: what the server saw: (path, Authorization header) per upgrade attempt
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    #: the ExecStart of each session, and the resizes it got
    starts: list[ExecStart] = field(default_factory=list)
    resizes: list[tuple[int, int]] = field(default_factory=list)
    #: drop the connection (no close frame) after the start message
    drop_after_start: bool = False
    url: str = ""

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeSessions]:
        server = serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._check,
            compression=None,
            server_header=None,
        )
        port = server.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            thread.join(5)

    # -- before the upgrade: the refusals ------------------------------------------------------

    def _check(self, _conn: ServerConnection, request: Request) -> Response | None:
        auth = request.headers.get("Authorization")
        self.seen.append((request.path, auth))
        if auth is None or auth.removeprefix("Bearer ") not in self.tokens:
            return _error(401, "not_authenticated", "invalid or expired token")
        parts = request.path.split("?")[0].split("/")
        job_id = parts[3] if len(parts) > 4 else ""
        if job_id not in self.jobs:
            return _error(404, "not_found", f"no job {job_id}")
        if self.jobs[job_id] != "RUNNING":
            return _error(409, "job_not_running", f"job {job_id} is {self.jobs[job_id]}")
        return None

    # -- after it ------------------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        if ws.request.path.split("?")[0].endswith("/forward"):
            self._forward(ws, int(ws.request.path.split("port=")[1]))
        else:
            self._exec(ws)

    def _exec(self, ws: ServerConnection) -> None:
        first = ws.recv()
        assert isinstance(first, str), "the first message must be text"
        start = ExecStart.model_validate_json(first)
        self.starts.append(start)
        if start.argv[0] == "refused-by-the-fake":  # as a center refuses a start it cannot run
            ws.send(bytes([STATUS]) + b'{"exit_code": null, "reason": "argv: not allowed here"}')
            ws.close(4422, "argv: not allowed here")
            return
        if self.drop_after_start:
            ws.socket.shutdown(socket.SHUT_RDWR)
            return
        env = {**os.environ, **start.env}
        if start.tty:
            process, writer, readers = _spawn_tty(start, env)
        else:
            process = subprocess.Popen(
                start.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,
            )
            assert process.stdin and process.stdout and process.stderr
            writer = process.stdin.fileno()
            readers = [(STDOUT, process.stdout.fileno()), (STDERR, process.stderr.fileno())]
        copiers = [
            threading.Thread(target=_copy_out, args=(fd, channel, ws), daemon=True)
            for channel, fd in readers
        ]
        for copier in copiers:
            copier.start()
        threading.Thread(target=self._copy_in, args=(ws, writer, start.tty), daemon=True).start()
        code = process.wait()
        for copier in copiers:
            copier.join(5)
        exit_code = code if code >= 0 else 128 - code
        status = {"exit_code": exit_code, "signal": -code if code < 0 else None, "reason": None}
        with contextlib.suppress(Exception):
            ws.send(bytes([STATUS]) + json.dumps(status).encode())
            ws.close()

    def _copy_in(self, ws: ServerConnection, fd: int, tty: bool) -> None:
        try:
            for message in ws:
                assert isinstance(message, bytes)
                channel, payload = message[0], message[1:]
                if channel == STDIN and payload:
                    os.write(fd, payload)
                elif channel == STDIN and not tty:
                    os.close(fd)
                elif channel == RESIZE:
                    size = json.loads(payload)
                    self.resizes.append((size["rows"], size["cols"]))
                    fcntl.ioctl(
                        fd,
                        termios.TIOCSWINSZ,
                        struct.pack("HHHH", size["rows"], size["cols"], 0, 0),
                    )
        except Exception:
            pass

    def _forward(self, ws: ServerConnection, port: int) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", port))
        except OSError:
            ws.close(4502, f"connection refused on port {port} in job 42")
            return

        def up() -> None:
            with contextlib.suppress(Exception):
                for message in ws:
                    if message:
                        sock.sendall(message if isinstance(message, bytes) else message.encode())
                    else:
                        sock.shutdown(socket.SHUT_WR)

        threading.Thread(target=up, daemon=True).start()
        while True:
            data = sock.recv(65536)
            if not data:
                with contextlib.suppress(Exception):
                    ws.send(b"")
                break
            ws.send(data)
        sock.close()
        with contextlib.suppress(Exception):
            ws.close()


def _spawn_tty(
    start: ExecStart, env: dict[str, Any]
) -> tuple[subprocess.Popen[bytes], int, list[tuple[int, int]]]:
    master, slave = pty.openpty()
    fcntl.ioctl(
        slave, termios.TIOCSWINSZ, struct.pack("HHHH", start.rows or 24, start.cols or 80, 0, 0)
    )

    def controlling() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        start.argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
        preexec_fn=controlling,
    )
    os.close(slave)
    return process, master, [(STDOUT, master)]


def _copy_out(fd: int, channel: int, ws: ServerConnection) -> None:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:  # a pty's master reads EIO once the child side closed
            return
        if not data:
            return
        ws.send(bytes([channel]) + data)
