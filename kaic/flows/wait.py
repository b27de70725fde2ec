"""Waiting for jobs to end, kindly to the server: polling with backoff, never a tight loop.

A wait outlives outages, as `logs -f` does: a center that cannot be reached (a restart, a
proxy answering 502) is polled again until it has been unreachable for `OUTAGE_BUDGET_S`.
The transport itself gives up after a second or two (`kaic.client.api.CONNECT_RETRIES`), so
this is where a wait rides an outage out — saying so once on stderr when the center goes
away and once when it is back (`CenterOutage`), instead of waiting in silence.

Ctrl-C during a wait is "interrupted", with how to wait again (`hint_on_interrupt`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kaic.client.logs import RECONNECT_BUDGET_S
from kaic.errors import Interrupted, KaicError, TlsError, Unreachable

if TYPE_CHECKING:
    from kaic.client.jobs import JobsAPI
    from kaic.models import Job

POLL_START_S = 0.5
POLL_CAP_S = 5.0
#: how long a continuous outage may last before the wait gives up (as `logs -f` does)
OUTAGE_BUDGET_S = RECONNECT_BUDGET_S


class WaitTimeout(KaicError):
    """`kaic wait --timeout` ran out before every job ended."""

    def __init__(self, message: str, jobs: list[Job]):
        super().__init__(message, hint="wait again, or raise --timeout")
        self.jobs = jobs


class CenterOutage:
    """Says once that the center became unreachable and once that it is back, however many
    followers and pollers (threads) notice: call it with False after a failed attempt, True
    after one that reached the center."""

    def __init__(self, info: Callable[[str], None], budget_s: float = OUTAGE_BUDGET_S) -> None:
        self._info = info
        self._budget_min = budget_s / 60
        self._down = False
        self._lock = threading.Lock()

    def __call__(self, reachable: bool) -> None:
        with self._lock:
            if reachable == (not self._down):
                return
            self._down = not reachable
        if reachable:
            self._info("center reachable again")
        else:
            self._info(f"center unreachable; retrying for up to {self._budget_min:g} min…")


def unaffected(job_ids: Sequence[str], command: str, verb: str) -> str:
    """The hint for Ctrl-C while waiting: the jobs go on, and how to wait for them again."""
    from kaic.text import visible

    many = len(job_ids) > 1
    ids = " ".join(visible(j) for j in job_ids)
    return (
        f"the job{'s are' if many else ' is'} not affected; "
        f"`{command} {ids}` {verb} {'them' if many else 'it'} again"
    )


@contextmanager
def hint_on_interrupt(hint: str) -> Iterator[None]:
    """Turn Ctrl-C inside the block into `Interrupted` with `hint` (how to continue)."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted", hint=hint) from exc


def wait_for_jobs(
    api: JobsAPI,
    job_ids: Sequence[str],
    *,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
    on_change: Callable[[Job], None] | None = None,
    on_reachability: Callable[[bool], None] | None = None,
) -> list[Job]:
    """Poll until every job is terminal; returns them in the order given.

    The interval starts at 0.5 s and grows by half each round to 5 s, so a long wait costs the
    center one request per job every few seconds. An unreachable center is polled again
    until it has been unreachable for `OUTAGE_BUDGET_S`; a TLS failure ends the wait at once.
    `on_reachability` hears whether each round reached the center (see `CenterOutage`).
    """
    from kaic.models import is_terminal

    deadline = None if timeout is None else now() + timeout
    latest: dict[str, Job] = {}
    interval = POLL_START_S
    failing_since: float | None = None
    outage: Unreachable | None = None
    while True:
        try:
            for job_id in dict.fromkeys(job_ids):  # each job once per round, in order
                if job_id in latest and is_terminal(latest[job_id].state):
                    continue
                job = api.get(job_id)
                before = latest.get(job_id)
                latest[job_id] = job
                if on_change and (before is None or before.state != job.state):
                    on_change(job)
            failing_since, outage = None, None
            if on_reachability is not None:
                on_reachability(True)
        except TlsError:
            raise
        except Unreachable as exc:
            failing_since = failing_since if failing_since is not None else now()
            if now() - failing_since > OUTAGE_BUDGET_S:
                raise
            outage = exc
            if on_reachability is not None:
                on_reachability(False)
        # (By id, not by count: `kaic wait 42 42` names one job twice.)
        seen_all = all(j in latest for j in job_ids)
        if seen_all and all(is_terminal(j.state) for j in latest.values()):
            return [latest[j] for j in job_ids]
        if deadline is not None and now() >= deadline:
            if outage is not None and not seen_all:
                raise outage  # some job was never seen: the outage is the answer
            pending = [j for j in latest.values() if not is_terminal(j.state)]
            names = ", ".join(f"{j.id} ({j.state.value})" for j in pending)
            raise WaitTimeout(f"timed out waiting for {names}", [latest[j] for j in job_ids])
        pause = interval if deadline is None else max(0.0, min(interval, deadline - now()))
        sleep(pause)
        interval = min(interval * 1.5, POLL_CAP_S)
