"""The state ledger: every change of a job's recorded state, with its event, its GPU-hour
charge and its array's derived state.

The queue policies (`kaic.center.jobs.queues`) decide what happens to a job; the ledger writes
it down. It also keeps one job's problem that job's (`one_job`): whatever handling one job
raises is logged and, where asked, ends that job FAILED with the reason, so it cannot fail
every later tick too.

An array's state is derived from its tasks at each change of one, in the same transaction,
with a few index seeks (`refresh_array`), so that an array of N tasks costs O(N) to settle,
start or cancel, not O(N²). Changing many tasks at once (`batch`) derives it once, at the end.

(A little over the ~450-line budget: every recorded state change and its charge is one
transaction story — start, observe, end, requeue hand-off, arrays — and is kept in one place
so that none of them can skip the charge or the end listeners; requeue decisions live in
`requeue.py`.)
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType

from kaic.center.executors.base import Ended, ExecutorError, Launched, Observed
from kaic.center.jobs.paths import PathRejected
from kaic.center.jobs.requeue import next_attempt, requeue
from kaic.center.jobs.rows import ACTIVE, JobRow, QueueRow
from kaic.center.jobs.store import JobStore
from kaic.models import JobState

logger = logging.getLogger("kaic.center.scheduler")

CANCELLED_BY_USER = "cancelled by the user"


def describe(exc: Exception) -> str:
    """An exception as a job's reason: our own errors say what is wrong in words; anything
    else also names its type (`ValueError: embedded null byte`)."""
    if isinstance(exc, (ExecutorError, PathRejected, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def log_start_failure(job_id: str, doing: str, exc: Exception) -> None:
    if isinstance(exc, (ExecutorError, PathRejected, OSError)):
        logger.warning("job %s could not %s: %s", job_id, doing, exc)
    else:  # a bug somewhere: keep the traceback
        logger.error("job %s could not %s", job_id, doing, exc_info=exc)


def _elapsed_hours(start: datetime | None, end: datetime) -> float:
    if start is None:
        return 0.0
    return max(0.0, (end - start).total_seconds()) / 3600.0


class _OneJob:
    """`Ledger.one_job`'s context (a class: the scheduler enters one per pending job on every
    pass, and a generator-based context costs several times more)."""

    __slots__ = ("doing", "fail", "group", "job_id", "ledger")

    def __init__(
        self, ledger: Ledger, job_id: str, doing: str, fail: bool, group: Sequence[str]
    ) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.doing = doing
        self.fail = fail
        self.group = group

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False
        if isinstance(exc, sqlite3.OperationalError):
            return False  # the database's problem, not the job's: ends the tick
        self.ledger._failed_while(self.job_id, self.doing, exc, self.fail, self.group)
        return True


class Ledger:
    """Records jobs' states in the job store; `executor_name` appears in events."""

    def __init__(self, jobs: JobStore, executor_name: str) -> None:
        self.jobs = jobs
        self.executor_name = executor_name
        self._end_listeners: list[Callable[[str], None]] = []
        self._requeue_listeners: list[Callable[[str], None]] = []
        #: arrays whose state is to be derived when the current `batch` ends (None: at once)
        self._deferred: dict[str, None] | None = None

    def on_job_end(self, listener: Callable[[str], None]) -> None:
        """Have `listener(job_id)` called whenever a job's terminal state is written, from
        inside the writing transaction (which may yet roll back) on whichever thread writes
        it: it must be quick, and read the state back if it needs it committed. The log
        followers learn a job's end this way, once, instead of each asking the database."""
        self._end_listeners.append(listener)

    def on_job_requeue(self, listener: Callable[[str], None]) -> None:
        """Have `listener(job_id)` called whenever a job's attempt ends and the job is queued
        to run again (`jobs.requeue`), on the same terms as `on_job_end`: the log followers
        of the attempt that ended learn that its log is complete."""
        self._requeue_listeners.append(listener)

    def requeued(self, job_id: str) -> None:
        self._announce(self._requeue_listeners, job_id, "its requeue")

    def _ended(self, job_id: str) -> None:
        self._announce(self._end_listeners, job_id, "its end")

    @staticmethod
    def _announce(listeners: list[Callable[[str], None]], job_id: str, what: str) -> None:
        for listener in listeners:
            try:
                listener(job_id)
            except Exception:
                logger.exception("job %s: a listener to %s failed", job_id, what)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Record many changes in one transaction, deriving each array's state once at the
        end rather than at every task's change (settling or cancelling a large array)."""
        with self.jobs.transaction():
            if self._deferred is not None:  # already in a batch: it derives them
                yield
                return
            self._deferred = {}
            try:
                yield
                while self._deferred:
                    array_job_id = next(iter(self._deferred))
                    del self._deferred[array_job_id]
                    self._refresh_array(array_job_id)
            finally:
                self._deferred = None

    # -- one job's failure stays that job's ----------------------------------------------

    def one_job(
        self, job_id: str, doing: str, *, fail: bool = False, group: Sequence[str] = ()
    ) -> _OneJob:
        """Run work on one job so that its failure stays that job's: logged and, with
        `fail`, the job (and the rest of its `group`: an array handed over as one) ends
        FAILED saying why, so it cannot fail every later tick too.

        A database that is locked or unreachable is no one job's problem: that still ends
        the tick, to be retried by the next one."""
        return _OneJob(self, job_id, doing, fail, group)

    def _failed_while(
        self, job_id: str, doing: str, exc: Exception, fail: bool, group: Sequence[str]
    ) -> None:
        logger.error("job %s: failed while %s", job_id, doing, exc_info=exc)
        if fail:
            reason = f"the center failed while {doing}: {describe(exc)}"
            for failed in dict.fromkeys([job_id, *group]):
                self.fail(failed, reason)

    def fail(self, job_id: str, reason: str) -> None:
        """End a job FAILED after handling it raised; if even that fails, the bare state."""
        try:
            row = self.jobs.get(job_id)
            if row is None or row.terminal:
                return
            with self.jobs.transaction():
                self.finish(row, JobState.FAILED, None, reason)
            return
        except Exception:
            logger.exception("job %s: could not record it FAILED; setting the state only", job_id)
        try:
            with self.jobs.transaction():
                self.jobs.update(
                    job_id, state=JobState.FAILED, reason=reason, ended_at=self.jobs.now()
                )
        except Exception:
            logger.exception("job %s: could not set it FAILED", job_id)
        self._ended(job_id)

    # -- pending and running -------------------------------------------------------------

    def set_reason(self, row: JobRow | QueueRow, reason: str) -> None:
        """Why a pending job waits."""
        if row.reason == reason:
            return
        with self.jobs.transaction():
            self.jobs.update(row.id, reason=reason)
            self.jobs.events.add(row.id, f"pending: {reason}", JobState.PENDING)
            if row.array_job_id:
                self.refresh_array(row.array_job_id)

    def started(
        self,
        row: JobRow,
        partition: str,
        gpu_ids: list[int],
        launched: Launched,
        deadline: float | None,
    ) -> None:
        """A job the center's own queue started on `gpu_ids`."""
        with self.jobs.transaction():
            self.jobs.update(
                row.id,
                state=JobState.RUNNING,
                reason=None,
                started_at=self.jobs.now(),
                gpu_ids=gpu_ids,
                deadline_epoch=deadline,
                external_id=launched.external_id,
                pid=launched.pid,
                pgid=launched.pgid,
                proc_start=launched.start_time,
                nodes=list(launched.nodes),
            )
            gpus = ",".join(str(i) for i in gpu_ids) or "none"
            self.jobs.events.add(
                row.id,
                f"started on partition {partition} with GPUs {gpus}"
                f" ({self.executor_name} id {launched.external_id})",
                JobState.RUNNING,
            )
            if row.array_job_id:
                self.jobs.add_task_progress(row.array_job_id, started_at=self.jobs.now())
                self.refresh_array(row.array_job_id)

    def handed_over(
        self, row: JobRow, group: Sequence[JobRow], external: str, after_ok: Sequence[str]
    ) -> None:
        """A job, or an array as one (`group`: its tasks), the executor now has as
        `external`."""
        name = self.executor_name
        with self.jobs.transaction():
            if row.array_job_id:
                self.jobs.update(row.array_job_id, external_id=external)
                self.jobs.events.add(row.array_job_id, f"submitted to {name} as array {external}")
                for task in group:
                    task_external = f"{external}_{task.array_task_id}"
                    self.jobs.update(task.id, external_id=task_external, reason=None)
                    self.jobs.events.add(task.id, f"submitted to {name} as {task_external}")
                self.refresh_array(row.array_job_id)
            else:
                self.jobs.update(row.id, external_id=external, reason=None)
                after = f" after {', '.join(after_ok)}" if after_ok else ""
                self.jobs.events.add(row.id, f"submitted to {name} as job {external}{after}")

    def observed(self, observed: Observed) -> None:
        """Record a state or pending reason the executor reports."""
        row = self.jobs.get(observed.job_id)
        if row is None or row.terminal:
            return
        fields: dict[str, object] = {}
        state_changed = observed.state is not row.state
        first_run: datetime | None = None
        if state_changed:
            fields["state"] = observed.state
            if observed.state is JobState.RUNNING and row.started_at is None:
                first_run = fields["started_at"] = self.jobs.now()
        if observed.reason != row.reason:
            fields["reason"] = observed.reason
        gpu_ids = tuple(observed.gpu_ids)
        if gpu_ids and gpu_ids != row.gpu_ids:
            fields["gpu_ids"] = list(gpu_ids)
        if observed.nodes and tuple(observed.nodes) != row.nodes:
            fields["nodes"] = list(observed.nodes)
        if not fields:
            return
        with self.jobs.transaction():
            self.jobs.update(row.id, **fields)
            if state_changed or "reason" in fields:
                state = observed.state
                if state is JobState.PENDING:
                    message = f"pending: {observed.reason or 'queued'}"
                elif state is JobState.RUNNING:
                    gpus = ",".join(str(i) for i in (gpu_ids or row.gpu_ids)) or "none"
                    message = (
                        f"running on partition {row.partition} with GPUs {gpus}"
                        f" ({self.executor_name} id {row.external_id})"
                    )
                else:
                    message = state.value.lower()
                if observed.reason and state is not JobState.PENDING:
                    message += f": {observed.reason}"
                self.jobs.events.add(row.id, message, state if state_changed else None)
            if row.array_job_id:
                self.jobs.add_task_progress(row.array_job_id, started_at=first_run)
                self.refresh_array(row.array_job_id)

    def time_limit_reached(self, row: JobRow | QueueRow, kill_grace: float) -> None:
        """A running job reached its time limit: it is to end TIMEOUT."""
        with self.jobs.transaction():
            self.jobs.update(row.id, end_cause="timeout")
            self.jobs.events.add(
                row.id,
                f"time limit of {row.time_limit_seconds}s reached: SIGTERM, "
                f"SIGKILL after {kill_grace:g}s",
            )

    def cancel_requested(self, row: JobRow, how: str) -> None:
        """The user cancelled a job that ends when its executor stops it (in a transaction)."""
        self.jobs.update(row.id, end_cause="cancel")
        self.jobs.events.add(row.id, f"cancel requested: {how}")

    # -- endings -------------------------------------------------------------------------

    def record_end(self, ended: Ended) -> None:
        """A job the executor reports ended (in a transaction): its final state, from the
        executor's when it knows it, else from what the center asked for and the exit code."""
        row = self.jobs.get(ended.job_id)
        if row is None or row.terminal:
            return
        reason: str | None = None
        if ended.state is not None:  # the executor knows the end state itself (Slurm)
            state, reason = ended.state, ended.reason
            if state is JobState.CANCELLED and row.end_cause == "cancel":
                reason = CANCELLED_BY_USER
        # What the center itself asked for wins over "lost": a re-attached job (not our
        # child) killed by our SIGKILL leaves no exit status, yet it was cancelled/timed out.
        elif row.end_cause == "timeout":
            state, reason = JobState.TIMEOUT, "time limit reached"
        elif row.end_cause == "cancel":
            state, reason = JobState.CANCELLED, CANCELLED_BY_USER
        elif ended.lost:
            state, reason = JobState.NODE_FAIL, ended.reason or "the job's process was lost"
        elif ended.exit_code == 0:
            state = JobState.COMPLETED
        else:
            state = JobState.FAILED
            if ended.exit_code is not None and ended.exit_code > 128:
                reason = f"killed by signal {ended.exit_code - 128}"
        if ended.nodes and tuple(ended.nodes) != row.nodes:
            self.jobs.update(row.id, nodes=list(ended.nodes))  # it ended before a poll saw it
        attempt = next_attempt(row, state)
        if attempt is not None:
            held = row.gpus * row.spec.resources.nodes  # GPUs are per node
            if ended.started_at is not None and ended.ended_at is not None:
                hours = held * _elapsed_hours(ended.started_at, ended.ended_at)
            else:
                hours = held * _elapsed_hours(row.started_at, self.jobs.now())
            requeue(self, row, state, reason, attempt, hours)
            return
        self.finish(
            row,
            state,
            ended.exit_code,
            reason,
            started_at=ended.started_at,
            ended_at=ended.ended_at,
        )

    def finish_pending(
        self, row: JobRow, reason: str, *, state: JobState = JobState.CANCELLED
    ) -> None:
        """End a job that never ran."""
        with self.jobs.transaction():
            self.finish(row, state, None, reason)

    def finish(
        self,
        row: JobRow,
        state: JobState,
        exit_code: int | None,
        reason: str | None,
        *,
        started_at: datetime | None = None,
        ended_at: datetime | None = None,
    ) -> None:
        """Record a terminal state, charge the project, update the array (in a transaction).

        `started_at`/`ended_at` are the executor's own times (Slurm's), when it has them: the
        charge comes from them, so a job shorter than a poll interval is charged too."""
        now = self.jobs.now()
        held = row.gpus * row.spec.resources.nodes  # GPUs are per node
        if started_at is not None and ended_at is not None:
            gpu_hours = held * _elapsed_hours(started_at, ended_at)
        else:
            gpu_hours = held * _elapsed_hours(row.started_at, now)
        fields: dict[str, object] = {}
        if row.started_at is None and started_at is not None:
            fields["started_at"] = started_at  # it ran, though the center never saw it running
        self.jobs.update(
            row.id,
            state=state,
            exit_code=exit_code,
            reason=reason,
            ended_at=ended_at if (ended_at is not None and started_at is not None) else now,
            gpu_hours=row.gpu_hours + gpu_hours,  # with earlier attempts' (`jobs.requeue`)
            **fields,
        )
        self.jobs.charge(row.project_id, gpu_hours)
        message = f"ended {state.value}"
        if exit_code is not None:
            message += f" (exit code {exit_code})"
        if reason:
            message += f": {reason}"
        if gpu_hours:
            message += f"; charged {gpu_hours:.4f} GPU-hours"
        self.jobs.events.add(row.id, message, state)
        if row.array_job_id:
            self.jobs.add_task_progress(
                row.array_job_id,
                started_at=started_at if row.started_at is None else None,
                gpu_hours=gpu_hours,
            )
            self.refresh_array(row.array_job_id)
        self._ended(row.id)

    def refresh_array(self, array_job_id: str) -> None:
        """Derive an array's state from its tasks, now or at the end of the current `batch`."""
        if self._deferred is not None:
            self._deferred[array_job_id] = None
        else:
            self._refresh_array(array_job_id)

    def _refresh_array(self, array_job_id: str) -> None:
        """Derive an array's state, reason, exit code and end from its tasks: RUNNING while
        one runs, PENDING (with its first pending task's reason) while any is still to run,
        and when all have ended, COMPLETED or the first unsuccessful task's state.

        Index seeks while tasks are active; the one pass over all tasks comes when the
        last has ended. Its first start and GPU-hours follow each task's
        (`JobStore.add_task_progress`)."""
        parent = self.jobs.get(array_job_id)
        if parent is None:
            return
        exit_code: int | None = None
        reason: str | None = None
        ended_at: datetime | None = None
        if self.jobs.array_has_tasks_in(array_job_id, [JobState.RUNNING.value]):
            state = JobState.RUNNING
        elif self.jobs.array_has_tasks_in(array_job_id, [s for s in ACTIVE if s != "RUNNING"]):
            state = JobState.PENDING
            reason = self.jobs.first_pending_reason(array_job_id)
        else:
            bad = self.jobs.first_unsuccessful_task(array_job_id)
            if bad is None and not self.jobs.array_has_tasks_in(array_job_id, ["COMPLETED"]):
                return  # no tasks at all
            ended_at = self.jobs.last_task_end(array_job_id)
            if bad is None:
                state, exit_code = JobState.COMPLETED, 0
            else:
                state, exit_code = bad.state, bad.exit_code
                reason = f"task {bad.id} ended {bad.state.value}" + (
                    f": {bad.reason}" if bad.reason else ""
                )
        fields: dict[str, object] = {}
        if parent.state is not state:
            fields["state"] = state
        if parent.reason != reason:
            fields["reason"] = reason
        if parent.exit_code != exit_code:
            fields["exit_code"] = exit_code
        if parent.ended_at != ended_at:
            fields["ended_at"] = ended_at
        if fields:
            self.jobs.update(array_job_id, **fields)
        if parent.state is not state:
            message = f"array {state.value}"
            if state is not JobState.PENDING and reason and state is not JobState.RUNNING:
                message += f": {reason}"
            self.jobs.events.add(array_job_id, message, state)
