"""Pipelined SFTP v3 for batches of small files.

paramiko's `SFTPClient` waits for the reply to each open, close, setstat and rename, so a
small file costs ~5 round trips plus paramiko's per-request overhead. `SftpPipe` is a
minimal SFTP v3 client on its own channel (`invoke_subsystem("sftp")`) that sends the
requests of a whole batch back to back — all OPENs, then all WRITEs + FSETSTATs + CLOSEs,
then (after verification) all renames — and collects the replies afterwards, so a batch
costs a few round trips whatever its size. Requests are packed into large channel writes
(many SFTP messages per SSH packet).

Flow control: the replies still expected are kept below `MAX_REPLY_BYTES`, well inside
paramiko's default 2 MiB receive window, so the server can always write its replies and
therefore always reads our requests: sending never deadlocks.

Ordering: requests on one handle are processed in order (SFTP v3), which is what the
WRITE ... FSETSTAT, CLOSE sequence relies on. Requests on different paths are never
assumed to be ordered: renames are sent only after the writes have been confirmed.

A closed channel or connection raises `PipeClosed` (an `EOFError`), so the transfer
engine reconnects and resumes as it does for paramiko's errors; a failed request is an
`OSError` for that one file and leaves the others alone.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import paramiko

from kaic.staging.connect import REPLY_TIMEOUT
from kaic.staging.names import name_bytes

# message types (draft-ietf-secsh-filexfer-02)
FXP_INIT, FXP_VERSION, FXP_OPEN, FXP_CLOSE, FXP_READ, FXP_WRITE = 1, 2, 3, 4, 5, 6
FXP_FSETSTAT, FXP_REMOVE, FXP_EXTENDED = 10, 13, 200
FXP_STATUS, FXP_HANDLE, FXP_DATA = 101, 102, 103
FXF_READ, FXF_WRITE, FXF_CREAT, FXF_TRUNC = 0x01, 0x02, 0x08, 0x10
ATTR_PERMISSIONS, ATTR_ACMODTIME = 0x04, 0x08
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


def _string(data: bytes | str) -> bytes:
    raw = name_bytes(data) if isinstance(data, str) else data
    return struct.pack(">I", len(raw)) + raw


def _attrs(mode: int | None = None, mtime: int | None = None) -> bytes:
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


def _is_ok(kind: int, payload: bytes) -> bool:
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
    ):
        try:
            channel = transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if not transport.is_active():
                raise PipeClosed(f"connection lost: {exc}") from exc
            raise
        channel.settimeout(reply_timeout)  # a silent server counts as a lost connection
        self._channel = channel
        self._reply_timeout = reply_timeout
        self._buf = bytearray()
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
            self._channel.close()

    # -- wire ----------------------------------------------------------------------------
    @staticmethod
    def _take_string(data: bytes, pos: int) -> tuple[bytes, int]:
        (n,) = struct.unpack_from(">I", data, pos)
        return data[pos + 4 : pos + 4 + n], pos + 4 + n

    def _send(self, data: bytes | bytearray) -> None:
        try:
            self._channel.sendall(bytes(data))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise PipeClosed(f"SFTP channel closed: {exc}") from exc

    def _recv_message(self) -> tuple[int, bytes]:
        """One message: (type, body after the type byte)."""
        buf = self._buf
        while True:
            if len(buf) >= 4:
                (n,) = struct.unpack_from(">I", buf)
                if len(buf) >= 4 + n:
                    kind = buf[4]
                    body = bytes(buf[5 : 4 + n])
                    del buf[: 4 + n]
                    return kind, body
            try:
                chunk = self._channel.recv(1 << 18)
            except TimeoutError as exc:
                raise PipeClosed(
                    f"no reply from the SFTP server in {self._reply_timeout:.0f} s"
                ) from exc
            except (OSError, EOFError, paramiko.SSHException) as exc:
                raise PipeClosed(f"SFTP channel closed: {exc}") from exc
            if not chunk:
                raise PipeClosed("SFTP channel closed by the server")
            buf += chunk

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
    def open_many(self, paths: Sequence[str], flags: int) -> list[bytes | OSError]:
        """Open each path: its handle, or the OSError the server answered."""
        body_tail = struct.pack(">I", flags) + _attrs()
        replies = self.run((p, FXP_OPEN, _string(p) + body_tail, 64) for p in paths)
        out: list[bytes | OSError] = []
        for r in replies:
            if r.kind == FXP_HANDLE:
                out.append(self._take_string(r.payload, 0)[0])
            elif r.kind == FXP_STATUS:
                out.append(status_error(r.payload, r.owner))
            else:
                raise paramiko.SSHException(f"unexpected SFTP reply {r.kind} to OPEN")
        return out

    def rename_many(self, pairs: Sequence[tuple[str, str]]) -> list[OSError | None]:
        """posix-rename each (old, new): None, or the error for that pair (`Unsupported`
        where the server lacks the extension: some implement it without advertising it,
        e.g. paramiko's server, so it is always tried)."""
        name = _string(POSIX_RENAME)
        replies = self.run(
            (old, FXP_EXTENDED, name + _string(old) + _string(new), 0) for old, new in pairs
        )
        return [
            None if _is_ok(r.kind, r.payload) else status_error(r.payload, r.owner) for r in replies
        ]

    def remove_many(self, paths: Sequence[str]) -> None:
        """Remove files; errors (already gone) are ignored."""
        self.run((p, FXP_REMOVE, _string(p), 0) for p in paths)


# -- push: small files to their part files -------------------------------------------------


@dataclass
class Upload:
    """One small file to send: local `src` -> remote `part` (mode and mtime set on it)."""

    src: str
    part: str
    mode: int
    mtime: int
    #: sha256 hex of what was sent, once it was sent and closed without error
    digest: str | None = None
    error: OSError | None = None
    #: mode and mtime were set (FSETSTAT); False where the server does not support it
    stat_set: bool = False
    handle: bytes = field(default=b"", repr=False)


def upload_many(
    pipe: SftpPipe,
    uploads: Sequence[Upload],
    request_size: int,
    on_bytes: Callable[[int], None],
) -> None:
    """Write each upload to its part file: OPEN all; WRITE, FSETSTAT, CLOSE all.

    Sets `digest` (sha256 of the bytes sent) or `error` on each upload.
    """
    opened = pipe.open_many([u.part for u in uploads], FXF_WRITE | FXF_CREAT | FXF_TRUNC)
    for up, got in zip(uploads, opened, strict=True):
        if isinstance(got, OSError):
            up.error = got
        else:
            up.handle = got

    def requests() -> Iterable[tuple[tuple[Upload, int], int, bytes, int]]:
        for up in uploads:
            if up.error is not None:
                continue
            handle = _string(up.handle)
            try:
                with open(up.src, "rb") as f:
                    data = f.read()
            except OSError as exc:
                up.error = exc
                yield (up, FXP_CLOSE), FXP_CLOSE, handle, 0
                continue
            up.digest = hashlib.sha256(data).hexdigest()
            view = memoryview(data)
            for off in range(0, len(data), request_size):
                chunk = view[off : off + request_size]
                body = handle + struct.pack(">QI", off, len(chunk)) + chunk
                yield (up, FXP_WRITE), FXP_WRITE, body, 0
            on_bytes(len(data))
            yield (up, FXP_FSETSTAT), FXP_FSETSTAT, handle + _attrs(up.mode, up.mtime), 0
            yield (up, FXP_CLOSE), FXP_CLOSE, handle, 0

    for r in pipe.run(requests()):
        up, kind = r.owner
        if _is_ok(r.kind, r.payload):
            up.stat_set = up.stat_set or kind == FXP_FSETSTAT
            continue
        error = status_error(r.payload, up.part)
        if kind == FXP_FSETSTAT and isinstance(error, Unsupported):
            continue  # the caller sets mode and mtime by path
        if up.error is None:
            up.error = error
    for up in uploads:
        if up.error is not None:
            up.digest = None


# -- pull: small files into memory ---------------------------------------------------------


@dataclass
class Download:
    """One small remote file of (planned) `size` bytes to fetch into `data`."""

    src: str
    size: int
    data: bytes | None = None
    error: OSError | None = None
    #: the file changed size under us (or the server read short): fetch it the slow way
    retry: bool = False
    handle: bytes = field(default=b"", repr=False)
    chunks: dict[int, bytes] = field(default_factory=dict, repr=False)
    eof: bool = False


def download_many(
    pipe: SftpPipe,
    downloads: Sequence[Download],
    request_size: int,
    on_bytes: Callable[[int], None],
) -> None:
    """Fetch each file: OPEN all; READ its planned size (+ a READ that must hit EOF), CLOSE.

    Sets `data`, `error`, or `retry` (size changed or short read) on each download.
    """
    opened = pipe.open_many([d.src for d in downloads], FXF_READ)
    for down, got in zip(downloads, opened, strict=True):
        if isinstance(got, OSError):
            down.error = got
        else:
            down.handle = got

    def requests() -> Iterable[tuple[tuple[Download, int, int], int, bytes, int]]:
        for down in downloads:
            if down.error is not None:
                continue
            handle = _string(down.handle)
            for off in range(0, down.size, request_size):
                n = min(request_size, down.size - off)
                yield (down, off, n), FXP_READ, handle + struct.pack(">QI", off, n), n
            # One byte past the planned end: must be EOF, else the file grew.
            yield (down, down.size, -1), FXP_READ, handle + struct.pack(">QI", down.size, 1), 1
            yield (down, -1, 0), FXP_CLOSE, handle, 0

    for r in pipe.run(requests()):
        down, off, n = r.owner
        if r.kind == FXP_DATA:
            data = SftpPipe._take_string(r.payload, 0)[0]
            if n < 0 or len(data) != n:
                down.retry = True  # grew, or a short read
            else:
                down.chunks[off] = data
        elif r.kind == FXP_STATUS:
            code = struct.unpack_from(">I", r.payload)[0]
            if code == FX_EOF and n < 0:
                down.eof = True
            elif code == FX_EOF:
                down.retry = True  # shrank
            elif code != FX_OK and down.error is None and off >= 0:
                down.error = status_error(r.payload, down.src)
        else:
            raise paramiko.SSHException(f"unexpected SFTP reply {r.kind} to READ")
    for down in downloads:
        if down.error is None and not down.retry and down.eof:
            data = b"".join(down.chunks[off] for off in sorted(down.chunks))
            if len(data) == down.size:
                down.data = data
                on_bytes(len(data))
            else:
                down.retry = True
        elif down.error is None:
            down.retry = True
        down.chunks = {}
