"""`kaic jobs`, `show`, `logs`, `wait`, `cancel`: jobs with exit codes CI trusts (`kaic submit`
is `kaic/cli/submit.py`).

Thin commands: parse, call one flow (`kaic.flows.submit`, `kaic.flows.jobs`), render through
the output sink.
"""

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kaic.cli import complete
from kaic.cli.context import AppContext, get_app
from kaic.cli.job_views import STATE_COLOURS, elapsed, job_json, log_writers
from kaic.cli.options import CancelOnInterruptOpt, JqOpt, JsonOpt
from kaic.durations import format_duration
from kaic.errors import UsageError
from kaic.humanize import moment
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.models import Job, JobEvent


def register(app: typer.Typer) -> None:
    for name, fn in (
        ("jobs", jobs),
        ("show", show),
        ("logs", logs),
        ("wait", wait),
        ("cancel", cancel),
    ):
        app.command(name)(fn)


def jobs(
    ctx: typer.Context,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state", help="Only jobs in this state (repeatable).", autocompletion=complete.states
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include jobs that ended long ago.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.", min=1)] = 50,
    expand: Annotated[
        bool, typer.Option("--expand", help="List each array's tasks under it.")
    ] = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """List your jobs, newest first.

    An array is one row, its tasks counted by state; --expand lists each task under it.

    Examples:

      kaic jobs

      kaic jobs --state RUNNING --json

      kaic jobs --expand          # every array task on a row of its own
    """
    from kaic.flows.jobs import array_tasks, list_jobs, task_counts

    app = get_app(ctx)
    session = app.session()
    found = list_jobs(session, state or [], all_jobs=all_, limit=limit)
    tasks = array_tasks(session, found) if expand else {}

    def human() -> None:
        # The idle mark is for people: asked of the center only when the table is shown.
        from kaic.cli.render import table
        from kaic.flows.metrics import idle_marks

        idle = idle_marks(session, found)

        def row(j: "Job", indent: str = "") -> tuple[str, ...]:
            reason = _idle_mark(idle[j.id]) if j.id in idle else j.reason or ""
            if j.array_tasks:  # an array's row counts its tasks (and why it waits, if it does)
                reason = task_counts(j) + (f"; {reason}" if reason else "")
            return (
                indent + j.id,
                j.name,
                j.kind,
                j.state.value,
                str(j.resources.gpus),
                j.partition,
                elapsed(j),
                reason,
            )

        rows = []
        for j in found:
            rows.append(row(j))
            rows += [row(t, "  ") for t in tasks.get(j.id, [])]
        table(
            app,
            ("ID", "NAME", "KIND", "STATE", "GPUS", "PARTITION", "ELAPSED", "REASON"),
            rows,
            empty="No jobs. Submit one with `kaic submit -- COMMAND`.",
            colours={3: STATE_COLOURS},
        )()

    documents = [
        {**job_json(j), "tasks": [job_json(t) for t in tasks[j.id]]}
        if j.id in tasks
        else job_json(j)
        for j in found
    ]
    app.emit(documents, human)


def _idle_mark(seconds: float) -> str:
    """The REASON of a running job whose GPUs have all been idle a while (`kaic jobs`)."""
    from kaic.durations import format_duration

    return f"GPUs idle {format_duration(seconds // 60 * 60)}"


def show(
    ctx: typer.Context,
    job_id: Annotated[
        str, typer.Argument(metavar="JOB", help="Job id.", autocompletion=complete.job_ids)
    ],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Show one job, with its event timeline.

    Example: kaic show 42 --json
    """
    from kaic.flows.jobs import array_tasks, show_job

    app = get_app(ctx)
    session = app.session()
    job, events = show_job(session, job_id)
    tasks = array_tasks(session, [job]).get(job.id, [])
    doc = {**job_json(job), "events": [e.model_dump(mode="json") for e in events]}
    if job.array_tasks:
        doc["tasks"] = [job_json(t) for t in tasks]
    app.emit(doc, lambda: _show_human(app, job, events, tasks))


def _show_human(app: AppContext, job: "Job", events: "list[JobEvent]", tasks: "list[Job]") -> None:
    from kaic.flows.jobs import task_counts
    from kaic.flows.metrics import efficiency_hint, efficiency_text

    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("kind", job.kind),
        ("state", job.state.value),
        ("attempt", job.attempt if job.attempt > 1 else None),
        ("exit_code", job.exit_code),
        ("reason", job.reason),
        ("user", job.user),
        ("project", job.project),
        ("partition", job.partition),
        (
            "gpus",
            f"{job.resources.gpus}"
            + (f" ({job.resources.gpu_type})" if job.resources.gpu_type else ""),
        ),
        ("gpu_ids", ",".join(map(str, job.gpu_ids)) or None),
        (
            "nodes",
            ", ".join(job.nodes) or (job.resources.nodes if job.resources.nodes > 1 else None),
        ),
        ("time_limit", format_duration(job.time_limit_seconds) if job.time_limit_seconds else None),
        ("submitted_at", moment(job.submitted_at)),
        ("started_at", moment(job.started_at) if job.started_at else None),
        ("ended_at", moment(job.ended_at) if job.ended_at else None),
        ("elapsed", elapsed(job)),
        ("workdir", job.workdir),
        ("depends_on", ", ".join(job.depends_on) or None),
        ("array_tasks", task_counts(job) or None),
        ("efficiency", efficiency_text(job.efficiency) if job.efficiency else None),
    ]
    for key, value in fields:
        app.out(f"{key:<13} {'-' if value is None else visible(value)}")
    hint = efficiency_hint(job.id, job.efficiency) if job.efficiency else None
    if hint:
        app.info(hint)
    app.out("events:")
    for ev in events:
        state = f" [{ev.state.value}]" if ev.state else ""
        app.out(f"  {moment(ev.at, relative=False)}{state} {visible(ev.message)}")
    if tasks:
        from kaic.cli.render import print_table

        app.out("tasks:")
        rows = [
            (t.id, t.state.value, "-" if t.exit_code is None else str(t.exit_code), elapsed(t),
             t.reason or "")
            for t in tasks
        ]  # fmt: skip
        print_table(
            app, ("TASK", "STATE", "EXIT", "ELAPSED", "REASON"), rows, colours={1: STATE_COLOURS}
        )


def logs(
    ctx: typer.Context,
    job_id: Annotated[
        str,
        typer.Argument(
            metavar="JOB", help="Job id (array task: 42_3).", autocompletion=complete.job_ids
        ),
    ],
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Stream until the job ends; exit with its outcome."),
    ] = False,
    stream: Annotated[str, typer.Option("--stream", help="stdout, stderr or both.")] = "both",
    tail: Annotated[
        int | None, typer.Option("--tail", help="Start with the last N lines.", min=0)
    ] = None,
    attempt: Annotated[
        int | None,
        typer.Option("--attempt", help="A requeued job's attempt N (default: current).", min=1),
    ] = None,
    cancel_on_interrupt: CancelOnInterruptOpt = False,
    node: Annotated[
        int | None,
        typer.Option("--node", help="A multi-node job: only this rank's output (0, 1, …).", min=0),
    ] = None,
    prefix: Annotated[
        bool | None,
        typer.Option(
            "--prefix/--no-prefix",
            help="A multi-node job: start each line with [rank N] (default: on a terminal).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a job's output. Job stdout goes to stdout, job stderr to stderr.

    Without -f: prints what exists and exits 0. With -f: streams until the job is terminal and
    the log drained (reconnecting without losing or repeating a byte), then exits with the
    job's outcome code. A requeued job (`retry:`) keeps each attempt's log: --attempt N
    reads one; -f follows the current attempt into the next when the job is requeued.

    A multi-node job's ranks are merged line by line, each line started with [rank N] on a
    terminal (--prefix / --no-prefix to choose); --node N shows rank N alone.

    Examples:

      kaic logs 42 --tail 100

      kaic logs 42 --attempt 1

      kaic logs -f 42 --stream stdout

      kaic logs 43 --node 1
    """
    from kaic.flows.jobs import STREAMS
    from kaic.flows.jobs import logs as read_logs

    if stream not in STREAMS:
        raise UsageError(f"unknown stream {stream!r}", hint="use stdout, stderr or both")
    app = get_app(ctx)
    writers = log_writers(app, stream)
    if prefix is None:
        prefix = node is None and app.is_terminal()
    code = read_logs(
        app.session(),
        job_id,
        writers,
        app.ui(),
        follow=follow,
        tail=tail,
        cancel_on_interrupt=cancel_on_interrupt,
        node=node,
        prefix=prefix,
        attempt=attempt,
    )
    if code is not None:
        raise typer.Exit(code)


def wait(
    ctx: typer.Context,
    job_ids: Annotated[
        list[str],
        typer.Argument(metavar="JOB...", help="Job ids.", autocompletion=complete.job_ids),
    ],
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Give up after this long: 90s, 30m, 2h.")
    ] = None,
    cancel_on_interrupt: CancelOnInterruptOpt = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Wait for jobs to end; exit 0 if all completed, else the code of the first that did not.

    Examples:

      kaic wait 42

      kaic wait 42 43 --timeout 2h --json
    """
    from kaic.durations import parse_duration
    from kaic.flows.jobs import first_failure, wait_jobs
    from kaic.flows.wait import WaitTimeout

    app = get_app(ctx)
    limit = None
    if timeout is not None:
        try:
            limit = float(parse_duration(timeout))
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    try:
        final = wait_jobs(
            app.session(),
            job_ids,
            app.ui(),
            timeout=limit,
            cancel_on_interrupt=cancel_on_interrupt,
        )
    except WaitTimeout as exc:
        app.emit([job_json(j) for j in exc.jobs])  # the jobs as last seen, then the error
        raise
    app.emit([job_json(j) for j in final])
    raise typer.Exit(first_failure(final))


def cancel(
    ctx: typer.Context,
    job_ids: Annotated[
        list[str],
        typer.Argument(metavar="JOB...", help="Job ids.", autocompletion=complete.job_ids),
    ],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Cancel jobs (pending ones at once; running ones get SIGTERM, then SIGKILL).

    Example: kaic cancel 42 43
    """
    from kaic.flows.jobs import cancel_jobs

    app = get_app(ctx)
    done = cancel_jobs(app.session(), job_ids)

    def human() -> None:  # notices only: nothing on stdout
        for job in done:
            app.info(f"Cancelling job {visible(job.id)} ({job.state.value}).")

    app.emit([job_json(j) for j in done], human)
