"""`kaic alloc`: the `salloc` of kaic — an interactive allocation (a job of kind
`interactive`, charged like any other), a shell or a command inside it once it runs, and its
release when the shell is left (unless `--keep`).

While the allocation waits, its pending reason (and the estimated start of the center's dry
run) is said on stderr whenever it changes; Ctrl-C then cancels it and exits 130. Once it
runs, `kaic.flows.interactive` takes over; whatever way the session ends, the allocation is
cancelled afterwards unless kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kaic.errors import Interrupted, KaicError, UsageError
from kaic.flows.interactive import SHELL_ARGV, Command, Streams, run_command
from kaic.flows.ui import Ui
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.models import Job, JobSubmit

#: what the user typed for each field of the allocation
_FLAGS = {
    "resources": "--gpus",
    "resources.gpus": "--gpus",
    "time_limit_seconds": "--time",
    "partition": "--partition",
    "project": "--project",
}
POLL_START_S = 0.5
POLL_CAP_S = 5.0


@dataclass(frozen=True)
class AllocRequest:
    """What `kaic alloc` was asked: the allocation, and what to run in it (None: a shell)."""

    gpus: int | None = None
    time: str | None = None
    partition: str | None = None
    project: str | None = None
    keep: bool = False
    command: list[str] | None = None
    env: Mapping[str, str] = field(default_factory=dict)


def allocation(request: AllocRequest) -> JobSubmit:
    """The interactive job to submit; a usage error naming the flag for a refused value."""
    from kaic.durations import parse_duration
    from kaic.flows.inputs import user_input
    from kaic.models import JobSubmit, Resources

    seconds = None
    if request.time is not None:
        try:
            seconds = parse_duration(request.time)
        except ValueError as exc:
            raise UsageError(f"--time: {exc}") from None
    with user_input(_FLAGS):
        return JobSubmit(
            name="interactive",
            kind="interactive",
            partition=request.partition,
            project=request.project,
            resources=Resources(gpus=request.gpus or 0),
            time_limit_seconds=seconds,
        )


def allocate(
    session: Callable[[], Session],
    request: AllocRequest,
    streams: Streams,
    ui: Ui,
) -> int:
    """Submit the allocation, wait for it, run the shell or command in it, release it;
    returns the shell's or command's exit code (see the module docstring)."""
    spec = allocation(request)
    opened = session()
    verdict = opened.jobs.dry_run(spec)
    if not verdict.valid:
        raise KaicError(
            "the center would refuse this allocation: " + "; ".join(map(visible, verdict.problems))
        )
    job = opened.jobs.submit(spec)
    start = verdict.estimated_start
    ui.info(
        f"Allocation {visible(job.id)} submitted ({spec.resources.gpus} GPU(s), partition "
        f"{visible(job.partition)}); waiting for it to start… (Ctrl-C cancels it)"
        + (f" — estimated start {start:%Y-%m-%d %H:%M:%S %Z}" if start else "")
    )
    try:
        job = _wait_until_running(opened, job, ui)
    except KeyboardInterrupt:
        _release(opened, job.id, ui)
        raise Interrupted(f"interrupted; allocation {visible(job.id)} cancelled") from None
    except BaseException:
        _release(opened, job.id, ui)  # a wait that failed (the center gone) leaves no GPUs held
        raise
    if job.state.value != "RUNNING":
        from kaic.flows.jobs import describe_end, outcome

        ui.info(describe_end(job))
        return outcome(job) or 1
    ui.info(
        f"Allocation {visible(job.id)} is running"
        + (f" (GPUs {','.join(map(str, job.gpu_ids))})" if job.gpu_ids else "")
        + ("; leave the shell (exit) to release it" if request.command is None else "")
        + "."
    )
    command = (
        Command(request.command)
        if request.command
        else Command(SHELL_ARGV, tty=True, env=request.env)
    )
    try:
        return run_command(opened, job.id, command, streams, ui)
    finally:
        if request.keep:
            ui.info(
                f"Allocation {visible(job.id)} kept: `kaic shell {visible(job.id)}` enters it "
                f"again; `kaic cancel {visible(job.id)}` releases it."
            )
        else:
            _release(opened, job.id, ui)


def _wait_until_running(session: Session, job: Job, ui: Ui) -> Job:
    """Poll until the job runs or ends, saying each new pending reason."""
    from kaic.models import is_terminal

    said: str | None = None
    interval = POLL_START_S
    while job.state.value != "RUNNING" and not is_terminal(job.state):
        reason = job.reason or "waiting for a scheduler pass"
        if reason != said:
            ui.info(f"allocation {visible(job.id)} {job.state.value}: {visible(reason)}")
            said = reason
        ui.sleep(interval)
        interval = min(interval * 1.5, POLL_CAP_S)
        job = session.jobs.get(job.id)
    return job


def _release(session: Session, job_id: str, ui: Ui) -> None:
    """Cancel the allocation; a failure is a warning naming how to do it by hand."""
    try:
        session.jobs.cancel(job_id)
    except KaicError as exc:
        ui.warn(
            f"could not release allocation {visible(job_id)}: {exc.message}; release it with "
            f"`kaic cancel {visible(job_id)}`"
        )
        return
    ui.info(f"Allocation {visible(job_id)} released.")
