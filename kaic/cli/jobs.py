"""`kaic submit`, `jobs`, `show`, `logs`, `wait`, `cancel`: jobs with exit codes CI trusts."""

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kaic.cli.context import AppContext, get_app
from kaic.cli.interrupt import hint_on_interrupt
from kaic.cli.options import JsonOpt
from kaic.errors import ExitCode, UsageError
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.job_staging import Staged
    from kaic.client.jobs import JobsAPI
    from kaic.models import Job

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


def _api(app: AppContext) -> "JobsAPI":
    from kaic.client.jobs import JobsAPI

    return JobsAPI(app.session().client)


def _job_json(job: "Job") -> dict[str, Any]:
    return job.model_dump(mode="json")


def _outcome(job: "Job") -> int:
    from kaic.models import outcome_exit_code

    return outcome_exit_code(job.state, job.exit_code)


def _describe_end(job: "Job") -> str:
    text = f"job {visible(job.id)} ended {job.state.value}"
    if job.exit_code is not None:
        text += f" (exit code {job.exit_code})"
    if job.reason and job.state.value != "COMPLETED":
        text += f": {visible(job.reason)}"
    return text


def _unaffected(job_ids: list[str], command: str, verb: str) -> str:
    """The hint for Ctrl-C while waiting: the jobs go on, and how to wait for them again."""
    many = len(job_ids) > 1
    ids = " ".join(visible(j) for j in job_ids)
    return (
        f"the job{'s are' if many else ' is'} not affected; "
        f"`{command} {ids}` {verb} {'them' if many else 'it'} again"
    )


def _binary_writer(stream: Any) -> Any:
    buf = getattr(stream, "buffer", None)

    def write(data: bytes) -> None:
        if buf is not None:
            buf.write(data)
            buf.flush()
        else:
            stream.write(data.decode(errors="replace"))
            stream.flush()

    return write


def _follow(
    app: AppContext,
    job_id: str,
    stream: str,
    *,
    follow: bool,
    tail: int | None,
    to_stderr: bool = False,
) -> None:
    from kaic.client.logs import follow_both

    api = _api(app)
    out = _binary_writer(app.stderr if to_stderr else app.stdout)
    err = _binary_writer(app.stderr)
    writers = {"stdout": out, "stderr": err}
    if stream != "both":
        writers = {stream: writers[stream]}
    follow_both(api.client, job_id, writers, follow=follow, tail=tail, get_job=api.get)


def _split_command(
    jobfile: Path | None, command: list[str] | None
) -> tuple[Path | None, list[str] | None]:
    """Typer hands every positional to JOBFILE first; what came after `--` is the command.

    `kaic submit -- ./run.sh` must run run.sh, never read it as a job file.
    """
    positionals = ([str(jobfile)] if jobfile is not None else []) + list(command or [])
    argv = sys.argv[1:]
    if "--" in argv:
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
    from kaic.jobspec import SubmitOverrides, build_submit, load_job_file

    app = get_app(ctx)
    jobfile, command = _split_command(jobfile, command)
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
    job_file = load_job_file(jobfile) if jobfile is not None else None
    spec, input_list, output_list = build_submit(job_file, overrides)
    from kaic.flows import job_staging

    inputs = job_staging.check_inputs(job_file, input_list)
    outputs = job_staging.plan_outputs(job_file, output_list)
    api = _api(app)
    if dry_run:
        for item in inputs:
            app.info(f"input {visible(item.src)} -> {visible(item.dst)} (not staged: dry run)")
        result = api.dry_run(spec)
        if json_out:
            app.json(result.model_dump(mode="json"))
        else:
            app.out(f"valid: {'yes' if result.valid else 'no'}")
            for problem in result.problems:
                app.out(f"  problem: {visible(problem)}")
            start = result.estimated_start.isoformat() if result.estimated_start else "unknown"
            app.out(f"estimated start: {start}")
            app.out(f"estimated charge: {result.estimated_gpu_hours:.2f} GPU-hours")
        if not result.valid:
            raise typer.Exit(int(ExitCode.REJECTED))
        return
    staged = job_staging.stage_inputs(app, inputs)
    job = api.submit(spec, idempotency_key=idempotency_key)
    extra: dict[str, Any] = {"inputs": [i.summary() for i in staged]} if staged else {}
    if not (wait_ or follow):
        for item in outputs:
            app.info(
                f"output {visible(item.src)} is fetched only with --wait or --follow; later: "
                f"kaic data pull {visible(job_staging.remote_display(item.src))} "
                f"{visible(item.dst)}"
            )
        if json_out:
            app.json({**_job_json(job), **extra})
        else:
            app.out(visible(job.id))
        return
    if json_out or follow:
        app.info(f"Submitted job {visible(job.id)}.")
    else:
        app.out(visible(job.id))  # CLI.md: the id alone on stdout, unless --json / --follow
    _wait_and_exit(
        app,
        api,
        job,
        follow=follow and not job.array_tasks,
        json_out=json_out,
        outputs=outputs,
        extra=extra,
    )


