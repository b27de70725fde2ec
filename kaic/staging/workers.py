"""The worker pool of a sync: files in batches, spread over connections and SFTP channels.

Both ways use it alike; what a worker does with a batch is its destination's business
(`Destination.copy_batch`). Here: batching (big files alone, small ones grouped), the
counters every worker records into (`Stats`), the open window all workers share under
back-pressure (`OpenWindow`), each worker's lazily opened channels, and telling a lost
connection (the sync reconnects and resumes) from one file's failure.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import paramiko

from kaic.errors import Unreachable
from kaic.staging.ahead import PipesAhead
from kaic.staging.connect import SftpConnection
from kaic.staging.options import ProgressFn, SyncOptions
from kaic.staging.pipeline import SftpFailure, SftpPipe
from kaic.staging.plan import FileTask
from kaic.staging.remote_fs import ChecksumsFn, RemoteSide
from kaic.staging.stripes import Striped, Stripes

SMALL_FILE = 4 << 20
#: seconds Ctrl-C waits for the streams of striped files to stop at the end of a chunk
STOP_GRACE_S = 3.0
#: small files per batch, at least: one pipelined round of requests, one hashing exec and
#: one round of renames each. A batch is a few round trips one after another, so the small
#: files are spread over the workers in as few batches as that allows (one each, up to
#: `MAX_BATCH_FILES` / `BATCH_BYTES`): 2,000 files over 6 workers were 32 batches of 64
BATCH_FILES = 64
MAX_BATCH_FILES = 512
BATCH_BYTES = 8 << 20
#: files all the workers of a sync hold open at once, together: the embedded SFTP endpoint
#: allows 512 in all (and 256 per channel), and a refused OPEN costs the file a retry round
#: and the user a warning (the window then halves: `OpenWindow`)
SYNC_OPEN_FILES = 480


def open_files(options: SyncOptions) -> int:
    """How many files one worker's pipelined batch holds open at once, at first: its share
    of `SYNC_OPEN_FILES` (80 with the default 2 connections x 3 channels), at most 256."""
    workers = max(1, options.parallel) * max(1, options.channels)
    return max(1, min(256, SYNC_OPEN_FILES // workers))


def connection_error(exc: BaseException, conns: list[SftpConnection]) -> bool:
    """Whether `exc` means a connection is gone (the sync reconnects), not a file failed."""
    if isinstance(exc, (EOFError, paramiko.SSHException, Unreachable)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)) or "Socket is closed" in str(exc):
        return True
    return any(not c.is_active() for c in conns)


class Stats:
    """What the workers did, shared by all of them (and reported by the progress bar)."""

    def __init__(self, progress: ProgressFn | None):
        self.lock = threading.Lock()
        self.files = 0
        self.bytes = 0
        self.progress = progress
        self.failures: dict[str, str] = {}
        self.refused: dict[str, str] = {}
        #: files of this round that failed for a reason that may pass: tried again
        self.retry: dict[str, FileTask] = {}

    def add_bytes(self, n: int, *, sent: bool = True) -> None:
        with self.lock:
            if sent:
                self.bytes += n
        if self.progress is not None:
            self.progress(n, 0)

    def file_done(self, task: FileTask) -> None:
        with self.lock:
            self.files += 1
            self.failures.pop(task.dst, None)
            self.refused.pop(task.dst, None)
        if self.progress is not None:
            self.progress(0, 1)

    def fail(
        self, task: FileTask, reason: str, *, retry: bool = False, refused: str | None = None
    ) -> None:
        with self.lock:
            self.failures[task.dst] = reason
            if refused is not None:
                self.refused[task.dst] = refused
            if retry:
                self.retry[task.dst] = task

    def mark(self) -> tuple[int, int]:
        """Where the sync stands: it made progress when this changes."""
        with self.lock:
            return self.bytes, self.files


class OpenWindow:
    """How many files one pipelined batch may hold open at once, shared by all workers.

    A server short of descriptors refuses OPENs (`SftpFailure`); the window then halves —
    once per window generation, so a dozen workers hitting the same shortage halve it once,
    not a dozen times (TCP's once-per-round-trip rule). It does not grow back within a sync.
    """

    def __init__(self, size: int = BATCH_FILES):
        self._lock = threading.Lock()
        self.size = max(1, size)
        self.generation = 0

    def current(self) -> tuple[int, int]:
        with self._lock:
            return self.size, self.generation

    def shrink(self, generation: int) -> None:
        with self._lock:
            if generation == self.generation and self.size > 1:
                self.size = max(1, self.size // 2)
                self.generation += 1


def refused_open(error: OSError | None, opened: bool) -> bool:
    """Whether a pipelined file failed because the server had no room to open it."""
    return not opened and isinstance(error, SftpFailure)


def close_file(f: Any) -> None:
    """Close a paramiko SFTP file. If that fails (the connection is gone) mark it closed, so
    its `__del__` does not try again later and print "Exception ignored in …"."""
    try:
        f.close()
    except BaseException:
        f._closed = True
        raise


def batches(
    tasks: list[FileTask], *, big: bool = True, workers: int = 1
) -> Iterator[list[FileTask]]:
    """Big files alone (largest first; left out with `big=False`), small files grouped:
    spread over `workers` (see `BATCH_FILES`)."""
    if big:
        for task in sorted((t for t in tasks if t.size >= SMALL_FILE), key=lambda t: -t.size):
            yield [task]
    small = [t for t in tasks if t.size < SMALL_FILE]
    per_batch = min(MAX_BATCH_FILES, max(BATCH_FILES, -(-len(small) // max(1, workers))))
    batch: list[FileTask] = []
    size = 0
    for task in small:
        batch.append(task)
        size += task.size
        if len(batch) >= per_batch or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def striped_files(tasks: list[FileTask], options: SyncOptions) -> list[FileTask]:
    """The files a sync stripes (several streams at once), largest first: the big ones,
    when the sync may stripe."""
    if not (options.stripe and options.pipeline):
        return []
    return sorted((t for t in tasks if t.size >= SMALL_FILE), key=lambda t: -t.size)


def connections_for(tasks: list[FileTask], options: SyncOptions) -> int:
    """How many of its connections a sync uses: one per file, up to `parallel` — and all of
    them once a file is striped, whose streams spread over every connection (one large
    file over one connection had half the streams, and half the speed at 30 ms RTT)."""
    most = max(1, options.parallel)
    return most if striped_files(tasks, options) else min(most, len(tasks))


class Work:
    """What the workers take, in order: the big files, largest first — striped (`stripes`:
    several workers stream one file at once) when the sync may — then batches of small
    files. A worker without a pipe takes a striped file nobody started as a whole."""

    def __init__(
        self,
        tasks: list[FileTask],
        options: SyncOptions,
        abort: threading.Event,
        workers: int = 1,
    ):
        self._lock = threading.Lock()
        self.striped = [
            Striped(t, abort, options.chunk, options.segment) for t in striped_files(tasks, options)
        ]
        self._batches = collections.deque(batches(tasks, big=not self.striped, workers=workers))

    def __len__(self) -> int:
        return len(self.striped) + len(self._batches)

    def next(self, can_stripe: bool) -> Striped | list[FileTask] | None:
        with self._lock:
            for striped in self.striped:
                if not striped.open_for_work():
                    continue
                if can_stripe:
                    return striped
                with striped.cond:
                    if striped.state == "new":
                        striped.state = "whole"
                        return [striped.task]
            return self._batches.popleft() if self._batches else None

    def busy(self) -> bool:
        """Whether a striped file is on its way."""
        return any(s.state in ("sending", "resending", "finishing") for s in self.striped)

    def cut_back(self, stripes: Stripes | None, conns: list[SftpConnection]) -> None:
        """Cut back the part files of striped files this attempt did not finish (see
        `Stripes.cut_back`)."""
        for striped in self.striped:
            if stripes is not None and conns and striped.state not in ("new", "whole", "done"):
                stripes.cut_back(striped, conns[0])

    def close(self, stripes: Stripes | None, conns: list[SftpConnection]) -> None:
        """`cut_back`, then release what the striped files hold."""
        self.cut_back(stripes, conns)
        for striped in self.striped:
            striped.close()


class LazySftp:
    """A worker's paramiko SFTP channel, opened on first use (the pipelined path of small
    files does not need one; this keeps channels per connection under MaxSessions)."""

    def __init__(self, conn: SftpConnection):
        self._conn = conn
        self._client: paramiko.SFTPClient | None = None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            self._client = self._conn.new_sftp()
        return getattr(self._client, name)

    def close_channel(self) -> None:
        """Close the channel if open (the next use opens a new one)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None


