"""The center's own queue (the local executor): each pass it

1. signals running jobs that were cancelled or hit their time limit (SIGTERM now, SIGKILL
   after `kill_grace`, by the executor),
2. starts pending jobs, FIFO per partition, handing out the lowest free GPU indices
   exclusively, and records why the others wait (`Resources`, `Priority`, `Dependency`,
   `JobArrayTaskLimit`),

and says when it must pass again if nothing else happens: the next time limit.

A pass reads the active rows once (`JobStore.queue`, one small index) and costs O(active jobs
+ GPUs): free GPUs are a heap, not a scan per job. A pass after submissions alone
(`arrivals`) costs O(new jobs): FIFO means a new job never changes what the jobs ahead of it
get, so it reads only the rows numbered after the last pass's and decides them against what
that pass left (`_Tail`: the free GPUs, the partitions blocked, the array tasks running).
Anything else — a job's end, a cancel, a time limit, a failed record — makes the next pass a
whole one, which builds the tail afresh from the database. What it decides — the jobs it started,
those that end without running, why the others wait — is recorded in one transaction at its
end (`Ledger.batch`): one commit (an fsync) per pass, not one per job, so a 10,000-task
array settles in one.

Time limits use the real wall clock (`time.time()`, stored as `deadline_epoch`) so they hold
across restarts even when the settings inject a fake clock for timestamps.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from kaic.center.executors.base import Executor, Launched
from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.ledger import CANCELLED_BY_USER, Ledger, describe, log_start_failure
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.queues.base import QueuePolicy, dependency_verdict
from kaic.center.jobs.rows import JobRow, QueueRow
from kaic.center.settings import CenterSettings
from kaic.models import JobState


@dataclass(frozen=True)
class _Started:
    """A job a pass started, to be recorded with the others."""

    row: JobRow
    partition: str
    gpu_ids: list[int]
    launched: Launched
    deadline: float | None


@dataclass
class _Outcome:
    """What one pass decided, recorded together at its end (`CenterQueue._record`)."""

    starts: list[_Started] = field(default_factory=list)
    #: (job id, reason, final state) of jobs that end without running
    ends: list[tuple[str, str, JobState]] = field(default_factory=list)
    #: pending jobs whose reason changes
    waits: list[tuple[QueueRow, str]] = field(default_factory=list)

    def wait(self, row: QueueRow, reason: str) -> None:
        if row.reason != reason:
            self.waits.append((row, reason))


@dataclass
class _Tail:
    """What the queue ahead leaves for a job that arrives after a pass: each partition's
    GPUs in use and free (a heap, built when first needed), the partitions where a GPU job
    already waits (FIFO: a later one waits behind it), the running tasks per array, and the
    last job number the pass decided."""

    used: dict[str, set[int]] = field(default_factory=dict)
    free: dict[str, list[int]] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)
    running_tasks: Counter[str] = field(default_factory=Counter)
    seq: int = 0

    @classmethod
    def of(cls, rows: Sequence[QueueRow], partitions: Sequence[str]) -> _Tail:
        """Before a whole pass: the GPUs and array tasks the running rows hold."""
        tail = cls(used={name: set() for name in partitions})
        for row in rows:
            if row.state is JobState.RUNNING:
                tail.used.setdefault(row.partition, set()).update(row.gpu_ids)
                if row.array_job_id:
                    tail.running_tasks[row.array_job_id] += 1
        return tail

    def free_gpus(self, partition: PartitionConfig) -> list[int]:
        heap = self.free.get(partition.name)
        if heap is None:
            taken = self.used.get(partition.name, set())
            heap = self.free[partition.name] = [
                i for i in range(partition.gpus) if i not in taken
            ]  # ascending: already a heap
        return heap


class CenterQueue(QueuePolicy):
    """FIFO per partition with exclusive GPUs; the center signals cancels and time limits."""

    def __init__(
        self,
        ledger: Ledger,
        executor: Executor,
        settings: CenterSettings,
        partitions: Callable[[], dict[str, PartitionConfig]],
    ) -> None:
        super().__init__(ledger, executor, settings, partitions)
        #: starts a pass could not record (the database failed): recorded before the next
        self._unrecorded: list[_Started] = []
        #: what the last pass left for jobs submitted since (None: the next is a whole pass)
        self._tail: _Tail | None = None

    def step(self) -> float | None:
        self._tail = None
        if self._unrecorded:
            self._record(_Outcome(starts=self._unrecorded))
        rows = self.jobs.queue()
        running = [r for r in rows if r.state is JobState.RUNNING]
        self._signal_running(running)
        deadlines = self._schedule(rows, _Tail.of(rows, list(self.partitions())))
        # The next time limit to enforce (the jobs just started have theirs too).
        deadlines += [
            r.deadline_epoch
            for r in running
            if r.deadline_epoch is not None and r.id not in self.signalled
        ]
        return min(deadlines, default=None)

    def arrivals(self) -> float | None:
        """The jobs submitted since the last pass, decided against what it left; a whole
        pass when there is no such tail (or a row it did not expect: one not pending)."""
        tail = self._tail
        if tail is None or self._unrecorded:
            return self.step()
        rows = self.jobs.queue(after_seq=tail.seq)
        if any(r.state is not JobState.PENDING for r in rows):
            return self.step()
        self._tail = None  # until this pass is recorded
        return min(self._schedule(rows, tail), default=None)

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
        wanted, held = self.jobs.gpu_demand(partition.name)
        need = gpus + wanted
        free = partition.gpus - held
        if free >= need:
            return now
        deadline = self.jobs.deadline_freeing(partition.name, need - free)
        if deadline is None:
            return None
        return now + timedelta(seconds=max(0.0, deadline - time.time()))

    # -- signalling ----------------------------------------------------------------------

    def _signal_running(self, running: Sequence[QueueRow]) -> None:
        now = time.time()
        for row in running:
            if row.id in self.signalled:
                continue
            if row.end_cause is None and (row.deadline_epoch is None or now < row.deadline_epoch):
                continue  # neither cancelled nor out of time
            with self.ledger.one_job(row.id, "signalling it"):
                self._signal_one(row)

    def _signal_one(self, row: QueueRow) -> None:
        """Signal a running job that was cancelled or has reached its time limit."""
        if row.end_cause is None:
            self.ledger.time_limit_reached(row, self.settings.kill_grace)
        self.signalled.add(row.id)
        self.executor.cancel(row.id)

    # -- starting ------------------------------------------------------------------------

    def _schedule(self, rows: Sequence[QueueRow], tail: _Tail) -> list[float]:
        """Start what can start, FIFO per partition, after what `tail` says the queue ahead
        holds; record why the rest waits; keep the tail for the next arrivals. Returns the
        deadlines of the jobs it started."""
        partitions = self.partitions()
        running_tasks = tail.running_tasks
        blocked = tail.blocked
        pending = [r for r in rows if r.state is JobState.PENDING]
        dependencies = self.jobs.get_many(d for r in pending for d in r.depends_on)
        outcome = _Outcome()
        for row in pending:
            with self.ledger.one_job(row.id, "scheduling it", fail=True):
                partition = partitions.get(row.partition)
                if partition is None:
                    outcome.wait(row, "PartitionDown")
                    continue
                if row.depends_on:
                    verdict = dependency_verdict(row, dependencies)
                    if verdict is not None:
                        outcome.ends.append((row.id, verdict, JobState.CANCELLED))
                        continue
                    if not all(dependencies[d].state is JobState.COMPLETED for d in row.depends_on):
                        outcome.wait(row, "Dependency")
                        continue
                limit = row.array_limit if row.kind == "task" and row.array_job_id else None
                if (
                    limit is not None
                    and row.array_job_id
                    and running_tasks[row.array_job_id] >= limit
                ):
                    outcome.wait(row, "JobArrayTaskLimit")
                    continue
                if row.gpus > 0 and partition.name in blocked:
                    outcome.wait(row, "Priority")
                    continue
                heap = tail.free_gpus(partition)
                if len(heap) < row.gpus:
                    outcome.wait(row, "Resources")
                    blocked.add(partition.name)
                    continue
                gpu_ids = [heapq.heappop(heap) for _ in range(row.gpus)]
                if not self._start(row, partition, gpu_ids, outcome):
                    for gpu in gpu_ids:  # it failed: its GPUs are free for the next
                        heapq.heappush(heap, gpu)
                    continue
                if row.array_job_id:
                    running_tasks[row.array_job_id] += 1
        self._record(outcome)
        # Recorded: the tail holds for the next arrivals (a row that ended without running
        # held no GPUs; one that failed to start gave its GPUs back to the heap).
        tail.seq = max([tail.seq, *(r.seq for r in rows)])
        self._tail = tail
        return [s.deadline for s in outcome.starts if s.deadline is not None]

    def _start(
        self, queued: QueueRow, partition: PartitionConfig, gpu_ids: list[int], outcome: _Outcome
    ) -> bool:
        """Start one job on `gpu_ids` (recorded with the pass's `outcome`); False if it
        cannot start: it is to end FAILED, saying why (or is gone).

        Anything starting it raises fails this job only: a job that cannot start must never
        keep the queue from everyone else's (a NUL byte in a job's name once did)."""
        row = self.jobs.get(queued.id)
        if row is None:
            return False
        try:
            spec = launch_spec(
                self.settings,
                row,
                partition=partition.name,
                gpu_ids=gpu_ids,
                secrets=self.secrets,
            )
            launched = self.executor.start(spec)
        except Exception as exc:
            log_start_failure(row.id, "start", exc)
            outcome.ends.append((row.id, f"failed to start: {describe(exc)}", JobState.FAILED))
            return False
        deadline = time.time() + row.time_limit_seconds if row.time_limit_seconds else None
        outcome.starts.append(_Started(row, partition.name, gpu_ids, launched, deadline))
        return True

    def _record(self, outcome: _Outcome) -> None:
        """What a pass decided, in one transaction: the jobs it started, the jobs that end
        without running, and why the others wait. Should the transaction fail, the starts
        are kept and recorded before the next pass decides anything (their jobs run)."""
        if not outcome.starts and not outcome.ends and not outcome.waits:
            return
        try:
            with self.ledger.batch():
                for s in outcome.starts:
                    with self.ledger.one_job(s.row.id, "recording its start", fail=True):
                        self.ledger.started(s.row, s.partition, s.gpu_ids, s.launched, s.deadline)
                whole = self.jobs.get_many(job_id for job_id, _, _ in outcome.ends)
                for job_id, reason, state in outcome.ends:
                    with self.ledger.one_job(job_id, "ending it", fail=True):
                        if job_id in whole:
                            self.ledger.finish_pending(whole[job_id], reason, state=state)
                for queued, reason in outcome.waits:
                    with self.ledger.one_job(queued.id, "scheduling it", fail=True):
                        self.ledger.set_reason(queued, reason)
        except BaseException:
            self._unrecorded = outcome.starts
            raise
        self._unrecorded = []
