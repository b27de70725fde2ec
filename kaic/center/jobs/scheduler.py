"""The scheduler: one background thread that runs the queue.

It ticks on events, never by rescanning the queue on a timer: every `job_poll_interval`
seconds (at most 0.2) it asks the executor which jobs ended — a poll that costs O(running
jobs) — and records their final state; the queue policy's pass, which reads every active
row, runs only when something happened: a submit or a cancel (`wake`), a job's end, a
report of the executor (`QueuePolicy.observe`), or the time the policy asked to be called
back at (the next time limit, a retry). So a center holding 20,000 pending jobs that
nothing changes is idle. A pass woken by submissions alone reads only the new jobs
(`QueuePolicy.arrivals`): what the queue ahead of them leaves is what the last pass left,
so a submit costs the same beside 3,000 active jobs as beside none. The policy is chosen
once, at construction, from `Executor.owns_queue` (`kaic.center.jobs.queues`): the center's
own FIFO with exclusive GPUs (`CenterQueue`), or everything handed over to an executor that
runs the queue itself (`HandOverQueue`, Slurm). Every recorded change goes through the
state ledger (`kaic.center.jobs.ledger`).

All state lives in the database; the only memory is which jobs were already signalled,
when the next pass is due, and what the last pass left for the next arrivals (rebuilt from
the database by every whole pass).
One job's problem stays that job's: whatever handling one job raises (an executor that
cannot start it, a row that cannot be read) ends that job FAILED with the reason, or is
logged, and the tick goes on with the others (`Ledger.one_job`).
State changes happen under `self._mutex`, which API calls that change states take too; the
executor's poll does not (`_cycle`), so that a slow batch system never holds API calls up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from datetime import datetime

from kaic.center.executors.base import Ended, Executor, Launched, RunningJob
from kaic.center.jobs.ledger import CANCELLED_BY_USER, Ledger
from kaic.center.jobs.partitions import PartitionConfig, configured_partitions
from kaic.center.jobs.paths import job_paths
from kaic.center.jobs.queues.base import QueuePolicy
from kaic.center.jobs.queues.fifo import CenterQueue
from kaic.center.jobs.queues.handover import HandOverQueue
from kaic.center.jobs.rows import JobRow
from kaic.center.jobs.store import JobStore
from kaic.center.secrets import Secrets
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import JobState, Partition

logger = logging.getLogger("kaic.center.scheduler")

__all__ = ["CANCELLED_BY_USER", "SHUTDOWN_REASON", "Scheduler"]

SHUTDOWN_REASON = "the center shut down"


class Scheduler:
    """Runs the queue on its own thread; `start()`/`shutdown()` bracket the app's life."""

    def __init__(
        self,
        store: Store,
        settings: CenterSettings,
        executor: Executor,
        *,
        secrets: Secrets | None = None,
    ) -> None:
        self.jobs = JobStore(store)
        self.settings = settings
        self.executor = executor
        self.ledger = Ledger(self.jobs, executor.name)
        policy = HandOverQueue if executor.owns_queue else CenterQueue
        self.queue: QueuePolicy = policy(self.ledger, executor, settings, lambda: self.partitions)
        # Users' secrets, resolved into each job's environment as it starts.
        self.queue.secrets = secrets
        self._configured = {p.name: p for p in configured_partitions(settings)}
        self._mutex = threading.RLock()
        #: held by whoever runs a cycle (the thread, or `tick`): the executor is polled,
        #: started and cancelled by one cycle at a time, while API calls take `_mutex` only
        self._cycling = threading.Lock()
        self._cond = threading.Condition()
        self._woken = False
        #: a wake-up other than a submission's came since the last pass: a whole pass
        self._whole = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        #: when (`time.time()`) the policy's next pass is due without an event
        self._step_at = 0.0
        #: ends the executor reported that are not recorded yet
        self._ended: list[Ended] = []

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
                with self.ledger.batch():
                    for row in self.jobs.active():
                        # Pending jobs stay queued for the next center.
                        if row.state is JobState.RUNNING:
                            self.ledger.finish(row, JobState.CANCELLED, None, SHUTDOWN_REASON)
            else:
                self.executor.shutdown(kill_jobs=False)

    def wake(self, *, arrival: bool = False) -> None:
        """Make the thread run the queue now: after a cancel, a whole pass; after a submit
        (`arrival`), only the new jobs need deciding, unless something else happened too."""
        with self._cond:
            self._woken = True
            if not arrival:
                self._whole = True
            self._cond.notify_all()

    @property
    def poll_interval(self) -> float:
        """Seconds between the executor's polls."""
        return max(0.01, min(self.settings.job_poll_interval, 0.2))

    def _run(self) -> None:
        interval = self.poll_interval
        self._step_at = 0.0  # a first pass after the recovery
        while True:
            with self._cond:
                if not self._woken and not self._stopping:
                    until_step = self._step_at - time.time()
                    if until_step > 0:
                        self._cond.wait(timeout=min(interval, until_step))
                woken, self._woken = self._woken, False
                whole, self._whole = self._whole, False
                if self._stopping:
                    return
            try:
                due = time.time() >= self._step_at
                self._cycle(step=whole or due, arrivals=woken)
            except Exception:
                logger.exception("scheduler tick failed")
                self._step_at = time.time() + interval  # the pass again, shortly

    def tick(self) -> None:
        """One whole pass now: record the jobs that ended, then the queue policy's pass."""
        self._cycle(step=True)

    def _cycle(self, *, step: bool, arrivals: bool = False) -> None:
        """Poll the executor and record the jobs that ended (in one transaction); then, if
        `step` or anything was reported, the queue policy's whole pass; else, if jobs were
        submitted (`arrivals`), its pass over the new jobs alone."""
        with self._cycling:
            # The poll may wait on the batch system (Slurm lists 10,000 jobs in seconds):
            # outside the lock that API calls take, so that a cancel never waits behind it.
            polled = self.executor.poll()
            with self._mutex:
                self._record_cycle(polled, step=step, arrivals=arrivals)

    def _record_cycle(self, polled: list[Ended], *, step: bool, arrivals: bool) -> None:
        """`_cycle`'s part under the lock: the ends recorded, then the queue's pass."""
        # The executor reports each end once: kept until the transaction recording
        # them has committed, and recorded by the next cycle if it fails.
        self._ended += polled
        ended = bool(self._ended)
        if ended:
            with self.ledger.batch():
                for end in self._ended:
                    with self.ledger.one_job(end.job_id, "recording how it ended", fail=True):
                        self.queue.forget(end.job_id)
                        self.ledger.record_end(end)
            self._ended = []
        if self.queue.observe() or ended:
            step = True
        if step:
            self._step_at = math.inf  # until the pass says otherwise
            due = self.queue.step()
            if due is not None:
                # Not in the past: a time limit that could not be signalled is tried
                # again after a poll interval, not in a busy loop.
                self._step_at = max(due, time.time() + self.poll_interval / 2)
        elif arrivals:
            # What was due stays due; the new jobs may bring a sooner time limit.
            due = self.queue.arrivals()
            if due is not None:
                due = max(due, time.time() + self.poll_interval / 2)
                self._step_at = min(self._step_at, due)

    def _recover(self) -> None:
        running = self.queue.watched(self.jobs.active())
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
                paths=job_paths(self.settings.state_dir, r.id, r.attempt),
                unix_account=r.unix_account or r.user,
            )
            for r in running
        ]
        ended = {e.job_id: e for e in self.executor.recover(handles)}
        for row in running:
            # One transaction per job: one that cannot be recorded must not stop the center.
            with (
                self.ledger.one_job(row.id, "recovering it after a restart", fail=True),
                self.jobs.transaction(),
            ):
                end = ended.get(row.id)
                if end is None:
                    if row.state is JobState.RUNNING:
                        self.jobs.events.add(row.id, "re-attached after a center restart")
                    continue
                if end.lost:
                    self.jobs.events.add(row.id, f"lost: {end.reason}")
                else:
                    self.jobs.events.add(row.id, "ended while the center was down")
                self.queue.forget(row.id)
                self.ledger.record_end(end)

    # -- requests from the API -----------------------------------------------------------

    def cancel(self, job_id: str, user_id: int) -> JobRow | None:
        """Cancel one of the user's jobs (an array: all its tasks); None if there is none.

        Jobs the executor does not have yet end at once; the others when the executor has
        stopped them (signalled by the next pass, or passed on to the batch system).
        """
        with self._mutex:
            with self.ledger.batch():
                row = self.jobs.get(job_id, user_id=user_id)
                if row is None:
                    return None
                targets = self.jobs.tasks(row.id) if row.kind == "array" else [row]
                for target in targets:
                    self.queue.cancel(target)
                if row.kind == "array":
                    self.jobs.events.add(row.id, "cancel requested for all tasks")
            # Read after the batch: an array's state is derived when it ends.
            result = self.jobs.get(job_id)
        self.wake()
        return result

    # -- views ---------------------------------------------------------------------------

    def partition_views(self) -> list[Partition]:
        """`GET /v1/partitions`: totals, free GPUs and queue depth per partition."""
        load = self.jobs.partition_load()
        free_gpus = self.executor.free_gpus()
        views = []
        for p in self.partitions.values():
            pending, held = load.get(p.name, (0, 0))
            free = max(0, p.gpus - held)
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

        Now for a job without GPUs; None for more GPUs than the partition has; otherwise
        as the queue policy can tell (the center's own queue: when enough running jobs
        reach their time limits; a batch system's: only "now").
        """
        now = self.jobs.now()
        if gpus == 0:
            return now
        if gpus > partition.gpus:
            return None
        return self.queue.estimate_start(partition, gpus, now)
