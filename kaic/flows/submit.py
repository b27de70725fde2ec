"""`kaic submit`: a job file and flags become a job; its inputs are pushed first, and with
--wait/--follow its logs followed, its end waited for and its outputs pulled.

The steps, each in its own part: `jobspec` builds the job (file + flags, every problem a
usage error naming the flag or the file line), `job_staging` checks and pushes the inputs
(nothing is submitted if one fails), the jobs API submits it (with an Idempotency-Key),
`follow_logs`/`wait_for_jobs` follow and wait (riding out a center outage, saying so), and
`job_staging` fetches the outputs. The command renders `Submitted` and exits with its code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaic.flows.job_staging import (
    Staged,
    check_inputs,
    fetch_outputs,
    first_error,
    plan_outputs,
    remote_display,
    stage_inputs,
)
from kaic.flows.jobs import LogWriters, follow_logs, outcome, say_end
from kaic.flows.ui import Ui
from kaic.flows.wait import CenterOutage, on_interrupt
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.jobspec import SubmitOverrides
    from kaic.models import DryRunResult, Job


@dataclass(frozen=True)
class SubmitRequest:
    """What `kaic submit` was asked: the job file and flags, and what to do after."""

    job_file: Path | None
    overrides: SubmitOverrides
    idempotency_key: str | None = None
    dry_run: bool = False
    wait: bool = False
    follow: bool = False
    #: Ctrl-C while waiting cancels the job (srun's behaviour) instead of leaving it running
    cancel_on_interrupt: bool = False


@dataclass
class Submitted:
    """What a submission came to: a dry run's verdict, or the job (and, after a wait, the job
    as it ended, its outputs and the code to exit with)."""

    dry_run: DryRunResult | None = None
    job: Job | None = None
    inputs: list[Staged] = field(default_factory=list)
    final: Job | None = None
    outputs: list[Staged] = field(default_factory=list)
    exit_code: int = 0

    def document(self) -> dict[str, Any]:
        """The JSON of `kaic submit --json`: the dry run's verdict, or the job (as it ended,
        after a wait) with the inputs staged and the outputs fetched."""
        if self.dry_run is not None:
            return self.dry_run.model_dump(mode="json")
        job = self.final or self.job
        assert job is not None
        doc: dict[str, Any] = job.model_dump(mode="json")
        if self.inputs:
            doc["inputs"] = [i.summary() for i in self.inputs]
        if self.outputs:
            doc["outputs"] = [o.summary() for o in self.outputs]
        return doc


def submit(
    session: Callable[[], Session],
    request: SubmitRequest,
    ui: Ui,
    *,
    logs: LogWriters,
    on_submitted: Callable[[Job], None],
) -> Submitted:
    """Build, stage, submit, and (with wait/follow) follow, wait and fetch; see the module
    docstring. `on_submitted` hears of the job as soon as the center accepted it (before any
    wait: the id is on stdout before a Ctrl-C can come); `logs` receive the job's output
    under --follow. `session` is opened only once the job is built (a bad flag needs no
    center)."""
    from kaic.jobspec import build_submit, load_job_file

    job_file = load_job_file(request.job_file) if request.job_file is not None else None
    spec, input_list, output_list = build_submit(job_file, request.overrides)
    inputs = check_inputs(job_file, input_list)
    outputs = plan_outputs(job_file, output_list)
    opened = session()
    if request.dry_run:
        for item in inputs:
            ui.info(f"input {visible(item.src)} -> {visible(item.dst)} (not staged: dry run)")
        result = opened.jobs.dry_run(spec)
        return Submitted(dry_run=result, exit_code=0 if result.valid else 6)
    staged = stage_inputs(opened, ui, inputs)
    job = opened.jobs.submit(spec, idempotency_key=request.idempotency_key)
    on_submitted(job)
    done = Submitted(job=job, inputs=staged)
    if not (request.wait or request.follow):
        for item in outputs:
            ui.info(
                f"output {visible(item.src)} is fetched only with --wait or --follow; later: "
                f"kaic data pull {visible(remote_display(item.src))} {visible(item.dst)}"
            )
        return done
    follow = request.follow and not job.array_tasks
    again = ("kaic logs -f", "follows") if follow else ("kaic wait", "waits for")
    return wait_and_fetch(
        opened,
        done,
        ui,
        outputs,
        logs=logs if follow else None,
        again=again,
        cancel_on_interrupt=request.cancel_on_interrupt,
    )


def wait_and_fetch(
    session: Session,
    done: Submitted,
    ui: Ui,
    outputs: list[Staged],
    *,
    logs: LogWriters | None,
    again: tuple[str, str] = ("kaic wait", "waits for"),
    cancel_on_interrupt: bool = False,
) -> Submitted:
    """Wait for `done.job` (following its `logs` when given), fetch its outputs, and set the
    code to exit with: the job's outcome, or — for a job that succeeded but whose outputs
    could not be fetched — the fetch error's."""
    from kaic.flows.wait import wait_for_jobs

    job = done.job
    assert job is not None
    outage = CenterOutage(ui.info)
    with on_interrupt(session.jobs, [job.id], again, cancel=cancel_on_interrupt):
        if logs is not None:
            follow_logs(
                session,
                job.id,
                logs,
                follow=True,
                tail=None,
                outage=outage,
                nodes=job.resources.nodes,
            )
        final = wait_for_jobs(session.jobs, [job.id], sleep=ui.sleep, on_reachability=outage)[0]
    say_end(final, ui)
    done.final = final
    done.outputs = fetch_outputs(session, ui, outputs)
    done.exit_code = outcome(final)
    failed = first_error(done.outputs)
    if done.exit_code == 0 and failed is not None:
        done.exit_code = int(failed.exit_code)
    return done
