"""Waiting for jobs to end, kindly to the server: polling with backoff, never a tight loop.

A wait outlives outages, as `logs -f` does: a center that cannot be reached (a restart, a
proxy answering 502) is polled again until it has been unreachable for `OUTAGE_BUDGET_S`.
The transport itself gives up after a second or two (`kaic.client.api.CONNECT_RETRIES`), so
this is where a wait rides an outage out — saying so once on stderr when the center goes
away and once when it is back (`CenterOutage`), instead of waiting in silence.

Ctrl-C during a wait is "interrupted", with what is still running and how to re-attach or
cancel (`on_interrupt`), or — with `--cancel-on-interrupt` — the jobs cancelled.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from kaic.client.logs import RECONNECT_BUDGET_S
from kaic.errors import Interrupted, KaicError, TlsError, Unreachable

if TYPE_CHECKING:
    from kaic.client.jobs import JobsAPI
    from kaic.models import Job

T = TypeVar("T")

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


#: how long Ctrl-C waits for the center to say how the jobs stand (or to cancel them) before
#: saying what it knows; a second Ctrl-C ends kaic at once
INTERRUPT_REPORT_S = 3.0


@contextmanager
def on_interrupt(
    jobs: JobsAPI,
    job_ids: Sequence[str],
    again: tuple[str, str],
    *,
    cancel: bool = False,
    report_s: float = INTERRUPT_REPORT_S,
) -> Iterator[None]:
    """Ctrl-C inside the block: `Interrupted` (exit 130) saying what is still running and the
    two commands that re-attach (`again`: the command and its verb, "kaic logs -f",
    "follows") or cancel; with `cancel` (`--cancel-on-interrupt`, srun's behaviour) the jobs
    are cancelled instead and the message says so."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise interrupted(jobs, job_ids, again, cancel=cancel, report_s=report_s) from exc


def interrupted(
    jobs: JobsAPI,
    job_ids: Sequence[str],
    again: tuple[str, str],
    *,
    cancel: bool,
    report_s: float = INTERRUPT_REPORT_S,
) -> Interrupted:
    """What Ctrl-C during a wait says (see `on_interrupt`); asks the center for at most
    `report_s` seconds."""
    from kaic.models import is_terminal
    from kaic.text import visible

    ids = " ".join(visible(j) for j in job_ids)
    many = len(job_ids) > 1
    noun = "jobs" if many else "job"
    if cancel:
        done = within(report_s, lambda: [jobs.cancel(j) for j in job_ids])
        if done is None:
            return Interrupted(
                f"interrupted; could not cancel {noun} {ids} in time",
                hint=f"cancel with `kaic cancel {ids}`",
            )
        return Interrupted(
            f"interrupted; cancelled {noun} {ids} (--cancel-on-interrupt)",
            hint=f"`kaic show {ids}` shows how {'they' if many else 'it'} ended",
        )
    command, verb = again
    hint = (
        f"`{command} {ids}` {verb} {'them' if many else 'it'} again; "
        f"`kaic cancel {ids}` cancels {'them' if many else 'it'}"
    )
    seen = within(report_s, lambda: [jobs.get(j) for j in job_ids])
    if seen is None:  # the center did not answer in time: say what is certain
        return Interrupted(
            f"interrupted; the {noun} {'are' if many else 'is'} not affected", hint=hint
        )
    going = [job for job in seen if not is_terminal(job.state)]
    if not going:
        ended = ", ".join(f"{visible(j.id)} {j.state.value}" for j in seen)
        return Interrupted(f"interrupted; already ended: {ended}", hint=f"`kaic show {ids}`")
    states = ", ".join(f"{visible(j.id)} {j.state.value}" for j in going)
    return Interrupted(f"interrupted; still going: {states}", hint=hint)


def within(seconds: float, call: Callable[[], T]) -> T | None:
    """`call()`'s answer if it comes within `seconds`, in a daemon thread — so a center that
    does not answer holds up neither Ctrl-C nor a shell's TAB (`kaic.flows.complete`) —;
    None if it fails or takes longer."""
    answer: list[T] = []

    def run() -> None:
        # best effort: what the caller does next never depends on this answer arriving
        with contextlib.suppress(Exception):
            answer.append(call())

    worker = threading.Thread(target=run, name="kaic-bounded-call", daemon=True)
    worker.start()
    worker.join(seconds)
    return answer[0] if answer else None


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
