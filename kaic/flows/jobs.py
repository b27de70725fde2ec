"""The jobs flows behind `kaic jobs`, `show`, `logs`, `wait` and `cancel`, and the waiting
and log following that `kaic submit --wait/--follow` shares with them.

Waiting and following ride out a center outage of up to five minutes, saying once on stderr
that the center is unreachable and once that it is back; Ctrl-C while waiting says how to
wait again (the jobs go on).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from kaic.errors import UsageError
from kaic.flows.ui import Ui
from kaic.flows.wait import CenterOutage, on_interrupt
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


def array_tasks(session: Session, jobs: list[Job]) -> dict[str, list[Job]]:
    """The tasks of each array among `jobs` (`kaic jobs --expand`, `kaic show ARRAY`)."""
    return {j.id: list(session.jobs.tasks(j.id)) for j in jobs if j.array_tasks}


def show_job(session: Session, job_id: str) -> tuple[Job, list[JobEvent]]:
    """`kaic show`: one job and its event timeline."""
    return session.jobs.get(job_id), session.jobs.events(job_id)


def task_counts(job: Job) -> str:
    """An array's tasks by state, busiest first: `10 tasks: 3 RUNNING, 5 PENDING, 2 COMPLETED`
    ("" for a job that is not an array)."""
    if not job.array_tasks:
        return ""
    order = ("RUNNING", "PENDING", "COMPLETING", "COMPLETED")
    counts = sorted(
        job.array_counts.items(),
        key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]),
    )
    parts = ", ".join(f"{n} {state}" for state, n in counts)
    total = len(job.array_tasks)
    return f"{total} task{'s' if total != 1 else ''}" + (f": {parts}" if parts else "")


def failed_tasks(session: Session, job: Job, *, shown: int = 10) -> str | None:
    """For an array that did not complete: which tasks did not, and why (the first `shown`),
    e.g. `2 of 4 tasks did not complete: 7_2 FAILED (exit 1), 7_3 TIMEOUT`; None otherwise."""
    if not job.array_tasks or job.state.value == "COMPLETED":
        return None
    bad = [t for t in session.jobs.tasks(job.id) if t.state.value != "COMPLETED"]
    if not bad:
        return None
    named = []
    for task in bad[:shown]:
        code = f" (exit {task.exit_code})" if task.exit_code not in (None, 0) else ""
        named.append(f"{visible(task.id)} {task.state.value}{code}")
    more = f", and {len(bad) - shown} more" if len(bad) > shown else ""
    total = len(job.array_tasks)
    return f"array {visible(job.id)}: {len(bad)} of {total} tasks did not complete: " + (
        ", ".join(named) + more
    )


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
    nodes: int | None = None,
    node: int | None = None,
    prefix: bool = True,
    attempt: int | None = None,
) -> None:
    """Copy the job's log streams to `writers` (each stream from its own thread). A job on
    `nodes` nodes (None: ask the center): with several, its ranks' logs merged line by line
    (`prefix`: `[rank N] `), or rank `node`'s alone (`kaic.flows.rank_logs`). `attempt`: that
    attempt's logs only; default the current attempt, followed into later ones when it is
    requeued."""
    from kaic.client.logs import follow_all
    from kaic.flows.rank_logs import log_sources

    api = session.jobs
    if nodes is None:
        nodes = api.get(job_id).resources.nodes
    sources, finish = log_sources(job_id, nodes, writers, node=node, prefix=prefix, attempt=attempt)
    try:
        follow_all(
            api.client,
            sources,
            follow=follow,
            tail=tail,
            get_job=api.get,
            on_reachability=outage,
        )
    finally:
        finish()


def logs(
    session: Session,
    job_id: str,
    writers: LogWriters,
    ui: Ui,
    *,
    follow: bool,
    tail: int | None,
    cancel_on_interrupt: bool = False,
    node: int | None = None,
    prefix: bool | None = None,
    attempt: int | None = None,
) -> int | None:
    """`kaic logs`: without `follow` what exists now (None: exit 0); with `follow` until the
    job is terminal and the log drained, then the job's outcome code. A multi-node job's
    ranks are merged (`prefix`: `[rank N] ` on each line; None: unless one `node` is
    asked for), or rank `node`'s log alone. `attempt`: that attempt's log (a requeued job
    keeps each); default the current one, and `follow` goes on into the attempts after it."""
    read = partial(
        follow_logs,
        session,
        job_id,
        writers,
        tail=tail,
        nodes=session.jobs.get(job_id).resources.nodes,
        node=node,
        prefix=node is None if prefix is None else prefix,
        attempt=attempt,
    )
    if not follow:
        read(follow=False)
        return None
    again = ("kaic logs -f", "follows")
    with on_interrupt(session.jobs, [job_id], again, cancel=cancel_on_interrupt):
        read(follow=True, outage=CenterOutage(ui.info))
    return outcome(session.jobs.get(job_id))


def wait_jobs(
    session: Session,
    job_ids: list[str],
    ui: Ui,
    *,
    timeout: float | None = None,
    cancel_on_interrupt: bool = False,
) -> list[Job]:
    """`kaic wait`: every job once it ended (each end said on stderr), in the order given.
    Raises `WaitTimeout` (carrying the jobs as last seen) when `timeout` runs out."""
    from kaic.flows.wait import wait_for_jobs

    again = ("kaic wait", "waits for")
    with on_interrupt(session.jobs, job_ids, again, cancel=cancel_on_interrupt):
        final = wait_for_jobs(
            session.jobs,
            job_ids,
            timeout=timeout,
            sleep=ui.sleep,
            on_reachability=CenterOutage(ui.info),
        )
    for job in final:
        say_end(job, ui)
        failures = failed_tasks(session, job)
        if failures:
            ui.info(failures)
    return final


def first_failure(jobs: list[Job]) -> int:
    """0 if every job completed, else the outcome code of the first (in order) that did not."""
    return next((code for code in map(outcome, jobs) if code != 0), 0)
