"""`kaic submit`: a job file and flags become a job; with --wait/--follow its outcome is the
exit code CI trusts. Thin: parse, call `kaic.flows.submit`, render through the output sink.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kaic.cli import complete
from kaic.cli.context import AppContext, get_app
from kaic.cli.job_views import log_writers
from kaic.cli.options import CancelOnInterruptOpt, JqOpt, JsonOpt
from kaic.humanize import moment
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.submit import Submitted
    from kaic.models import Job


def register(app: typer.Typer) -> None:
    app.command("submit")(submit)


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
        logs=log_writers(app, to_stderr=app.output.json),
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
