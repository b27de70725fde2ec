"""`kaic submit`, `jobs`, `show`, `logs`, `wait`, `cancel`: jobs with exit codes CI trusts.

Thin commands: parse, call one flow (`kaic.flows.submit`, `kaic.flows.jobs`), render through
the output sink.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kaic.cli.context import AppContext, get_app
from kaic.cli.options import JqOpt, JsonOpt
from kaic.errors import UsageError
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
    partition: Annotated[str | None, typer.Option("--partition", help="Partition (queue).")] = None,
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
    workdir: Annotated[
        str | None, typer.Option("--workdir", help="Working dir on the center.")
    ] = None,
    array: Annotated[str | None, typer.Option("--array", help="Array tasks, e.g. 0-15%4.")] = None,
    after: Annotated[
        list[str] | None, typer.Option("--after", help="Start after JOB completes (repeatable).")
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
        workdir=workdir,
        array=array,
        after=after or [],
        command=command or [],
    )
    request = SubmitRequest(
        jobfile, overrides, idempotency_key, dry_run=dry_run, wait=wait_, follow=follow
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
        start = result.estimated_start.isoformat() if result.estimated_start else "unknown"
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
        list[str] | None, typer.Option("--state", help="Only jobs in this state (repeatable).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include jobs that ended long ago.")] = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many jobs.", min=1)] = 50,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """List your jobs, newest first.

    Examples:

      kaic jobs

      kaic jobs --state RUNNING --json
    """
    from kaic.flows.jobs import list_jobs

    app = get_app(ctx)
    found = list_jobs(app.session(), state or [], all_jobs=all_, limit=limit)

    def human() -> None:
        # The idle mark is for people: asked of the center only when the table is shown.
        from kaic.cli.render import table
        from kaic.flows.metrics import idle_marks

        idle = idle_marks(app.session(), found)
        rows = [
            (
                j.id,
                j.name,
                j.kind,
                j.state.value,
                str(j.resources.gpus),
                j.partition,
                _elapsed(j),
                _idle_mark(idle[j.id]) if j.id in idle else j.reason or "",
            )
            for j in found
        ]
        table(
            app,
            ("ID", "NAME", "KIND", "STATE", "GPUS", "PARTITION", "ELAPSED", "REASON"),
            rows,
            empty="No jobs. Submit one with `kaic submit -- COMMAND`.",
            colours={3: STATE_COLOURS},
        )()

    app.emit([_job_json(j) for j in found], human)


def _idle_mark(seconds: float) -> str:
    """The REASON of a running job whose GPUs have all been idle a while (`kaic jobs`)."""
    from kaic.durations import format_duration

    return f"GPUs idle {format_duration(seconds // 60 * 60)}"


def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Show one job, with its event timeline.

    Example: kaic show 42 --json
    """
    from kaic.flows.jobs import show_job

    app = get_app(ctx)
    job, events = show_job(app.session(), job_id)
    doc = {**_job_json(job), "events": [e.model_dump(mode="json") for e in events]}
    app.emit(doc, lambda: _show_human(app, job, events))


def _show_human(app: AppContext, job: "Job", events: "list[JobEvent]") -> None:
    from kaic.flows.metrics import efficiency_hint, efficiency_text

    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
        ("kind", job.kind),
        ("state", job.state.value),
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
        ("time_limit", job.time_limit_seconds),
        ("submitted_at", job.submitted_at),
        ("started_at", job.started_at),
        ("ended_at", job.ended_at),
        ("elapsed", _elapsed(job)),
        ("workdir", job.workdir),
        ("depends_on", ", ".join(job.depends_on) or None),
        ("array_tasks", ", ".join(job.array_tasks) or None),
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
        app.out(f"  {ev.at:%Y-%m-%d %H:%M:%S}{state} {visible(ev.message)}")


def logs(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id (array task: 42_3).")],
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Stream until the job ends; exit with its outcome."),
    ] = False,
    stream: Annotated[str, typer.Option("--stream", help="stdout, stderr or both.")] = "both",
    tail: Annotated[
        int | None, typer.Option("--tail", help="Start with the last N lines.", min=0)
    ] = None,
) -> None:
    """Print a job's output. Job stdout goes to stdout, job stderr to stderr.

    Without -f: prints what exists and exits 0. With -f: streams until the job is terminal and
    the log drained (reconnecting without losing or repeating a byte), then exits with the
    job's outcome code.

    Examples:

      kaic logs 42 --tail 100

      kaic logs -f 42 --stream stdout
    """
    from kaic.flows.jobs import STREAMS
    from kaic.flows.jobs import logs as read_logs

    if stream not in STREAMS:
        raise UsageError(f"unknown stream {stream!r}", hint="use stdout, stderr or both")
    app = get_app(ctx)
    writers = _log_writers(app, stream)
    code = read_logs(app.session(), job_id, writers, app.ui(), follow=follow, tail=tail)
    if code is not None:
        raise typer.Exit(code)


def wait(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="Job ids.")],
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Give up after this long: 90s, 30m, 2h.")
    ] = None,
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
        final = wait_jobs(app.session(), job_ids, app.ui(), timeout=limit)
    except WaitTimeout as exc:
        app.emit([_job_json(j) for j in exc.jobs])  # the jobs as last seen, then the error
        raise
    app.emit([_job_json(j) for j in final])
    raise typer.Exit(first_failure(final))


def cancel(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="Job ids.")],
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
