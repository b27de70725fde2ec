"""`kaic submit`, `jobs`, `show`, `logs`, `wait`, `cancel`: jobs with exit codes CI trusts.

Thin commands: parse, call one flow (`kaic.flows.submit`, `kaic.flows.jobs`), render through
the output sink.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kaic.cli import complete
from kaic.cli.context import AppContext, get_app
from kaic.cli.options import CancelOnInterruptOpt, JqOpt, JsonOpt
from kaic.durations import format_duration
from kaic.errors import UsageError
from kaic.humanize import moment
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.jobs import LogWriters
    from kaic.flows.submit import Submitted
    from kaic.models import Job, JobEvent

STATE_COLOURS = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMEOUT": "red",
    "OUT_OF_MEMORY": "red",
    "NODE_FAIL": "red",
    "PREEMPTED": "magenta",
    "BOOT_FAIL": "red",
    "DEADLINE": "red",
    "SUSPENDED": "yellow",
}


def register(app: typer.Typer) -> None:
    for name, fn in (
        ("submit", submit),
        ("jobs", jobs),
        ("show", show),
        ("logs", logs),
        ("wait", wait),
        ("cancel", cancel),
    ):
        app.command(name)(fn)


def _job_json(job: "Job") -> dict[str, Any]:
    return job.model_dump(mode="json")


def _log_writers(app: AppContext, stream: str = "both", *, to_stderr: bool = False) -> "LogWriters":
    """Job stdout to stdout (to stderr when stdout carries the JSON result), stderr to stderr."""
    from kaic.cli.render import binary_writer

    writers = {
        "stdout": binary_writer(app.stderr if to_stderr else app.stdout),
        "stderr": binary_writer(app.stderr),
    }
    return writers if stream == "both" else {stream: writers[stream]}


def _split_command(
    argv: list[str] | None, jobfile: Path | None, command: list[str] | None
) -> tuple[Path | None, list[str] | None]:
    """Typer hands every positional to JOBFILE first; what came after `--` is the command.

    `kaic submit -- ./run.sh` must run run.sh, never read it as a job file. Click keeps no
    trace of `--` in what it parses, so this looks at the words kaic was run with (`argv`,
    which `main` hands over on the context).
    """
    positionals = ([str(jobfile)] if jobfile is not None else []) + list(command or [])
    if argv is not None and "--" in argv:
        after = argv[argv.index("--") + 1 :]
        same = [os.path.normpath(a) for a in positionals[-len(after) :]] == [
            os.path.normpath(a) for a in after
        ]  # JOBFILE came back as a Path: `./run.sh` reads `run.sh`
        if after and same:
            before = positionals[: len(positionals) - len(after)]
            return (Path(before[0]) if before else None), after
    # No `--` seen (an embedding caller): a first word that is no file is a command.
    if (
        jobfile is not None
        and not command
        and not jobfile.exists()
        and not str(jobfile).endswith((".yaml", ".yml"))
    ):
        return None, [str(jobfile)]
    return jobfile, command or None


def submit(
    ctx: typer.Context,
    jobfile: Annotated[Path | None, typer.Argument(help="Job file (YAML).")] = None,
    command: Annotated[
        list[str] | None, typer.Argument(help="Command to run, after `--`.", show_default=False)
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Job name.")] = None,
    project: Annotated[str | None, typer.Option("--project", help="Project charged.")] = None,
    partition: Annotated[
        str | None,
        typer.Option("--partition", help="Partition (queue).", autocompletion=complete.partitions),
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs per node.")] = None,
    gpu_type: Annotated[str | None, typer.Option("--gpu-type", help="GPU model.")] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", help="Nodes.")] = None,
    time: Annotated[
        str | None, typer.Option("--time", help="Time limit: 90s, 30m, 4h, 1-12:00:00.")
    ] = None,
    image: Annotated[str | None, typer.Option("--image", help="Container image.")] = None,
    env: Annotated[
        list[str] | None, typer.Option("--env", help="K=V environment variable (repeatable).")
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(
            "--secret",
            help="VAR=NAME: the variable VAR gets your secret NAME (`kaic secret set`); a bare "
            "NAME sets the variable NAME upper-cased (repeatable).",
        ),
    ] = None,
    workdir: Annotated[
        str | None, typer.Option("--workdir", help="Working dir on the center.")
    ] = None,
    array: Annotated[str | None, typer.Option("--array", help="Array tasks, e.g. 0-15%4.")] = None,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="Start after JOB completes (repeatable).")
    ] = None,
    retry: Annotated[
        str | None,
        typer.Option(
            "--retry",
            help="Requeue when the system ends the job: 2, or NODE_FAIL,PREEMPTED:2.",
        ),
    ] = None,
    notify: Annotated[
        str | None,
        typer.Option("--notify", help="On end: a webhook URL or mail address (fail:… = failures)."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Same key + same job = the same job (safe retries)."
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Validate and estimate start and charge; submit nothing."),
    ] = False,
    wait_: Annotated[
        bool, typer.Option("--wait", help="Wait for the job; exit with its outcome.")
    ] = False,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream its logs; exit with its outcome.")
    ] = False,
    cancel_on_interrupt: CancelOnInterruptOpt = False,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Submit a job; prints its id alone on stdout.

    With --wait or --follow, exits with the job's own exit code (124 TIMEOUT, 125 CANCELLED,
    126 ended by the system).

    A job file's `inputs` are pushed to center storage before the job is submitted (nothing
    is submitted if one fails) and its `outputs` are pulled after --wait / --follow, like
    `kaic data push/pull` (unchanged files skipped, resumable, sha256-verified). Local paths
    there are relative to the job file's directory.

    Examples:

      kaic submit job.yaml

      kaic submit --gpus 1 --time 30m -- python train.py --lr 0.1

      kaic submit job.yaml --secret WANDB_API_KEY=wandb

      kaic submit job.yaml --wait --follow --json    # CI: logs on stderr, final JSON on stdout
    """
    from kaic.flows.submit import SubmitRequest
    from kaic.flows.submit import submit as submit_job
    from kaic.jobspec import SubmitOverrides

    app = get_app(ctx)
    jobfile, command = _split_command(app.argv, jobfile, command)
    overrides = SubmitOverrides(
        name=name,
        project=project,
        partition=partition,
        gpus=gpus,
        gpu_type=gpu_type,
        nodes=nodes,
        time=time,
        image=image,
        env=env or [],
        secret=secret or [],
        workdir=workdir,
        array=array,
        after=after or [],
        retry=retry,
        notify=notify,
        command=command or [],
    )
    request = SubmitRequest(
        jobfile,
        overrides,
        idempotency_key,
        dry_run=dry_run,
        wait=wait_,
        follow=follow,
        cancel_on_interrupt=cancel_on_interrupt,
    )
    waiting = wait_ or follow

    def submitted(job: "Job") -> None:
        # CLI.md: the id alone on stdout, unless --json / --follow (then a notice on stderr);
        # when waiting it comes at once, before the wait.
        if waiting and (follow or app.output.json):
            app.info(f"Submitted job {visible(job.id)}.")
        elif waiting:
            app.out(visible(job.id))

    done = submit_job(
        app.session,
        request,
        app.ui(),
        logs=_log_writers(app, to_stderr=app.output.json),
        on_submitted=submitted,
    )
    app.emit(done.document(), human=_submitted_human(app, done, waiting))
    if done.exit_code:
        raise typer.Exit(done.exit_code)


