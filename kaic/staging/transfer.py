"""Resumable, verified, parallel transfers: `push` (local -> remote) and `pull` (remote -> local).

How a file travels:

1. Its data goes to a part file next to the destination (`plan.part_name`:
   `.NAME.CHECK.kaic-part`, always within NAME_MAX), never to NAME itself.
2. If that part file already exists (an earlier, interrupted run), the sha256 of its first N
   bytes is compared on both sides (remote: `head -c N | sha256sum` over SSH exec, else
   read back over SFTP); if equal, the transfer resumes at N, else it restarts at 0.
3. The sha256 of the whole file is computed while sending and compared with the other side's
   (remote: `sha256sum` over SSH exec; else the center's checksums, one call per batch; else
   read back). A mismatch is re-sent once from 0; a second mismatch is reported, never
   accepted.
4. Mode and mtime are set on the part file, which is then renamed over NAME atomically
   (`posix-rename@openssh.com` / `os.replace`).

Work is spread over `parallel` SSH connections with several SFTP channels each (small files
are latency-bound: many requests in flight); small files travel in batches so one
`sha256sum` call verifies many. Within a batch, small files with nothing to resume go over
`pipeline.SftpPipe`: the OPENs of the whole batch are sent back to back, then all WRITEs +
FSETSTATs (mode, mtime) + CLOSEs, then — once verified — all renames, so a batch costs a
few round trips instead of ~5 per file (pull: OPEN, READ, CLOSE likewise).

When things go wrong:

- **A server short of file descriptors** answers some OPENs with SSH_FX_FAILURE (OpenSSH's
  sftp-server on EMFILE; the embedded endpoint over its 512-file budget). That is
  back-pressure: `_OpenWindow` halves how many files a batch opens at once (all workers
  share it), and the refused files are tried again.
- **Failed files are tried again** within the run: after each round the files that failed
  for a reason that may pass (not a refusal, not a second sha256 mismatch) go again after a
  growing pause, `file_attempts` rounds in all; only then are they reported.
- **A dropped connection** (or a center restart: the embedded endpoint goes with it) is
  ridden out: the engine reconnects with backoff (0.2 s doubling to 5 s) for up to
  `reconnect_budget` seconds without progress, plans again (finished files are skipped,
  part files resumed) and goes on; after that it gives up with `Unreachable` (exit 5).
  A host that never answered fails at once.
- **Permission denied** becomes `Rejected` naming the remote path (exit 6) when the staging
  host refused, a `KaicError` naming the local path when the local system did.
- **Ctrl-C** stops the workers, closes the connections (so no paramiko thread is left to
  print a traceback) and raises `Interrupted`: part files stay, the next run resumes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import queue
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import paramiko

from kaic.errors import ExitCode, Interrupted, KaicError, Rejected, Unreachable, UsageError
from kaic.staging.connect import REQUEST_SIZE, SftpConnection, SshTarget, open_sftp
from kaic.staging.pipeline import (
    Download,
    SftpFailure,
    SftpPipe,
    Unsupported,
    Upload,
    download_many,
    upload_many,
)
from kaic.staging.plan import (
    FileTask,
    LocalSide,
    SyncPlan,
    Warn,
    part_name,
    plan_sync,
    sha256_prefix,
)
from kaic.staging.remote_fs import (
    ChecksumFn,
    ChecksumsFn,
    RemotePermissionError,
    RemoteSide,
    normalize_remote,
    one_by_one,
    remote_denied,
)

#: (bytes, files) done since the last call — for progress bars
ProgressFn = Callable[[int, int], None]
#: what the sync is doing when it is not moving bytes ("reconnecting…"); None: transferring
StatusFn = Callable[[str | None], None]
Connect = Callable[[], SftpConnection]

SMALL_FILE = 4 << 20
#: small files per batch: one `sha256sum` exec (remote_fs hashes 64 names per call) and one
#: pipelined round of requests each
BATCH_FILES = 64
BATCH_BYTES = 8 << 20
# OpenSSH allows 10 sessions per connection (MaxSessions): each worker holds an SFTP
# channel and up to two exec channels at once, plus the connection's main SFTP channel.
CHANNELS_PER_CONNECTION = 3
#: seconds of reconnecting (without progress) before a sync gives up on a lost connection
RECONNECT_BUDGET_S = 60.0
RECONNECT_START_S = 0.2
RECONNECT_CAP_S = 5.0
#: rounds a failed file gets (the first try included) before it is reported
FILE_ATTEMPTS = 4
RETRY_START_S = 0.5
RESUME_HINT = "run the same command again to resume"


class TransferFailed(KaicError):
    """Some files could not be transferred or verified."""

    exit_code = ExitCode.ERROR


@dataclass
class SyncOptions:
    parallel: int = 2
    excludes: list[str] = field(default_factory=list)
    delete: bool = False
    dry_run: bool = False
    checksum: bool = False
    verify: bool = True
    #: keep reconnecting through an outage for this many seconds without progress ...
    reconnect_budget: float = RECONNECT_BUDGET_S
    #: ... and at most this many times in a row without progress (a connection that drops
    #: again and again)
    retries: int = 30
    #: rounds for a file that failed for a reason that may pass, before it is reported
    file_attempts: int = FILE_ATTEMPTS
    #: SFTP channels (worker threads) per connection
    channels: int = CHANNELS_PER_CONNECTION
    #: pipeline the SFTP requests of batches of small files (`pipeline.SftpPipe`)
    pipeline: bool = True


@dataclass
class SyncResult:
    files_transferred: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    bytes_transferred: int = 0
    seconds: float = 0.0
    verified: bool = False
    dry_run: bool = False
    plan: SyncPlan | None = None
    #: files that failed (path: reason); non-empty means exit code 1
    failures: dict[str, str] = field(default_factory=dict)
    #: those of `failures` the staging host refused (permission): path -> the remote path
    refused: dict[str, str] = field(default_factory=dict)
    reconnects: int = 0

    def summary(self) -> dict[str, Any]:
        """CLI.md's `--json` document."""
        return {
            "files_transferred": self.files_transferred,
            "files_skipped": self.files_skipped,
            "files_deleted": self.files_deleted,
            "bytes_transferred": self.bytes_transferred,
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
        }


