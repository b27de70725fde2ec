"""The logs area of the center API: reading and following job logs by byte offset —
nothing lost, nothing repeated.

The center streams raw bytes from an offset and says where it started (``X-Log-Offset``).
A multi-node job's ranks each have their own log (the ``node`` parameter), so each has its
own cursor and offset.
The follower counts every byte it hands on; when the connection drops, the center restarts
or the token is refreshed, it asks again from exactly that offset. A followed stream that
ends is only trusted as the end once the job is terminal: otherwise it reconnects.

A requeued job has one log per attempt (``X-Log-Attempt`` says which one a body is). A follower
of the current attempt whose stream ends while the job has moved on to a later attempt reads
what is left of that attempt's log (complete now), then follows the next attempt's from byte
0: every byte of every attempt, once, in order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from kaic.client.api import CenterClient
from kaic.errors import KaicError, TlsError, Unreachable
from kaic.models import Job, is_terminal

#: How long a follower keeps reconnecting through a continuous outage before giving up.
RECONNECT_BUDGET_S = 300.0
RECONNECT_START_S = 0.2
RECONNECT_CAP_S = 5.0


@dataclass
class LogCursor:
    """Where one stream of one job (or of one rank of a multi-node job) has been read up to."""

    job_id: str
    stream: str  # stdout | stderr
    offset: int = 0
    reconnects: int = 0
    #: a multi-node job's rank; None: the job's own log
    node: int | None = None
    #: the attempt being read (None: the current one, learnt from the first answer)
    attempt: int | None = None
    #: False: read this attempt only (`kaic logs --attempt N`); True: go on to later ones
    next_attempts: bool = True

    def describe(self) -> str:
        rank = f" of rank {self.node}" if self.node is not None else ""
        return f"{self.stream} log{rank} of job {self.job_id}"


def read_log(
    client: CenterClient,
    cursor: LogCursor,
    write: Callable[[bytes], None],
    *,
    follow: bool,
    tail: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    get_job: Callable[[str], Job] | None = None,
    stop: threading.Event | None = None,
    on_reachability: Callable[[bool], None] | None = None,
) -> LogCursor:
    """Copy a job's log stream to `write` from `cursor.offset` (or its last `tail` lines).

    Without `follow`, what exists now. With `follow`, until the job is terminal and the log
    drained, reconnecting from the exact byte offset after any failure (for up to
    `RECONNECT_BUDGET_S` of continuous outage) except a TLS failure, which recurs every time.
    `on_reachability` hears False when a follow cannot reach the center and True when it
    connects (a stream that broke off after connecting, e.g. a silent job's read timeout, is
    no outage by itself).
    """
    first = True
    failing_since: float | None = None
    delay = RECONNECT_START_S
    #: the attempt followed is over: read the rest of its (complete) log, then the next
    draining = False
    while stop is None or not stop.is_set():
        connected = False
        params: dict[str, object] = {
            "stream": cursor.stream,
            "offset": cursor.offset,
            "follow": str(follow and not draining).lower(),
        }
        if cursor.attempt is not None:
            params["attempt"] = cursor.attempt
        if first and tail is not None:
            params["tail"] = tail
        if cursor.node is not None:
            params["node"] = cursor.node
        path = f"/v1/jobs/{quote(cursor.job_id, safe='')}/logs"
        try:
            with client.stream("GET", path, params=params) as resp:
                # Connected: an outage (if any) is over; a silent job's read timeouts below
                # just reconnect, they never count towards giving up.
                failing_since, delay = None, RECONNECT_START_S
                connected = True
                if on_reachability is not None:
                    on_reachability(True)
                start = int(resp.headers.get("X-Log-Offset", cursor.offset))
                served = resp.headers.get("X-Log-Attempt")
                if cursor.attempt is None and served is not None:
                    cursor.attempt = int(served)
                if first and tail is not None:
                    cursor.offset = start
                elif start != cursor.offset:
                    raise KaicError(
                        f"the center resumed the {cursor.describe()} "
                        f"at byte {start}, not {cursor.offset}",
                        hint="the log was truncated on the center",
                    )
                first = False  # the offset is placed: `tail` must not apply again
                for chunk in resp.iter_raw():
                    if chunk:
                        write(chunk)
                        cursor.offset += len(chunk)
            if not follow:
                return cursor
            if draining:  # that attempt's log is read to its end: on to the next one
                assert cursor.attempt is not None
                cursor.attempt, cursor.offset, draining = cursor.attempt + 1, 0, False
                continue
            # A clean end is the end only if the job really ended (a center shutting down
            # can close a stream cleanly too), or moved on past the attempt followed.
            if get_job is None:
                return cursor
            job = get_job(cursor.job_id)
            if cursor.attempt is not None and job.attempt > cursor.attempt:
                if not cursor.next_attempts:
                    return cursor
                draining = True
                continue
            if is_terminal(job.state):
                return cursor
        except TlsError:
            raise  # fails the same way every time: no reconnecting
        except (httpx.TransportError, Unreachable) as exc:
            if not follow:
                if isinstance(exc, Unreachable):
                    raise
                raise Unreachable(f"the log stream broke off: {exc}") from None
            if not connected and on_reachability is not None:
                on_reachability(False)
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > RECONNECT_BUDGET_S:
                raise Unreachable(
                    f"lost the log stream of job {cursor.job_id} for over "
                    f"{RECONNECT_BUDGET_S:.0f} s"
                ) from None
        cursor.reconnects += 1
        sleep(delay)
        delay = min(delay * 2, RECONNECT_CAP_S)
    return cursor


class _Stopped(Exception):
    """A reader thread's write after the follow was stopped: ends that thread quietly."""


