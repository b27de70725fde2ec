"""Large files striped over several streams at once, resumable and verified per segment.

One stream is held back by round trips on a far link: sshd lets an SFTP channel have 2 MiB
on its way (its window), so at 30 ms RTT one channel moves at most ~70 MB/s whatever the
link could carry (OpenSSH's `sftp`, 64 x 32 KiB requests in flight, gets ~50 MB/s there).
So a large file is cut into `chunk`s (1 MiB) that every worker of the sync — each with its
own SFTP channel (`pipeline.SftpPipe`), spread over the sync's connections — takes in
order, keeping its channel full: the file moves over all of them at once. A worker takes
its next chunk before the replies of the last one are in, so a stream never drains
between chunks.

**Segments** (64 MiB, several chunks) are the unit of verification and of resuming:

- Verify (the default): the sha256 of each segment is computed on both sides *while the
  file moves* — here by a thread that reads the source (push) or the part file as its
  segments complete (pull); on the host by one exec per batch of segments
  (`host_hash.RANGE_SHA256`: python3 reading the ranges, else `tail | head | openssl`),
  started as soon as a segment's writes are acknowledged (push) or for all segments when
  the file starts (pull; the source does not change under us). After the last byte only
  the last segment is left to hash. A segment that does not match is sent again once
  (only that segment); a second mismatch fails the file. Where the host runs no
  commands, the whole file's sha256 is compared instead (the center's checksums, else
  read back), as for small files.
- Resume: an attempt that ends (a cut connection) cuts its part file back to what
  arrived without a gap (`Stripes.cut_back`). One that was killed leaves holes where
  chunks were in flight, but only within `REACH` of the part file's end: no stream takes
  a chunk further than that beyond the first one not yet acknowledged. So a resume
  hashes the part file on both sides (one exec there) in ranges (`resume_ranges`): all
  of it before that last stretch at once, the stretch in pieces of whole chunks; it
  goes on from the end of the last range before the first that differs. Nothing is
  trusted unhashed, whatever the part file's size says.

Files up to one segment are verified by one whole-file sha256, as before. A worker that
cannot open a pipe (the host refuses more channels) takes a whole file the one-stream way
(`Destination.copy_batch`).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import os
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from kaic.staging.connect import SftpConnection
from kaic.staging.plan import FileTask, part_name
from kaic.staging.remote_fs import RemoteSide, normalize_remote

#: what one stream takes at a time
CHUNK = 1 << 20
#: the unit of verification and of resuming
SEGMENT = 64 << 20
#: how far beyond the first chunk not yet acknowledged a stream may take one, so the holes
#: an interrupted transfer leaves in its part file lie within this distance of its end.
#: Six streams with their windows full hold ~20-40 MiB (at 16 MiB, streams waited for one
#: another at 30 ms RTT: 818 of 1,336 takes had to wait)
REACH = 64 << 20
#: resuming compares that last stretch in at most this many pieces (one range each in
#: the host's hashing exec)
RESUME_PIECES = 32
_HASH_BLOCK = 1 << 20


@dataclass(eq=False)
class Segment:
    start: int
    end: int
    #: chunks handed out and not acknowledged yet, or not handed out yet
    left: int = 0
    #: every byte is on the destination (acknowledged, or found there when resuming)
    sent: bool = False
    #: it matched when resuming: nothing to send or verify
    kept: bool = False
    local: str | None = None
    remote: str | None = None
    #: the host's hash was asked for (push: once the segment is sent)
    hashing: bool = False

    @property
    def range(self) -> tuple[int, int]:
        return self.start, self.end


class Later:
    """`Striped.take`'s answer while the next chunk is out of reach."""


LATER = Later()


@dataclass(eq=False)
class Chunk:
    segment: Segment
    start: int
    end: int
    #: requests whose reply has not arrived
    pending: int = 0
    #: every request of the chunk was sent
    issued: bool = False
    #: every reply arrived
    done: bool = False


