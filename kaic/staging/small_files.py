"""Batches of small files over an `SftpPipe`: a sliding window of files open at once, their
requests gathered many per SSH packet.

Push (`upload_many`): each OPEN followed, once its handle is back, by its WRITEs + FSETSTAT
(mode, mtime) + CLOSE. Pull (`download_many`): each OPEN followed by READs of the planned
size (the last asking one byte more) + CLOSE, into memory. Each file is handed over as its
CLOSE is answered, the next file's OPEN already on its way. A failed request fails that
file only.
"""

from __future__ import annotations

import collections
import hashlib
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import paramiko

from kaic.staging.pipeline import (
    FX_EOF,
    FX_OK,
    FXF_CREAT,
    FXF_READ,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_CLOSE,
    FXP_DATA,
    FXP_FSETSTAT,
    FXP_HANDLE,
    FXP_OPEN,
    FXP_READ,
    FXP_STATUS,
    FXP_WRITE,
    MAX_REPLY_BYTES,
    SftpPipe,
    Unsupported,
    attrs,
    is_ok,
    status_error,
    string,
)

#: the body of an OPEN after its path: to write a part file (made or emptied), to read a file
_CREATE_TAIL = struct.pack(">I", FXF_WRITE | FXF_CREAT | FXF_TRUNC) + attrs()
_OPEN_TAIL = struct.pack(">I", FXF_READ) + attrs()

#: a pipelined request: (owner, type, body after the id, expected reply bytes); None: read
#: a reply before asking for more
Request = tuple[Any, int, bytes, int] | None


class _Held(Protocol):
    handle: bytes
    error: OSError | None
    generation: int


F = TypeVar("F", bound=_Held)


class _Window(Generic[F]):
    """The sliding window of files both directions keep open: the next file's OPEN goes
    whenever fewer than `window()[0]` are held (opened or opening, not yet closed); a file
    whose handle came back gets its requests (`per_file`, which ends with its CLOSE); each
    file is finished once (`finish`) when its CLOSE is answered or its OPEN refused."""

    def __init__(
        self,
        files: Sequence[F],
        window: Callable[[], tuple[int, int]] | None,
        finish: Callable[[F], None],
    ):
        self.todo = collections.deque(files)
        self.opened: collections.deque[F] = collections.deque()
        self.holding = 0
        self.left = len(files)
        self.window = window or (lambda: (len(files), 0))
        self._finish = finish

    def requests(
        self, per_file: Callable[[F], Iterator[Request]], open_request: Callable[[F], Request]
    ) -> Iterator[Request]:
        while self.left:
            while self.opened:
                yield from per_file(self.opened.popleft())
                self.holding -= 1  # (its CLOSE is on its way: the next OPEN may go)
            size, generation = self.window()
            if self.todo and self.holding < size:
                held = self.todo.popleft()
                held.generation = generation
                self.holding += 1
                yield open_request(held)
            else:
                yield None  # (a reply first)

    def on_open(self, held: F, kind: int, payload: bytes, path: str) -> None:
        """The answer to a file's OPEN: its handle, or why it failed (the file is done)."""
        if kind == FXP_HANDLE:
            held.handle = SftpPipe._takestring(payload, 0)[0]
            self.opened.append(held)
        else:
            held.error = status_error(payload, path)
            self.holding -= 1
            self.finished(held)

    def finished(self, held: F) -> None:
        self.left -= 1
        self._finish(held)


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
    #: the open window's generation its OPEN was sent in (see `workers.OpenWindow`)
    generation: int = 0
    handle: bytes = field(default=b"", repr=False)


def upload_many(
    pipe: SftpPipe,
    uploads: Sequence[Upload],
    request_size: int,
    on_bytes: Callable[[int], None],
    *,
    window: Callable[[], tuple[int, int]] | None = None,
    on_done: Callable[[Upload], None] = lambda _u: None,
) -> None:
    """Write each upload to its part file: OPEN; WRITE, FSETSTAT, CLOSE — a sliding window
    of files, as `download_many` (at most `window()[0]` open at once, default all; a file's
    writes go as soon as its handle is back, with the next file's OPEN; `on_done` hears of
    each file as its CLOSE is answered).

    Sets `digest` (sha256 of the bytes sent) or `error` on each upload, and `generation`
    (the window's, when its OPEN was sent).
    """

    def finish(up: Upload) -> None:
        if up.error is not None:
            up.digest = None
        on_done(up)

    files = _Window(uploads, window, finish)

    def per_file(up: Upload) -> Iterator[Request]:
        """The writes, FSETSTAT and CLOSE of a file whose handle came back."""
        handle = string(up.handle)
        try:
            data = read_whole(up.src)
        except OSError as exc:
            up.error = exc
            yield (up, FXP_CLOSE), FXP_CLOSE, handle, 0
            return
        up.digest = hashlib.sha256(data).hexdigest()
        view = memoryview(data)
        for off in range(0, len(data), request_size):
            chunk = view[off : off + request_size]
            body = handle + struct.pack(">QI", off, len(chunk)) + chunk
            yield (up, FXP_WRITE), FXP_WRITE, body, 0
        on_bytes(len(data))
        yield (up, FXP_FSETSTAT), FXP_FSETSTAT, handle + attrs(up.mode, up.mtime), 0
        yield (up, FXP_CLOSE), FXP_CLOSE, handle, 0

    def on_reply(owner: tuple[Upload, int], kind: int, payload: bytes) -> None:
        up, asked = owner
        if asked == FXP_OPEN:
            files.on_open(up, kind, payload, up.part)
            return
        if is_ok(kind, payload):
            up.stat_set = up.stat_set or asked == FXP_FSETSTAT
        else:
            error = status_error(payload, up.part)
            if not (asked == FXP_FSETSTAT and isinstance(error, Unsupported)):
                up.error = up.error or error  # (unsupported: the caller sets them by path)
        if asked == FXP_CLOSE:  # everything of this file has been answered
            files.finished(up)

    def opening(up: Upload) -> Request:
        return (up, FXP_OPEN), FXP_OPEN, string(up.part) + _CREATE_TAIL, 64

    pipe.stream(files.requests(per_file, opening), on_reply, gather=True)