def _submitted_human(
    app: AppContext, done: "Submitted", waiting: bool
) -> Callable[[], None] | None:
    def dry_run() -> None:
        result = done.dry_run
        assert result is not None
        app.out(f"valid: {'yes' if result.valid else 'no'}")
        for problem in result.problems:
            app.out(f"  problem: {visible(problem)}")
        start = moment(result.estimated_start) if result.estimated_start else "unknown"
        app.out(f"estimated start: {start}")
        app.out(f"estimated charge: {result.estimated_gpu_hours:.2f} GPU-hours")

    def job_id() -> None:
        assert done.job is not None
        app.out(visible(done.job.id))

    if done.dry_run is not None:
        return dry_run
    return None if waiting else job_id  # a wait printed the id before it began


def _elapsed(job: "Job") -> str:
    from datetime import datetime, timezone

    if job.started_at is None:
        return "-"
    end = job.ended_at or datetime.now(timezone.utc)
    secs = max(0, int((end - job.started_at).total_seconds()))
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}"


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
                _elapsed(j),
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
        {**_job_json(j), "tasks": [_job_json(t) for t in tasks[j.id]]}
        if j.id in tasks
        else _job_json(j)
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
    doc = {**_job_json(job), "events": [e.model_dump(mode="json") for e in events]}
    if job.array_tasks:
        doc["tasks"] = [_job_json(t) for t in tasks]
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
        ("elapsed", _elapsed(job)),
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
            (t.id, t.state.value, "-" if t.exit_code is None else str(t.exit_code), _elapsed(t),
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
    writers = _log_writers(app, stream)
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
        app.emit([_job_json(j) for j in exc.jobs])  # the jobs as last seen, then the error
        raise
    app.emit([_job_json(j) for j in final])
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

    app.emit([_job_json(j) for j in done], human)
