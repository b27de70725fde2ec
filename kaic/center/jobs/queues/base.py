"""What a queue policy does for the scheduler (see the package's docstring)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime

from kaic.center.executors.base import Executor
from kaic.center.jobs.ledger import Ledger
from kaic.center.jobs.partitions import PartitionConfig
from kaic.center.jobs.rows import JobRow, QueueRow
from kaic.center.secrets import Secrets
from kaic.center.settings import CenterSettings
from kaic.models import JobState


def dependency_verdict(row: JobRow | QueueRow, dependencies: dict[str, JobRow]) -> str | None:
    """The reason the dependant can never run, or None if it still may."""
    for dep_id in row.depends_on:
        dep = dependencies.get(dep_id)
        if dep is None:
            return f"DependencyNeverSatisfied: job {dep_id} no longer exists"
        if dep.terminal and dep.state is not JobState.COMPLETED:
            return f"DependencyNeverSatisfied: job {dep_id} ended {dep.state.value}"
    return None


class QueuePolicy(ABC):
    """Runs the queue when something happens; called with the scheduler's lock held.

    `partitions` gives the partitions jobs may ask for (the executor's or the settings')."""

    def __init__(
        self,
        ledger: Ledger,
        executor: Executor,
        settings: CenterSettings,
        partitions: Callable[[], dict[str, PartitionConfig]],
    ) -> None:
        self.ledger = ledger
        self.jobs = ledger.jobs
        self.executor = executor
        self.settings = settings
        self.partitions = partitions
        #: jobs the executor was already asked to stop (the policy's only memory)
        self.signalled: set[str] = set()
        #: users' secrets, resolved into a job's environment as it starts (the scheduler
        #: sets them; None: a job that names a secret fails to start)
        self.secrets: Secrets | None = None

    def forget(self, job_id: str) -> None:
        """A job ended: nothing more to ask the executor about it."""
        self.signalled.discard(job_id)

    def observe(self) -> bool:
        """Take what the executor reported besides endings (after its `poll`); True when
        that needs a `step`."""
        return False

    @abstractmethod
    def step(self) -> float | None:
        """One pass after the ended jobs were recorded: signal, start or hand over.

        Returns when (a `time.time()` epoch) the policy must pass again even if nothing
        happens — the next time limit, a retry —, or None: only when something happens (a
        submit, a cancel, a job's end, a report of the executor)."""

    def arrivals(self) -> float | None:
        """A pass when only submissions happened since the last: the new jobs decided, the
        others as the last pass left them (a policy that cannot tell: a whole `step`).
        Returns as `step` does: when a pass is due, or None."""
        return self.step()

    @abstractmethod
    def watched(self, active: Sequence[JobRow]) -> list[JobRow]:
        """The active jobs the executor is to re-attach after a center restart."""

    @abstractmethod
    def cancel(self, target: JobRow) -> None:
        """The user cancels `target`, a job or array task (in the API's transaction)."""

    @abstractmethod
    def estimate_start(
        self, partition: PartitionConfig, gpus: int, now: datetime
    ) -> datetime | None:
        """When a job needing `gpus` (> 0, at most the partition's) GPUs would start, or
        None when that is unknowable."""