def _wait_and_exit(
    app: AppContext,
    api: "JobsAPI",
    job: "Job",
    *,
    follow: bool,
    json_out: bool,
    outputs: "list[Staged] | None" = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Wait for `job`, fetch its outputs, print the outcome and exit with the outcome's code
    (a job that succeeded but whose outputs could not be fetched exits with the fetch error's)."""
    from kaic.flows import job_staging
    from kaic.flows.wait import wait_for_jobs

    again = ("kaic logs -f", "follows") if follow else ("kaic wait", "waits for")
    with hint_on_interrupt(_unaffected([job.id], *again)):
        if follow:
            _follow(app, job.id, "both", follow=True, tail=None, to_stderr=json_out)
        final = wait_for_jobs(api, [job.id], sleep=app.sleep)[0]
    app.info(_describe_end(final))
    fetched = job_staging.fetch_outputs(app, outputs or [])
    code = _outcome(final)
    failed = job_staging.first_error(fetched)
    if code == 0 and failed is not None:
        code = int(failed.exit_code)
    if json_out:
        doc = {**_job_json(final), **(extra or {})}
        if fetched:
            doc["outputs"] = [o.summary() for o in fetched]
        app.json(doc)
    raise typer.Exit(code)


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
) -> None:
    """List your jobs, newest first.

    Examples:

      kaic jobs

      kaic jobs --state RUNNING --json
    """
    from kaic.models import JobState

    app = get_app(ctx)
    states = []
    for s in state or []:
        try:
            states.append(JobState(s.upper()).value)
        except ValueError:
            raise UsageError(
                f"unknown state {s!r}", hint="one of " + ", ".join(x.value for x in JobState)
            ) from None
    found = list(_api(app).iter_jobs(states=states, all_jobs=all_, limit=limit))
    if json_out:
        app.json([_job_json(j) for j in found])
        return
    if not found:
        app.info("No jobs. Submit one with `kaic submit -- COMMAND`.")
        return
    from kaic.cli.render import print_table

    rows = [
        (
            j.id,
            j.name,
            j.state.value,
            str(j.resources.gpus),
            j.partition,
            _elapsed(j),
            j.reason or "",
        )
        for j in found
    ]
    print_table(
        app,
        ("ID", "NAME", "STATE", "GPUS", "PARTITION", "ELAPSED", "REASON"),
        rows,
        colours={2: STATE_COLOURS},
    )


def show(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    json_out: JsonOpt = False,
) -> None:
    """Show one job, with its event timeline.

    Example: kaic show 42 --json
    """
    app = get_app(ctx)
    api = _api(app)
    job = api.get(job_id)
    events = api.events(job_id)
    if json_out:
        app.json({**_job_json(job), "events": [e.model_dump(mode="json") for e in events]})
        return
    fields: list[tuple[str, Any]] = [
        ("id", job.id),
        ("name", job.name),
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
    ]
    for key, value in fields:
        app.out(f"{key:<13} {'-' if value is None else visible(value)}")
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
    if stream not in ("stdout", "stderr", "both"):
        raise UsageError(f"unknown stream {stream!r}", hint="use stdout, stderr or both")
    app = get_app(ctx)
    if not follow:
        _follow(app, job_id, stream, follow=False, tail=tail)
        return
    with hint_on_interrupt(_unaffected([job_id], "kaic logs -f", "follows")):
        _follow(app, job_id, stream, follow=True, tail=tail)
    raise typer.Exit(_outcome(_api(app).get(job_id)))


def wait(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="Job ids.")],
    timeout: Annotated[
        str | None, typer.Option("--timeout", help="Give up after this long: 90s, 30m, 2h.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Wait for jobs to end; exit 0 if all completed, else the code of the first that did not.

    Examples:

      kaic wait 42

      kaic wait 42 43 --timeout 2h --json
    """
    from kaic.flows.wait import WaitTimeout, wait_for_jobs
    from kaic.durations import parse_duration

    app = get_app(ctx)
    limit = None
    if timeout is not None:
        try:
            limit = float(parse_duration(timeout))
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    api = _api(app)
    try:
        with hint_on_interrupt(_unaffected(job_ids, "kaic wait", "waits for")):
            final = wait_for_jobs(api, job_ids, timeout=limit, sleep=app.sleep)
    except WaitTimeout as exc:
        if json_out:
            app.json([_job_json(j) for j in exc.jobs])
        raise
    for job in final:
        app.info(_describe_end(job))
    if json_out:
        app.json([_job_json(j) for j in final])
    codes = [_outcome(j) for j in final]
    raise typer.Exit(next((c for c in codes if c != 0), 0))


def cancel(
    ctx: typer.Context,
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="Job ids.")],
    json_out: JsonOpt = False,
) -> None:
    """Cancel jobs (pending ones at once; running ones get SIGTERM, then SIGKILL).

    Example: kaic cancel 42 43
    """
    app = get_app(ctx)
    api = _api(app)
    done = [api.cancel(j) for j in job_ids]
    if json_out:
        app.json([_job_json(j) for j in done])
        return
    for job in done:
        app.info(f"Cancelling job {visible(job.id)} ({job.state.value}).")