class Striped:
    """One large file on its way over several streams: its segments, the chunks still to
    hand out, and who prepares and who finishes it."""

    def __init__(self, task: FileTask, abort: threading.Event, chunk: int, segment: int):
        self.task = task
        self.abort = abort
        self.chunk = max(1, chunk)
        self.segments = [
            Segment(start, min(task.size, start + segment))
            for start in range(0, task.size, max(1, segment))
        ] or [Segment(0, 0)]
        self.cond = threading.Condition()
        #: new -> preparing -> sending -> finishing -> done, or failed
        self.state = "new"
        self.todo: collections.deque[Chunk] = collections.deque()
        self.busy = 0
        #: where this attempt started (what the part file held and matched), and every
        #: chunk it planned from there, in order
        self.base = 0
        self.planned: list[Chunk] = []
        #: the first planned chunk not acknowledged yet (an index into `planned`)
        self._floor = 0
        #: a chunk is handed out only when it ends within this many bytes of the first
        #: chunk not yet acknowledged: the holes an interrupted transfer leaves in its part
        #: file lie within that distance of its end (`resume_ranges` looks there)
        #: pull: the local part file, written by every stream
        self.fd: int | None = None
        #: pull: told of each piece a stream wrote (its offset, its bytes), to hash
        #: segments as they arrive (`arrival_hash`)
        self.on_arrival: Callable[[int, memoryview], None] | None = None
        self.threads: list[threading.Thread] = []
        #: the exec hashing of the host (push: it is waited for once the file is sent)

    # -- the work --------------------------------------------------------------------------
    def open_for_work(self) -> bool:
        with self.cond:
            return self.state in ("new", "preparing") or (
                self.state == "sending" and bool(self.todo)
            )

    def plan(self, segments: list[Segment], start: int = 0) -> None:
        """Queue the chunks of `segments` (in order) from byte `start` on; the segments
        before `start` are kept (the part file holds them, checked)."""
        with self.cond:
            for seg in segments:
                if seg.end <= start and seg.end > seg.start:
                    seg.kept = seg.sent = True
                    continue
                seg.sent = False
                seg.remote = None  # (the source's own hash stays: it did not change)
                seg.hashing = False
                starts = range(max(seg.start, start), seg.end, self.chunk)
                seg.left = len(starts)
                new = [Chunk(seg, s, min(seg.end, s + self.chunk)) for s in starts]
                self.todo.extend(new)
                self.planned.extend(new)
                if not starts:
                    seg.sent = True
            self.cond.notify_all()

    def done_prefix(self) -> int:
        """How many bytes from the start are on the destination without a gap."""
        with self.cond:
            pos = self.base
            for chunk in self.planned:
                if not chunk.done or chunk.start != pos:
                    break
                pos = chunk.end
            return pos

    def take(self) -> Chunk | Later | None:
        """The next chunk to send; `LATER` while it lies beyond the streams' reach (see
        `reach`); None when there is none left."""
        with self.cond:
            if self.state not in ("sending", "resending") or not self.todo or self.abort.is_set():
                return None
            head = self.todo[0]
            while self._floor < len(self.planned) and self.planned[self._floor].done:
                self._floor += 1
            if self._floor < len(self.planned):
                floor = self.planned[self._floor].start
                if floor < head.start and head.end - floor > REACH:
                    return LATER
            self.busy += 1
            return self.todo.popleft()

    def take_waiting(self) -> Chunk | None:
        """`take`, waiting while the next chunk is out of reach."""
        while True:
            got = self.take()
            if not isinstance(got, Later):
                return got
            self.wait_progress()

    def wait_progress(self) -> None:
        """Wait a moment for a chunk to be acknowledged."""
        with self.cond:
            self.cond.wait(0.2)

    def chunk_done(self, chunk: Chunk) -> None:
        with self.cond:
            self.busy -= 1
            chunk.done = True
            chunk.segment.left -= 1
            if chunk.segment.left == 0:
                chunk.segment.sent = True
            self.cond.notify_all()

    def give_back(self, chunks: list[Chunk]) -> None:
        """Chunks a stream took but did not send (it failed): nobody sends them now."""
        with self.cond:
            self.busy -= len(chunks)
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            self.state = "failed"
            self.todo.clear()
            self.cond.notify_all()

    def claim_finish(self) -> bool:
        """Whether the caller is the one to finish the file (all chunks acknowledged)."""
        with self.cond:
            if self.state == "sending" and not self.todo and self.busy == 0:
                self.state = "finishing"
                return True
            return False

    def wait(self, ready: Callable[[], bool]) -> bool:
        """Wait until `ready()` (under the lock); False when the sync is aborted."""
        with self.cond:
            while not ready():
                if self.abort.is_set():
                    return False
                self.cond.wait(0.2)
            return True

    def start_thread(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self.threads.append(thread)
        thread.start()

    def close(self) -> None:
        """Release what the file holds here (the sync is over for it, or aborted)."""
        with self.cond:
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout=30)
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def local_sha256(fd: int, start: int, end: int) -> str:
    """sha256 of bytes `[start, end)` of an open local file."""
    digest = hashlib.sha256()
    pos = start
    while pos < end:
        block = os.pread(fd, min(_HASH_BLOCK, end - pos), pos)
        if not block:
            break
        digest.update(block)
        pos += len(block)
    return digest.hexdigest()


