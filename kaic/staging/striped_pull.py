"""A pull's striped files (`kaic.staging.stripes`): every stream writes its chunks into
the local part file at their offsets; the host hashes the source's segments by one exec
while they download, this side each segment as it completes."""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterator

from kaic.staging.arrival_hash import ArrivalHashes
from kaic.staging.connect import REQUEST_SIZE, SftpConnection
from kaic.staging.destination import Destination
from kaic.staging.pipeline import (
    FXF_READ,
    FXP_ATTRS,
    FXP_DATA,
    FXP_FSTAT,
    FXP_READ,
    SftpPipe,
    status_error,
    string,
)
from kaic.staging.plan import FileTask, part_name, sha256_file
from kaic.staging.remote_fs import RemoteSide, normalize_remote
from kaic.staging.stripes import (
    Chunk,
    Striped,
    chunks_of,
    local_sha256,
    mismatched,
    read_attrs_size,
    resume_point,
    resume_ranges,
)


class StripedPull(Destination):
    """How a pull moves its striped files (`LocalDestination` is one)."""

    def _finish(self, task: FileTask, side: RemoteSide) -> None:
        """Mode and mtime on the part file, then rename it over its name."""
        raise NotImplementedError

    def prepare(self, striped: Striped, side: RemoteSide, pipe: object) -> int | None:
        task, part = striped.task, part_name(striped.task.dst)
        try:
            have: int | None = os.stat(part).st_size
        except FileNotFoundError:
            have = None
        except OSError as exc:
            self.file_error(task, exc, side)
            return None
        flags = os.O_RDWR | os.O_CREAT
        if have is None or have > task.size:
            flags |= os.O_TRUNC
            have = 0
        try:
            striped.fd = os.open(part, flags, 0o666)
            if not have:
                return 0
            ranges = resume_ranges(have, striped.chunk)
            mine: list[str | None] = [local_sha256(striped.fd, *r) for r in ranges]
            theirs = side.range_sha256(task.src, ranges)
        except OSError as exc:
            self.file_error(task, exc, side)
            return None
        return self.resumed(task, resume_point(ranges, mine, theirs), "fetching")

    def cut_back(self, striped: Striped, conn: SftpConnection) -> None:
        if striped.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(striped.fd, striped.done_prefix())

    def started(self, striped: Striped, side: RemoteSide) -> None:
        if not self.options.verify:
            return
        part = part_name(striped.task.dst)
        arrivals = ArrivalHashes(striped)
        striped.on_arrival = arrivals.arrived
        striped.start_thread(lambda: arrivals.run(part), "kaic-hash-part")
        if side.exec_ok is not False:
            striped.start_thread(lambda: self._hash_source(striped, side), "kaic-hash-host")

    @staticmethod
    def _hash_source(striped: Striped, side: RemoteSide) -> None:
        """The host's sha256 of every segment to fetch, while they download (one exec)."""
        todo = [s for s in striped.segments if not s.kept]
        try:
            sums = side.exec_range_sha256(striped.task.src, [s.range for s in todo])
        except Exception:  # a lost connection surfaces in the streams
            return
        with striped.cond:
            for seg, digest in zip(todo, sums, strict=True):
                seg.remote = digest
            striped.cond.notify_all()

    def send(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        assert isinstance(pipe, SftpPipe)
        first = striped.take_waiting()
        if first is None:
            return
        task, src = striped.task, normalize_remote(striped.task.src)
        fd = striped.fd
        assert fd is not None
        try:
            handle = pipe.open_one(src, FXF_READ)
        except OSError as exc:
            striped.give_back([first])
            striped.fail()
            self.file_error(task, exc, side)
            return
        errors: list[OSError] = []
        mine = [0]  # this stream's requests without a reply
        quoted = string(handle)
        on_arrival = striped.on_arrival

        def requests() -> Iterator[tuple[tuple[Chunk | None, int, int], int, bytes, int] | None]:
            # The source's size now, checked against the plan (a file that changed since
            # is fetched again in the next round).
            yield (None, 0, 0), FXP_FSTAT, quoted, 64
            for chunk in chunks_of(striped, first, lambda: mine[0] > 0):
                if chunk is None:
                    yield None
                    continue
                for pos in range(chunk.start, chunk.end, REQUEST_SIZE):
                    n = min(REQUEST_SIZE, chunk.end - pos)
                    chunk.pending += 1
                    mine[0] += 1
                    yield (chunk, pos, n), FXP_READ, quoted + struct.pack(">QI", pos, n), n
                chunk.issued = True
                if chunk.pending == 0:
                    striped.chunk_done(chunk)
                if errors:
                    return

        def on_reply(owner: tuple[Chunk | None, int, int], kind: int, payload: bytes) -> None:
            chunk, pos, n = owner
            if chunk is None:
                size = read_attrs_size(payload) if kind == FXP_ATTRS else None
                if size is not None and size != task.size and not errors:
                    errors.append(OSError(f"{task.src} changed while being fetched"))
                return
            chunk.pending -= 1
            mine[0] -= 1
            if kind == FXP_DATA and struct.unpack_from(">I", payload)[0] == n:
                data = memoryview(payload)[4 : 4 + n]
                try:
                    pwrite_all(fd, data, pos)
                except OSError as exc:
                    if not errors:
                        exc.filename = exc.filename or part_name(task.dst)
                        errors.append(exc)
                else:
                    self.stats.add_bytes(n)
                    if on_arrival is not None:
                        on_arrival(pos, data)
            elif not errors:
                errors.append(
                    status_error(payload, task.src)
                    if kind != FXP_DATA
                    else OSError(f"{task.src} changed while being fetched")
                )
            if chunk.issued and chunk.pending == 0:
                striped.chunk_done(chunk)

        pipe.stream(requests(), on_reply)
        pipe.close_handle(handle)
        if errors:
            striped.fail()
            self.file_error(task, errors[0], side)

    def finish(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        assert isinstance(pipe, SftpPipe)
        task = striped.task
        try:
            if self.options.verify and not self._striped_verified(striped, side, pipe):
                return
            if striped.fd is not None:
                os.close(striped.fd)
                striped.fd = None
        except OSError as exc:
            self.file_error(task, exc, side)
            return
        self._finish(task, side)

    def _striped_verified(self, striped: Striped, side: RemoteSide, pipe: SftpPipe) -> bool:
        """Whether the part file holds the source: per segment (one mismatching segment is
        fetched once more), or as a whole where the host runs no commands."""
        task, part = striped.task, part_name(striped.task.dst)
        for thread in striped.threads:
            thread.join()
        whole = any(s.remote is None for s in striped.segments if not s.kept)
        if whole:
            if side.remote_sha256([task.src]).get(task.src) == sha256_file(part):
                return True
            bad = [s for s in striped.segments if not s.kept]
        else:
            bad = mismatched(striped)
            if not bad:
                return True
        self.warn(f"sha256 mismatch for {task.dst}; fetching it again")
        self.resend(striped, side, pipe, bad)
        if whole:
            ok = side.remote_sha256([task.src]).get(task.src) == sha256_file(part)
        else:
            theirs = side.range_sha256(task.src, [s.range for s in bad])
            fd = os.open(part, os.O_RDONLY)
            try:
                ok = all(
                    local_sha256(fd, *seg.range) == digest
                    for seg, digest in zip(bad, theirs, strict=True)
                )
            finally:
                os.close(fd)
        if ok:
            return True
        self.stats.fail(task, "sha256 mismatch after fetching again")
        if striped.fd is not None:
            os.close(striped.fd)
            striped.fd = None
        os.remove(part)
        return False


def pwrite_all(fd: int, data: memoryview, pos: int) -> None:
    """Write all of `data` at `pos` (a short write is continued; none at all is an error):
    what a pull hashes as it arrives must be what the part file holds."""
    while data:
        done = os.pwrite(fd, data, pos)
        if done <= 0:
            raise OSError(errno.EIO, "short write")
        data, pos = data[done:], pos + done
