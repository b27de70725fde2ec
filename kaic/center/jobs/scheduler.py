"""The scheduler: one background thread that runs the queue.

Every tick (on submit/cancel, and at least every `job_poll_interval` seconds) it
1. collects jobs the executor reports ended and records their final state,
2. signals running jobs that were cancelled or hit their time limit,
3. starts pending jobs, FIFO per partition, handing out the lowest free GPU indices
   exclusively, and records why the others wait (`Resources`, `Priority`, `Dependency`,
   `JobArrayTaskLimit`).

All state lives in the database; the only memory is which jobs were already signalled.
One job's problem stays that job's: whatever handling one job raises (an executor that
cannot start it, a row that cannot be read) ends that job FAILED with the reason, or is
logged, and the tick goes on with the others (`_one_job`).
State changes happen under `self._mutex`, which API calls that change states take too.
Time limits use the real wall clock (`time.time()`, stored as `deadline_epoch`) so they
hold across restarts even when the settings inject a fake clock for timestamps.

With an executor that owns the queue (Slurm), steps 2 and 3 change: every pending job is
handed to the executor at once (dependencies become the batch system's own), cancels are
passed on, and states, pending reasons and time limits come from the executor
(`Executor.updates`, `Ended.state`).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta

from kaic.center.executors.base import (
    Ended,
    Executor,
    ExecutorError,
    ExecutorUnavailable,
    Launched,
    Observed,
    RunningJob,
)
from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.partitions import configured_partitions
from kaic.center.jobs.paths import PathRejected, job_paths
from kaic.center.jobs.store import JobRow, JobStore
from kaic.center.settings import CenterSettings, PartitionConfig
from kaic.center.store import Store
from kaic.models import JobState, Partition

logger = logging.getLogger("kaic.center.scheduler")

CANCELLED_BY_USER = "cancelled by the user"
SHUTDOWN_REASON = "the center shut down"


def _describe(exc: Exception) -> str:
    """An exception as a job's reason: our own errors say what is wrong in words; anything
    else also names its type (`ValueError: embedded null byte`)."""
    if isinstance(exc, (ExecutorError, PathRejected, OSError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def _log_start_failure(job_id: str, doing: str, exc: Exception) -> None:
    if isinstance(exc, (ExecutorError, PathRejected, OSError)):
        logger.warning("job %s could not %s: %s", job_id, doing, exc)
    else:  # a bug somewhere: keep the traceback
        logger.error("job %s could not %s", job_id, doing, exc_info=exc)


def _elapsed_hours(start: datetime | None, end: datetime) -> float:
    if start is None:
        return 0.0
    return max(0.0, (end - start).total_seconds()) / 3600.0


class Scheduler:
    """Runs the queue on its own thread; `start()`/`shutdown()` bracket the app's life."""

    def __init__(self, store: Store, settings: CenterSettings, executor: Executor) -> None:
        self.jobs = JobStore(store)
        self.settings = settings
        self.executor = executor
        self._configured = {p.name: p for p in configured_partitions(settings)}
        self._mutex = threading.RLock()
        self._cond = threading.Condition()
        self._woken = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._signalled: set[str] = set()

    @property
    def partitions(self) -> dict[str, PartitionConfig]:
        """The partitions jobs may ask for: the executor's (Slurm's) or the settings'."""
        external = self.executor.partitions()
        if external is None:
            return self._configured
        return {p.name: p for p in external}

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Re-attach or finalise jobs left running by an earlier center, then start ticking."""
        with self._mutex:
            self._recover()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="kaic-scheduler", daemon=True)
        self._thread.start()

    def shutdown(self, *, kill_jobs: bool = False) -> None:
        """Stop the thread. Without `kill_jobs` running jobs keep running (a later center
        re-attaches them); with it they are killed and recorded CANCELLED."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        with self._mutex:
            if kill_jobs:
                self.executor.shutdown(kill_jobs=True)
                with self.jobs.transaction():
                    for row in self.jobs.active():
                        # Pending jobs stay queued for the next center.
                        if row.state is JobState.RUNNING:
                            self._finish_row(row, JobState.CANCELLED, None, SHUTDOWN_REASON)
            else:
                self.executor.shutdown(kill_jobs=False)

    def wake(self) -> None:
        """Make the thread tick now (after a submit or a cancel)."""
        with self._cond:
            self._woken = True
            self._cond.notify_all()

    def _run(self) -> None:
        interval = max(0.01, min(self.settings.job_poll_interval, 0.2))
        while True:
            with self._cond:
                if not self._woken and not self._stopping:
                    self._cond.wait(timeout=interval)
                self._woken = False
                if self._stopping:
                    return
            try:
                self.tick()
            except Exception:
                logger.exception("scheduler tick failed")

    # -- the tick ------------------------------------------------------------------------

    def tick(self) -> None:
        """One pass: collect ended jobs, enforce cancels and limits, start what fits."""
        with self._mutex:
            for ended in self.executor.poll():
                with (
                    self._one_job(ended.job_id, "recording how it ended", fail=True),
                    self.jobs.transaction(),
                ):
                    self._record_end(ended)
            if self.executor.owns_queue:
                for observed in self.executor.updates():
                    with self._one_job(observed.job_id, "recording its state"):
                        self._apply_observed(observed)
                rows = self.jobs.active()
                self._pass_on_cancels(rows)
                self._hand_over(rows)
                return
            rows = self.jobs.active()
            self._signal_running([r for r in rows if r.state is JobState.RUNNING])
            self._schedule(rows)

    @contextmanager
    def _one_job(
        self, job_id: str, doing: str, *, fail: bool = False, group: Sequence[str] = ()
    ) -> Iterator[None]:
        """Run work on one job so that its failure stays that job's: logged and, with
        `fail`, the job (and the rest of its `group`: an array handed over as one) ends
        FAILED saying why, so it cannot fail every later tick too.

        A database that is locked or unreachable is no one job's problem: that still ends
        the tick, to be retried by the next one."""
        try:
            yield
        except sqlite3.OperationalError:
            raise
        except Exception as exc:
            logger.exception("job %s: failed while %s", job_id, doing)
            if fail:
                reason = f"the center failed while {doing}: {_describe(exc)}"
                for failed in dict.fromkeys([job_id, *group]):
                    self._fail_job(failed, reason)

    def _fail_job(self, job_id: str, reason: str) -> None:
        """End a job FAILED after handling it raised; if even that fails, the bare state."""
        try:
            row = self.jobs.get(job_id)
            if row is None or row.terminal:
                return
            with self.jobs.transaction():
                self._finish_row(row, JobState.FAILED, None, reason)
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

    def _signal_running(self, running: Sequence[JobRow]) -> None:
        for row in running:
            if row.id in self._signalled:
                continue
            with self._one_job(row.id, "signalling it"):
                self._signal_one(row)

    def _signal_one(self, row: JobRow) -> None:
        """Signal a running job that was cancelled or has reached its time limit."""
        if row.end_cause is None:
            if row.deadline_epoch is None or time.time() < row.deadline_epoch:
                return
            with self.jobs.transaction():
                self.jobs.update(row.id, end_cause="timeout")
                self.jobs.add_event(
                    row.id,
                    f"time limit of {row.time_limit_seconds}s reached: SIGTERM, "
                    f"SIGKILL after {self.settings.kill_grace:g}s",
                )
        self._signalled.add(row.id)
        self.executor.cancel(row.id)

    def _schedule(self, rows: Sequence[JobRow]) -> None:
        used: dict[str, set[int]] = {name: set() for name in self.partitions}
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
            with self._one_job(row.id, "scheduling it", fail=True):
                partition = self.partitions.get(row.partition)
                if partition is None:
                    self._set_reason(row, "PartitionDown")
                    continue
                if row.depends_on:
                    verdict = self._dependency_verdict(row, dependencies)
                    if verdict is not None:
                        self._finish_pending(row, verdict)
                        continue
                    if not all(dependencies[d].state is JobState.COMPLETED for d in row.depends_on):
                        self._set_reason(row, "Dependency")
                        continue
                limit = self._array_limit(row)
                if (
                    limit is not None
                    and row.array_job_id
                    and running_tasks[row.array_job_id] >= limit
                ):
                    self._set_reason(row, "JobArrayTaskLimit")
                    continue
                if row.gpus > 0 and partition.name in blocked:
                    self._set_reason(row, "Priority")
                    continue
                taken = used[partition.name]
                free = [i for i in range(partition.gpus) if i not in taken]
                if len(free) < row.gpus:
                    self._set_reason(row, "Resources")
                    blocked.add(partition.name)
                    continue
                gpu_ids = free[: row.gpus]
                if self._start(row, partition, gpu_ids):
                    taken.update(gpu_ids)
                    if row.array_job_id:
                        running_tasks[row.array_job_id] += 1

    def _array_limit(self, row: JobRow) -> int | None:
        if row.kind != "task" or row.array_job_id is None:
            return None
        return row.array_limit

    @staticmethod
    def _dependency_verdict(row: JobRow, dependencies: dict[str, JobRow]) -> str | None:
        """The reason the dependant can never run, or None if it still may."""
        for dep_id in row.depends_on:
            dep = dependencies.get(dep_id)
            if dep is None:
                return f"DependencyNeverSatisfied: job {dep_id} no longer exists"
            if dep.terminal and dep.state is not JobState.COMPLETED:
                return f"DependencyNeverSatisfied: job {dep_id} ended {dep.state.value}"
        return None

    def _set_reason(self, row: JobRow, reason: str) -> None:
        if row.reason == reason:
            return
        with self.jobs.transaction():
            self.jobs.update(row.id, reason=reason)
            self.jobs.add_event(row.id, f"pending: {reason}", JobState.PENDING)
            if row.array_job_id:
                self._refresh_array(row.array_job_id)

    def _start(self, row: JobRow, partition: PartitionConfig, gpu_ids: list[int]) -> bool:
        """Start one job on `gpu_ids`; False (and the job FAILED, saying why) if it cannot.

        Anything starting it raises fails this job only: a job that cannot start must never
        keep the queue from everyone else's (a NUL byte in a job's name once did)."""
        try:
            spec = launch_spec(self.settings, row, partition=partition.name, gpu_ids=gpu_ids)
            launched = self.executor.start(spec)
        except Exception as exc:
            _log_start_failure(row.id, "start", exc)
            self._finish_pending(row, f"failed to start: {_describe(exc)}", state=JobState.FAILED)
            return False
        deadline = time.time() + row.time_limit_seconds if row.time_limit_seconds else None
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
            )
            gpus = ",".join(str(i) for i in gpu_ids) or "none"
            self.jobs.add_event(
                row.id,
                f"started on partition {partition.name} with GPUs {gpus}"
                f" ({self.executor.name} id {launched.external_id})",
                JobState.RUNNING,
            )
            if row.array_job_id:
                self._refresh_array(row.array_job_id)
        return True

    # -- a queue owned by the executor (Slurm) -------------------------------------------

    def _apply_observed(self, observed: Observed) -> None:
        """Record a state or pending reason the executor reports."""
        row = self.jobs.get(observed.job_id)
        if row is None or row.terminal:
            return
        fields: dict[str, object] = {}
        state_changed = observed.state is not row.state
        if state_changed:
            fields["state"] = observed.state
            if observed.state is JobState.RUNNING and row.started_at is None:
                fields["started_at"] = self.jobs.now()
        if observed.reason != row.reason:
            fields["reason"] = observed.reason
        gpu_ids = tuple(observed.gpu_ids)
        if gpu_ids and gpu_ids != row.gpu_ids:
            fields["gpu_ids"] = list(gpu_ids)
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
                        f" ({self.executor.name} id {row.external_id})"
                    )
                else:
                    message = state.value.lower()
                if observed.reason and state is not JobState.PENDING:
                    message += f": {observed.reason}"
                self.jobs.add_event(row.id, message, state if state_changed else None)
            if row.array_job_id:
                self._refresh_array(row.array_job_id)

    def _pass_on_cancels(self, rows: Sequence[JobRow]) -> None:
        for row in rows:
            if row.end_cause == "cancel" and row.external_id and row.id not in self._signalled:
                self._signalled.add(row.id)
                with self._one_job(row.id, "passing its cancel on"):
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
            with self._one_job(row.id, "handing it over", fail=True, group=members):
                if not self._hand_over_group(row, group, dependencies):
                    return  # the batch system is unreachable: try again later

    def _hand_over_group(
        self, row: JobRow, group: Sequence[JobRow], dependencies: dict[str, JobRow]
    ) -> bool:
        """Hand over one job or array once its dependencies allow; False when the executor
        is unreachable right now."""
        verdict = self._dependency_verdict(row, dependencies)
        if verdict is not None:
            for member in group:
                self._finish_pending(member, verdict)
            return True
        after_ok: list[str] = []
        for dep_id in row.depends_on:
            dep = dependencies[dep_id]
            if dep.state is JobState.COMPLETED:
                continue  # done already: the batch system may have forgotten it
            if not dep.external_id:
                for member in group:
                    self._set_reason(member, "Dependency")
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
                self._set_reason(member, str(exc))
            return False
        except Exception as exc:
            # Like `_start`: whatever else submitting raises fails this job (or array) only.
            _log_start_failure(submit_id, "be submitted", exc)
            for member in group:
                self._finish_pending(
                    member, f"failed to submit: {_describe(exc)}", state=JobState.FAILED
                )
            return True
        external = launched.external_id
        with self.jobs.transaction():
            if row.array_job_id:
                self.jobs.update(row.array_job_id, external_id=external)
                self.jobs.add_event(
                    row.array_job_id, f"submitted to {self.executor.name} as array {external}"
                )
                for task in group:
                    self.jobs.update(
                        task.id, external_id=f"{external}_{task.array_task_id}", reason=None
                    )
                    self.jobs.add_event(
                        task.id,
                        f"submitted to {self.executor.name} as {external}_{task.array_task_id}",
                    )
                self._refresh_array(row.array_job_id)
            else:
                self.jobs.update(row.id, external_id=external, reason=None)
                after = f" after {', '.join(after_ok)}" if after_ok else ""
                self.jobs.add_event(
                    row.id, f"submitted to {self.executor.name} as job {external}{after}"
                )
        return True

    # -- endings -------------------------------------------------------------------------

    def _record_end(self, ended: Ended) -> None:
        row = self.jobs.get(ended.job_id)
        self._signalled.discard(ended.job_id)
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
        self._finish_row(
            row,
            state,
            ended.exit_code,
            reason,
            started_at=ended.started_at,
            ended_at=ended.ended_at,
        )

    def _finish_pending(
        self, row: JobRow, reason: str, *, state: JobState = JobState.CANCELLED
    ) -> None:
        with self.jobs.transaction():
            self._finish_row(row, state, None, reason)

    def _finish_row(
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
        if started_at is not None and ended_at is not None:
            gpu_hours = row.gpus * _elapsed_hours(started_at, ended_at)
        else:
            gpu_hours = row.gpus * _elapsed_hours(row.started_at, now)
        fields: dict[str, object] = {}
        if row.started_at is None and started_at is not None:
            fields["started_at"] = started_at  # it ran, though the center never saw it running
        self.jobs.update(
            row.id,
            state=state,
            exit_code=exit_code,
            reason=reason,
            ended_at=ended_at if (ended_at is not None and started_at is not None) else now,
            gpu_hours=gpu_hours,
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
        self.jobs.add_event(row.id, message, state)
        if row.array_job_id:
            self._refresh_array(row.array_job_id)

    def _refresh_array(self, array_job_id: str) -> None:
        """Derive an array's state from its tasks."""
        parent = self.jobs.get(array_job_id)
        tasks = self.jobs.tasks(array_job_id)
        if parent is None or not tasks:
            return
        states = [t.state for t in tasks]
        started = [t.started_at for t in tasks if t.started_at]
        exit_code: int | None = None
        reason: str | None = None
        ended_at: datetime | None = None
        if JobState.RUNNING in states:
            state = JobState.RUNNING
        elif all(t.terminal for t in tasks):
            ended_at = max((t.ended_at for t in tasks if t.ended_at), default=None)
            bad = next((t for t in tasks if t.state is not JobState.COMPLETED), None)
            if bad is None:
                state, exit_code = JobState.COMPLETED, 0
            else:
                state, exit_code = bad.state, bad.exit_code
                reason = f"task {bad.id} ended {bad.state.value}" + (
                    f": {bad.reason}" if bad.reason else ""
                )
        else:
            state = JobState.PENDING
            reason = next((t.reason for t in tasks if t.state is JobState.PENDING), None)
        fields: dict[str, object] = {}
        if parent.state is not state:
            fields["state"] = state
        if parent.reason != reason:
            fields["reason"] = reason
        if parent.exit_code != exit_code:
            fields["exit_code"] = exit_code
        first_start = min(started) if started else None
        if parent.started_at != first_start:
            fields["started_at"] = first_start
        if parent.ended_at != ended_at:
            fields["ended_at"] = ended_at
        gpu_hours = sum(t.gpu_hours for t in tasks)
        if parent.gpu_hours != gpu_hours:
            fields["gpu_hours"] = gpu_hours
        if fields:
            self.jobs.update(array_job_id, **fields)
        if parent.state is not state:
            message = f"array {state.value}"
            if state is not JobState.PENDING and reason and state is not JobState.RUNNING:
                message += f": {reason}"
            self.jobs.add_event(array_job_id, message, state)

    # -- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        if self.executor.owns_queue:
            # Everything handed over is the executor's to watch, pending jobs too.
            running = [r for r in self.jobs.active() if r.external_id]
        else:
            running = [r for r in self.jobs.active() if r.state is JobState.RUNNING]
        if not running:
            return
        handles = [
            RunningJob(
                job_id=r.id,
                launched=Launched(
                    external_id=r.external_id or "",
                    pid=r.pid,
                    pgid=r.pgid,
                    start_time=r.proc_start,
                ),
                paths=job_paths(self.settings.state_dir, r.id),
                unix_account=r.unix_account or r.user,
            )
            for r in running
        ]
        ended = {e.job_id: e for e in self.executor.recover(handles)}
        for row in running:
            # One transaction per job: one that cannot be recorded must not stop the center.
            with (
                self._one_job(row.id, "recovering it after a restart", fail=True),
                self.jobs.transaction(),
            ):
                end = ended.get(row.id)
                if end is None:
                    if row.state is JobState.RUNNING:
                        self.jobs.add_event(row.id, "re-attached after a center restart")
                    continue
                if end.lost:
                    self.jobs.add_event(row.id, f"lost: {end.reason}")
                else:
                    self.jobs.add_event(row.id, "ended while the center was down")
                self._record_end(end)

    # -- requests from the API -----------------------------------------------------------

    def cancel(self, job_id: str, user_id: int) -> JobRow | None:
        """Cancel one of the user's jobs (an array: all its tasks); None if there is none.

        Pending jobs end at once; running ones are signalled by the next tick.
        """
        with self._mutex, self.jobs.transaction():
            row = self.jobs.get(job_id, user_id=user_id)
            if row is None:
                return None
            targets = self.jobs.tasks(row.id) if row.kind == "array" else [row]
            owned = self.executor.owns_queue
            for target in targets:
                if target.state is JobState.PENDING and not (owned and target.external_id):
                    self._finish_row(target, JobState.CANCELLED, None, CANCELLED_BY_USER)
                elif owned and not target.terminal and target.end_cause is None:
                    # The batch system has it: it ends when the batch system says so.
                    self.jobs.update(target.id, end_cause="cancel")
                    self.jobs.add_event(
                        target.id, f"cancel requested: passed on to {self.executor.name}"
                    )
                elif target.state is JobState.RUNNING and target.end_cause is None:
                    self.jobs.update(target.id, end_cause="cancel")
                    self.jobs.add_event(
                        target.id,
                        f"cancel requested: SIGTERM, SIGKILL after {self.settings.kill_grace:g}s",
                    )
            if row.kind == "array":
                self.jobs.add_event(row.id, "cancel requested for all tasks")
            result = self.jobs.get(job_id)
        self.wake()
        return result

    # -- views ---------------------------------------------------------------------------

    def partition_views(self) -> list[Partition]:
        """`GET /v1/partitions`: totals, free GPUs and queue depth per partition."""
        rows = self.jobs.active()
        free_gpus = self.executor.free_gpus()
        views = []
        for p in self.partitions.values():
            used = {
                i for r in rows if r.partition == p.name and r.state is JobState.RUNNING
                for i in r.gpu_ids
            }  # fmt: skip
            pending = sum(1 for r in rows if r.partition == p.name and r.state is JobState.PENDING)
            free = max(0, p.gpus - len(used))
            if free_gpus is not None:
                free = free_gpus.get(p.name, free)
            views.append(
                Partition(
                    name=p.name,
                    gpu_type=p.gpu_type,
                    gpus_total=p.gpus,
                    gpus_free=free,
                    max_time=p.max_time_seconds,
                    pending_jobs=pending,
                    default=p.default,
                )
            )
        return views

    def estimate_start(self, partition: PartitionConfig, gpus: int) -> datetime | None:
        """When a job needing `gpus` GPUs would start given the current queue, or None.

        Now if enough GPUs are free (and no GPU job waits ahead); otherwise the earliest
        time enough running jobs reach their time limits. None when that is unknowable
        (running jobs without limits, or more GPUs than the partition has).
        """
        now = self.jobs.now()
        if gpus == 0:
            return now
        if gpus > partition.gpus:
            return None
        if self.executor.owns_queue:
            # The batch system decides; only "now" is knowable from here.
            free = (self.executor.free_gpus() or {}).get(partition.name, 0)
            return now if free >= gpus else None
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