def _connection_error(exc: BaseException, conns: list[SftpConnection]) -> bool:
    if isinstance(exc, (EOFError, paramiko.SSHException, Unreachable)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)) or "Socket is closed" in str(exc):
        return True
    return any(not c.is_active() for c in conns)


class _Stats:
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


class _OpenWindow:
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


def _refused_open(error: OSError | None, opened: bool) -> bool:
    """Whether a pipelined file failed because the server had no room to open it."""
    return not opened and isinstance(error, SftpFailure)


def _chunks(tasks: list[FileTask], window: _OpenWindow) -> Iterator[tuple[list[FileTask], int]]:
    """`tasks` in chunks of the window's current size, with the generation each was cut at."""
    start = 0
    while start < len(tasks):
        size, generation = window.current()
        yield tasks[start : start + size], generation
        start += size


def _close_file(f: Any) -> None:
    """Close a paramiko SFTP file. If that fails (the connection is gone) mark it closed, so
    its `__del__` does not try again later and print "Exception ignored in …"."""
    try:
        f.close()
    except BaseException:
        f._closed = True
        raise


def _batches(tasks: list[FileTask]) -> Iterator[list[FileTask]]:
    """Big files alone (largest first), small files grouped."""
    big = sorted((t for t in tasks if t.size >= SMALL_FILE), key=lambda t: -t.size)
    for task in big:
        yield [task]
    batch: list[FileTask] = []
    size = 0
    for task in (t for t in tasks if t.size < SMALL_FILE):
        batch.append(task)
        size += task.size
        if len(batch) >= BATCH_FILES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _setstat(sftp: paramiko.SFTPClient, path: str, mode: int, mtime: int) -> None:
    attr = paramiko.SFTPAttributes()
    attr.st_mode = mode & 0o7777
    attr.st_atime = attr.st_mtime = mtime
    try:
        from paramiko.sftp import CMD_SETSTAT

        # One round trip instead of chmod + utime.
        sftp._request(CMD_SETSTAT, path, attr)  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - a paramiko without the private helper
        sftp.chmod(path, mode & 0o7777)
        sftp.utime(path, (mtime, mtime))


