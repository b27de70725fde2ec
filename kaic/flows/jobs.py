"""The jobs flows behind `kaic jobs`, `show`, `logs`, `wait` and `cancel`, and the waiting
and log following that `kaic submit --wait/--follow` shares with them.

Waiting and following ride out a center outage of up to five minutes, saying once on stderr
that the center is unreachable and once that it is back; Ctrl-C while waiting says how to
wait again (the jobs go on).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kaic.errors import UsageError
from kaic.flows.ui import Ui
from kaic.flows.wait import CenterOutage, hint_on_interrupt, unaffected
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.models import Job, JobEvent

#: where each stream of a job's log goes ("stdout", "stderr" -> a writer of raw bytes)
LogWriters = dict[str, Callable[[bytes], None]]

STREAMS = ("stdout", "stderr", "both")


def outcome(job: Job) -> int:
    """What a waiting command exits with for a terminal job (CLI.md)."""
    from kaic.models import outcome_exit_code

    return outcome_exit_code(job.state, job.exit_code)


def describe_end(job: Job) -> str:
    """`job 42 ended FAILED (exit code 7): reason` — one line on stderr per waited job."""
    text = f"job {visible(job.id)} ended {job.state.value}"
    if job.exit_code is not None:
        text += f" (exit code {job.exit_code})"
    if job.reason and job.state.value != "COMPLETED":
        text += f": {visible(job.reason)}"
    return text


def say_end(job: Job, ui: Ui) -> None:
    """On stderr, once a waited job ended: how (`describe_end`), and for a finished GPU job
    its efficiency line (and a hint when it used its GPUs poorly)."""
    from kaic.flows.metrics import describe_efficiency

    ui.info(describe_end(job))
    for line in describe_efficiency(job):
        ui.info(line)


def parse_states(states: list[str]) -> list[str]:
    """`--state` values as job states (any case); UsageError listing the valid ones."""
    from kaic.models import JobState

    parsed = []
    for s in states:
        try:
            parsed.append(JobState(s.upper()).value)
        except ValueError:
            raise UsageError(
                f"unknown state {s!r}", hint="one of " + ", ".join(x.value for x in JobState)
            ) from None
    return parsed


def list_jobs(session: Session, states: list[str], *, all_jobs: bool, limit: int) -> list[Job]:
    """`kaic jobs`: the user's jobs, newest first."""
    wanted = parse_states(states)
    return list(session.jobs.iter_jobs(states=wanted, all_jobs=all_jobs, limit=limit))


def show_job(session: Session, job_id: str) -> tuple[Job, list[JobEvent]]:
    """`kaic show`: one job and its event timeline."""
    return session.jobs.get(job_id), session.jobs.events(job_id)


def cancel_jobs(session: Session, job_ids: list[str]) -> list[Job]:
    """`kaic cancel`: each job as the center answered the cancellation."""
    return [session.jobs.cancel(job_id) for job_id in job_ids]


def follow_logs(
    session: Session,
    job_id: str,
    writers: LogWriters,
    *,
    follow: bool,
    tail: int | None,
    outage: Callable[[bool], None] | None = None,
) -> None:
    """Copy the job's log streams to `writers` (each stream from its own thread)."""
    from kaic.client.logs import follow_both

    api = session.jobs
    follow_both(
        api.client,
        job_id,
        writers,
        follow=follow,
        tail=tail,
        get_job=api.get,
        on_reachability=outage,
    )


def logs(
    session: Session,
    job_id: str,
    writers: LogWriters,
    ui: Ui,
    *,
    follow: bool,
    tail: int | None,
) -> int | None:
    """`kaic logs`: without `follow` what exists now (None: exit 0); with `follow` until the
    job is terminal and the log drained, then the job's outcome code."""
    if not follow:
        follow_logs(session, job_id, writers, follow=False, tail=tail)
        return None
    with hint_on_interrupt(unaffected([job_id], "kaic logs -f", "follows")):
        follow_logs(session, job_id, writers, follow=True, tail=tail, outage=CenterOutage(ui.info))
    return outcome(session.jobs.get(job_id))


def wait_jobs(
    session: Session, job_ids: list[str], ui: Ui, *, timeout: float | None = None
) -> list[Job]:
    """`kaic wait`: every job once it ended (each end said on stderr), in the order given.
    Raises `WaitTimeout` (carrying the jobs as last seen) when `timeout` runs out."""
    from kaic.flows.wait import wait_for_jobs

    with hint_on_interrupt(unaffected(job_ids, "kaic wait", "waits for")):
        final = wait_for_jobs(
            session.jobs,
            job_ids,
            timeout=timeout,
            sleep=ui.sleep,
            on_reachability=CenterOutage(ui.info),
        )
    for job in final:
        say_end(job, ui)
    return final


def first_failure(jobs: list[Job]) -> int:
    """0 if every job completed, else the outcome code of the first (in order) that did not."""
    return next((code for code in map(outcome, jobs) if code != 0), 0)
