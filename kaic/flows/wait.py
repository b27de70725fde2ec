"""Waiting for jobs to end, kindly to the server: polling with backoff, never a tight loop.

A wait outlives outages, as `logs -f` does: a center that cannot be reached (a restart, a
proxy answering 502) is polled again until it has been unreachable for `OUTAGE_BUDGET_S`.
The transport itself gives up after a second or two (`kaic.client.api.CONNECT_RETRIES`), so
this is where a wait rides an outage out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from kaic.client.jobs import JobsAPI
from kaic.client.logs import RECONNECT_BUDGET_S
from kaic.errors import KaicError, TlsError, Unreachable
from kaic.models import Job, is_terminal

POLL_START_S = 0.5
POLL_CAP_S = 5.0
#: how long a continuous outage may last before the wait gives up (as `logs -f` does)
OUTAGE_BUDGET_S = RECONNECT_BUDGET_S


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
    center one request per job every few seconds. An unreachable center is polled again
    until it has been unreachable for `OUTAGE_BUDGET_S`; a TLS failure ends the wait at once.
    """
    deadline = None if timeout is None else now() + timeout
    latest: dict[str, Job] = {}
    interval = POLL_START_S
    failing_since: float | None = None
    outage: Unreachable | None = None
    while True:
        try:
            for job_id in job_ids:
                if job_id in latest and is_terminal(latest[job_id].state):
                    continue
                job = api.get(job_id)
                before = latest.get(job_id)
                latest[job_id] = job
                if on_change and (before is None or before.state != job.state):
                    on_change(job)
            failing_since, outage = None, None
        except TlsError:
            raise
        except Unreachable as exc:
            failing_since = failing_since if failing_since is not None else now()
            if now() - failing_since > OUTAGE_BUDGET_S:
                raise
            outage = exc
        if len(latest) == len(job_ids) and all(is_terminal(j.state) for j in latest.values()):
            return [latest[j] for j in job_ids]
        if deadline is not None and now() >= deadline:
            if outage is not None and len(latest) < len(job_ids):
                raise outage  # some job was never seen: the outage is the answer
            pending = [j for j in latest.values() if not is_terminal(j.state)]
            names = ", ".join(f"{j.id} ({j.state.value})" for j in pending)
            raise WaitTimeout(f"timed out waiting for {names}", [latest[j] for j in job_ids])
        pause = interval if deadline is None else max(0.0, min(interval, deadline - now()))
        sleep(pause)
        interval = min(interval * 1.5, POLL_CAP_S)