def _remote_rename(sftp: paramiko.SFTPClient, src: str, dst: str) -> None:
    try:
        sftp.posix_rename(src, dst)
    except OSError:
        # Servers without posix-rename: plain rename refuses to overwrite.
        with contextlib.suppress(OSError):
            sftp.remove(dst)
        sftp.rename(src, dst)


class _LazySftp:
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


class _WorkerPipe:
    """A worker's `SftpPipe`, opened on first use; None where the host refuses one.

    Opening it closes the worker's paramiko channel (reopened if needed again), so that a
    worker holds one SFTP channel + its exec channels: OpenSSH's MaxSessions is 10.
    """

    def __init__(self, conn: SftpConnection, sftp: _LazySftp, enabled: bool):
        self._conn = conn
        self._sftp = sftp
        self._pipe: SftpPipe | None = None
        self._refused = not enabled

    def get(self) -> SftpPipe | None:
        if self._pipe is None and not self._refused:
            self._sftp.close_channel()
            try:
                self._pipe = SftpPipe(self._conn.transport)
            except (paramiko.SSHException, OSError):
                if not self._conn.is_active():
                    raise
                self._refused = True  # e.g. MaxSessions: use paramiko's SFTP channel
        return self._pipe

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()


class _Connector:
    """Opens extra connections in the background while the sync is being planned (a login
    takes a few round trips and ~0.1 s of CPU: overlapping it helps short syncs)."""

    def __init__(self, connect: Connect, n: int):
        self._results: list[SftpConnection | BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._one, args=(connect,), name="kaic-connect", daemon=True)
            for _ in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _one(self, connect: Connect) -> None:
        try:
            conn: SftpConnection | BaseException = connect()
        except BaseException as exc:
            conn = exc
        with self._lock:
            self._results.append(conn)

    def take(self, n: int) -> tuple[list[SftpConnection], list[BaseException]]:
        """Up to `n` connections, and the errors of the logins that failed (a server that
        caps connections per user refuses some: the sync goes on with fewer)."""
        for thread in self._threads:
            thread.join()
        with self._lock:
            good = [c for c in self._results if isinstance(c, SftpConnection)][:n]
            errors = [e for e in self._results if isinstance(e, BaseException)]
            for conn in good:
                self._results.remove(conn)
        return good, errors

    def close(self) -> None:
        """Wait for the logins still running and close what nobody took."""
        for thread in self._threads:
            thread.join()
        with self._lock:
            for conn in self._results:
                if isinstance(conn, SftpConnection):
                    conn.close()
            self._results.clear()


@dataclass
class _Outage:
    """A stretch of lost connections with no progress in between."""

    since: float
    drops: int = 0
    delay: float = RECONNECT_START_S

    def next_delay(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, RECONNECT_CAP_S)
        return delay


