"""The center's own queue (the local executor): every tick it

1. signals running jobs that were cancelled or hit their time limit (SIGTERM now, SIGKILL
   after `kill_grace`, by the executor),
2. starts pending jobs, FIFO per partition, handing out the lowest free GPU indices
   exclusively, and records why the others wait (`Resources`, `Priority`, `Dependency`,
   `JobArrayTaskLimit`).

Time limits use the real wall clock (`time.time()`, stored as `deadline_epoch`) so they hold
across restarts even when the settings inject a fake clock for timestamps.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.ledger import CANCELLED_BY_USER, describe, log_start_failure
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.queues.base import QueuePolicy, dependency_verdict
from kaic.center.jobs.store import JobRow
from kaic.models import JobState


class CenterQueue(QueuePolicy):
    """FIFO per partition with exclusive GPUs; the center signals cancels and time limits."""

    def step(self) -> None:
        rows = self.jobs.active()
        self._signal_running([r for r in rows if r.state is JobState.RUNNING])
        self._schedule(rows)

    def watched(self, active: Sequence[JobRow]) -> list[JobRow]:
        return [r for r in active if r.state is JobState.RUNNING]

    def cancel(self, target: JobRow) -> None:
        if target.state is JobState.PENDING:
            self.ledger.finish(target, JobState.CANCELLED, None, CANCELLED_BY_USER)
        elif target.state is JobState.RUNNING and target.end_cause is None:
            self.ledger.cancel_requested(
                target, f"SIGTERM, SIGKILL after {self.settings.kill_grace:g}s"
            )

    def estimate_start(
        self, partition: PartitionConfig, gpus: int, now: datetime
    ) -> datetime | None:
        """Now if enough GPUs are free (and no GPU job waits ahead); otherwise the earliest
        time enough running jobs reach their time limits; None with running jobs without
        limits in the way."""
        rows = [r for r in self.jobs.active() if r.partition == partition.name and r.gpus > 0]
        running = [r for r in rows if r.state is JobState.RUNNING]
        need = gpus + sum(r.gpus for r in rows if r.state is JobState.PENDING)
        free = partition.gpus - sum(len(r.gpu_ids) for r in running)
        if free >= need:
            return now
        wall = time.time()
        for row in sorted(
            (r for r in running if r.deadline_epoch is not None),
            key=lambda r: r.deadline_epoch or 0.0,
        ):
            free += len(row.gpu_ids)
            if free >= need:
                return now + timedelta(seconds=max(0.0, (row.deadline_epoch or wall) - wall))
        return None

    # -- signalling ----------------------------------------------------------------------

    def _signal_running(self, running: Sequence[JobRow]) -> None:
        for row in running:
            if row.id in self.signalled:
                continue
            with self.ledger.one_job(row.id, "signalling it"):
                self._signal_one(row)

    def _signal_one(self, row: JobRow) -> None:
        """Signal a running job that was cancelled or has reached its time limit."""
        if row.end_cause is None:
            if row.deadline_epoch is None or time.time() < row.deadline_epoch:
                return
            self.ledger.time_limit_reached(row, self.settings.kill_grace)
        self.signalled.add(row.id)
        self.executor.cancel(row.id)

    # -- starting ------------------------------------------------------------------------

    def _schedule(self, rows: Sequence[JobRow]) -> None:
        partitions = self.partitions()
        used: dict[str, set[int]] = {name: set() for name in partitions}
        running_tasks: Counter[str] = Counter()
        for row in rows:
            if row.state is JobState.RUNNING:
                used.setdefault(row.partition, set()).update(row.gpu_ids)
                if row.array_job_id:
                    running_tasks[row.array_job_id] += 1
        blocked: set[str] = set()
        pending = [r for r in rows if r.state is JobState.PENDING]
        dependencies = self.jobs.get_many(d for r in pending for d in r.depends_on)
        for row in pending:
            with self.ledger.one_job(row.id, "scheduling it", fail=True):
                partition = partitions.get(row.partition)
                if partition is None:
                    self.ledger.set_reason(row, "PartitionDown")
                    continue
                if row.depends_on:
                    verdict = dependency_verdict(row, dependencies)
                    if verdict is not None:
                        self.ledger.finish_pending(row, verdict)
                        continue
                    if not all(dependencies[d].state is JobState.COMPLETED for d in row.depends_on):
                        self.ledger.set_reason(row, "Dependency")
                        continue
                limit = row.array_limit if row.kind == "task" and row.array_job_id else None
                if (
                    limit is not None
                    and row.array_job_id
                    and running_tasks[row.array_job_id] >= limit
                ):
                    self.ledger.set_reason(row, "JobArrayTaskLimit")
                    continue
                if row.gpus > 0 and partition.name in blocked:
                    self.ledger.set_reason(row, "Priority")
                    continue
                taken = used[partition.name]
                free = [i for i in range(partition.gpus) if i not in taken]
                if len(free) < row.gpus:
                    self.ledger.set_reason(row, "Resources")
                    blocked.add(partition.name)
                    continue
                gpu_ids = free[: row.gpus]
                if self._start(row, partition, gpu_ids):
                    taken.update(gpu_ids)
                    if row.array_job_id:
                        running_tasks[row.array_job_id] += 1

    def _start(self, row: JobRow, partition: PartitionConfig, gpu_ids: list[int]) -> bool:
        """Start one job on `gpu_ids`; False (and the job FAILED, saying why) if it cannot.

        Anything starting it raises fails this job only: a job that cannot start must never
        keep the queue from everyone else's (a NUL byte in a job's name once did)."""
        try:
            spec = launch_spec(self.settings, row, partition=partition.name, gpu_ids=gpu_ids)
            launched = self.executor.start(spec)
        except Exception as exc:
            log_start_failure(row.id, "start", exc)
            self.ledger.finish_pending(
                row, f"failed to start: {describe(exc)}", state=JobState.FAILED
            )
            return False
        deadline = time.time() + row.time_limit_seconds if row.time_limit_seconds else None
        self.ledger.started(row, partition.name, gpu_ids, launched, deadline)
        return True
