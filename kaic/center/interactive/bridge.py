"""The bridges between a session's WebSocket and what it runs in the job, on the event loop.

Every byte is moved by one coroutine per direction that reads a little (at most
`CHUNK_BYTES`) and hands it on before it reads again: a client that stops reading stops
the reads from the process (whose writes then block on a full pipe), a process that stops
reading stops the reads from the WebSocket (and uvicorn stops reading the socket). Nothing
is buffered beyond one chunk per direction and the kernels' own buffers, however long a
shell sits idle or a client stalls.

exec (`run_exec`): stdout and stderr to channels 1 and 2 (a tty has only 1), channel 0 to
stdin (empty: EOF), channel 4 resizes the terminal; the session ends when the command
ends (then the rest of its session is killed and the output drained), when the center
cuts it (the job ended) or when the client leaves or breaks the protocol (everything the
session started is killed). The last message is the status on channel 3.

forward (`run_forward`): raw bytes both ways, an empty message is EOF in its direction
(half-close); the WebSocket closes when both directions are done, or either side fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from kaic.center.executors.forward_channel import ANNOUNCED, RELAY_REFUSED, ForwardChannel
from kaic.center.executors.interactive import SessionProcess, exit_code_of
from kaic.center.interactive.registry import Session
from kaic.models.interactive import (
    CLOSE_CONNECTION_REFUSED,
    CLOSE_JOB_ENDED,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    RESIZE,
    STATUS,
    STDERR,
    STDIN,
    STDOUT,
    ExecStatus,
    TerminalSize,
)
from kaic.models.limits import CHUNK_BYTES

#: seconds to wait for a command's remaining output once it ended (something it started
#: in a session of its own may hold its stdout open for good)
DRAIN_SECONDS = 5.0
#: seconds to wait for a killed process to be gone
KILL_WAIT_SECONDS = 10.0
#: seconds a relay (Slurm: an `srun` step) may take to connect to the port
RELAY_CONNECT_SECONDS = 60.0
#: seconds to wait for the center to record the end of a job that is ending when a
#: session's command was killed (a batch system kills the steps before the center learns
#: that the job ended; a loaded batch system may take a few of its polls)
JOB_END_SECONDS = 30.0
#: close code of a session whose job-side connection or process failed
CLOSE_INTERNAL = 1011


class ClientGone(Exception):
    """The client closed the WebSocket or the connection broke."""


class ProtocolError(Exception):
    """The client sent something the protocol does not allow; the message says what."""


def close_reason(text: str) -> str:
    """`text` cut to what a WebSocket close frame can carry (123 bytes of UTF-8)."""
    data = text.encode("utf-8")
    if len(data) <= 123:
        return text
    return data[:120].decode("utf-8", errors="ignore") + "..."


# -- non-blocking descriptors on the event loop ---------------------------------------


async def _ready(fd: int, *, write: bool = False) -> None:
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def read_some(fd: int, limit: int = CHUNK_BYTES) -> bytes:
    """Up to `limit` bytes from non-blocking `fd`; b"" at EOF (a pty: all its other ends
    closed)."""
    while True:
        try:
            return os.read(fd, limit)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        await _ready(fd)


async def write_all(fd: int, data: bytes) -> None:
    """All of `data` to non-blocking `fd`, waiting while it is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, write=True)
            continue
        view = view[written:]


# -- the WebSocket ----------------------------------------------------------------------


async def receive(ws: WebSocket) -> Mapping[str, Any]:
    """The next message; ClientGone when the client left."""
    try:
        message = await ws.receive()
    except (WebSocketDisconnect, OSError, RuntimeError) as exc:
        raise ClientGone() from exc
    if message["type"] == "websocket.disconnect":
        raise ClientGone()
    return message


async def send(ws: WebSocket, data: bytes) -> None:
    """Send one binary message; ClientGone when the client left."""
    try:
        await ws.send_bytes(data)
    except (WebSocketDisconnect, OSError, RuntimeError) as exc:
        raise ClientGone() from exc


async def close(ws: WebSocket, code: int, reason: str = "") -> None:
    """Close the WebSocket (nothing if the client is gone already)."""
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await ws.close(code, close_reason(reason))