class _Engine:
    def __init__(
        self,
        push: bool,
        connect: Connect,
        sources: list[str],
        dest: str,
        options: SyncOptions,
        *,
        progress: ProgressFn | None,
        on_plan: Callable[[SyncPlan], None] | None,
        on_status: StatusFn | None,
        warn: Warn,
        checksums_fn: ChecksumsFn | None,
        sleep: Callable[[float], None],
        clock: Callable[[], float],
    ):
        self.push = push
        self.connect = connect
        self.sources = sources
        self.dest = dest
        self.options = options
        self.on_plan = on_plan
        self.on_status = on_status or (lambda _s: None)
        self.warn = warn
        self.checksums_fn = checksums_fn
        self.sleep = sleep
        self.clock = clock
        self.stats = _Stats(progress)
        self.window = _OpenWindow()
        self.local = LocalSide()

    # -- the outer loop: plan, transfer, reconnect -----------------------------------------
    def run(self) -> SyncResult:
        try:
            return self._run()
        except KeyboardInterrupt:
            # The connections are closed by now (finally blocks below); part files stay.
            raise Interrupted("interrupted", hint=RESUME_HINT) from None
        except PermissionError as exc:
            raise self._permission_error(exc) from None

    def _run(self) -> SyncResult:
        started = time.monotonic()
        result = SyncResult(verified=self.options.verify, dry_run=self.options.dry_run)
        first = True
        connected = False
        outage: _Outage | None = None
        while True:
            conns: list[SftpConnection] = []
            extra: _Connector | None = None
            mark = self.stats.mark()
            try:
                conns.append(self.connect())
                connected = True
                if not self.options.dry_run and self.options.parallel > 1:
                    extra = _Connector(self.connect, self.options.parallel - 1)
                remote = RemoteSide(conns[0], checksums_fn=self.checksums_fn)
                plan = self._plan(remote)
                if outage is not None:
                    self.on_status(None)
                if first:
                    first = False
                    result.plan = plan
                    result.files_skipped = len(plan.skipped)
                    if self.on_plan is not None:
                        self.on_plan(plan)
                if self.options.dry_run:
                    result.files_deleted = len(plan.delete_files)
                    break
                self._prepare(plan, remote)
                if plan.transfers:
                    wanted = min(max(1, self.options.parallel), len(plan.transfers))
                    if extra is not None:
                        more, errors = extra.take(wanted - 1)
                        conns += more
                        if errors and len(conns) < wanted:
                            self.warn(f"using {len(conns)} of {wanted} connections: {errors[0]}")
                    self._transfer_all(plan, conns)
                if self.stats.failures:
                    break
                result.files_deleted += self._delete(plan, remote)
                break
            except Exception as exc:
                if not _connection_error(exc, conns):
                    raise
                if not connected:  # the host never answered: nothing to ride out
                    if isinstance(exc, KaicError):
                        raise
                    raise Unreachable(f"cannot reach the staging host: {exc}") from exc
                if outage is None or self.stats.mark() != mark:
                    outage = _Outage(self.clock())  # progress since the last loss: start over
                outage.drops += 1
                waited = self.clock() - outage.since
                if waited > self.options.reconnect_budget or outage.drops > self.options.retries:
                    raise Unreachable(
                        f"lost the connection to the staging host and could not resume "
                        f"within {self.options.reconnect_budget:.0f} s "
                        f"({outage.drops} attempts); last error: {exc}",
                        hint=f"{RESUME_HINT}: finished files are skipped, partial files resumed",
                    ) from exc
                result.reconnects += 1
                delay = outage.next_delay()
                if outage.drops == 1:
                    self.warn(
                        f"connection lost ({exc}); reconnecting… (for up to "
                        f"{self.options.reconnect_budget:.0f} s)"
                    )
                else:
                    self.warn(f"still no connection ({exc}); trying again in {delay:.1f} s")
                self.on_status("reconnecting…")
                self.sleep(delay)
            finally:
                if extra is not None:
                    extra.close()
                for conn in conns:
                    conn.close()
        result.files_transferred = self.stats.files
        result.bytes_transferred = self.stats.bytes
        result.failures = dict(self.stats.failures)
        result.refused = dict(self.stats.refused)
        result.seconds = time.monotonic() - started
        return result

    def _permission_error(self, exc: PermissionError) -> KaicError:
        """A refusal that stopped the whole sync, as a KaicError naming the path."""
        path = exc.filename if exc.filename is not None else "?"
        if isinstance(exc, RemotePermissionError):
            return Rejected(
                f"permission denied on the staging host: {path}",
                hint="choose a remote path your account may "
                + ("write to (relative paths start in your home there)" if self.push else "read"),
            )
        return KaicError(
            f"permission denied: {path}",
            hint="check that path's permissions on this machine, or choose another one",
        )

    def _plan(self, remote: RemoteSide) -> SyncPlan:
        if self.push:
            return plan_sync(
                self.local,
                self.sources,
                remote,
                self.dest,
                excludes=self.options.excludes,
                delete=self.options.delete,
                checksum=self.options.checksum,
                warn=self.warn,
            )
        return plan_sync(
            remote,
            self.sources,
            self.local,
            self.dest,
            excludes=self.options.excludes,
            delete=self.options.delete,
            checksum=self.options.checksum,
            warn=self.warn,
        )

    def _prepare(self, plan: SyncPlan, remote: RemoteSide) -> None:
        """Create destination directories; remove part files nothing will resume."""
        for directory in plan.mkdirs:
            if self.push:
                _remote_mkdir_p(remote.sftp, normalize_remote(directory))
            else:
                os.makedirs(directory, exist_ok=True)
        for part in plan.stale_parts():
            try:
                if self.push:
                    _remote_remove(remote.sftp, part)
                else:
                    os.remove(part)
            except FileNotFoundError:
                pass

    def _delete(self, plan: SyncPlan, remote: RemoteSide) -> int:
        deleted = 0
        for path in plan.delete_files:
            try:
                if self.push:
                    _remote_remove(remote.sftp, path)
                else:
                    os.remove(path)
                deleted += 1
            except FileNotFoundError:
                pass
        for path in plan.delete_dirs:
            try:
                if self.push:
                    remote.sftp.rmdir(normalize_remote(path))
                else:
                    os.rmdir(path)
            except OSError as exc:
                self.warn(f"could not remove directory {path}: {exc}")
        return deleted

    # -- workers -------------------------------------------------------------------------
    def _transfer_all(self, plan: SyncPlan, conns: list[SftpConnection]) -> None:
        """Transfer the plan's files; files that failed for a reason that may pass go again
        (after a growing pause) until `file_attempts` rounds are used up."""
        pending = list(plan.transfers)
        for attempt in range(1, max(1, self.options.file_attempts) + 1):
            self.stats.retry.clear()
            self._run_workers(pending, plan.parts, conns)
            pending = list(self.stats.retry.values())
            if not pending or attempt >= self.options.file_attempts:
                return
            first = pending[0].dst
            delay = min(RETRY_START_S * 2 ** (attempt - 1), RECONNECT_CAP_S)
            self.warn(
                f"{len(pending)} file(s) failed (e.g. {first}: "
                f"{self.stats.failures.get(first, '?')}); trying them again in {delay:.1f} s "
                f"(round {attempt + 1} of {self.options.file_attempts})"
            )
            self.sleep(delay)

    def _run_workers(
        self, tasks: list[FileTask], parts: dict[str, int], conns: list[SftpConnection]
    ) -> None:
        work: queue.Queue[list[FileTask]] = queue.Queue()
        batches = list(_batches(tasks))
        for batch in batches:
            work.put(batch)
        n_workers = min(len(batches), len(conns) * max(1, self.options.channels))
        abort = threading.Event()
        errors: list[BaseException] = []

        def worker(index: int) -> None:
            conn = conns[index % len(conns)]
            sftp = _LazySftp(conn)
            pipe = _WorkerPipe(conn, sftp, self.options.pipeline)
            try:
                side = RemoteSide(
                    conn, cast(paramiko.SFTPClient, sftp), checksums_fn=self.checksums_fn
                )
                while not abort.is_set():
                    try:
                        batch = work.get_nowait()
                    except queue.Empty:
                        return
                    if self.push:
                        self._push_batch(batch, side, parts, pipe)
                    else:
                        self._pull_batch(batch, side, pipe)
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
        except BaseException:
            # Ctrl-C lands here, in the main thread. Stop the workers before anything else
            # happens: closing the connections wakes those waiting on the server, and their
            # paramiko files are closed before the interpreter exits.
            abort.set()
            for conn in conns:
                conn.close()
            for thread in threads:
                thread.join(timeout=10)
            raise
        if errors:
            # A dropped connection makes every worker on it fail: report that, not a symptom.
            for exc in errors:
                if _connection_error(exc, conns):
                    raise exc
            raise errors[0]

    def _file_error(self, task: FileTask, exc: OSError, side: RemoteSide) -> None:
        """One file failed (a lost connection is raised instead: the sync resumes)."""
        if _connection_error(exc, [side.conn]):
            raise exc
        if isinstance(exc, PermissionError):
            local = (task.src,) if self.push else (task.dst, part_name(task.dst))
            if exc.filename is not None and exc.filename in local:
                verb, path = ("read", task.src) if self.push else ("write", task.dst)
                self.stats.fail(task, f"cannot {verb} {path}: permission denied")
            else:
                remote = task.dst if self.push else task.src
                self.stats.fail(
                    task, f"permission denied on the staging host: {remote}", refused=remote
                )
            return
        if isinstance(exc, SftpFailure):
            reason = "the staging host answered 'failure' (it may be out of open files or space)"
        else:
            reason = str(exc)
        self.stats.fail(task, reason, retry=True)

    # -- push ----------------------------------------------------------------------------
    def _push_batch(
        self, batch: list[FileTask], side: RemoteSide, parts: dict[str, int], pipes: _WorkerPipe
    ) -> None:
        sent: list[tuple[FileTask, str]] = []
        # Mode and mtime are already set on the part files sent over the pipe (FSETSTAT).
        stat_done: set[int] = set()
        quick = [t for t in batch if t.size < SMALL_FILE and part_name(t.dst) not in parts]
        pipe = pipes.get() if quick else None
        if pipe is not None:
            for chunk, generation in _chunks(quick, self.window):
                self._upload_pipelined(chunk, generation, pipe, side, sent, stat_done)
        else:
            quick = []
        fast = {id(t) for t in quick}
        for task in batch:
            if id(task) in fast:
                continue
            try:
                sent.append((task, self._upload(task, side, parts.get(part_name(task.dst)))))
            except OSError as exc:
                self._file_error(task, exc, side)
        if not sent:
            return
        if self.options.verify:
            remote = side.remote_sha256([part_name(t.dst) for t, _ in sent])
            checked = []
            for task, digest in sent:
                if remote.get(part_name(task.dst)) == digest:
                    checked.append(task)
                    continue
                self.warn(f"sha256 mismatch for {task.dst}; sending it again")
                stat_done.discard(id(task))
                try:
                    again = self._upload(task, side, None)
                    part = part_name(task.dst)
                    if side.remote_sha256([part]).get(part) == again:
                        checked.append(task)
                    else:
                        self.stats.fail(task, "sha256 mismatch after re-sending")
                        side.sftp.remove(normalize_remote(part))
                except OSError as exc:  # this file fails; the others go on
                    self._file_error(task, exc, side)
        else:
            checked = [t for t, _ in sent]
        ready = []
        for task in checked:
            if id(task) in stat_done:
                ready.append(task)
                continue
            try:
                _setstat(side.sftp, normalize_remote(part_name(task.dst)), task.mode, task.mtime)
            except OSError as exc:
                self._file_error(task, exc, side)
                continue
            ready.append(task)
        if pipe is not None:
            pairs = [(normalize_remote(part_name(t.dst)), normalize_remote(t.dst)) for t in ready]
            unsupported = []
            for task, error in zip(ready, pipe.rename_many(pairs), strict=True):
                if isinstance(error, Unsupported):
                    unsupported.append(task)
                elif error is not None:
                    self._file_error(task, error, side)
                else:
                    self.stats.file_done(task)
            ready = unsupported
        for task in ready:
            part = normalize_remote(part_name(task.dst))
            try:
                _remote_rename(side.sftp, part, normalize_remote(task.dst))
            except OSError as exc:
                self._file_error(task, exc, side)
                continue
            self.stats.file_done(task)

    def _upload_pipelined(
        self,
        tasks: list[FileTask],
        generation: int,
        pipe: SftpPipe,
        side: RemoteSide,
        sent: list[tuple[FileTask, str]],
        stat_done: set[int],
    ) -> None:
        """Send small files to their part files over the pipe (appended to `sent`); a
        server with no room to open some of them shrinks the open window."""
        uploads = [
            Upload(t.src, normalize_remote(part_name(t.dst)), t.mode, t.mtime) for t in tasks
        ]
        upload_many(pipe, uploads, REQUEST_SIZE, self.stats.add_bytes)
        leftovers = []
        for task, up in zip(tasks, uploads, strict=True):
            if up.digest is not None:
                sent.append((task, up.digest))
                if up.stat_set:
                    stat_done.add(id(task))
                continue
            if up.handle:  # opened, then failed: nothing to resume from a broken write
                leftovers.append(up.part)
            elif _refused_open(up.error, False):
                self.window.shrink(generation)
            self._file_error(task, up.error or OSError("upload failed"), side)
        if leftovers:
            pipe.remove_many(leftovers)

    def _upload(self, task: FileTask, side: RemoteSide, part_size: int | None) -> str:
        """Send `task.src` to its part file (resuming when the prefix checks out)."""
        part = normalize_remote(part_name(task.dst))
        offset = 0
        digest = hashlib.sha256()
        if part_size and 0 < part_size <= task.size:
            local = sha256_prefix(task.src, part_size)
            if side.prefix_sha256(part, part_size) == local.hexdigest():
                offset, digest = part_size, local
                self.stats.add_bytes(offset, sent=False)
            else:
                self.warn(f"partial {task.dst} does not match the source; sending from 0")
        with open(task.src, "rb") as src:
            f = side.sftp.open(part, "r+" if offset else "w", bufsize=REQUEST_SIZE)
            try:
                f.set_pipelined(True)
                if offset:
                    f.seek(offset)
                    src.seek(offset)
                while True:
                    block = src.read(REQUEST_SIZE)
                    if not block:
                        break
                    digest.update(block)
                    f.write(block)
                    self.stats.add_bytes(len(block))
            finally:
                _close_file(f)
        return digest.hexdigest()

    # -- pull ----------------------------------------------------------------------------
    def _pull_batch(self, batch: list[FileTask], side: RemoteSide, pipes: _WorkerPipe) -> None:
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
        try:
            slow = self._pull_pipelined(batch, side, pipes, got)
            for task in slow:
                try:
                    got.append((task, self._download(task, side)))
                except OSError as exc:
                    self._file_error(task, exc, side)
        finally:
            if hasher is not None:
                hasher.join()
        for task, digest in got:
            part = part_name(task.dst)
            if self.options.verify:
                expected = remote_sums.get(task.src) or side.remote_sha256([task.src])[task.src]
                if expected != digest:
                    self.warn(f"sha256 mismatch for {task.dst}; fetching it again")
                    try:
                        os.remove(part)
                        digest = self._download(task, side)
                        expected = side.remote_sha256([task.src])[task.src]
                        if expected != digest:
                            self.stats.fail(task, "sha256 mismatch after fetching again")
                            os.remove(part)
                            continue
                    except OSError as exc:  # this file fails; the others go on
                        self._file_error(task, exc, side)
                        continue
            try:
                os.chmod(part, task.mode & 0o7777 or 0o644)
                os.utime(part, (task.mtime, task.mtime))
                os.replace(part, task.dst)
            except OSError as exc:
                self._file_error(task, exc, side)
                continue
            self.stats.file_done(task)

    def _pull_pipelined(
        self,
        batch: list[FileTask],
        side: RemoteSide,
        pipes: _WorkerPipe,
        got: list[tuple[FileTask, str]],
    ) -> list[FileTask]:
        """Fetch the small files of `batch` with nothing to resume over the pipe into their
        part files (appended to `got`); returns the tasks left for the one-by-one path."""
        quick = [t for t in batch if t.size < SMALL_FILE and not os.path.exists(part_name(t.dst))]
        pipe = pipes.get() if quick else None
        if pipe is None:
            return batch
        fast = {id(t) for t in quick}
        slow = [t for t in batch if id(t) not in fast]
        for chunk, generation in _chunks(quick, self.window):
            slow += self._download_pipelined(chunk, generation, pipe, side, got)
        return slow

    def _download_pipelined(
        self,
        tasks: list[FileTask],
        generation: int,
        pipe: SftpPipe,
        side: RemoteSide,
        got: list[tuple[FileTask, str]],
    ) -> list[FileTask]:
        """Fetch small files over the pipe into their part files (appended to `got`);
        returns those to fetch one by one (they changed size since planning)."""
        downloads = [Download(normalize_remote(t.src), t.size) for t in tasks]
        download_many(pipe, downloads, REQUEST_SIZE, self.stats.add_bytes)
        slow = []
        for task, down in zip(tasks, downloads, strict=True):
            if down.retry:
                slow.append(task)
            elif down.data is None:
                if _refused_open(down.error, bool(down.handle)):
                    self.window.shrink(generation)
                self._file_error(task, down.error or OSError("download failed"), side)
            else:
                try:
                    with open(part_name(task.dst), "wb") as out:
                        out.write(down.data)
                except OSError as exc:
                    self._file_error(task, exc, side)
                    continue
                got.append((task, hashlib.sha256(down.data).hexdigest()))
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


