"""Automatic requeue: a job the system ended (NODE_FAIL, PREEMPTED, BOOT_FAIL) runs again as
the same id with the next attempt number, when its `retry:` asks for it.

The ledger asks `next_attempt` before it records an end; where a job is to run again, it
records the attempt that ended here instead (`requeue`): its GPU-hours charged, why it ended,
and the job back to PENDING with its run's fields cleared, in the same transaction, so a
waiting client never sees the job terminal in between. Each attempt runs in a directory of
its own (`paths.job_paths`), so every attempt's logs stay readable.

Both queue policies run it again with no change of theirs: the center's own queue starts a
pending job, and the hand-over queue submits a pending job the batch system does not have
(its external id is cleared) — on Slurm a new Slurm job for the same kaic job, for every
end Slurm reports as NODE_FAIL, PREEMPTED or BOOT_FAIL (a run Slurm requeued by itself is
cancelled there and reported as NODE_FAIL: `executors/slurm/executor.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaic.center.jobs.rows import JobRow
from kaic.models import JobState

if TYPE_CHECKING:
    from kaic.center.jobs.ledger import Ledger


def next_attempt(row: JobRow, state: JobState) -> int | None:
    """The attempt to run next when `row` ended in `state`, or None when it ends for good:
    only a state its `retry.on` lists, only `retry.max` times, never a job the user cancelled
    (nor one that ended by its own exit code: those are COMPLETED/FAILED, never listed)."""
    retry = row.spec.retry
    if retry is None or row.end_cause == "cancel" or row.kind == "array":
        return None
    if state.value not in retry.on or row.attempt > retry.max:
        return None
    return row.attempt + 1


def requeue(
    ledger: Ledger,
    row: JobRow,
    state: JobState,
    reason: str | None,
    attempt: int,
    gpu_hours: float,
) -> None:
    """Record the end of `row`'s attempt in `state` and queue attempt `attempt` (in a
    transaction): the attempt's GPU-hours charged and added to the job's, the job PENDING
    again with the fields of a run cleared, and two events that say what happened."""
    jobs = ledger.jobs
    retry = row.spec.retry
    assert retry is not None
    why = f" ({reason})" if reason else ""
    jobs.update(
        row.id,
        state=JobState.PENDING,
        reason=f"requeued after {state.value}",
        exit_code=None,
        started_at=None,
        ended_at=None,
        gpu_ids=[],
        deadline_epoch=None,
        external_id=None,
        pid=None,
        pgid=None,
        proc_start=None,
        end_cause=None,
        gpu_hours=row.gpu_hours + gpu_hours,
        attempt=attempt,
    )
    jobs.charge(row.project_id, gpu_hours)
    ended = f"attempt {row.attempt} ended {state.value}"
    if reason:
        ended += f": {reason}"
    if gpu_hours:
        ended += f"; charged {gpu_hours:.4f} GPU-hours"
    jobs.events.add(row.id, ended, state)
    jobs.events.add(
        row.id,
        f"attempt {attempt} of {retry.max + 1} after {state.value}{why}: requeued",
        JobState.PENDING,
    )
    if row.array_job_id:
        ledger.refresh_array(row.array_job_id)
    ledger.requeued(row.id)
