"""A pull: files from the staging host written to this machine (`LocalDestination`).

Each file goes to its part file here (`plan.part_name`): small files with nothing to resume
over the worker's pipe (OPEN, READ, CLOSE, a sliding window of files into memory, each
written out with its mode and mtime as it completes), the others one by one over paramiko,
resuming a part file whose prefix checks out. While a batch downloads, the host hashes its
sources (one exec); each part file is then checked and renamed over its name
(`os.replace`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading

from kaic.staging.connect import REQUEST_SIZE, SftpConnection
from kaic.staging.plan import FileTask, LocalSide, Side, part_name, sha256_prefix
from kaic.staging.remote_fs import RemoteSide, normalize_remote
from kaic.staging.small_files import Download, download_many
from kaic.staging.striped_pull import StripedPull
from kaic.staging.workers import SMALL_FILE, WorkerPipe, refused_open


class LocalDestination(StripedPull):
    """Files are written to this machine: the pull."""

    remote_access = "read"

    # -- planning and the destination's directories -------------------------------------
    def sides(self, local: LocalSide, remote: RemoteSide) -> tuple[Side, Side]:
        return remote, local

    def makedirs(self, remote: RemoteSide, paths: list[str]) -> None:
        for path in paths:
            os.makedirs(path, exist_ok=True)

    def remove(self, remote: RemoteSide, path: str) -> None:
        os.remove(path)

    def rmdir(self, remote: RemoteSide, path: str) -> None:
        os.rmdir(path)

    def local_refusal(self, task: FileTask, filename: str | None) -> str | None:
        if filename is not None and filename in (task.dst, part_name(task.dst)):
            return f"cannot write {task.dst}: permission denied"
        return None

    def remote_path(self, task: FileTask) -> str:
        return task.src

    # -- files ---------------------------------------------------------------------------
    def one_stream(self, conn: SftpConnection) -> bool:
        """Yes from a near host (this machine, a LAN: `near`). Nothing waits for the network
        there: more connections and workers only take turns on this process's one lock and
        the two cores. On loopback, interleaved rounds: 2,000 small files took 0.57 s this
        way, 0.64 s on two connections with one worker each and 0.88 s with three each; a
        verified 1 GiB file 3.75 s, against 4.36 s (two connections, one stream each) and
        5.5 s (six streams), the machine's CPU 6.0 against 7.4 and 9.6 s. Far, every
        channel of every connection keeps files moving (at 30 ms RTT one worker per
        connection took 1.45 s for the 2,000 files, three 1.14 s). A push keeps them near
        too: its host writes the files, one sftp-server per channel (one connection was
        0.75 against 0.69 s for the small files, and no faster for 1 GiB)."""
        return conn.near()

    def copy_batch(
        self, parts: dict[str, int], batch: list[FileTask], side: RemoteSide, pipes: WorkerPipe
    ) -> None:
        remote_sums: dict[str, str | None] = {}
        hasher: threading.Thread | None = None
        if self.options.verify and side.exec_ok is not False:
            # The source does not change under us: hash it on the host while downloading.
            def hash_sources() -> None:
                # A dropped connection surfaces in the download too: ignore it here.
                with contextlib.suppress(Exception):
                    remote_sums.update(side.exec_sha256([t.src for t in batch]))

            hasher = threading.Thread(target=hash_sources, daemon=True)
            hasher.start()
        got: list[tuple[FileTask, str]] = []
        #: part files written over the pipe: their mode and mtime are set already
        stamped: set[int] = set()
        try:
            slow = self._pull_pipelined(batch, side, pipes, got, parts, stamped)
            for task in slow:
                try:
                    got.append((task, self._download(task, side)))
                except OSError as exc:
                    self.file_error(task, exc, side)
        finally:
            if hasher is not None:
                hasher.join()
        for task, digest in got:
            if self._checked(task, digest, side, remote_sums, stamped):
                self._finish(task, side, stamped=id(task) in stamped)

    def _checked(
        self,
        task: FileTask,
        digest: str,
        side: RemoteSide,
        remote_sums: dict[str, str | None],
        stamped: set[int],
    ) -> bool:
        """Whether the part file of `task` (`digest`: its sha256) holds the source; a
        mismatch is fetched once more from 0 (a new part file: not `stamped`), a second one
        fails the file."""
        if not self.options.verify:
            return True
        expected = remote_sums.get(task.src) or side.remote_sha256([task.src])[task.src]
        if expected == digest:
            return True
        self.warn(f"sha256 mismatch for {task.dst}; fetching it again")
        stamped.discard(id(task))
        part = part_name(task.dst)
        try:
            os.remove(part)
            digest = self._download(task, side)
            expected = side.remote_sha256([task.src])[task.src]
            if expected != digest:
                self.stats.fail(task, "sha256 mismatch after fetching again")
                os.remove(part)
                return False
        except OSError as exc:  # this file fails; the others go on
            self.file_error(task, exc, side)
            return False
        return True

    def _finish(self, task: FileTask, side: RemoteSide, *, stamped: bool = False) -> None:
        """Mode and mtime on the part file (unless `stamped` when it was written), then
        rename it over its name."""
        part = part_name(task.dst)
        try:
            if not stamped:
                os.chmod(part, task.mode & 0o7777 or 0o644)
                os.utime(part, (task.mtime, task.mtime))
            os.replace(part, task.dst)
        except OSError as exc:
            self.file_error(task, exc, side)
            return
        self.stats.file_done(task)

    def _pull_pipelined(
        self,
        batch: list[FileTask],
        side: RemoteSide,
        pipes: WorkerPipe,
        got: list[tuple[FileTask, str]],
        parts: dict[str, int],
        stamped: set[int],
    ) -> list[FileTask]:
        """Fetch the small files of `batch` with no part file to resume (`parts`: the plan's)
        over the pipe into their part files (appended to `got`, their ids to `stamped`);
        returns the tasks left for the one-by-one path."""
        quick = [t for t in batch if t.size < SMALL_FILE and part_name(t.dst) not in parts]
        pipe = pipes.get() if quick else None
        if pipe is None:
            return batch
        fast = {id(t) for t in quick}
        slow = [t for t in batch if id(t) not in fast]
        tasks = {}
        downloads = []
        for task in quick:
            down = Download(normalize_remote(task.src), task.size)
            tasks[id(down)] = task
            downloads.append(down)

        def written(down: Download) -> None:
            """A file whose replies are all in: to its part file while the others come."""
            task = tasks[id(down)]
            if down.retry:
                slow.append(task)
            elif down.data is None:
                if refused_open(down.error, bool(down.handle)):
                    self.window.shrink(down.generation)
                self.file_error(task, down.error or OSError("download failed"), side)
            else:
                try:
                    write_stamped(part_name(task.dst), down.data, task)
                except OSError as exc:
                    self.file_error(task, exc, side)
                    return
                stamped.add(id(task))
                got.append((task, hashlib.sha256(down.data).hexdigest()))
                down.data = None

        download_many(
            pipe,
            downloads,
            REQUEST_SIZE,
            self.stats.add_bytes,
            window=self.window.current,
            on_done=written,
        )
        return slow

    def _download(self, task: FileTask, side: RemoteSide) -> str:
        part = part_name(task.dst)
        src = normalize_remote(task.src)
        offset = 0
        digest = hashlib.sha256()
        try:
            have = os.stat(part).st_size
        except FileNotFoundError:
            have = 0
        if 0 < have <= task.size:
            local = sha256_prefix(part, have)
            if side.prefix_sha256(src, have) == local.hexdigest():
                offset, digest = have, local
                self.stats.add_bytes(offset, sent=False)
            else:
                self.warn(f"partial {task.dst} does not match the source; fetching from 0")
        with side.sftp.open(src, "r") as f, open(part, "r+b" if offset else "wb") as out:
            size = f.stat().st_size or 0
            if offset:
                f.seek(offset)
                out.seek(offset)
                out.truncate()
            if size > offset:
                f.prefetch(size)
            while True:
                block = f.read(REQUEST_SIZE)
                if not block:
                    break
                digest.update(block)
                out.write(block)
                self.stats.add_bytes(len(block))
        return digest.hexdigest()


def write_stamped(path: str, data: bytes, task: FileTask) -> None:
    """`data` as the file `path` (created or truncated), with the mode and mtime of `task`:
    by its descriptor, with no call more than that takes (`open()` adds three: a pull of
    many small files makes a few per file, all on this process's one lock)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, task.mode & 0o7777 or 0o644)
        os.utime(fd, (task.mtime, task.mtime))
    finally:
        os.close(fd)