def follow_both(
    client: CenterClient,
    job_id: str,
    writers: dict[str, Callable[[bytes], None]],
    *,
    follow: bool,
    tail: int | None = None,
    get_job: Callable[[str], Job] | None = None,
    on_reachability: Callable[[bool], None] | None = None,
    attempt: int | None = None,
) -> dict[str, LogCursor]:
    """Read several streams of one job at once (one thread each); re-raise the first error.

    `attempt`: that attempt's log only (default: the current attempt, followed into later
    ones)."""
    cursors = {
        name: LogCursor(job_id, name, attempt=attempt, next_attempts=attempt is None)
        for name in writers
    }
    follow_all(
        client,
        [(cursors[name], writers[name]) for name in writers],
        follow=follow,
        tail=tail,
        get_job=get_job,
        on_reachability=on_reachability,
    )
    return cursors


def follow_all(
    client: CenterClient,
    sources: list[tuple[LogCursor, Callable[[bytes], None]]],
    *,
    follow: bool,
    tail: int | None = None,
    get_job: Callable[[str], Job] | None = None,
    on_reachability: Callable[[bool], None] | None = None,
) -> None:
    """Read several logs at once — streams, ranks — each from its cursor into its writer
    (one thread each); re-raise the first error.

    Writes are serialised (a writer sees whole chunks, never interleaved with another's)
    and stop once the caller is interrupted (Ctrl-C): a reader thread left blocked in the
    network must never write to stdout while the interpreter exits.
    """
    errors: list[BaseException] = []
    stop = threading.Event()
    writing = threading.Lock()

    def guarded(write: Callable[[bytes], None]) -> Callable[[bytes], None]:
        def guarded_write(data: bytes) -> None:
            with writing:
                if stop.is_set():
                    raise _Stopped
                write(data)

        return guarded_write

    def run(cursor: LogCursor, write: Callable[[bytes], None]) -> None:
        try:
            read_log(
                client,
                cursor,
                guarded(write),
                follow=follow,
                tail=tail,
                get_job=get_job,
                stop=stop,
                on_reachability=on_reachability,
            )
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=source, daemon=True) for source in sources]
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    except KeyboardInterrupt:
        # Wait (briefly: a write into a stalled pipe may block) for a write in progress.
        acquired = writing.acquire(timeout=1.0)
        stop.set()
        if acquired:
            writing.release()
        raise
    if errors:
        raise errors[0]
