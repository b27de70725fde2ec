"""The byte stream of a forwarded TCP connection (`kaic forward`) as the center sees it, for
every executor: a `ForwardChannel` is a descriptor to read the connection's bytes from and
one to write them to, whatever carries them underneath: a socket to the job's port when
the job runs on the center's host (`connect_loopback`, the local executor), or the stdout
and stdin of a process the center started like any session's (`executors.interactive`)
that reaches a relay inside the job (Slurm: `srun` of a relay step, `slurm/interactive.py`).

A relay's output is not the connection's bytes as they are. It writes one byte once it has
connected (`ANNOUNCED`), or exits with `RELAY_REFUSED` when the port refused: what a
socket's own connect would have told the center directly. Then the bytes come in frames
(`RelayFrames`), because the EOF of the relay's output reaches the center only when the
relay ends, and the relay must live on after the job side's EOF to carry the other
direction (a TCP half-close).

Like a session's process, the center reads and writes it through non-blocking descriptors
only; the asyncio side (`kaic.center.interactive.bridge`) decides when to read, so a client
that stops reading stops the connection instead of filling the center's memory.
"""

from __future__ import annotations

import contextlib
import os
import socket

from kaic.center.executors.interactive import SessionProcess


class RelayFrames:
    """Decodes what a relay writes after its `ANNOUNCED` byte: frames of a 4-byte
    big-endian length and that many bytes of the connection; a zero length is the
    connection's EOF. A relay needs them because the EOF of its output does not reach the
    center before the relay ends (srun passes a step's EOF on only when the step ends), and
    the relay must live on after the job-side EOF for the other direction (a half-close)."""

    HEADER = 4
    #: the longest frame accepted (a relay writes at most what one recv returns)
    MAX_FRAME = 1024 * 1024

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> bytes:
        """The connection's bytes in the frames `data` completes; sets `eof` at the EOF
        frame. ValueError for a frame longer than MAX_FRAME (not a relay's)."""
        self.buffer += data
        out = bytearray()
        while not self.eof and len(self.buffer) >= self.HEADER:
            length = int.from_bytes(self.buffer[: self.HEADER], "big")
            if length > self.MAX_FRAME:
                raise ValueError(f"the relay sent a frame of {length} bytes")
            if length == 0:
                self.eof = True
            elif len(self.buffer) < self.HEADER + length:
                break
            out += self.buffer[self.HEADER : self.HEADER + length]
            del self.buffer[: self.HEADER + length]
        return bytes(out)


class ForwardChannel:
    """One forwarded TCP connection as the center sees it: a descriptor to read the
    connection's bytes from and one to write them to (the same one for a socket), and how
    to half-close and close it.

    `announces`: the first byte read is not data but the relay's word that it connected
    (`ANNOUNCED`); EOF before it means it could not (the relay's exit code says why:
    `RELAY_REFUSED` for a refused connection). `frames`: what is read after it comes in
    `RelayFrames`."""

    def __init__(
        self,
        *,
        read_fd: int,
        write_fd: int,
        sock: socket.socket | None = None,
        process: SessionProcess | None = None,
        announces: bool = False,
        frames: RelayFrames | None = None,
    ) -> None:
        self.read_fd = read_fd
        self.write_fd = write_fd
        self.sock = sock
        self.process = process
        self.announces = announces
        self.frames = frames
        for fd in {read_fd, write_fd}:
            os.set_blocking(fd, False)

    def shutdown_write(self) -> None:
        """EOF towards the job's side (TCP half-close)."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
        elif self.process is not None:
            self.process.close_stdin()

    def close(self) -> None:
        """End the connection (and the relay process, if there is one)."""
        if self.sock is not None:
            self.sock.close()
        if self.process is not None:
            self.process.kill()
            self.process.close()


#: what a relay writes first once connected, and its exit code when the port refused
ANNOUNCED = b"+"
RELAY_REFUSED = 3


def connect_loopback(port: int, *, timeout: float = 10.0) -> ForwardChannel:
    """A TCP connection to `127.0.0.1:port` on this host (the local executor's jobs run
    here). ConnectionRefusedError when nothing listens there."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return ForwardChannel(read_fd=sock.fileno(), write_fd=sock.fileno(), sock=sock)