def binary_payload(message: Mapping[str, Any], what: str) -> bytes:
    data = message.get("bytes")
    if data is None:
        raise ProtocolError(f"{what}: only binary messages are allowed here")
    return bytes(data)


async def _settle(tasks: list[asyncio.Task[Any]], timeout: float) -> None:
    """Let `tasks` finish within `timeout`, then cancel what has not (and wait for that)."""
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


# -- exec -----------------------------------------------------------------------------


async def run_exec(
    ws: WebSocket,
    process: SessionProcess,
    session: Session,
    cut: asyncio.Event,
    *,
    job_ending: Callable[[], bool] | None = None,
) -> ExecStatus | None:
    """Bridge an accepted exec WebSocket and `process` until the session ends; returns the
    status sent as the last message (None when the client left first).

    `job_ending` (blocking; run on a worker thread) tells whether the job is ending: when a
    command was killed by a signal while it is, the status waits for the center to record
    the job's end, so that it says why (Slurm ends a job's steps itself, before the center
    knows)."""

    async def output(fd: int, channel: int) -> None:
        prefix = bytes([channel])
        noise = process.filters.get(fd)
        while True:
            data = await read_some(fd)
            if not data:
                rest = noise.flush() if noise is not None else b""
                if rest:
                    session.bytes_out += len(rest)
                    await send(ws, prefix + rest)
                return
            if noise is not None:
                data = noise.feed(data)
                if not data:
                    continue
            session.bytes_out += len(data)
            await send(ws, prefix + data)

    async def stdin_writer() -> None:
        while True:
            payload = binary_payload(await receive(ws), "exec")
            if not payload:
                raise ProtocolError("an empty message names no channel")
            channel, data = payload[0], payload[1:]
            if channel == STDIN:
                if not data:
                    process.close_stdin()
                elif process.stdin is not None:
                    session.bytes_in += len(data)
                    try:
                        await write_all(process.stdin, data)
                    except (BrokenPipeError, OSError):
                        process.close_stdin()  # the command closed its stdin: discard
            elif channel == RESIZE:
                try:
                    size = TerminalSize.model_validate_json(data)
                except ValidationError as exc:
                    raise ProtocolError(f"a resize message must be {{rows, cols}}: {exc}") from None
                process.resize(size.rows, size.cols)
            else:
                raise ProtocolError(f"channel {channel} is not one a client sends on")

    readers = [asyncio.create_task(output(process.stdout, STDOUT))]
    if process.stderr is not None:
        readers.append(asyncio.create_task(output(process.stderr, STDERR)))
    inbound = asyncio.create_task(stdin_writer())
    ended = asyncio.create_task(_ready(process.exit_fd))
    cutting = asyncio.create_task(cut.wait())
    pending: set[asyncio.Task[Any]] = {inbound, ended, cutting, *readers}
    failure: BaseException | None = None
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            stopped = [t for t in done if t in (inbound, *readers) and t.exception()]
            if stopped:
                failure = stopped[0].exception()
                break
            if ended in done or cutting in done:
                break
            if inbound in done:  # cannot end without an exception; be safe
                break
    finally:
        for task in (inbound, cutting):
            task.cancel()

    if failure is not None and not isinstance(failure, (ClientGone, ProtocolError)):
        failure = ProtocolError(f"the session failed: {failure}")
    reason: str | None = None
    if failure is not None or not ended.done():
        # The client left, broke the protocol, or the center cut the session: end it all.
        reason = session.cut_reason if failure is None else None
        await asyncio.to_thread(process.kill)
        await _settle([ended], KILL_WAIT_SECONDS)
    else:
        # The command ended: what it left behind in its session goes too, so that the
        # pipes it holds close and the output drains.
        await asyncio.to_thread(process.reap_session)
    if isinstance(failure, ClientGone):
        await _settle(readers, 0)
        return None
    await _settle(readers, DRAIN_SECONDS)
    returncode = process.returncode
    code, sig = exit_code_of(returncode) if returncode is not None else (None, None)
    killed = failure is None and reason is None and code is not None and code >= 128
    if killed and job_ending is not None and await asyncio.to_thread(job_ending):
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(cut.wait(), JOB_END_SECONDS)
        reason = session.cut_reason
    if isinstance(failure, ProtocolError):
        status = ExecStatus(exit_code=code, signal=sig, reason=str(failure))
    else:
        status = ExecStatus(exit_code=code, signal=sig, reason=reason)
    try:
        await send(ws, bytes([STATUS]) + status.model_dump_json().encode())
    except ClientGone:
        return None
    if isinstance(failure, ProtocolError):
        await close(ws, CLOSE_PROTOCOL_ERROR, str(failure))
    else:
        await close(ws, CLOSE_NORMAL)
    return status