def _remote_mkdir_p(sftp: paramiko.SFTPClient, path: str) -> None:
    """`mkdir -p` on the staging host: one round trip for a directory whose parent exists
    (the plan lists new directories parents first)."""
    try:
        sftp.mkdir(path)
        return
    except OSError:
        pass  # it exists, or its parent does not (or we may not: stat tells)
    try:
        st = sftp.stat(path)
    except FileNotFoundError:
        parent = posixpath.dirname(path.rstrip("/"))
        if parent and parent not in (".", "/"):
            _remote_mkdir_p(sftp, parent)
        try:
            sftp.mkdir(path)
        except PermissionError as exc:
            raise remote_denied(path) from exc
        return
    except PermissionError as exc:
        raise remote_denied(path) from exc
    if not stat_mod.S_ISDIR(st.st_mode or 0):
        raise UsageError(f"{path} exists on the staging host and is not a directory")


def _remote_remove(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(normalize_remote(path))
    except PermissionError as exc:
        raise remote_denied(path) from exc


def _connector(target: SshTarget | Connect) -> Connect:
    if isinstance(target, SshTarget):
        return lambda: open_sftp(target)
    return target


def _engine(
    push: bool,
    target: SshTarget | Connect,
    sources: list[str],
    dest: str,
    options: SyncOptions | None,
    *,
    progress: ProgressFn | None,
    on_plan: Callable[[SyncPlan], None] | None,
    on_status: StatusFn | None,
    warn: Warn,
    checksum_fn: ChecksumFn | None,
    checksums_fn: ChecksumsFn | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> _Engine:
    if checksums_fn is None and checksum_fn is not None:
        checksums_fn = one_by_one(checksum_fn)
    return _Engine(
        push,
        _connector(target),
        sources,
        dest,
        options or SyncOptions(),
        progress=progress,
        on_plan=on_plan,
        on_status=on_status,
        warn=warn,
        checksums_fn=checksums_fn,
        sleep=sleep,
        clock=clock,
    )


def push(
    target: SshTarget | Connect,
    local_paths: list[str],
    remote_dest: str,
    options: SyncOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    on_plan: Callable[[SyncPlan], None] | None = None,
    on_status: StatusFn | None = None,
    warn: Warn = lambda _m: None,
    checksum_fn: ChecksumFn | None = None,
    checksums_fn: ChecksumsFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SyncResult:
    """Sync local files/directories to `remote_dest` on the staging host (see module doc).

    `checksums_fn` (many paths per call) or `checksum_fn` (one) are the center's checksums,
    used to verify where the host runs no `sha256sum`.
    """
    return _engine(
        True,
        target,
        local_paths,
        remote_dest,
        options,
        progress=progress,
        on_plan=on_plan,
        on_status=on_status,
        warn=warn,
        checksum_fn=checksum_fn,
        checksums_fn=checksums_fn,
        sleep=sleep,
        clock=clock,
    ).run()


def pull(
    target: SshTarget | Connect,
    remote_paths: list[str],
    local_dest: str,
    options: SyncOptions | None = None,
    *,
    progress: ProgressFn | None = None,
    on_plan: Callable[[SyncPlan], None] | None = None,
    on_status: StatusFn | None = None,
    warn: Warn = lambda _m: None,
    checksum_fn: ChecksumFn | None = None,
    checksums_fn: ChecksumsFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> SyncResult:
    """Sync remote files/directories to `local_dest` (see module doc and `push`)."""
    return _engine(
        False,
        target,
        remote_paths,
        local_dest,
        options,
        progress=progress,
        on_plan=on_plan,
        on_status=on_status,
        warn=warn,
        checksum_fn=checksum_fn,
        checksums_fn=checksums_fn,
        sleep=sleep,
        clock=clock,
    ).run()