class WorkerPipe:
    """A worker's `SftpPipe`: one opened ahead on its connection (`ahead.PipesAhead`), else
    opened on first use; None where the host refuses one.

    Opening it closes the worker's paramiko channel (reopened if needed again), so that a
    worker holds one SFTP channel + its exec channels: OpenSSH's MaxSessions is 10.
    """

    def __init__(
        self,
        conn: SftpConnection,
        sftp: LazySftp,
        enabled: bool,
        window: int | None = None,
        ahead: PipesAhead | None = None,
    ):
        self._conn = conn
        self._sftp = sftp
        self._window = window
        self._ahead = ahead
        self._pipe: SftpPipe | None = None
        self._refused = not enabled

    def get(self) -> SftpPipe | None:
        if self._pipe is None and not self._refused:
            self._sftp.close_channel()
            if self._ahead is not None:  # one opened while the sync was planned
                self._pipe = self._ahead.take(self._conn)
                if self._pipe is not None:
                    return self._pipe
            try:
                self._pipe = SftpPipe(self._conn.transport, window=self._window)
            except (paramiko.SSHException, OSError):
                if not self._conn.is_active():
                    raise
                self._refused = True  # e.g. MaxSessions: use paramiko's SFTP channel
        return self._pipe

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()


#: what a worker does with one batch, over its connection's remote side and its pipe
CopyBatch = Callable[[list[FileTask], RemoteSide, WorkerPipe], None]


