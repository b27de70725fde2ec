"""The executor owns the queue (Slurm): each pass

1. records the states and pending reasons the executor reported (`Executor.updates`, taken
   after each poll by `observe`: a report is what makes a pass needed), all in one
   transaction,
2. passes cancels on,
3. hands every pending job the executor does not have yet over at once — an array as one,
   its dependencies as the executor's own (`after_ok`).

Time limits, pending reasons and final states are the executor's (`Ended.state`). With
nothing reported, submitted or cancelled there is no pass: holding 10,000 pending jobs costs
the executor's one batched poll per interval, nothing more. A pass reads only the rows it
acts on (SQLite filters the queue's index: the jobs not handed over, the cancels to pass
on), and a pass after submissions alone (`arrivals`) only the jobs numbered after the last
pass's, so a submit beside 10,000 jobs the executor holds costs what it costs beside none.
A hand-over the executor cannot take now (the batch system unreachable) is retried
`RETRY_SECONDS` later. A pass hands over for at most `BUDGET_SECONDS`, then leaves the rest
to the next one, due at once: the executor is polled in between. (One pass used to hand
over every job submitted since the last; while submissions outpaced slurmrestd, that
backlog grew and no poll ran until it was drained — 14 minutes without one, at load 30.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime

from kaic.center.executors.base import Executor, ExecutorUnavailable, Observed
from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.ledger import CANCELLED_BY_USER, Ledger, describe, log_start_failure
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.queues.base import QueuePolicy, dependency_verdict
from kaic.center.jobs.rows import JobRow, QueueRow
from kaic.center.settings import CenterSettings
from kaic.models import JobState

#: seconds before a hand-over the executor could not take is tried again
RETRY_SECONDS = 1.0
#: the most seconds one pass spends handing jobs over before it lets the executor poll
BUDGET_SECONDS = 1.0


class HandOverQueue(QueuePolicy):
    """Hands jobs to an executor that runs the queue itself."""

    def __init__(
        self,
        ledger: Ledger,
        executor: Executor,
        settings: CenterSettings,
        partitions: Callable[[], dict[str, PartitionConfig]],
    ) -> None:
        super().__init__(ledger, executor, settings, partitions)
        #: what the executor reported and the next pass records
        self._reports: list[Observed] = []
        #: the last job number a pass handed over or saw (None: the next is a whole pass)
        self._after: int | None = None

    def observe(self) -> bool:
        self._reports.extend(self.executor.updates())
        return bool(self._reports)

    def step(self) -> float | None:
        self._after = None
        self.observe()
        reports, self._reports = self._reports, []
        if reports:
            with self.ledger.batch():
                for observed in reports:
                    with self.ledger.one_job(observed.job_id, "recording its state"):
                        self.ledger.observed(observed)
        self._pass_on_cancels(self.jobs.queue(only="cancelling"))
        return self._hand_over_after(self.jobs.next_seq() - 1, 0)

    def arrivals(self) -> float | None:
        """Hand over the jobs submitted since the last pass (a whole pass when there was
        none, or reports wait)."""
        if self._after is None or self._reports:
            return self.step()
        return self._hand_over_after(self._after, self._after)

    def _hand_over_after(self, last: int, after: int) -> float | None:
        """Hand over the waiting jobs numbered after `after`; then the next arrivals are
        those after `last` (read before: a job submitted meanwhile is an arrival). When
        the executor could not take them, a whole pass is due shortly."""
        self._after = None
        handed = self._hand_over(self.jobs.queue(after, only="unsubmitted"))
        if handed is None:
            return time.time() + RETRY_SECONDS
        if not handed:
            return time.time()  # the budget ran out: a whole pass, after a poll
        self._after = last
        return None

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

    def _pass_on_cancels(self, cancelling: Sequence[QueueRow]) -> None:
        for row in cancelling:
            if row.id not in self.signalled:
                self.signalled.add(row.id)
                with self.ledger.one_job(row.id, "passing its cancel on"):
                    self.executor.cancel(row.id)

    def _hand_over(self, waiting: Sequence[QueueRow]) -> bool | None:
        """Submit every pending job (an array: all its tasks as one) the executor does not
        have yet (`waiting`); dependencies go along as the executor's own (`after_ok`).
        True when all went; False when `BUDGET_SECONDS` ran out first (the rest is the next
        pass's); None when the executor could not take them now (to be tried again)."""
        if not waiting:
            return True
        dependencies = self.jobs.get_many(d for r in waiting for d in r.depends_on)
        # A job alone, or an array's pending tasks not yet handed over, in task order.
        groups: dict[str, list[QueueRow]] = {}
        for row in waiting:
            groups.setdefault(row.array_job_id or row.id, []).append(row)
        deadline = time.monotonic() + BUDGET_SECONDS
        for done, group in enumerate(groups.values()):
            if done and time.monotonic() > deadline:  # (one at least: always progress)
                return False
            row = group[0]
            members = [m.id for m in group]
            with self.ledger.one_job(row.id, "handing it over", fail=True, group=members):
                if not self._hand_over_group(row, group, dependencies):
                    return None  # the batch system is unreachable: try again later
        return True

    def _hand_over_group(
        self, row: QueueRow, group: Sequence[QueueRow], dependencies: dict[str, JobRow]
    ) -> bool:
        """Hand over one job or array once its dependencies allow; False when the executor
        is unreachable right now."""
        verdict = dependency_verdict(row, dependencies)
        if verdict is not None:
            self._finish_all(group, verdict, JobState.CANCELLED)
            return True
        after_ok: list[str] = []
        for dep_id in row.depends_on:
            dep = dependencies[dep_id]
            if dep.state is JobState.COMPLETED:
                continue  # done already: the batch system may have forgotten it
            if not dep.external_id:
                # Handed over by this very pass, ahead of this job (read again: rare)?
                fresh = self.jobs.get(dep_id)
                dep = fresh if fresh is not None else dep
            if not dep.external_id:
                self._set_reasons(group, "Dependency")
                return True
            after_ok.append(dep.external_id)
        return self._hand_over_one(group, after_ok)

    def _hand_over_one(self, group: Sequence[QueueRow], after_ok: list[str]) -> bool:
        """Submit one job or array; False when the executor is unreachable right now."""
        whole = self.jobs.get_many(m.id for m in group)
        rows = [whole[m.id] for m in group if m.id in whole]
        if not rows:
            return True  # gone meanwhile
        row = rows[0]
        submit_id = row.array_job_id or row.id
        try:
            spec = launch_spec(
                self.settings,
                row,
                partition=row.partition,
                group=rows,
                after_ok=after_ok,
                secrets=self.secrets,
            )
            launched = self.executor.start(spec)
        except ExecutorUnavailable as exc:
            self._set_reasons(group, str(exc))
            return False
        except Exception as exc:
            # Like the center's own queue: whatever else submitting raises fails this job
            # (or array) only.
            log_start_failure(submit_id, "be submitted", exc)
            self._finish_all(group, f"failed to submit: {describe(exc)}", JobState.FAILED)
            return True
        self.ledger.handed_over(row, rows, launched.external_id, after_ok)
        return True

    def _set_reasons(self, group: Sequence[QueueRow], reason: str) -> None:
        with self.ledger.batch():
            for member in group:
                self.ledger.set_reason(member, reason)

    def _finish_all(self, group: Sequence[QueueRow], reason: str, state: JobState) -> None:
        """End a job or an array's pending tasks that never ran, in one transaction."""
        with self.ledger.batch():
            whole = self.jobs.get_many(m.id for m in group)
            for member in group:
                if member.id in whole:
                    self.ledger.finish_pending(whole[member.id], reason, state=state)
