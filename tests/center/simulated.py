"""A simulated executor: starts and ends jobs without processes, for scheduler tests and the
scale benchmark (`benchmarks/bench_scale.py`). Not a product feature: it lives with the tests.

It implements the executor interface (`kaic.center.executors.base`) the way the local
executor behaves, minus the processes: `start` records a job as running; the job ends when
the test says so (`finish`), when its planned duration has passed (`durations`), or, once
cancelled, at the next `poll` with the status a shell reports for SIGTERM (143) — or, for a
job the test marks `stubborn` (it ignores SIGTERM), with SIGKILL's (137) after the grace
period. `poll` costs O(running jobs), like the local executor's.

Its partition is the center's own (settings' partitions); `node_of` names the simulated node
a GPU index belongs to (`gpus_per_node` GPUs each), so a 10,000-GPU partition reads as
1,250 nodes of 8 GPUs.
"""

from __future__ import annotations

import itertools
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kaic.center.executors.base import (
    Ended,
    Executor,
    ExecutorError,
    Launched,
    LaunchSpec,
    RunningJob,
)


@dataclass
class _Job:
    spec_id: str
    gpu_ids: tuple[int, ...]
    #: monotonic time at which it ends by itself (None: when told)
    ends_at: float | None
    exit_code: int = 0
    #: monotonic time of the SIGTERM (cancel or time limit); None if not signalled
    signalled_at: float | None = None
    stubborn: bool = False


@dataclass
class SimulatedExecutor(Executor):
    """Jobs as records; thread-safe, since tests and benchmarks end jobs from their own
    thread while the scheduler polls."""

    kill_grace: float = 10.0
    #: seconds a started job runs by itself (None: until `finish` or a cancel), by job id
    durations: Callable[[str], float | None] = field(default=lambda job_id: None)
    gpus_per_node: int = 8
    #: job ids whose start fails (`ExecutorError`), to exercise the scheduler's handling
    failing: set[str] = field(default_factory=set)
    clock: Callable[[], float] = time.monotonic

    name = "simulated"

    def __post_init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._finished: dict[str, int] = {}
        self._stubborn: set[str] = set()
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        #: every start, in order: (job id, GPU ids) — what the scheduler decided
        self.starts: list[tuple[str, tuple[int, ...]]] = []
        #: every cancel the scheduler asked for, in order
        self.cancels: list[str] = []

    def node_of(self, gpu_id: int) -> str:
        """The simulated node a GPU index of the partition is on."""
        return f"node{gpu_id // self.gpus_per_node:04d}"

    # -- what tests and benchmarks do ----------------------------------------------------

    def finish(self, job_id: str, exit_code: int = 0) -> None:
        """End a running job with `exit_code` (reported by the next `poll`)."""
        with self._lock:
            if job_id in self._jobs:
                self._finished[job_id] = exit_code

    def stubborn(self, job_id: str) -> None:
        """The job ignores SIGTERM: a cancel ends it only at SIGKILL, after the grace."""
        with self._lock:
            self._stubborn.add(job_id)
            if job_id in self._jobs:
                self._jobs[job_id].stubborn = True

    def running(self) -> list[str]:
        """Ids of the jobs running now."""
        with self._lock:
            return list(self._jobs)

    # -- the executor interface ----------------------------------------------------------

    def start(self, spec: LaunchSpec) -> Launched:
        if spec.job_id in self.failing:
            raise ExecutorError("could not start the job: simulated failure")
        duration = self.durations(spec.job_id)
        with self._lock:
            now = self.clock()
            self._jobs[spec.job_id] = _Job(
                spec.job_id,
                tuple(spec.gpu_ids),
                None if duration is None else now + duration,
                stubborn=spec.job_id in self._stubborn,
            )
            self.starts.append((spec.job_id, tuple(spec.gpu_ids)))
            external = f"sim-{next(self._ids)}"
        return Launched(external_id=external, pid=None, pgid=None, start_time=None)

    def poll(self) -> list[Ended]:
        ended: list[Ended] = []
        with self._lock:
            now = self.clock()
            for job_id, job in list(self._jobs.items()):
                result = self._check(job, now)
                if result is not None:
                    del self._jobs[job_id]
                    self._finished.pop(job_id, None)
                    ended.append(result)
        return ended

    def _check(self, job: _Job, now: float) -> Ended | None:
        code = self._finished.get(job.spec_id)
        if code is not None:
            return Ended(job.spec_id, code, signal=code - 128 if code > 128 else None)
        if job.signalled_at is not None:
            if not job.stubborn:
                return Ended(job.spec_id, 128 + signal.SIGTERM, signal=signal.SIGTERM)
            if now >= job.signalled_at + self.kill_grace:
                return Ended(job.spec_id, 128 + signal.SIGKILL, signal=signal.SIGKILL)
            return None
        if job.ends_at is not None and now >= job.ends_at:
            return Ended(job.spec_id, job.exit_code)
        return None

    def cancel(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.signalled_at is not None:
                return
            job.signalled_at = self.clock()
            self.cancels.append(job_id)

    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        with self._lock:
            for running in jobs:
                self._jobs[running.job_id] = _Job(running.job_id, (), None)
        return []

    def shutdown(self, *, kill_jobs: bool) -> None:
        with self._lock:
            self._jobs.clear()
            self._finished.clear()