def read_whole(path: str) -> bytes:
    """The bytes of a local file, with no system call more than that takes (`open()` adds
    four per file: an `fstat`, an `ioctl`, an `lseek` and another `fstat`)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        pieces = []
        while piece := os.read(fd, 1 << 20):
            pieces.append(piece)
        return b"".join(pieces)
    finally:
        os.close(fd)


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
    #: the open window's generation its OPEN was sent in (see `workers.OpenWindow`)
    generation: int = 0
    handle: bytes = field(default=b"", repr=False)
    chunks: dict[int, bytes] = field(default_factory=dict, repr=False)
    eof: bool = False


def download_many(
    pipe: SftpPipe,
    downloads: Sequence[Download],
    request_size: int,
    on_bytes: Callable[[int], None],
    *,
    window: Callable[[], tuple[int, int]] | None = None,
    on_done: Callable[[Download], None] = lambda _d: None,
) -> None:
    """Fetch each file: OPEN; READ its planned size, CLOSE — a sliding window of files.

    At most `window()[0]` files are open (or being opened) at once (default: all); as soon
    as a file's handle comes back its READs and CLOSE are sent, and the next file's OPEN
    with them. Each file is handed to `on_done` as its CLOSE is answered, so the caller
    writes it while the others are on their way (a batch cut in chunks of the window
    waited two round trips per chunk, then wrote the whole chunk with nothing on its way).
    Requests go out together, many per SSH packet (`SftpPipe.stream(gather=True)`).

    The last READ of a file asks for one byte more than the plan leaves: a READ of a disk
    file returns all it asks for, or up to the end of the file (SFTP v3, "for normal disk
    files"), so a reply of exactly what was left says the file ends where the plan said —
    and a longer one that it grew. (It was a READ of its own past the end that had to hit
    EOF: one request and one reply more per file.)

    Sets `data`, `error`, or `retry` (size changed or short read) on each download.
    """

    def finish(down: Download) -> None:
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
        on_done(down)

    files = _Window(downloads, window, finish)

    def per_file(down: Download) -> Iterator[Request]:
        """The READs and CLOSE of a file whose handle came back."""
        handle = string(down.handle)
        for off in range(0, max(down.size, 1), request_size):
            n = min(request_size, down.size - off)
            last = off + request_size >= down.size
            ask = n + 1 if last else n  # (one byte more: see the docstring)
            yield (down, off, n, last), FXP_READ, handle + struct.pack(">QI", off, ask), ask
        yield (down, -1, 0, False), FXP_CLOSE, handle, 0

    def opening(down: Download) -> Request:
        return (down, -2, 0, False), FXP_OPEN, string(down.src) + _OPEN_TAIL, 64

    def on_reply(owner: tuple[Download, int, int, bool], kind: int, payload: bytes) -> None:
        down, off, n, last = owner
        if off == -2:  # OPEN
            files.on_open(down, kind, payload, down.src)
        elif off == -1:  # CLOSE: everything of this file has been answered
            files.finished(down)
        elif kind == FXP_DATA:
            data = SftpPipe._takestring(payload, 0)[0]
            if len(data) != n:
                down.retry = True  # grew (one byte more came), or a short read
            else:
                down.chunks[off] = data
                down.eof = down.eof or last
        elif kind == FXP_STATUS:
            code = struct.unpack_from(">I", payload)[0]
            if code == FX_EOF and last and n == 0:
                down.eof = True  # an empty file, as planned
            elif code == FX_EOF:
                down.retry = True  # shrank
            elif code != FX_OK and down.error is None:
                down.error = status_error(payload, down.src)
        else:
            raise paramiko.SSHException(f"unexpected SFTP reply {kind} to READ")

    pipe.stream(files.requests(per_file, opening), on_reply, limit=MAX_REPLY_BYTES, gather=True)