# -- forward --------------------------------------------------------------------------


async def relay_connected(channel: ForwardChannel) -> bool | str:
    """For a relay that announces itself: True once it connected, `RELAY_REFUSED`'s
    meaning (False) when the port refused, or the relay's error text."""
    process = channel.process
    assert process is not None
    try:
        first = await asyncio.wait_for(read_some(channel.read_fd, 1), RELAY_CONNECT_SECONDS)
    except asyncio.TimeoutError:
        return f"the relay did not connect within {RELAY_CONNECT_SECONDS:g}s"
    if first == ANNOUNCED:
        return True
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(_ready(process.exit_fd), KILL_WAIT_SECONDS)
    if process.returncode == RELAY_REFUSED:
        return False
    detail = b""
    if process.stderr is not None:
        with contextlib.suppress(OSError):
            detail = os.read(process.stderr, 2048)
    text = detail.decode("utf-8", errors="replace").strip().splitlines()
    return text[-1] if text else f"the relay ended with code {process.returncode}"


async def run_forward(
    ws: WebSocket, channel: ForwardChannel, session: Session, cut: asyncio.Event
) -> str:
    """Bridge an accepted forward WebSocket and `channel` until both directions are done,
    either side fails or the center cuts it; returns how it ended (for the audit line)."""
    client_eof = asyncio.Event()

    async def downstream() -> None:
        frames = channel.frames
        while True:
            raw = await read_some(channel.read_fd)
            data = frames.feed(raw) if frames is not None else raw
            if data:
                session.bytes_out += len(data)
                await send(ws, data)
            if not raw or (frames is not None and frames.eof):
                await send(ws, b"")  # EOF towards the client
                return

    async def upstream() -> None:
        while True:
            data = binary_payload(await receive(ws), "forward")
            if not data:
                channel.shutdown_write()
                client_eof.set()
                break
            session.bytes_in += len(data)
            await write_all(channel.write_fd, data)
        # After its EOF the client sends nothing more; a close says that it left.
        binary_payload(await receive(ws), "forward")
        raise ProtocolError("data after the end of the stream")

    down = asyncio.create_task(downstream())
    up = asyncio.create_task(upstream())
    cutting = asyncio.create_task(cut.wait())
    eof = asyncio.create_task(client_eof.wait())
    pending: set[asyncio.Task[Any]] = {down, up, cutting, eof}
    try:
        while True:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            if cutting in done:
                outcome = session.cut_reason or "cut by the center"
                await close(ws, CLOSE_JOB_ENDED, outcome)
                return outcome
            failure = next((t.exception() for t in done if t in (down, up) and t.exception()), None)
            if isinstance(failure, ClientGone):
                return "the client left"
            if isinstance(failure, ProtocolError):
                await close(ws, CLOSE_PROTOCOL_ERROR, str(failure))
                return f"protocol error: {failure}"
            if failure is not None:  # the job's side failed (reset, broken pipe, ...)
                outcome = f"the connection in the job failed: {failure}"
                await close(ws, CLOSE_INTERNAL, outcome)
                return outcome
            if down.done() and client_eof.is_set():
                await close(ws, CLOSE_NORMAL)
                return "closed"
    finally:
        await _settle([down, up, cutting, eof], 0)


async def refuse_forward(ws: WebSocket, port: int, job_id: str) -> None:
    """Close an accepted forward whose port refused the connection (4502)."""
    await close(ws, CLOSE_CONNECTION_REFUSED, f"connection refused on port {port} in job {job_id}")
