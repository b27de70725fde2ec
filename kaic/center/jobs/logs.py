"""Reading job logs: byte ranges, `tail` offsets, and following a growing file.

Logs are the raw files the executor writes (`state_dir/jobs/<id>/stdout|stderr`); a
reader names a byte offset and gets everything from there, so a client that reconnects
with its offset loses and repeats nothing.

Following is shared (`LogHub`): one `LogWatcher` per followed log holds the file open once,
looks at its size every `FOLLOW_POLL` seconds and wakes its followers when it grows; the
bytes near the end, which every follower that keeps up asks for next, are read once and
handed to all of them from memory. A follower holds no file, no timer and reads nothing from
the database: it waits on its watcher. The job's end is learned once per log, not per
follower: the ledger announces each terminal state it writes (`LogHub.job_ended`), which
the watcher confirms with one read of the job (the announcement comes from inside the
writing transaction, which might still roll back); a sweep every `END_SWEEP` seconds asks,
in one query for all followed jobs, which ended without an announcement reaching this
process (another center on the same database). Knowing the end, a watcher looks at the
file once more, so the last bytes a job wrote are never dropped; its followers end once
they have them.

A requeued job (`jobs.requeue`) writes each attempt's log to a file of its own: a follower of
one attempt ends, the same way, once the job has moved on to a later attempt (the ledger
announces the requeue like an end), and the client goes on with the next attempt's file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from kaic.center.jobs.store import JobStore

logger = logging.getLogger("kaic.center.logs")

CHUNK = 64 * 1024
#: seconds between looks at the size of a followed log (one look per log, not per follower)
FOLLOW_POLL = 0.05
#: seconds between the sweeps that ask the database which followed jobs ended
END_SWEEP = 1.0
#: bytes of a log's latest chunks kept in memory for the followers that keep up
SHARED_BYTES = 256 * 1024


def open_log(path: Path) -> int | None:
    """A descriptor of the log at `path`, or None while there is none (not written yet).

    Never through a link: a job running as its user's account owns its directory (Slurm
    writes the logs there as that account) and could put a link to any file of the center's
    in the place of a log; a log that is a link reads as no log at all."""
    try:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise


def log_size(path: Path) -> int:
    """The current size of a log (0 if it does not exist yet, or is a link)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return 0
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last `lines` lines of the log start.

    A final newline ends the last line rather than starting an empty one.
    """
    fd = open_log(path)
    if fd is None:
        return 0
    with os.fdopen(fd, "rb") as handle:
        size = handle.seek(0, 2)
        if lines <= 0 or size == 0:
            return size
        handle.seek(size - 1)
        position = size - 1 if handle.read(1) == b"\n" else size
        seen = 0
        while position > 0:
            start = max(0, position - CHUNK)
            handle.seek(start)
            block = handle.read(position - start)
            index = len(block)
            while True:
                index = block.rfind(b"\n", 0, index)
                if index < 0:
                    break
                seen += 1
                if seen == lines:
                    return start + index + 1
            position = start
        return 0


def read_log(path: Path, offset: int, end: int) -> Iterator[bytes]:
    """The bytes of the log from `offset` up to `end` (what existed when asked). A plain
    generator: the response iterates it on a worker thread, off the event loop every
    follower and session shares (a finished log may be gigabytes)."""
    if offset >= end:
        return
    fd = open_log(path)
    if fd is None:
        return
    with os.fdopen(fd, "rb") as handle:
        handle.seek(offset)
        remaining = end - offset
        while remaining > 0:
            data = handle.read(min(CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data


class LogWatcher:
    """One followed log on one event loop: the file held open once, its size, the job's end.

    Lives while it has followers; `final` once the job is terminal and `size` is the log's
    last. Its loop's ticker calls `look` every `poll` seconds.
    """

    def __init__(self, hub: LogHub, job_id: str, path: Path, attempt: int | None = None) -> None:
        self.hub = hub
        self.job_id = job_id
        self.path = path
        #: the attempt whose log this is (None: the job's only one)
        self.attempt = attempt
        self.size = 0
        self.final = False
        #: why the log cannot be read (its followers fail with it, and reconnect)
        self.error: OSError | None = None
        self.followers = 0
        self._fd: int | None = None
        self._shared: dict[int, bytes] = {}  # the latest chunks read, by offset
        self._shared_bytes = 0
        self._changed = asyncio.Event()
        self._confirming: asyncio.Task[None] | None = None
        self._announced_again = False
        self.look()
        # An end announced before this watcher existed reached no one: ask once now.
        self.announce_end()

    async def changed(self) -> None:
        """Wait until the size, the end or the error changes."""
        await self._changed.wait()

    def read(self, position: int) -> bytes:
        """Up to `CHUNK` bytes from `position` (below `size`): near the end, where every
        follower that keeps up reads next, read once and shared; else read for this one."""
        shared = self._shared.get(position)
        if shared is not None:
            return shared
        if self._fd is None:
            return b""
        data = os.pread(self._fd, min(CHUNK, self.size - position), position)
        if data and self.size - position <= SHARED_BYTES:
            self._shared[position] = data
            self._shared_bytes += len(data)
            while self._shared_bytes > SHARED_BYTES:
                self._shared_bytes -= len(self._shared.pop(next(iter(self._shared))))
        return data

    def look(self) -> None:
        """Open the file once it exists; wake the followers if it grew."""
        try:
            if self._fd is None:
                self._fd = open_log(self.path)
                if self._fd is None:
                    return  # not written yet (a pending job)
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            if self.error is None:
                logger.warning("job %s: cannot read its log %s: %s", self.job_id, self.path, exc)
            self.error = exc
            self._notify()
            return
        self.error = None
        if size > self.size:
            self.size = size
            self._notify()

    def announce_end(self) -> None:
        """The job may have ended: confirm it with one read of the job (see the module)."""
        if self.final:
            return
        if self._confirming is not None:
            self._announced_again = True
            return
        self._confirming = asyncio.get_running_loop().create_task(self._confirm_end())

    def end(self) -> None:
        """The job is terminal: look at the file a last time, and let the followers finish."""
        if self.final:
            return
        self.look()
        self.final = True
        self._notify()

    def close(self) -> None:
        """The last follower left."""
        if self._confirming is not None:
            self._confirming.cancel()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._shared.clear()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def _confirm_end(self) -> None:
        while True:
            self._announced_again = False
            try:
                if await asyncio.to_thread(self.hub.is_over, self.job_id, self.attempt):
                    self.end()
            except Exception:
                # A database that cannot be read now: the sweep asks again.
                logger.exception("job %s: could not read whether it ended", self.job_id)
            if self.final or not self._announced_again:
                self._confirming = None
                return


class LogHub:
    """Every followed log of a center: one watcher per log and event loop, and per loop one
    ticker that looks at the loop's logs and one sweep for jobs that ended unannounced.

    `is_terminal(job_id)` and `ended_among(job_ids)` read the database (in a thread); a job
    that no longer exists counts as ended. `attempts(job_ids)` (optional) reads the jobs'
    current attempts: a followed attempt that is no longer the current one has ended.
    """

    def __init__(
        self,
        is_terminal: Callable[[str], bool],
        ended_among: Callable[[list[str]], set[str]],
        *,
        poll: float = FOLLOW_POLL,
        sweep: float = END_SWEEP,
        attempts: Callable[[list[str]], dict[str, int]] | None = None,
    ) -> None:
        self.is_terminal = is_terminal
        self.ended_among = ended_among
        self.attempts = attempts
        self.poll = poll
        self.sweep = sweep
        self._loops: dict[asyncio.AbstractEventLoop, _LoopLogs] = {}
        #: followed job ids, with their watchers (all loops); `job_ended` reads it from
        #: other threads: a plain dict lookup
        self._followed: dict[str, int] = {}

    async def follow(
        self, job_id: str, path: Path, offset: int, attempt: int | None = None
    ) -> AsyncIterator[bytes]:
        """The log at `path` (of `attempt`, when given) from `offset` as the job writes it;
        ends once the job is terminal, or past that attempt, and the log drained. The file
        may not exist yet (a pending job), and `offset` may lie beyond its end: both simply
        wait for data."""
        watcher = self._subscribe(job_id, path, attempt)
        position = offset
        try:
            while True:
                if watcher.error is not None:
                    raise watcher.error
                data = watcher.read(position) if position < watcher.size else b""
                if data:
                    position += len(data)
                    yield data
                    if position < watcher.size:
                        await asyncio.sleep(0)  # a long backlog must not hold up the others
                    continue
                if watcher.final:
                    return
                await watcher.changed()
        finally:
            self._unsubscribe(watcher)

    def job_ended(self, job_id: str) -> None:
        """A job's terminal state is being written (any thread; cheap when not followed)."""
        if job_id not in self._followed:
            return
        for loop in list(self._loops):
            with contextlib.suppress(RuntimeError):  # a loop that has closed meanwhile
                loop.call_soon_threadsafe(self._announce, loop, job_id)

    @property
    def watchers(self) -> int:
        """How many logs are watched (on all loops)."""
        return sum(len(logs.watchers) for logs in list(self._loops.values()))

    def _announce(self, loop: asyncio.AbstractEventLoop, job_id: str) -> None:
        logs = self._loops.get(loop)
        for watcher in logs.of_jobs({job_id}) if logs else []:
            watcher.announce_end()

    def is_over(self, job_id: str, attempt: int | None) -> bool:
        """Whether the log of `job_id`'s `attempt` is complete: the job ended, or a later
        attempt is the current one (reads the database)."""
        if self.is_terminal(job_id):
            return True
        return self._moved_on({(job_id, attempt)}) != set()

    def _moved_on(self, watched: set[tuple[str, int | None]]) -> set[tuple[str, int | None]]:
        """Of (job id, attempt) pairs, those whose job runs a later attempt now."""
        pairs = {(j, a) for j, a in watched if a is not None}
        if not pairs or self.attempts is None:
            return set()
        current = self.attempts(sorted({j for j, _ in pairs}))
        return {(j, a) for j, a in pairs if a is not None and current.get(j, a) > a}

    def _subscribe(self, job_id: str, path: Path, attempt: int | None = None) -> LogWatcher:
        loop = asyncio.get_running_loop()
        logs = self._loops.get(loop)
        if logs is None:
            logs = self._loops[loop] = _LoopLogs()
            logs.tasks = [loop.create_task(self._tick(logs)), loop.create_task(self._sweep(logs))]
        watcher = logs.watchers.get(path)
        if watcher is None:
            # Counted as followed before the watcher asks whether the job already ended, so
            # that no announcement can fall between the two.
            self._followed[job_id] = self._followed.get(job_id, 0) + 1
            watcher = logs.watchers[path] = LogWatcher(self, job_id, path, attempt)
        watcher.followers += 1
        return watcher

    def _unsubscribe(self, watcher: LogWatcher) -> None:
        watcher.followers -= 1
        if watcher.followers:
            return
        loop = asyncio.get_running_loop()
        logs = self._loops[loop]
        del logs.watchers[watcher.path]
        watcher.close()
        left = self._followed.pop(watcher.job_id) - 1
        if left:
            self._followed[watcher.job_id] = left
        if not logs.watchers:
            del self._loops[loop]
            for task in logs.tasks:
                task.cancel()

    async def _tick(self, logs: _LoopLogs) -> None:
        """Look at every log of the loop each `poll` seconds (one timer, not one each)."""
        while True:
            await asyncio.sleep(self.poll)
            for watcher in list(logs.watchers.values()):
                if not watcher.final:
                    watcher.look()

    async def _sweep(self, logs: _LoopLogs) -> None:
        """Each `sweep` seconds, one query: which followed jobs have ended."""
        while True:
            await asyncio.sleep(self.sweep)
            open_logs = [w for w in logs.watchers.values() if not w.final]
            waiting = sorted({w.job_id for w in open_logs})
            if not waiting:
                continue
            try:
                ended = await asyncio.to_thread(self.ended_among, waiting)
                moved = await asyncio.to_thread(
                    self._moved_on, {(w.job_id, w.attempt) for w in open_logs}
                )
            except Exception:
                logger.exception("could not read which followed jobs ended")
                continue
            for watcher in logs.of_jobs(ended):
                watcher.end()
            for watcher in open_logs:
                if (watcher.job_id, watcher.attempt) in moved:
                    watcher.end()


class _LoopLogs:
    """The watchers of one event loop, by log path, and that loop's ticker and sweep."""

    def __init__(self) -> None:
        self.watchers: dict[Path, LogWatcher] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def of_jobs(self, job_ids: set[str]) -> list[LogWatcher]:
        return [w for w in self.watchers.values() if w.job_id in job_ids]


def job_log_hub(jobs: JobStore) -> LogHub:
    """The hub of a center whose jobs are in `jobs`."""

    def is_terminal(job_id: str) -> bool:
        row = jobs.get(job_id)
        return row is None or row.terminal

    def ended_among(job_ids: list[str]) -> set[str]:
        rows = jobs.get_many(job_ids)
        return {i for i in job_ids if i not in rows or rows[i].terminal}

    def attempts(job_ids: list[str]) -> dict[str, int]:
        return {i: row.attempt for i, row in jobs.get_many(job_ids).items()}

    return LogHub(is_terminal, ended_among, attempts=attempts)
