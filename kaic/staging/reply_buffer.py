"""The receive side of a pipe's channel (`pipeline.SftpPipe`): a buffer the transport's
reader thread feeds straight from each packet, and the pipe's thread takes whole SFTP
messages out of."""

from __future__ import annotations

import struct
import time
from typing import Any

from paramiko.buffered_pipe import BufferedPipe, PipeTimeout

_U32 = struct.Struct(">I")


class ReplyBuffer(BufferedPipe):
    """The receive buffer of a pipe's channel (paramiko's `BufferedPipe`), fed by the
    transport's reader thread straight from each packet (`packets.sink_channel`). It wakes
    the pipe's thread only once it holds what that thread waits for (`wanted`: a whole
    reply), not for every 32 KiB packet — a 248 KiB READ reply is 8 packets, and each
    wake-up is a thread switch and a trip for the GIL. The pipe takes whole SFTP messages
    out of it (`take`), each copied once."""

    def __init__(self) -> None:
        super().__init__()
        pipe: Any = self  # (paramiko's private state)
        pipe._buffer = bytearray()  # (paramiko's is an `array`: two copies per read)
        #: how many bytes the reader waits for the buffer to hold
        self.wanted = 1

    def feed(self, data: bytes | memoryview) -> None:
        pipe: Any = self
        with pipe._lock:
            if pipe._event is not None:
                pipe._event.set()
            pipe._buffer += data
            if len(pipe._buffer) >= self.wanted:
                pipe._cv.notify_all()

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        pipe: Any = self
        with memoryview(pipe._buffer) as view:
            return bytes(view[:limit])

    def whole(self) -> int:
        """The length of the first SFTP message (its length field included) once the buffer
        holds all of it, else 0."""
        buf: bytearray = self._buffer  # type: ignore[attr-defined]
        if len(buf) < 4:
            return 0
        n = 4 + _U32.unpack_from(buf)[0]
        return n if len(buf) >= n else 0

    def take(self, timeout: float | None) -> tuple[list[tuple[int, bytes]], int] | None:
        """The SFTP messages whole in the buffer, once there is one: [(type, the body after
        the type byte)], and the bytes they took; None once the channel closed without
        one. `PipeTimeout` when none is whole in `timeout` seconds; ValueError for a
        message too short to have a type. (All at once: one lock
        and one window acknowledgement for a batch of small files' replies.)"""
        pipe: Any = self
        deadline = None if timeout is None else time.monotonic() + timeout
        with pipe._lock:
            buf: bytearray = pipe._buffer
            while not (n := self.whole()):
                if pipe._closed:
                    return None
                self.wanted = 4 + _U32.unpack_from(buf)[0] if len(buf) >= 4 else 4
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise PipeTimeout()
                pipe._cv.wait(left)
            got = []
            pos = 0
            with memoryview(buf) as view:
                while True:
                    if n < 5:
                        raise ValueError("an SFTP message without a type")
                    got.append((buf[pos + 4], bytes(view[pos + 5 : pos + n])))
                    pos += n
                    if len(buf) - pos < 4:
                        break
                    n = 4 + _U32.unpack_from(buf, pos)[0]
                    if len(buf) - pos < n:
                        break
            del buf[:pos]
            if not buf and pipe._event is not None and not pipe._closed:
                pipe._event.clear()
        return got, pos