def run_workers(
    tasks: list[FileTask],
    conns: list[SftpConnection],
    options: SyncOptions,
    checksums_fn: ChecksumsFn | None,
    copy_batch: CopyBatch,
    stripes: Stripes | None = None,
    ahead: PipesAhead | None = None,
) -> None:
    """Copy `tasks`, `options.channels` worker threads per connection: big files striped
    over all of them (`stripes` moves them), small ones in batches (`copy_batch`); the
    first error stops them all and is raised (a lost connection rather than its
    symptoms)."""
    abort = threading.Event()
    if stripes is None:
        options = dataclasses.replace(options, stripe=False)
    n_workers = len(conns) * max(1, options.channels)
    work = Work(tasks, options, abort, workers=n_workers)
    if not work.striped:
        n_workers = min(len(work), n_workers)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        conn = conns[index % len(conns)]
        sftp = LazySftp(conn)
        pipe = WorkerPipe(conn, sftp, options.pipeline, options.window, ahead)
        try:
            side = RemoteSide(conn, cast(paramiko.SFTPClient, sftp), checksums_fn=checksums_fn)
            while not abort.is_set():
                item = work.next(can_stripe=bool(work.striped) and pipe.get() is not None)
                if item is None:
                    return
                if isinstance(item, Striped):
                    assert stripes is not None
                    stripes.work_on(item, side, pipe.get())
                else:
                    copy_batch(item, side, pipe)
        except BaseException as exc:
            errors.append(exc)
            abort.set()
        finally:
            pipe.close()
            sftp.close_channel()

    threads = [
        threading.Thread(target=worker, args=(i,), name=f"kaic-sftp-{i}", daemon=True)
        for i in range(n_workers)
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
        abort.set()  # (hashing threads of files that failed stop waiting)
        work.close(stripes, conns)
    except BaseException:
        # Ctrl-C lands here, in the main thread. Stop the workers before anything else
        # happens: closing the connections wakes those waiting on the server, and their
        # paramiko files are closed before the interpreter exits. Streams of a striped
        # file stop at the end of their chunk: given a moment, their part files are cut
        # back to what arrived without a gap before the connections go (a push's are on
        # the host). Not while a stream still runs: a chunk it wrote before the cut but
        # counts as arrived after it would leave a hole inside what the cut keeps. Streams
        # that outlast the moment stop with the connections; then the part files here (a
        # pull's) are cut (a host's keep what they have: the resume hashes it in ranges).
        abort.set()
        if work.busy():
            for thread in threads:
                thread.join(timeout=STOP_GRACE_S / len(threads))
            if not any(thread.is_alive() for thread in threads):
                work.cut_back(stripes, conns)
        for conn in conns:
            conn.close()
        for thread in threads:
            thread.join(timeout=10)
        work.close(stripes, conns)
        raise
    if errors:
        # A dropped connection makes every worker on it fail: report that, not a symptom.
        for exc in errors:
            if connection_error(exc, conns):
                raise exc
        raise errors[0]
