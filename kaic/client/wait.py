"""Waiting for jobs to end, kindly to the server: polling with backoff, never a tight loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kaic.client.jobs import JobsAPI
from kaic.errors import KaicError
from kaic.models import Job, is_terminal

POLL_START_S = 0.5
POLL_CAP_S = 5.0


class WaitTimeout(KaicError):
    """`kaic wait --timeout` ran out before every job ended."""

    def __init__(self, message: str, jobs: list[Job]):
        super().__init__(message, hint="wait again, or raise --timeout")
        self.jobs = jobs


def wait_for_jobs(
    api: JobsAPI,
    job_ids: Sequence[str],
    *,
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    now: Callable[[], float] = time.monotonic,
    on_change: Callable[[Job], None] | None = None,
) -> list[Job]:
    """Poll until every job is terminal; returns them in the order given.

    The interval starts at 0.5 s and grows by half each round to 5 s, so a long wait costs the
    center one request per job every few seconds.
    """
    deadline = None if timeout is None else now() + timeout
    latest: dict[str, Job] = {}
    interval = POLL_START_S
    while True:
        for job_id in job_ids:
            if job_id in latest and is_terminal(latest[job_id].state):
                continue
            job = api.get(job_id)
            before = latest.get(job_id)
            latest[job_id] = job
            if on_change and (before is None or before.state != job.state):
                on_change(job)
        if all(is_terminal(j.state) for j in latest.values()):
            return [latest[j] for j in job_ids]
        if deadline is not None and now() >= deadline:
            pending = [j for j in latest.values() if not is_terminal(j.state)]
            names = ", ".join(f"{j.id} ({j.state.value})" for j in pending)
            raise WaitTimeout(f"timed out waiting for {names}", [latest[j] for j in job_ids])
        pause = interval if deadline is None else max(0.0, min(interval, deadline - now()))
        sleep(pause)
        interval = min(interval * 1.5, POLL_CAP_S)
