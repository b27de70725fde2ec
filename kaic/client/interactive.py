"""The interactive area of the center API: exec sessions and port forwards inside a running
job, as WebSockets (`GET /v1/jobs/{id}/exec`, `GET /v1/jobs/{id}/forward?port=N`; the
protocol is in docs/interactive.md and `kaic.models.interactive`).

Same transport policy as every other request (`CenterClient`): plain http refused to a
center that is not loopback (checked when the client was built), TLS verified with the same
CA choice (`kaic.client.tls`), the bearer token in the ``Authorization`` header (never in
the URL), one refresh after a 401, and refusals — which the center answers before the
upgrade, as ordinary HTTP answers in its error shape — mapped through the one status table
(`kaic.client.errors.error_from_response`): 401 -> 3, 403 -> 6, 404 -> 4, 409 -> 6, 422 -> 6.
A center that can only refuse after the upgrade closes with 4000 + the HTTP status and the
error as the reason; that maps the same way.

`websockets.sync.client` does the framing; one thread may receive while others send.
Compression is off: terminal bytes are tiny and forwarded streams are often compressed
already, and deflating 100 MB costs more than it saves on any network a center sits on.
"""

from __future__ import annotations

import contextlib
import json
import select
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlencode

import httpx

from kaic import __version__
from kaic.client.api import CONNECT_TIMEOUT_S, CenterClient
from kaic.client.errors import error_from_response
from kaic.client.tls import ssl_failure, tls_context, tls_error
from kaic.errors import KaicError, ServerError, Unreachable
from kaic.models.interactive import (
    CLOSE_CONNECTION_REFUSED,
    RESIZE,
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    ExecStart,
    ExecStatus,
    TerminalSize,
)
from kaic.models.limits import MAX_FRAME_BYTES
from kaic.redact import redact

if TYPE_CHECKING:
    from websockets.sync.client import ClientConnection

#: how long a session's close handshake may take before the socket is just dropped
CLOSE_TIMEOUT_S = 2.0
#: close codes 4000 + an HTTP status: a refusal made after the upgrade (see module doc)
_REFUSAL_CLOSE = range(4400, 4600)


class SessionLost(Unreachable):
    """The connection to the center dropped in the middle of a session (exit 5)."""


class ForwardRefused(KaicError):
    """Nothing listens on the port inside the job (close code 4502): this connection fails,
    the forward goes on."""


@dataclass(frozen=True)
class Output:
    """Bytes the command wrote: `stream` is "stdout" or "stderr"."""

    stream: str
    data: bytes


def ws_url(base_url: str, path: str, params: Mapping[str, object] | None = None) -> str:
    """The WebSocket URL of an API path: http -> ws, https -> wss."""
    scheme, rest = base_url.split("://", 1)
    url = ("wss" if scheme == "https" else "ws") + "://" + rest.rstrip("/") + path
    return url + ("?" + urlencode(params) if params else "")


class InteractiveAPI:
    """Exec sessions and port forwards in the jobs of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def exec(self, job_id: str, start: ExecStart) -> ExecSession:
        """Open an exec session in the job and send its start message."""
        ws = self._open(f"/v1/jobs/{quote(job_id, safe='')}/exec", None)
        session = ExecSession(ws, self.client.base_url)
        session.send_start(start)
        return session

    def forward(self, job_id: str, port: int) -> ForwardStream:
        """Open one TCP connection to `port` inside the job."""
        ws = self._open(f"/v1/jobs/{quote(job_id, safe='')}/forward", {"port": port})
        return ForwardStream(ws, self.client.base_url)

    # -- the upgrade ---------------------------------------------------------------------

    def _open(self, path: str, params: Mapping[str, object] | None) -> ClientConnection:
        credentials = self.client.credentials
        token = credentials.access_token if credentials else None
        url = ws_url(self.client.base_url, path, params)
        try:
            return self._handshake(url, token)
        except _Refused as refused:
            if refused.response.status_code == 401 and token is not None:
                # The client's usual one refresh (or a clear AuthRequired), then once more.
                new_token = self.client.refresh_after_401(refused.response, token)
                try:
                    return self._handshake(url, new_token)
                except _Refused as again:
                    raise error_from_response(again.response, self.client.base_url) from None
            raise error_from_response(refused.response, self.client.base_url) from None

    def _handshake(self, url: str, token: str | None) -> ClientConnection:
        from websockets.exceptions import InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        base = self.client.base_url
        context = tls_context(self.client.policy) if url.startswith("wss://") else None
        started = time.monotonic()
        try:
            ws = connect(
                url,
                ssl=context,
                additional_headers=headers,
                user_agent_header=f"kaic/{__version__}",
                compression=None,
                open_timeout=CONNECT_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_FRAME_BYTES,
            )
        except InvalidStatus as exc:
            response = _as_httpx(exc)
            self._log(url, token, started, f"{response.status_code}")
            raise _Refused(response) from None
        except ssl.SSLError as exc:
            self._log(url, token, started, "TLS failed")
            failed = ssl_failure(exc)
            if failed is not None:
                raise tls_error(failed, base, self.client.policy) from None
            raise Unreachable(f"cannot reach the center at {base}: {exc}") from None
        except TimeoutError:
            self._log(url, token, started, "timed out")
            raise Unreachable(
                f"the center at {base} did not answer within {CONNECT_TIMEOUT_S:g} s"
            ) from None
        except OSError as exc:
            self._log(url, token, started, "failed")
            reason = redact(exc.strerror or str(exc) or type(exc).__name__).lower()
            raise Unreachable(f"cannot reach the center at {base}: {reason}") from None
        except InvalidHandshake as exc:
            self._log(url, token, started, "not a WebSocket answer")
            raise ServerError(
                f"the center at {base} did not open an interactive session: {redact(str(exc))}",
                hint="check that the center is recent enough for `kaic exec` / `kaic forward`",
            ) from None
        self._log(url, token, started, "101")
        # websockets 17.1+ wants a connection used as a context manager; the session's
        # `close()` is its exit.
        return ws.__enter__()

    def _log(self, url: str, token: str | None, started: float, outcome: str) -> None:
        elapsed_ms = (time.monotonic() - started) * 1000
        auth = " [authorization: Bearer ***]" if token else ""
        self.client.log_line(f"GET {url} (WebSocket){auth} -> {outcome} in {elapsed_ms:.0f} ms")


class _Refused(Exception):
    """The center answered the upgrade with an HTTP error (as an httpx response, so the one
    error mapping reads it)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _as_httpx(exc: Exception) -> httpx.Response:
    response = exc.response  # type: ignore[attr-defined]
    return httpx.Response(
        response.status_code,
        headers=list(response.headers.raw_items()),
        content=bytes(response.body or b""),
    )


