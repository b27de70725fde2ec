"""The executor owns the queue (Slurm): every tick

1. records the states and pending reasons the executor reports (`Executor.updates`),
2. passes cancels on,
3. hands every pending job the executor does not have yet over at once — an array as one,
   its dependencies as the executor's own (`after_ok`).

Time limits, pending reasons and final states are the executor's (`Ended.state`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from kaic.center.executors.base import ExecutorUnavailable
from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.ledger import CANCELLED_BY_USER, describe, log_start_failure
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.queues.base import QueuePolicy, dependency_verdict
from kaic.center.jobs.store import JobRow
from kaic.models import JobState


class HandOverQueue(QueuePolicy):
    """Hands jobs to an executor that runs the queue itself."""

    def step(self) -> None:
        for observed in self.executor.updates():
            with self.ledger.one_job(observed.job_id, "recording its state"):
                self.ledger.observed(observed)
        rows = self.jobs.active()
        self._pass_on_cancels(rows)
        self._hand_over(rows)

    def watched(self, active: Sequence[JobRow]) -> list[JobRow]:
        # Everything handed over is the executor's to watch, pending jobs too.
        return [r for r in active if r.external_id]

    def cancel(self, target: JobRow) -> None:
        if target.state is JobState.PENDING and not target.external_id:
            self.ledger.finish(target, JobState.CANCELLED, None, CANCELLED_BY_USER)
        elif not target.terminal and target.end_cause is None:
            # The batch system has it: it ends when the batch system says so.
            self.ledger.cancel_requested(target, f"passed on to {self.executor.name}")

    def estimate_start(
        self, partition: PartitionConfig, gpus: int, now: datetime
    ) -> datetime | None:
        # The batch system decides; only "now" is knowable from here.
        free = (self.executor.free_gpus() or {}).get(partition.name, 0)
        return now if free >= gpus else None

    def _pass_on_cancels(self, rows: Sequence[JobRow]) -> None:
        for row in rows:
            if row.end_cause == "cancel" and row.external_id and row.id not in self.signalled:
                self.signalled.add(row.id)
                with self.ledger.one_job(row.id, "passing its cancel on"):
                    self.executor.cancel(row.id)

    def _hand_over(self, rows: Sequence[JobRow]) -> None:
        """Submit every pending job (an array: all its tasks as one) the executor does not
        have yet; dependencies go along as the executor's own (`after_ok`)."""
        waiting = [r for r in rows if r.state is JobState.PENDING and not r.external_id]
        if not waiting:
            return
        dependencies = self.jobs.get_many(d for r in waiting for d in r.depends_on)
        arrays_done: set[str] = set()
        for row in waiting:
            if row.array_job_id:
                if row.array_job_id in arrays_done:
                    continue
                arrays_done.add(row.array_job_id)
            # `waiting` already holds every pending task not yet handed over, in task order.
            group = (
                [t for t in waiting if t.array_job_id == row.array_job_id]
                if row.array_job_id
                else [row]
            )
            members = [m.id for m in group]
            with self.ledger.one_job(row.id, "handing it over", fail=True, group=members):
                if not self._hand_over_group(row, group, dependencies):
                    return  # the batch system is unreachable: try again later

    def _hand_over_group(
        self, row: JobRow, group: Sequence[JobRow], dependencies: dict[str, JobRow]
    ) -> bool:
        """Hand over one job or array once its dependencies allow; False when the executor
        is unreachable right now."""
        verdict = dependency_verdict(row, dependencies)
        if verdict is not None:
            for member in group:
                self.ledger.finish_pending(member, verdict)
            return True
        after_ok: list[str] = []
        for dep_id in row.depends_on:
            dep = dependencies[dep_id]
            if dep.state is JobState.COMPLETED:
                continue  # done already: the batch system may have forgotten it
            if not dep.external_id:
                for member in group:
                    self.ledger.set_reason(member, "Dependency")
                return True
            after_ok.append(dep.external_id)
        return self._hand_over_one(row, group, after_ok)

    def _hand_over_one(self, row: JobRow, group: Sequence[JobRow], after_ok: list[str]) -> bool:
        """Submit one job or array; False when the executor is unreachable right now."""
        submit_id = row.array_job_id or row.id
        try:
            spec = launch_spec(
                self.settings, row, partition=row.partition, group=group, after_ok=after_ok
            )
            launched = self.executor.start(spec)
        except ExecutorUnavailable as exc:
            for member in group:
                self.ledger.set_reason(member, str(exc))
            return False
        except Exception as exc:
            # Like the center's own queue: whatever else submitting raises fails this job
            # (or array) only.
            log_start_failure(submit_id, "be submitted", exc)
            for member in group:
                self.ledger.finish_pending(
                    member, f"failed to submit: {describe(exc)}", state=JobState.FAILED
                )
            return True
        self.ledger.handed_over(row, group, launched.external_id, after_ok)
        return True
