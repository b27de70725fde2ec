"""What the Slurm executor keeps of each job it handed over, and how Slurm's record of a job
that ended becomes the center's `Ended` (exit status, signal, times, a reason in words).

Split from `executor.py`, which polls, reconciles and submits; this part is pure data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from kaic.center.executors.base import Ended
from kaic.center.executors.slurm.records import SlurmJob
from kaic.center.executors.slurm.states import pending_reason
from kaic.models import JobState


@dataclass
class Tracked:
    """What the executor keeps of one job it handed to Slurm."""

    job_id: str
    #: what Slurm's cancel takes: "123" or "123_4"
    slurm_id: str
    #: plain job: its Slurm id; array task: the array's Slurm id and the task index
    plain_id: int | None
    array_id: int | None
    task: int | None
    user: str | None
    state: JobState | None = None
    reason: str | None = None
    gpu_ids: tuple[int, ...] = ()
    nodes: tuple[str, ...] = ()
    last_seen: float = 0.0
    missing: int = 0
    cancel_requested: bool = False
    cancel_sent: bool = False
    #: an array task's own Slurm job id, once a poll has seen it (srun needs it)
    task_job_id: int | None = None
    #: Slurm's restart count: 0 when the center submitted it, else as first seen (after a
    #: center restart); a higher one means Slurm requeued it itself
    restarts: int | None = None


def utc(epoch: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch, timezone.utc) if epoch else None


def requeued_end(tracked: Tracked, record: SlurmJob) -> Ended:
    """Slurm requeued the job itself (after a node failure: slurmrestd 22.05 submits every
    batch job requeueable, whatever the center asks). The executor cancels that run in Slurm
    and reports it as the NODE_FAIL it was, so that the job's own `retry:` decides whether it
    runs again — as a new Slurm job with its own logs (`kaic.center.jobs.requeue`)."""
    return Ended(
        tracked.job_id,
        None,
        state=JobState.NODE_FAIL,
        reason=f"Slurm requeued it (restart {record.restarts}: a node failure or "
        "preemption); ended here so that the job's retry decides",
    )


def ended_from(tracked: Tracked, record: SlurmJob, state: JobState, reason: str | None) -> Ended:
    """How a job ended, from Slurm's final record of it: its exit status, signal and times,
    and a reason in words for the states that need one."""
    code, sig = record.exit_code, record.signal
    slurm_reason = pending_reason(record.state_reason)
    if state is JobState.COMPLETED:
        code = 0 if code is None else code
    elif state is JobState.CANCELLED and slurm_reason and "Depend" in slurm_reason:
        reason = "DependencyNeverSatisfied: a job it depends on did not complete successfully"
    elif state is JobState.CANCELLED and reason is None and not tracked.cancel_requested:
        reason = "cancelled in Slurm (scancel or an administrator)"
    elif state is JobState.TIMEOUT:
        reason = "time limit reached"
    elif state is JobState.OUT_OF_MEMORY:
        reason = "out of memory"
    elif state in (
        JobState.NODE_FAIL,
        JobState.BOOT_FAIL,
        JobState.PREEMPTED,
        JobState.DEADLINE,
    ):
        reason = f"Slurm reports {state.value}" + (f" ({slurm_reason})" if slurm_reason else "")
    elif state is JobState.FAILED and sig:
        reason = f"killed by signal {sig}"
    elif state is JobState.FAILED and slurm_reason not in (None, "NonZeroExitCode"):
        reason = slurm_reason
    return Ended(
        tracked.job_id,
        code,
        signal=sig,
        state=state,
        reason=reason,
        started_at=utc(record.start_time),
        ended_at=utc(record.end_time),
        nodes=record.nodes,
    )