class _Session:
    """What exec sessions and forwards share: sending, closing, and a closed connection
    said as a `kaic.errors` type."""

    def __init__(self, ws: ClientConnection, base_url: str) -> None:
        self._ws = ws
        self._base_url = base_url

    def _send(self, data: bytes) -> None:
        from websockets.exceptions import ConnectionClosed

        _wait_for_room(self._ws)
        try:
            self._ws.send(data)
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None

    def close(self) -> None:
        """End the session (the center then stops what it started)."""
        self._ws.close()

    def _closed_error(self, exc: Exception) -> KaicError:
        """The error for a connection that closed before the session's end."""
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is not None and rcvd.code in _REFUSAL_CLOSE:
            return _refusal(rcvd.code - 4000, rcvd.reason, self._base_url)
        if rcvd is not None and rcvd.code >= 4000:
            return KaicError(f"the center ended the session: {redact(rcvd.reason) or rcvd.code}")
        return SessionLost(
            f"the connection to the center at {self._base_url} was lost mid-session",
            hint="check the center and your network; the session's processes were ended",
        )


def _wait_for_room(ws: ClientConnection) -> None:
    """Wait until the connection's socket can take more without blocking.

    websockets' sync client holds its connection lock while a send blocks, and its reader
    thread needs that lock to hand on what it read: a send blocked on a center that itself
    waits for us to read (its own send to us is full) stopped our reading too, and both
    ends waited forever (100 MB echoed through `kaic forward` did). Waiting for room here,
    outside the lock, keeps the reader reading."""
    with contextlib.suppress(OSError, ValueError):  # closed: the send says so
        select.select([], [ws.socket], [])


def _refusal(status: int, reason: str, base_url: str) -> KaicError:
    """A refusal made after the upgrade (close code 4000 + status, the error as reason)."""
    try:
        body = json.loads(reason)
    except ValueError:
        body = {"error": {"code": "refused", "message": reason}}
    return error_from_response(httpx.Response(status, json=body), base_url)


class ExecSession(_Session):
    """One command running in a job: stdin and resizes go in, output and the final status
    come out (`receive`)."""

    def send_start(self, start: ExecStart) -> None:
        """The first message: what to run (text JSON)."""
        from websockets.exceptions import ConnectionClosed

        try:
            self._ws.send(start.model_dump_json(exclude_none=True))
        except ConnectionClosed as exc:
            raise self._closed_error(exc) from None

    def send_stdin(self, data: bytes) -> None:
        if data:
            self._send(bytes([STDIN]) + data)

    def close_stdin(self) -> None:
        """EOF on the command's stdin (an empty stdin message)."""
        self._send(bytes([STDIN]))

    def resize(self, rows: int, cols: int) -> None:
        size = TerminalSize(rows=min(max(rows, 1), 1000), cols=min(max(cols, 1), 1000))
        self._send(bytes([RESIZE]) + size.model_dump_json().encode())

    def receive(self) -> Output | ExecStatus:
        """The next output, or the final status (the last message). Raises `SessionLost`
        (exit 5) when the connection drops before the status, or the refusal a center made
        after the upgrade."""
        from websockets.exceptions import ConnectionClosed

        while True:
            try:
                message = self._ws.recv()
            except ConnectionClosed as exc:
                raise self._closed_error(exc) from None
            if isinstance(message, str) or not message:
                continue  # not part of the protocol: ignored
            channel, payload = message[0], bytes(message[1:])
            if channel == STDOUT:
                return Output("stdout", payload)
            if channel == STDERR:
                return Output("stderr", payload)
            if channel == STATUS:
                try:
                    return ExecStatus.model_validate_json(payload)
                except ValueError:
                    raise ServerError(
                        "the center sent an exec status kaic cannot read",
                        hint="check that kaic and the center versions match",
                    ) from None


class ForwardStream(_Session):
    """One TCP connection inside the job, as a byte stream both ways; an empty message is
    EOF in that direction."""

    def send(self, data: bytes) -> None:
        if data:
            self._send(data)

    def send_eof(self) -> None:
        self._send(b"")

    def receive(self) -> bytes | None:
        """The next bytes from the job's side; b"" at its EOF; None once the stream ended
        normally. Raises `ForwardRefused` when nothing listens on the port there."""
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        try:
            message = self._ws.recv()
        except ConnectionClosedOK:
            return None
        except ConnectionClosed as exc:
            rcvd = exc.rcvd
            if rcvd is not None and rcvd.code == CLOSE_CONNECTION_REFUSED:
                raise ForwardRefused(redact(rcvd.reason) or "connection refused") from None
            raise self._closed_error(exc) from None
        return message.encode() if isinstance(message, str) else bytes(message)
