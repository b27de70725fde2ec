"""Pipelined SFTP v3 for batches of small files.

paramiko's `SFTPClient` waits for the reply to each open, close, setstat and rename, so a
small file costs ~5 round trips plus paramiko's per-request overhead. `SftpPipe` is a
minimal SFTP v3 client on its own channel (`invoke_subsystem("sftp")`) that sends the
requests of a whole batch back to back — a sliding window of OPENs, each file's WRITEs +
FSETSTAT + CLOSE (or READs + CLOSE) as soon as its handle is back (`stream`,
`small_files`), then (after verification) all renames — and collects the replies as they
come, so a batch costs a few round trips whatever its size. Requests are packed into large
channel writes (many SFTP messages per SSH packet).

Flow control: the replies still expected are kept below `MAX_REPLY_BYTES`, well inside
paramiko's default 2 MiB receive window, so the server can always write its replies and
therefore always reads our requests: sending never deadlocks.

Ordering: requests on one handle are processed in order (SFTP v3), which is what the
WRITE ... FSETSTAT, CLOSE sequence relies on. Requests on different paths are never
assumed to be ordered: renames are sent only after the writes have been confirmed.

Large files stream over the same kind of channel (`SftpPipe.stream`, used by
`kaic.staging.stripes`): READs or WRITEs of a file's chunks go out as the worker produces
them and each reply is handed back as it arrives, with a bound on the bytes in flight (the
channel's receive window for reads: a pipe opened with `window=` asks the server for a larger
one, which is safe here because replies are taken out of the channel's buffer whole
(`reply_buffer.ReplyBuffer`) — paramiko's `BufferedPipe` copies what is left after each
partial read, which is what makes paramiko's own SFTP downloads quadratic with a large
window).

Receiving: the channel's data goes from the packet it arrives in straight into the pipe's
`ReplyBuffer` (`packets.sink_channel`), and each reply is copied out of it once, whole: per
byte pulled, the decrypted packet, the buffer and the reply, where paramiko's way (a
`Message`, `Channel._feed`, its `BufferedPipe`, `recv`) copied it five times more.

A closed channel or connection raises `PipeClosed` (an `EOFError`), so the transfer
engine reconnects and resumes as it does for paramiko's errors; a failed request is an
`OSError` for that one file and leaves the others alone.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import paramiko
from paramiko.buffered_pipe import PipeTimeout

from kaic.staging.connect import REPLY_TIMEOUT
from kaic.staging.names import name_bytes
from kaic.staging.packets import (
    channel_sendall,
    consumed,
    patient_sender,
    sink_channel,
    unsink_channel,
)
from kaic.staging.reply_buffer import ReplyBuffer

# message types (draft-ietf-secsh-filexfer-02)
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE = 1, 2, 3, 4, 5, 6
FXP_FSTAT, FXP_SETSTAT, FXP_FSETSTAT, FXP_REMOVE, FXP_STAT, FXP_EXTENDED = 8, 9, 10, 13, 17, 200
FXP_STATUS, FXP_HANDLE, FXP_DATA, FXP_ATTRS = 101, 102, 103, 105
FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC = 0x01, 0x02, 0x08, 0x10
ATTR_SIZE, ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x01, 0x04, 0x08
FX_OK, FX_EOF, FX_NO_SUCH_FILE, FX_PERMISSION_DENIED = 0, 1, 2, 3
FX_FAILURE, FX_OP_UNSUPPORTED = 4, 8
POSIX_RENAME = "posix-rename@openssh.com"

#: most bytes of replies outstanding at once (paramiko's receive window is 2 MiB)
MAX_REPLY_BYTES = 1 << 20
#: per-reply allowance for headers and status messages
_REPLY_OVERHEAD = 96
#: requests are written to the channel in chunks of about this size
_SEND_CHUNK = 64 << 10

_ERRNO = {FX_NO_SUCH_FILE: errno.ENOENT, FX_PERMISSION_DENIED: errno.EACCES}

T = TypeVar("T")


class PipeClosed(EOFError):
    """The SFTP channel (or the whole connection) went away."""


class Unsupported(OSError):
    """The server does not implement the request (SSH_FX_OP_UNSUPPORTED)."""


class SftpFailure(OSError):
    """SSH_FX_FAILURE, the server's unspecific error: among others what a server short of
    resources answers an OPEN (OpenSSH's sftp-server on EMFILE, the embedded endpoint over
    its open-file budget or per-session handle cap). Worth trying again later, with fewer
    files open at once."""


def string(data: bytes | str) -> bytes:
    """An SFTP string: its length, then its bytes (names as `names.name_bytes`)."""
    raw = name_bytes(data) if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


class Framed(bytearray):
    """A whole request with its first 9 bytes left for the header (length, type, id), so
    a large WRITE is built in one buffer and sent without being copied again."""


def framed_write(handle: bytes, offset: int, length: int) -> tuple[Framed, memoryview]:
    """A WRITE of `length` bytes at `offset`, and the view its data is to be read into."""
    head = string(handle) + struct.pack(">QI", offset, length)
    body = Framed(9 + len(head) + length)
    body[9 : 9 + len(head)] = head
    return body, memoryview(body)[9 + len(head) :]


def attrs(mode: int | None = None, mtime: int | None = None) -> bytes:
    flags = 0
    body = b""
    if mode is not None:
        flags |= ATTR_PERMISSIONS
        body += struct.pack(">I", mode & 0o7777)
    if mtime is not None:
        flags |= ATTR_ACMODTIME
        body += struct.pack(">II", mtime & 0xFFFFFFFF, mtime & 0xFFFFFFFF)
    return struct.pack(">I", flags) + body


def status_error(payload: bytes, path: str) -> OSError:
    """The OSError of a STATUS reply (FileNotFoundError, PermissionError, ...)."""
    code = struct.unpack_from(">I", payload)[0] if len(payload) >= 4 else -1
    message = ""
    if len(payload) >= 8:
        (n,) = struct.unpack_from(">I", payload, 4)
        message = payload[8 : 8 + n].decode("utf-8", errors="replace")
    cls = {FX_OP_UNSUPPORTED: Unsupported, FX_FAILURE: SftpFailure}.get(code, OSError)
    # OSError itself picks the subclass of an errno (EACCES -> PermissionError, ...)
    return cls(_ERRNO.get(code, errno.EIO), message or f"SFTP error {code}", path)


def is_ok(kind: int, payload: bytes) -> bool:
    return kind == FXP_STATUS and payload[:4] == b"\0\0\0\0"


@dataclass
class Reply(Generic[T]):
    owner: T
    kind: int
    payload: bytes


class SftpPipe:
    """An SFTP v3 session on its own channel, for pipelined batches (see module doc)."""

    def __init__(
        self,
        transport: paramiko.Transport,
        *,
        timeout: float = 30.0,
        reply_timeout: float = REPLY_TIMEOUT,
        window: int | None = None,
    ):
        #: the channel's receive window: how many bytes of replies may be on their way
        self.window = window or paramiko.common.DEFAULT_WINDOW_SIZE
        try:
            channel = transport.open_session(timeout=timeout, window_size=window)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not transport.is_active():
                raise PipeClosed(f"connection lost: {exc}") from exc
            raise
        channel.settimeout(reply_timeout)  # a silent server counts as a lost connection
        self._replies = ReplyBuffer()
        channel.in_buffer = self._replies  # (nothing arrives before the subsystem starts)
        sink_channel(channel, self._replies)
        patient_sender(channel)
        self._channel = channel
        self._reply_timeout = reply_timeout
        #: messages taken from the buffer and not yet read
        self._taken: collections.deque[tuple[int, bytes]] = collections.deque()
        self._next_id = 1
        try:
            channel.invoke_subsystem("sftp")
            self._send(struct.pack(">IBI", 5, FXP_INIT, 3))
            kind, _extensions = self._recv_message()
        except BaseException:
            self.close()
            raise
        if kind != FXP_VERSION:
            self.close()
            raise paramiko.SSHException(f"SFTP server answered INIT with message {kind}")
        # (the extensions it lists are not needed: `rename_many` tries posix-rename and
        # falls back on "unsupported")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            unsink_channel(self._channel)
            self._channel.close()

    # -- wire ----------------------------------------------------------------------------
    @staticmethod
    def _takestring(data: bytes, pos: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from(">I", data, pos)
        return data[pos + 4 : pos + 4 + n], pos + 4 + n

    def _send(self, data: bytes | bytearray) -> None:
        try:
            # Sealed from `data` itself, packet by packet (`packets.channel_sendall`).
            channel_sendall(self._channel, data)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise PipeClosed(f"SFTP channel closed: {exc}") from exc

    def _recv_message(self) -> tuple[int, bytes]:
        """One message: (type, body after the type byte)."""
        if self._taken:
            return self._taken.popleft()
        try:
            got = self._replies.take(self._reply_timeout)
        except PipeTimeout as exc:
            raise PipeClosed(
                f"no reply from the SFTP server in {self._reply_timeout:.0f} s"
            ) from exc
        except ValueError as exc:
            raise PipeClosed(f"bad reply from the SFTP server: {exc}") from exc
        if got is None:
            raise PipeClosed("SFTP channel closed by the server")
        messages, size = got
        try:
            consumed(self._channel, size)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise PipeClosed(f"SFTP channel closed: {exc}") from exc
        self._taken.extend(messages[1:])
        return messages[0]

    def _reply_waiting(self) -> bool:
        """Whether a reply can be read without waiting."""
        return bool(self._taken) or self._replies.whole() > 0

    def stream(
        self,
        requests: Iterable[tuple[T, int, bytes | bytearray, int] | None],
        on_reply: Callable[[T, int, bytes], None],
        *,
        limit: int | None = None,
        gather: bool = False,
    ) -> None:
        """Send `(owner, type, body, expected reply bytes)` requests as `requests` yields
        them, and hand each reply to `on_reply(owner, type, payload)` as it arrives. With
        `gather`, small requests are written together, once this has to wait for a reply
        (or they fill `_SEND_CHUNK`): many per SSH packet, as `run` sends them.

        At most `limit` bytes (requests plus expected replies; default: the receive window)
        are in flight: past that, replies are read before anything more is sent. Replies
        waiting anyway are taken after each request, so `on_reply` hears of progress early.
        A None request reads one reply (if any is expected) before going on. A `Framed`
        body has room for the header in front and is sent without another
        copy (large WRITEs, see `framed_write`).
        """
        limit = limit or self.window
        outstanding: dict[int, tuple[T, int]] = {}
        in_flight = 0
        out = bytearray()

        def read_one() -> None:
            nonlocal in_flight
            if out and not self._reply_waiting():  # (about to wait: what is gathered goes)
                self._send(out)
                out.clear()
            kind, body = self._recv_message()
            (rid,) = struct.unpack_from(">I", body)
            try:
                owner, cost = outstanding.pop(rid)
            except KeyError:
                raise paramiko.SSHException(f"SFTP reply to unknown request {rid}") from None
            in_flight -= cost
            on_reply(owner, kind, body[4:])

        for request in requests:
            if request is None:  # the producer waits for progress: read a reply
                if outstanding:
                    read_one()
                continue
            owner, kind, body, reply_bytes = request
            rid = self._next_id
            self._next_id = (rid + 1) & 0xFFFFFFFF or 1
            if isinstance(body, Framed):
                struct.pack_into(">IBI", body, 0, len(body) - 4, kind, rid)
                if out:
                    self._send(out)
                    out.clear()
                self._send(body)
                size = len(body)
            else:
                out += struct.pack(">IBI", len(body) + 5, kind, rid)
                out += body
                if not gather or len(out) >= _SEND_CHUNK:
                    self._send(out)
                    out.clear()
                size = len(body) + 9
            cost = size + reply_bytes + _REPLY_OVERHEAD
            outstanding[rid] = (owner, cost)
            in_flight += cost
            while outstanding and (in_flight > limit or self._reply_waiting()):
                read_one()
        if out:
            self._send(out)
        while outstanding:
            read_one()

    def run(self, requests: Iterable[tuple[T, int, bytes, int]]) -> list[Reply[T]]:
        """Send `(owner, type, body, expected reply bytes)` requests pipelined.

        `body` is what follows the request id. Replies come back in request order.
        """
        expected: dict[int, int] = {}
        owners: dict[int, T] = {}
        order: list[int] = []
        replies: dict[int, tuple[int, bytes]] = {}
        out = bytearray()
        pending = 0

        def read_one() -> None:
            nonlocal pending
            kind, body = self._recv_message()
            (rid,) = struct.unpack_from(">I", body)
            if rid not in expected or rid in replies:
                raise paramiko.SSHException(f"SFTP reply to unknown request {rid}")
            replies[rid] = (kind, body[4:])
            pending -= expected[rid]

        for owner, kind, body, reply_bytes in requests:
            rid = self._next_id
            self._next_id = (rid + 1) & 0xFFFFFFFF or 1
            out += struct.pack(">IBI", len(body) + 5, kind, rid)
            out += body
            cost = reply_bytes + _REPLY_OVERHEAD
            expected[rid], owners[rid] = cost, owner
            order.append(rid)
            pending += cost
            if len(out) >= _SEND_CHUNK:
                self._send(out)
                out.clear()
            while pending > MAX_REPLY_BYTES and len(replies) < len(order):
                if out:
                    self._send(out)
                    out.clear()
                read_one()
        if out:
            self._send(out)
        while len(replies) < len(order):
            read_one()
        return [Reply(owners[rid], *replies[rid]) for rid in order]

    # -- batch operations ----------------------------------------------------------------
    def open_one(self, path: str, flags: int) -> bytes:
        """Open `path`: its handle (the server's error raised as an OSError)."""
        got = self.open_many([path], flags)[0]
        if isinstance(got, OSError):
            raise got
        return got

    def close_handle(self, handle: bytes) -> None:
        """Close a handle (errors ignored: it is gone either way)."""
        self.run([(None, FXP_CLOSE, string(handle), 0)])

    def size_of(self, path: str) -> int | None:
        """The size of `path` (links followed); None when it does not exist."""
        reply = self.run([(path, FXP_STAT, string(path), 64)])[0]
        if reply.kind == FXP_ATTRS:
            (flags,) = struct.unpack_from(">I", reply.payload)
            return struct.unpack_from(">Q", reply.payload, 4)[0] if flags & ATTR_SIZE else 0
        error = status_error(reply.payload, path)
        if isinstance(error, FileNotFoundError):
            return None
        raise error

    def setstat(self, path: str, mode: int, mtime: int) -> None:
        """Set the permission bits and times of `path` (an OSError when refused)."""
        reply = self.run([(path, FXP_SETSTAT, string(path) + attrs(mode, mtime), 0)])[0]
        if not is_ok(reply.kind, reply.payload):
            raise status_error(reply.payload, path)

    def open_many(self, paths: Sequence[str], flags: int) -> list[bytes | OSError]:
        """Open each path: its handle, or the OSError the server answered."""
        body_tail = struct.pack(">I", flags) + attrs()
        replies = self.run((p, FXP_OPEN, string(p) + body_tail, 64) for p in paths)
        out: list[bytes | OSError] = []
        for r in replies:
            if r.kind == FXP_HANDLE:
                out.append(self._takestring(r.payload, 0)[0])
            elif r.kind == FXP_STATUS:
                out.append(status_error(r.payload, r.owner))
            else:
                raise paramiko.SSHException(f"unexpected SFTP reply {r.kind} to OPEN")
        return out

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
        """posix-rename each (old, new): None, or the error for that pair (`Unsupported`
        where the server lacks the extension: some implement it without advertising it,
        e.g. paramiko's server, so it is always tried)."""
        name = string(POSIX_RENAME)
        replies = self.run(
            (old, FXP_EXTENDED, name + string(old) + string(new), 0) for old, new in pairs
        )
        return [
            None if is_ok(r.kind, r.payload) else status_error(r.payload, r.owner) for r in replies
        ]

    def remove_many(self, paths: Sequence[str]) -> None:
        """Remove files; errors (already gone) are ignored."""
        self.run((p, FXP_REMOVE, string(p), 0) for p in paths)
