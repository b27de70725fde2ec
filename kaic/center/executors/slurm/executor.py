"""The Slurm executor: the center as a gateway in front of a Slurm cluster (via slurmrestd).

Slurm owns the queue (`owns_queue`): every job is submitted as soon as it is accepted, as
the user's unix account, and Slurm decides when and where it runs. The scheduler's thread
calls `poll` often; this executor turns that into **one** `GET /jobs` per
`poll_interval` for all jobs it tracks, and reports

- ended jobs (`poll`) with Slurm's final state, exit status and signal;
- pending reasons and state changes (`updates`): `Resources`, `Priority`, `Dependency`, ...

Logs: Slurm writes each job's stdout/stderr straight into the job's directory in the
center's state dir (`<state_dir>/jobs/<id>/stdout`), which is why the state dir must be on
a filesystem the compute nodes share with the center (see docs/slurm.md). The center then
streams them with the same offset-based reader as for local jobs.

Resilience: when slurmrestd is down or slow, calls back off exponentially (`health`), jobs
keep their last known state, `health()` says degraded, and no job is ever marked failed
because polling failed. A job that Slurm no longer knows (purged
after its MinJobAge while the center could not look) ends NODE_FAIL with a reason saying so.
A submit that may have reached Slurm before the connection failed is never blindly
repeated: the job is looked up by its comment (`kaic job <id>`) first.

Interactive sessions (`exec`, `connect`) run `srun --jobid --overlap` on the center host as
the job's account (`slurm/interactive.py`).

(Over the ~450-line budget: how a poll reconciles the jobs it tracks with Slurm's view —
seen, missing, looked up, purged — reads best whole. Beside it in `slurm/`: submitting,
resources, states, health, what is tracked of a job and how it ends (`tracked.py`), and
the sessions into a job (`sessions.py`).)
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import threading
import time
from collections.abc import Callable, Sequence

from kaic.center.executors.base import (
    Ended,
    Executor,
    ExecutorError,
    ExecutorHealth,
    ExecutorUnavailable,
    JobPaths,
    Launched,
    LaunchSpec,
    Observed,
    RunningJob,
)
from kaic.center.executors.prepare import job_account
from kaic.center.executors.slurm import submit
from kaic.center.executors.slurm.api import (
    SlurmApiError,
    SlurmJobNotFound,
    SlurmRestClient,
    SlurmUnavailable,
)
from kaic.center.executors.slurm.health import Reachability
from kaic.center.executors.slurm.listing import Listing
from kaic.center.executors.slurm.records import SlurmJob
from kaic.center.executors.slurm.resources import Resources, free_gpus, partition_configs
from kaic.center.executors.slurm.sessions import SlurmSessions
from kaic.center.executors.slurm.states import map_state, pending_reason
from kaic.center.executors.slurm.tracked import Tracked, ended_from, requeued_end
from kaic.center.jobs.partitions import PartitionConfig
from kaic.models import JobState

logger = logging.getLogger("kaic.center.slurm")

#: seconds between refreshes of partitions and nodes (GPU totals and free GPUs)
RESOURCES_EVERY = 10.0
#: successful polls a job must be missing from before Slurm is asked about it directly
MISSING_POLLS = 2
#: why a job's unix account must exist on the center host too
NSS_HINT = "the center must see the cluster's accounts (NSS) to hand job directories to them"


class SlurmExecutor(SlurmSessions, Executor):
    """Submits to, polls and cancels in Slurm through slurmrestd."""

    name = "slurm"
    max_nodes = 1024
    supports_images = True
    owns_queue = True

    def __init__(
        self,
        client: SlurmRestClient,
        *,
        poll_interval: float = 1.0,
        fallback_partitions: Sequence[PartitionConfig] = (),
        account_from_project: bool = True,
        clock: Callable[[], float] = time.monotonic,
        base_path: str | None = None,
        slurm_conf: str | None = None,
    ) -> None:
        self.client = client
        #: the cluster's slurm.conf for srun and friends (None: the center's SLURM_CONF)
        self.slurm_conf = slurm_conf
        self.poll_interval = max(0.05, poll_interval)
        self.fallback_partitions = list(fallback_partitions)
        self.account_from_project = account_from_project
        self.clock = clock
        self.base_path = base_path
        self._jobs: dict[str, Tracked] = {}
        self._updates: list[Observed] = []
        self._reach = Reachability(self.poll_interval, clock)
        self._next_poll = 0.0
        self._resources = Resources()
        # Partitions are read by API threads too (job validation, `GET /v1/partitions`).
        self._resources_lock = threading.Lock()
        #: kaic job ids whose submit may have reached Slurm without us learning the id
        self._ambiguous: set[str] = set()
        #: the one batched listing per poll, of the jobs changed since the previous one
        self._listing = Listing(client, clock)

    # -- health and backoff --------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        self._next_poll = max(self._next_poll, self._reach.failed(exc))

    def _succeeded(self) -> None:
        self._reach.succeeded()

    def health(self) -> ExecutorHealth:
        return self._reach.health()

    def _check_reachable(self) -> None:
        if self._reach.waiting():
            raise ExecutorUnavailable(f"waiting for Slurm ({self._reach.detail}); will retry")

    # -- start ---------------------------------------------------------------------------

    def _owner(self, spec: LaunchSpec) -> pwd.struct_passwd | None:
        """The account the job's directories go to: the job's, when the center runs as
        root (otherwise the operator sets them up; see docs/slurm.md)."""
        if os.geteuid() != 0:
            return None
        return job_account(spec, missing=NSS_HINT)

    def _prepare(self, spec: LaunchSpec) -> list[JobPaths]:
        return submit.prepare(spec, self._owner(spec))

    def _adopt(self, spec: LaunchSpec, account: str) -> int | None:
        """The Slurm id of an earlier, unconfirmed submit of this job, if Slurm has it."""
        wanted = submit.comment(spec.job_id)
        for record in self.client.jobs() or ():
            if record.comment == wanted and record.user in (account, None):
                return record.array_job_id or record.job_id
        return None

    def start(self, spec: LaunchSpec) -> Launched:
        self._check_reachable()
        account = spec.unix_account or spec.user
        self._prepare(spec)
        try:
            slurm_id: int | None = None
            if spec.job_id in self._ambiguous:
                slurm_id = self._adopt(spec, account)
            if slurm_id is None:
                request = submit.submit_request(
                    spec,
                    account,
                    base_path=self.base_path,
                    account_from_project=self.account_from_project,
                )
                slurm_id = self.client.submit(account, request)
        except SlurmUnavailable as exc:
            if exc.sent:
                self._ambiguous.add(spec.job_id)
            self._failed(exc)
            raise ExecutorUnavailable(f"waiting for Slurm ({exc}); will retry") from exc
        except SlurmApiError as exc:
            raise ExecutorError(f"Slurm refused the job: {exc}") from exc
        self._succeeded()
        self._ambiguous.discard(spec.job_id)
        now = self.clock()
        if spec.array_tasks:
            for index in spec.array_tasks:
                task_id = f"{spec.job_id}_{index}"
                self._jobs[task_id] = Tracked(
                    task_id,
                    f"{slurm_id}_{index}",
                    None,
                    slurm_id,
                    index,
                    account,
                    last_seen=now,
                    restarts=0,
                )
        else:
            # Submitted just now: Slurm has restarted it 0 times (a requeue before the first
            # poll that sees it is still a requeue; only a recovered job's count is unknown).
            self._jobs[spec.job_id] = Tracked(
                spec.job_id, str(slurm_id), slurm_id, None, None, account, last_seen=now, restarts=0
            )
        # Look soon: the new job's pending reason is worth showing.
        self._next_poll = min(self._next_poll, now + self.poll_interval)
        return Launched(external_id=str(slurm_id))

    # -- polling -------------------------------------------------------------------------

    def poll(self) -> list[Ended]:
        now = self.clock()
        if now < self._next_poll:
            return []
        self._next_poll = now + self.poll_interval
        for tracked in self._jobs.values():
            if tracked.cancel_requested and not tracked.cancel_sent:
                self._send_cancel(tracked)
        records: list[SlurmJob] = []
        if self._jobs:
            try:
                listed = self._listing.fetch(now)
            except SlurmApiError as exc:
                self._failed(exc)
                return []
            finally:
                self._next_poll = max(self._next_poll, self._listing.not_before)
            self._succeeded()  # only a call that reached Slurm says it is reachable
            if listed is None:  # no job changed in Slurm: each is as the last poll saw it
                self._refresh_resources(now)
                return []
            records = listed
        self._refresh_resources(now)
        plain: dict[int, SlurmJob] = {}
        tasks: dict[tuple[int, int], SlurmJob] = {}
        remainders: dict[tuple[int, int], SlurmJob] = {}
        for item in records:
            if item.array_job_id is None:
                plain[item.job_id] = item
            elif item.array_task_id is not None:
                tasks[(item.array_job_id, item.array_task_id)] = item
            else:
                for index in item.pending_tasks:
                    remainders[(item.array_job_id, index)] = item
        ended: list[Ended] = []
        missing = False
        looked_up: dict[str, list[SlurmJob] | Exception] = {}  # one GET /job/<id> per id
        for tracked in list(self._jobs.values()):
            record: SlurmJob | None
            if tracked.array_id is not None and tracked.task is not None:
                key = (tracked.array_id, tracked.task)
                record = tasks.get(key) or remainders.get(key)
            else:
                record = plain.get(tracked.plain_id or -1)
            if record is None:
                missing = True
                result = self._missing_from_listing(tracked, now, looked_up)
            else:
                tracked.missing = 0
                tracked.last_seen = now
                result = self._observe(tracked, record)
            if result is not None:
                del self._jobs[tracked.job_id]
                ended.append(result)
        self._listing.missing = missing
        return ended

    def _observe(self, tracked: Tracked, record: SlurmJob) -> Ended | None:
        if tracked.task is not None and record.array_task_id == tracked.task:
            tracked.task_job_id = record.job_id
        if tracked.restarts is None:
            tracked.restarts = record.restarts
        elif record.restarts > tracked.restarts:
            return self._requeued_by_slurm(tracked, record)
        mapped = map_state(record.state)
        if mapped.state is None:
            return None
        if mapped.terminal:
            return ended_from(tracked, record, mapped.state, mapped.reason)
        reason = mapped.reason
        if mapped.state is JobState.PENDING and reason is None:
            reason = pending_reason(record.state_reason)
        running = mapped.state is not JobState.PENDING
        gpu_ids = record.gpu_ids if running else ()
        nodes = record.nodes if running else ()
        seen = (mapped.state, reason, gpu_ids, nodes)
        if seen != (tracked.state, tracked.reason, tracked.gpu_ids, tracked.nodes):
            tracked.state, tracked.reason, tracked.gpu_ids, tracked.nodes = seen
            self._updates.append(Observed(tracked.job_id, mapped.state, reason, gpu_ids, nodes))
        return None

    def _requeued_by_slurm(self, tracked: Tracked, record: SlurmJob) -> Ended:
        """Slurm requeued the job itself: that run is cancelled in Slurm and ends here
        (`requeued_end`)."""
        self._send_cancel(tracked)
        return requeued_end(tracked, record)

    def _missing_from_listing(
        self, tracked: Tracked, now: float, looked_up: dict[str, list[SlurmJob] | Exception]
    ) -> Ended | None:
        """A tracked job absent from `GET /jobs`: ask Slurm about it, then decide."""
        tracked.missing += 1
        if tracked.missing < MISSING_POLLS:
            return None
        if tracked.cancel_requested:
            # Slurm drops cancelled pending array tasks from its listing at once.
            return Ended(tracked.job_id, None, state=JobState.CANCELLED)
        lookup = str(tracked.array_id if tracked.array_id is not None else tracked.plain_id)
        if lookup not in looked_up:  # the tasks of one purged array share one lookup
            try:
                looked_up[lookup] = self.client.job(lookup)
            except SlurmApiError as exc:
                looked_up[lookup] = exc
        found = looked_up[lookup]
        try:
            if isinstance(found, Exception):
                raise found
            records = found
        except SlurmJobNotFound:
            unseen = now - tracked.last_seen
            reason = (
                f"Slurm no longer knows job {tracked.slurm_id}: it ended while its state could "
                f"not be read (last seen {unseen:.0f}s ago; Slurm purges ended jobs after "
                "MinJobAge), so its exit status is unknown"
            )
            return Ended(tracked.job_id, None, lost=True, reason=reason)
        except SlurmApiError as exc:
            self._failed(exc)
            return None
        for record in records:
            if record.array_task_id == tracked.task or tracked.task in record.pending_tasks:
                tracked.missing = 0
                tracked.last_seen = now
                return self._observe(tracked, record)
        if tracked.task is not None:
            return Ended(
                tracked.job_id,
                None,
                state=JobState.CANCELLED,
                reason="removed from Slurm's queue (scancel or an administrator)",
            )
        return None

    def updates(self) -> list[Observed]:
        updates, self._updates = self._updates, []
        return updates

    # -- cancel, recover, shutdown -------------------------------------------------------

    def _send_cancel(self, tracked: Tracked) -> None:
        try:
            self.client.cancel(tracked.user or self.client.user, tracked.slurm_id)
        except SlurmJobNotFound:
            pass  # already gone: the next poll reports it
        except SlurmUnavailable as exc:
            self._failed(exc)
            return
        except SlurmApiError as exc:
            logger.warning("Slurm refused to cancel job %s: %s", tracked.slurm_id, exc)
        tracked.cancel_sent = True

    def cancel(self, job_id: str) -> None:
        tracked = self._jobs.get(job_id)
        if tracked is None or tracked.cancel_requested:
            return
        tracked.cancel_requested = True
        if not self._reach.failures:
            self._send_cancel(tracked)
        self._next_poll = min(self._next_poll, self.clock() + self.poll_interval)

    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        now = self.clock()
        for job in jobs:
            external = job.launched.external_id
            array_text, _, task_text = external.partition("_")
            try:
                if task_text:
                    tracked = Tracked(
                        job.job_id,
                        external,
                        None,
                        int(array_text),
                        int(task_text),
                        job.unix_account,
                        last_seen=now,
                    )
                else:
                    tracked = Tracked(
                        job.job_id, external, int(external), None, None, job.unix_account
                    )
                    tracked.last_seen = now
            except ValueError:
                logger.warning("job %s has no usable Slurm id %r", job.job_id, external)
                continue
            self._jobs[job.job_id] = tracked
        self._next_poll = 0.0
        return []

    def shutdown(self, *, kill_jobs: bool) -> None:
        if kill_jobs:
            for tracked in self._jobs.values():
                with contextlib.suppress(SlurmApiError):
                    self.client.cancel(tracked.user or self.client.user, tracked.slurm_id)
        self._jobs.clear()
        self.client.close()

    def tracked(self) -> list[str]:
        """Ids of the jobs being watched (for tests and diagnostics)."""
        return list(self._jobs)

    # -- partitions and GPUs -------------------------------------------------------------

    def _refresh_resources(self, now: float, *, force: bool = False) -> None:
        with self._resources_lock:
            fetched = self._resources.fetched_at
            if not force and fetched is not None and now - fetched < RESOURCES_EVERY:
                return
            if force and fetched is not None:
                return  # another thread fetched them meanwhile
            try:
                partitions = self.client.partitions()
                nodes = self.client.nodes()
            except SlurmApiError as exc:
                self._failed(exc)
                return
            self._succeeded()
            self._resources = Resources(partitions, nodes, now)

    def partitions(self) -> list[PartitionConfig] | None:
        if self._resources.fetched_at is None and not self._reach.waiting():
            self._refresh_resources(self.clock(), force=True)
        if not self._resources.partitions:
            return list(self.fallback_partitions)
        return partition_configs(self._resources.partitions, self._resources.nodes)

    def free_gpus(self) -> dict[str, int] | None:
        if self._resources.fetched_at is None:
            return None
        return free_gpus(self._resources.partitions, self._resources.nodes)

    def _task_job_id(self, job_id: str) -> int | None:
        tracked = self._jobs.get(job_id)
        return None if tracked is None else tracked.task_job_id


def make_slurm_executor(
    url: str,
    token: str,
    *,
    poll_interval: float,
    timeout: float,
    fallback_partitions: Sequence[PartitionConfig] = (),
    account_from_project: bool = True,
    slurm_conf: str | None = None,
) -> SlurmExecutor:
    """A Slurm executor talking to slurmrestd at `url` with the SlurmUser's JWT `token`."""
    client = SlurmRestClient(url, token, timeout=timeout)
    return SlurmExecutor(
        client,
        poll_interval=poll_interval,
        fallback_partitions=fallback_partitions,
        account_from_project=account_from_project,
        slurm_conf=slurm_conf,
    )
