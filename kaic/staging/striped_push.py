"""A push's striped files (`kaic.staging.stripes`): the part file on the staging host is
written by every stream at once, hashed there by exec per segment as the segments'
writes are acknowledged, and renamed into place over the pipe."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import paramiko

from kaic.staging.connect import REQUEST_SIZE, SftpConnection
from kaic.staging.destination import Destination
from kaic.staging.pipeline import (
    FXF_CREAT,
    FXF_TRUNC,
    FXF_WRITE,
    FXP_WRITE,
    SftpPipe,
    Unsupported,
    framed_write,
    is_ok,
    status_error,
)
from kaic.staging.plan import sha256_file
from kaic.staging.remote_fs import RemoteSide, normalize_remote
from kaic.staging.stripes import (
    Chunk,
    Segment,
    Striped,
    chunks_of,
    hash_local,
    local_sha256,
    mismatched,
    remote_part,
    resume_point,
    resume_ranges,
)


def remote_rename(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
    """Rename `src` over `dst` on the staging host: posix-rename; only a host without it
    gets remove + rename (SFTPv3's rename refuses to overwrite). Any other failure leaves
    `dst` as it was: a good file is never removed for a rename that cannot happen."""
    try:
        sftp.posix_rename(src, dst)
    except OSError as exc:
        # paramiko raises SSH_FX_OP_UNSUPPORTED as a bare IOError carrying the host's text
        if exc.errno is not None or "unsupported" not in str(exc).lower():
            raise
        with contextlib.suppress(OSError):
            sftp.remove(dst)
        sftp.rename(src, dst)


class StripedPush(Destination):
    """How a push moves its striped files (`RemoteDestination` is one)."""

    def prepare(self, striped: Striped, side: RemoteSide, pipe: object) -> int | None:
        assert isinstance(pipe, SftpPipe)
        task, part = striped.task, remote_part(striped.task)
        try:
            have = pipe.size_of(part)
            if have is not None and have > task.size:
                pipe.close_handle(pipe.open_one(part, FXF_WRITE | FXF_CREAT | FXF_TRUNC))
                have = 0
            if not have:
                return 0
            ranges = resume_ranges(have, striped.chunk)
            theirs = side.range_sha256(part, ranges)
            fd = os.open(task.src, os.O_RDONLY)
            try:
                mine: list[str | None] = [local_sha256(fd, *r) for r in ranges]
            finally:
                os.close(fd)
        except OSError as exc:
            self.file_error(task, exc, side)
            return None
        return self.resumed(task, resume_point(ranges, mine, theirs), "sending")

    def cut_back(self, striped: Striped, conn: SftpConnection) -> None:
        if conn.is_active():
            with contextlib.suppress(Exception):
                conn.sftp.truncate(remote_part(striped.task), striped.done_prefix())

    def started(self, striped: Striped, side: RemoteSide) -> None:
        if not self.options.verify:
            return
        striped.start_thread(
            lambda: hash_local(striped, striped.task.src, at_once=True), "kaic-hash-src"
        )
        striped.start_thread(lambda: self._hash_sent(striped, side), "kaic-hash-host")

    def _hash_sent(self, striped: Striped, side: RemoteSide) -> None:
        """The host's sha256 of each segment as soon as its writes are acknowledged (one
        exec for whatever is ready), until every segment has one."""
        part = remote_part(striped.task)
        batch: list[Segment] = []

        def ready() -> bool:
            batch[:] = [s for s in striped.segments if s.sent and not (s.kept or s.hashing)]
            return (
                bool(batch)
                or striped.state == "failed"
                or all(s.kept or s.hashing for s in striped.segments)
            )

        while True:
            if not striped.wait(ready) or not batch:
                return
            with striped.cond:
                for seg in batch:
                    seg.hashing = True
            try:
                sums = side.exec_range_sha256(part, [s.range for s in batch])
            except Exception:  # a lost connection surfaces in the streams
                sums = [None] * len(batch)
            with striped.cond:
                for seg, digest in zip(batch, sums, strict=True):
                    seg.remote = digest
                striped.cond.notify_all()
            if None in sums:
                return  # no exec there: the whole file is checked instead

    def send(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        assert isinstance(pipe, SftpPipe)
        first = striped.take_waiting()
        if first is None:
            return
        task, part = striped.task, remote_part(striped.task)
        errors: list[OSError] = []
        mine = [0]  # this stream's requests without a reply
        try:
            fd = os.open(task.src, os.O_RDONLY)
            try:
                handle = pipe.open_one(part, FXF_WRITE | FXF_CREAT)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            striped.give_back([first])
            striped.fail()
            self.file_error(task, exc, side)
            return

        def requests() -> Iterator[tuple[tuple[Chunk, int], int, bytes | bytearray, int] | None]:
            for chunk in chunks_of(striped, first, lambda: mine[0] > 0):
                if chunk is None:
                    yield None
                    continue
                for pos in range(chunk.start, chunk.end, REQUEST_SIZE):
                    n = min(REQUEST_SIZE, chunk.end - pos)
                    body, view = framed_write(handle, pos, n)
                    if os.preadv(fd, [view], pos) != n:
                        errors.append(OSError(f"{task.src} became shorter while being sent"))
                        return
                    chunk.pending += 1
                    mine[0] += 1
                    yield (chunk, n), FXP_WRITE, body, 0
                chunk.issued = True
                if chunk.pending == 0:
                    striped.chunk_done(chunk)
                if errors:
                    return

        def on_reply(owner: tuple[Chunk, int], kind: int, payload: bytes) -> None:
            chunk, n = owner
            chunk.pending -= 1
            mine[0] -= 1
            if is_ok(kind, payload):
                self.stats.add_bytes(n)
            elif not errors:
                errors.append(status_error(payload, part))
            if chunk.issued and chunk.pending == 0:
                striped.chunk_done(chunk)

        try:
            pipe.stream(requests(), on_reply)
        finally:
            os.close(fd)
        pipe.close_handle(handle)
        if errors:
            striped.fail()
            self.file_error(task, errors[0], side)

    def finish(self, striped: Striped, side: RemoteSide, pipe: object) -> None:
        assert isinstance(pipe, SftpPipe)
        task, part = striped.task, remote_part(striped.task)
        try:
            if self.options.verify and not self._striped_verified(striped, side, pipe):
                return
            pipe.setstat(part, task.mode, task.mtime)
            error = pipe.rename_many([(part, normalize_remote(task.dst))])[0]
            if isinstance(error, Unsupported):
                remote_rename(side.sftp, part, normalize_remote(task.dst))
            elif error is not None:
                raise error
        except OSError as exc:
            self.file_error(task, exc, side)
            return
        self.stats.file_done(task)

    def _striped_verified(self, striped: Striped, side: RemoteSide, pipe: SftpPipe) -> bool:
        """Whether the part file holds the source: per segment (one mismatching segment is
        sent once more), or as a whole where the host runs no commands."""
        task, part = striped.task, remote_part(striped.task)
        for thread in striped.threads:
            thread.join()
        if any(s.remote is None for s in striped.segments if not s.kept):
            return self._whole_verified(striped, side, pipe)
        bad = mismatched(striped)
        if not bad:
            return True
        self.warn(f"sha256 mismatch for {task.dst}; sending it again")
        self.resend(striped, side, pipe, bad)
        for seg, digest in zip(bad, side.range_sha256(part, [s.range for s in bad]), strict=True):
            seg.remote = digest
        if not mismatched(striped):
            return True
        self.stats.fail(task, "sha256 mismatch after re-sending")
        pipe.remove_many([part])
        return False

    def _whole_verified(self, striped: Striped, side: RemoteSide, pipe: SftpPipe) -> bool:
        task, part = striped.task, remote_part(striped.task)
        mine = sha256_file(task.src)
        if side.remote_sha256([part]).get(part) == mine:
            return True
        self.warn(f"sha256 mismatch for {task.dst}; sending it again")
        self.resend(striped, side, pipe, [s for s in striped.segments if not s.kept])
        if side.remote_sha256([part]).get(part) == mine:
            return True
        self.stats.fail(task, "sha256 mismatch after re-sending")
        pipe.remove_many([part])
        return False
