"""The center's own queue (the local executor): each pass it

1. signals running jobs that were cancelled or hit their time limit (SIGTERM now, SIGKILL
   after `kill_grace`, by the executor),
2. starts pending jobs, FIFO per partition, handing out the lowest free GPU indices
   exclusively, and records why the others wait (`Resources`, `Priority`, `Dependency`,
   `JobArrayTaskLimit`),

and says when it must pass again if nothing else happens: the next time limit.

A pass reads the active rows once and costs O(active jobs + GPUs): free GPUs are a heap, not
a scan per job. Each start is recorded at once (the job runs from then on); the pending
reasons and the jobs whose dependencies can never be met are recorded together, in one
transaction at the end (`Ledger.batch`), so a 10,000-task array settles in one commit.

Time limits use the real wall clock (`time.time()`, stored as `deadline_epoch`) so they hold
across restarts even when the settings inject a fake clock for timestamps.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.ledger import CANCELLED_BY_USER, describe, log_start_failure
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.queues.base import QueuePolicy, dependency_verdict
from kaic.center.jobs.store import JobRow, QueueRow
from kaic.models import JobState


class CenterQueue(QueuePolicy):
    """FIFO per partition with exclusive GPUs; the center signals cancels and time limits."""

    def step(self) -> float | None:
        rows = self.jobs.queue()
        running = [r for r in rows if r.state is JobState.RUNNING]
        self._signal_running(running)
        deadlines = self._schedule(rows)
        # The next time limit to enforce (the jobs just started have theirs too).
        deadlines += [
            r.deadline_epoch
            for r in running
            if r.deadline_epoch is not None and r.id not in self.signalled
        ]
        return min(deadlines, default=None)

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
        wanted, running = self.jobs.gpu_queue(partition.name)
        need = gpus + wanted
        free = partition.gpus - sum(held for held, _ in running)
        if free >= need:
            return now
        wall = time.time()
        for held, deadline in sorted(
            ((held, deadline) for held, deadline in running if deadline is not None),
            key=lambda item: item[1] or 0.0,
        ):
            free += held
            if free >= need:
                return now + timedelta(seconds=max(0.0, (deadline or wall) - wall))
        return None

    # -- signalling ----------------------------------------------------------------------

    def _signal_running(self, running: Sequence[QueueRow]) -> None:
        for row in running:
            if row.id in self.signalled:
                continue
            with self.ledger.one_job(row.id, "signalling it"):
                self._signal_one(row)

    def _signal_one(self, row: QueueRow) -> None:
        """Signal a running job that was cancelled or has reached its time limit."""
        if row.end_cause is None:
            if row.deadline_epoch is None or time.time() < row.deadline_epoch:
                return
            self.ledger.time_limit_reached(row, self.settings.kill_grace)
        self.signalled.add(row.id)
        self.executor.cancel(row.id)

    # -- starting ------------------------------------------------------------------------

    def _schedule(self, rows: Sequence[QueueRow]) -> list[float]:
        """Start what can start, FIFO per partition; record why the rest waits. Returns
        the deadlines of the jobs it started."""
        partitions = self.partitions()
        used: dict[str, set[int]] = {name: set() for name in partitions}
        running_tasks: Counter[str] = Counter()
        for row in rows:
            if row.state is JobState.RUNNING:
                used.setdefault(row.partition, set()).update(row.gpu_ids)
                if row.array_job_id:
                    running_tasks[row.array_job_id] += 1
        #: the free GPU indices per partition, lowest first (built when first needed)
        free: dict[str, list[int]] = {}
        blocked: set[str] = set()
        pending = [r for r in rows if r.state is JobState.PENDING]
        dependencies = self.jobs.get_many(d for r in pending for d in r.depends_on)
        waits: list[tuple[QueueRow, str]] = []
        never: list[tuple[QueueRow, str]] = []
        deadlines: list[float] = []
        for row in pending:
            with self.ledger.one_job(row.id, "scheduling it", fail=True):
                partition = partitions.get(row.partition)
                if partition is None:
                    waits.append((row, "PartitionDown"))
                    continue
                if row.depends_on:
                    verdict = dependency_verdict(row, dependencies)
                    if verdict is not None:
                        never.append((row, verdict))
                        continue
                    if not all(dependencies[d].state is JobState.COMPLETED for d in row.depends_on):
                        waits.append((row, "Dependency"))
                        continue
                limit = row.array_limit if row.kind == "task" and row.array_job_id else None
                if (
                    limit is not None
                    and row.array_job_id
                    and running_tasks[row.array_job_id] >= limit
                ):
                    waits.append((row, "JobArrayTaskLimit"))
                    continue
                if row.gpus > 0 and partition.name in blocked:
                    waits.append((row, "Priority"))
                    continue
                heap = free.get(partition.name)
                if heap is None:
                    taken = used[partition.name]
                    heap = free[partition.name] = [
                        i for i in range(partition.gpus) if i not in taken
                    ]  # ascending: already a heap
                if len(heap) < row.gpus:
                    waits.append((row, "Resources"))
                    blocked.add(partition.name)
                    continue
                gpu_ids = [heapq.heappop(heap) for _ in range(row.gpus)]
                started, deadline = self._start(row, partition, gpu_ids)
                if not started:
                    for gpu in gpu_ids:  # it failed: its GPUs are free for the next
                        heapq.heappush(heap, gpu)
                    continue
                if deadline is not None:
                    deadlines.append(deadline)
                if row.array_job_id:
                    running_tasks[row.array_job_id] += 1
        self._record_waits(waits, never)
        return deadlines

    def _record_waits(
        self, waits: Sequence[tuple[QueueRow, str]], never: Sequence[tuple[QueueRow, str]]
    ) -> None:
        """Why jobs wait, and the ones that never can run, in one transaction."""
        waits = [(row, reason) for row, reason in waits if row.reason != reason]
        if not waits and not never:
            return
        with self.ledger.batch():
            for row, reason in waits:
                with self.ledger.one_job(row.id, "scheduling it", fail=True):
                    self.ledger.set_reason(row, reason)
            whole = self.jobs.get_many(row.id for row, _ in never)
            for row, verdict in never:
                with self.ledger.one_job(row.id, "scheduling it", fail=True):
                    if row.id in whole:
                        self.ledger.finish_pending(whole[row.id], verdict)

    def _start(
        self, queued: QueueRow, partition: PartitionConfig, gpu_ids: list[int]
    ) -> tuple[bool, float | None]:
        """Start one job on `gpu_ids`: (started, its deadline epoch or None); not started
        means the job FAILED, saying why (or is gone).

        Anything starting it raises fails this job only: a job that cannot start must never
        keep the queue from everyone else's (a NUL byte in a job's name once did)."""
        row = self.jobs.get(queued.id)
        if row is None:
            return False, None
        try:
            spec = launch_spec(self.settings, row, partition=partition.name, gpu_ids=gpu_ids)
            launched = self.executor.start(spec)
        except Exception as exc:
            log_start_failure(row.id, "start", exc)
            self.ledger.finish_pending(
                row, f"failed to start: {describe(exc)}", state=JobState.FAILED
            )
            return False, None
        deadline = time.time() + row.time_limit_seconds if row.time_limit_seconds else None
        self.ledger.started(row, partition.name, gpu_ids, launched, deadline)
        return True, deadline