class Stripes:
    """The part of a `Destination` that moves striped files: each direction says how a
    file is prepared (resumed), how a stream sends its chunks, and how a file is checked
    and put in place (`upload.RemoteDestination`, `download.LocalDestination`)."""

    def work_on(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        """A worker's share of `striped`: prepare it if nobody has, stream chunks while
        there are any, and finish the file if this worker acknowledged the last chunk."""
        with striped.cond:
            prepare = striped.state == "new"
            if prepare:
                striped.state = "preparing"
        if prepare:
            try:
                start = self.prepare(striped, side, pipe)
            except BaseException:
                striped.fail()
                raise
            if start is None:
                striped.fail()
                return
            # Planned and its hashing started before other streams may take a chunk (they
            # wait while it is "preparing"): a pull's hashing hears of every piece.
            with striped.cond:
                striped.base = start
            striped.plan(striped.segments, start)
            self.started(striped, side)
            with striped.cond:
                striped.state = "sending"
                striped.cond.notify_all()
        elif not striped.wait(lambda: striped.state != "preparing"):
            return
        try:
            self.send(striped, side, pipe)
        except BaseException:
            striped.fail()
            raise
        if striped.claim_finish():
            try:
                self.finish(striped, side, pipe)
            finally:
                with striped.cond:
                    if striped.state == "finishing":
                        striped.state = "done"
                striped.close()

    def resend(self, striped: Striped, side: RemoteSide, pipe: object, bad: list[Segment]) -> None:
        """Send segments that did not verify once more, over this worker's stream alone."""
        with striped.cond:
            striped.state = "resending"
        striped.plan(bad)
        self.send(striped, side, pipe)
        with striped.cond:
            if striped.state == "resending":
                striped.state = "finishing"

    # -- what each direction does ------------------------------------------------------
    def prepare(self, striped: Striped, side: RemoteSide, pipe: object) -> int | None:
        """Make the part file ready: where to start sending (what it holds that matches the
        source, see `resume_ranges`); None when the file failed."""
        raise NotImplementedError

    def cut_back(self, striped: Striped, conn: SftpConnection) -> None:
        """An attempt ended before the file was done: cut its part file back to what
        arrived without a gap (so the next attempt resumes all of it, holes or not)."""

    def started(self, striped: Striped, side: RemoteSide) -> None:
        """The chunks are queued: start hashing what can be hashed already."""

    def send(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        """Stream chunks of `striped` until none is left to take."""
        raise NotImplementedError

    def finish(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        """Verify, set mode and mtime, rename into place."""
        raise NotImplementedError


def chunks_of(
    striped: Striped, first: Chunk, outstanding: Callable[[], bool]
) -> Iterator[Chunk | None]:
    """The chunks a stream sends: `first`, then whatever it can take. None: the next one
    is out of reach and this stream has replies coming (read one, then ask again)."""
    yield first
    while True:
        got = striped.take()
        if got is None:
            return
        if isinstance(got, Later):
            if outstanding():
                yield None
            else:
                striped.wait_progress()
            continue
        yield got


def resume_ranges(have: int, chunk: int) -> list[tuple[int, int]]:
    """The byte ranges to compare when a part file of `have` bytes is found: all of it
    before the last `REACH` bytes at once, then those in pieces of whole chunks (a striped
    transfer may have left holes there), then the rest."""
    piece = max(chunk, -(-REACH // RESUME_PIECES) // chunk * chunk)
    grid = have // piece * piece
    bounds = [0]
    bounds += [b for b in range(grid - REACH // piece * piece, grid + 1, piece) if b > 0]
    if have > bounds[-1]:
        bounds.append(have)
    return list(itertools.pairwise(bounds))


def resume_point(
    ranges: list[tuple[int, int]], mine: list[str | None], theirs: list[str | None]
) -> int:
    """Where the ranges stop matching (both sides hashed alike from the start)."""
    point = 0
    for (_start, end), local, remote in zip(ranges, mine, theirs, strict=True):
        if local is None or local != remote:
            break
        point = end
    return point


def mismatched(striped: Striped) -> list[Segment]:
    return [s for s in striped.segments if not s.kept and s.local != s.remote]


def remote_part(task: FileTask) -> str:
    return normalize_remote(part_name(task.dst))


def read_attrs_size(payload: bytes) -> int | None:
    """The size in an SFTP ATTRS payload, None when it has none."""
    (flags,) = struct.unpack_from(">I", payload)
    return struct.unpack_from(">Q", payload, 4)[0] if flags & 0x01 else None


def hash_local(striped: Striped, path: str, *, at_once: bool) -> None:
    """This side's sha256 of each segment of `path` not kept, in order: `at_once` (a
    push's source), or each once it is sent (a pull's part file, as segments arrive)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # the transfer reports it
    try:
        for seg in striped.segments:
            if seg.kept or seg.local is not None:
                continue

            def arrived(seg: Segment = seg) -> bool:
                return seg.sent or striped.state == "failed"

            if not at_once and not striped.wait(arrived):
                return
            if striped.state == "failed":
                return
            digest = local_sha256(fd, *seg.range)
            with striped.cond:
                seg.local = digest
                striped.cond.notify_all()
    finally:
        os.close(fd)
