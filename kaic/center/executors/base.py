"""The interface between the scheduler and whatever runs jobs.

The scheduler owns the queue (who runs, on which GPUs, when the time is up); an executor
only starts a job, reports jobs that ended, and stops jobs on request. The shape follows
Slurm, so a Slurm executor fits the same seams:

- `start` returns an external id (the local pid, or Slurm's job id) the center stores;
- `poll` is batched (one `squeue`/`sacct` call per tick, not one per job);
- `cancel` asks for the signal sequence (SIGTERM, grace, SIGKILL; Slurm's KillWait) and
  returns at once: the job is reported by a later `poll` when it is really gone;
- `recover` re-attaches the jobs the database says are running after a center restart.

An executor in front of a real batch system (`owns_queue = True`, the Slurm executor) owns
the queue itself: the scheduler hands it every job at once (`start` then means "submit"),
the executor reports pending reasons and state changes through `updates`, enforces time
limits itself, and ends jobs with their final state (`Ended.state`).

Interactive access (optional): `exec` starts a command inside a running job's allocation,
as its account, with its environment, and `connect` opens a TCP connection to a port on the
job's node from inside it (`kaic exec`, `shell`, `forward`). An executor that cannot says
why in `interactive_refusal`; the default refuses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kaic.center.containers.spec import Container
from kaic.center.jobs.partitions import PartitionConfig
from kaic.models import JobState

if TYPE_CHECKING:
    from kaic.center.executors.forward_channel import ForwardChannel
    from kaic.center.executors.interactive import SessionProcess
    from kaic.models.interactive import ExecStart

#: what an executor without interactive access answers
NO_INTERACTIVE_ACCESS = "this executor does not offer interactive access"


@dataclass(frozen=True)
class JobPaths:
    """Where one job's files live on the center (`state_dir/jobs/<id>/`)."""

    dir: Path

    @property
    def script(self) -> Path:
        return self.dir / "script.sh"

    @property
    def stdout(self) -> Path:
        return self.dir / "stdout"

    @property
    def stderr(self) -> Path:
        return self.dir / "stderr"

    @property
    def exitcode(self) -> Path:
        """Written atomically by the job's wrapper when the job ends: its exit status."""
        return self.dir / "exitcode"

    def log(self, stream: str, rank: int | None = None) -> Path:
        """The log file of `stream` ("stdout" or "stderr"): the job's own, or with `rank`
        that of one rank of a multi-node job (`stdout.1`; what Slurm's `%t` names)."""
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"unknown log stream {stream!r}")
        return self.dir / (stream if rank is None else f"{stream}.{rank}")


@dataclass(frozen=True)
class LaunchSpec:
    """Everything an executor needs to start one job (or one array task)."""

    job_id: str
    name: str
    user: str
    #: the bash script the job runs
    script: str
    paths: JobPaths
    #: the directory the job starts in (already resolved inside the user's storage)
    workdir: Path
    #: the user's storage home (`~` of the job)
    home: Path
    env: Mapping[str, str] = field(default_factory=dict)
    #: the job's secrets, resolved at its start: variable -> value. Only `job_environment`
    #: reads them (never printed: left out of the repr)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    gpu_ids: Sequence[int] = ()
    time_limit_seconds: int | None = None
    partition: str = "local"
    array_job_id: str | None = None
    array_task_id: int | None = None
    #: GPUs per node the job asks for (queue-owning executors allocate them themselves)
    gpus: int = 0
    nodes: int = 1
    #: the unix account the job runs as (queue-owning executors; None = the center's own)
    unix_account: str | None = None
    #: the project the job is charged to (Slurm: the account)
    project: str | None = None
    #: for an array submitted as one (queue-owning executors): its task indices and the
    #: most tasks that may run at once; the tasks' ids are `<job_id>_<index>`
    array_tasks: Sequence[int] = ()
    array_limit: int | None = None
    #: external ids of jobs that must complete successfully first
    after_ok: Sequence[str] = ()
    #: the center's own storage root (`state_dir/storage`) when `home` lies in it; None when
    #: the site's storage root holds the homes (the ownership rule of `executors.prepare`)
    own_storage: Path | None = None
    #: the image the job runs in and the runtime that runs it (`kaic.center.containers`)
    container: Container | None = None
    #: seconds between two samples of the job's metrics sampler (`executors.sampler`);
    #: 0 = none
    metrics_interval: float = 0.0
    #: the Python that runs the sampler (absolute); None = the center's own
    metrics_python: str | None = None


@dataclass(frozen=True)
class SessionTarget:
    """A running job an interactive session goes into: the job as `launch_spec` describes it
    (unix account, workdir, environment, GPUs) and the executor's own id for it."""

    spec: LaunchSpec
    external_id: str


@dataclass(frozen=True)
class Launched:
    """What the center records about a started job so it can find it again after a restart."""

    #: the executor's own id for the job (local: the wrapper's pid; Slurm: its job id)
    external_id: str
    pid: int | None = None
    pgid: int | None = None
    #: the process start time (clock ticks since boot, /proc/<pid>/stat field 22): with the
    #: pid it identifies the process even if the pid has been reused
    start_time: int | None = None
    #: the names of the nodes it runs on, when known at start (`Job.nodes`)
    nodes: Sequence[str] = ()


@dataclass(frozen=True)
class RunningJob:
    """A job the database says is running, handed to `Executor.recover` after a restart."""

    job_id: str
    launched: Launched
    paths: JobPaths
    #: the unix account the job runs as (queue-owning executors act as it)
    unix_account: str | None = None


@dataclass(frozen=True)
class Ended:
    """A job that is no longer running, as `poll` or `recover` report it."""

    job_id: str
    #: the exit status (128+N when killed by signal N); None when unknown (a lost job)
    exit_code: int | None
    #: the signal that killed the job, when the executor knows it
    signal: int | None = None
    #: True when the job vanished without an exit status (the center marks it NODE_FAIL)
    lost: bool = False
    #: why the job was lost (shown as the job's reason), or why it ended in `state`
    reason: str | None = None
    #: the final state, when the executor knows it (queue-owning executors); None lets the
    #: scheduler derive it from the exit code and its own records
    state: JobState | None = None
    #: when the job really started and ended, by the executor's own records (Slurm's); the
    #: GPU-hours charged come from these when given (a job shorter than a poll interval was
    #: never seen running by the center)
    started_at: datetime | None = None
    ended_at: datetime | None = None
    #: the names of the nodes it ran on, when the executor knows them
    nodes: Sequence[str] = ()


@dataclass(frozen=True)
class Observed:
    """A change of a job that has not ended (queue-owning executors): its state and why."""

    job_id: str
    state: JobState
    reason: str | None = None
    gpu_ids: Sequence[int] = ()
    #: the names of the nodes the job runs on, when the executor knows them
    nodes: Sequence[str] = ()


@dataclass(frozen=True)
class ExecutorHealth:
    """Whether the executor can reach what runs the jobs; `detail` says what is wrong."""

    ok: bool = True
    detail: str | None = None


class ExecutorError(Exception):
    """A job could not be started; the message says why (shown as the job's reason)."""


class InteractiveUnsupported(ExecutorError):
    """The executor cannot open sessions in jobs (the message says why)."""


class ExecutorUnavailable(ExecutorError):
    """The job could not be handed over *now* (the batch system is unreachable): it stays
    pending and is tried again later; the message is shown as its pending reason."""


class Executor(ABC):
    """Runs jobs for the scheduler. Only the scheduler's thread calls these methods, except
    `health`, `partitions` and `free_gpus`, which API requests read too, and the interactive
    ones (`interactive_refusal`, `exec`, `connect`), which sessions call on the event loop's
    thread: they touch none of the scheduler's state."""

    #: the name `GET /v1/health` reports ("local", "slurm")
    name: str = "executor"
    #: the most nodes one job may ask for
    max_nodes: int = 1
    #: whether `image` (a container) can be honoured
    supports_images: bool = False
    #: whether the executor runs the queue itself (see the module's docstring)
    owns_queue: bool = False
    #: whether jobs run on the center's own host (what a job's image needs is checked there)
    runs_on_center_host: bool = False

    @abstractmethod
    def start(self, spec: LaunchSpec) -> Launched:
        """Start a job; raises `ExecutorError` when it cannot."""

    @abstractmethod
    def poll(self) -> list[Ended]:
        """The jobs that ended since the last call (each reported once), in one batch.

        Also where pending escalations happen (SIGKILL after the grace period).
        """

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Start stopping a job: SIGTERM now, SIGKILL after the grace period.

        Returns at once; a later `poll` reports the job when it has ended. Unknown or
        already-ended jobs are ignored.
        """

    @abstractmethod
    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        """Re-attach jobs that were running when the center stopped.

        Returns those that ended (with their real exit status) or were lost meanwhile;
        the others are monitored again and reported by `poll` when they end.
        """

    @abstractmethod
    def shutdown(self, *, kill_jobs: bool) -> None:
        """Stop monitoring. With `kill_jobs` the running jobs are killed too; without it
        (what a SIGTERM'd center does) they keep running and a later `recover` finds them."""

    def updates(self) -> list[Observed]:
        """State changes of jobs that have not ended, since the last call (queue-owning
        executors; call after `poll`)."""
        return []

    def health(self) -> ExecutorHealth:
        """Whether the executor currently reaches its batch system."""
        return ExecutorHealth()

    def partitions(self) -> list[PartitionConfig] | None:
        """The batch system's partitions, or None when the center's own partition settings
        apply (the local executor)."""
        return None

    def free_gpus(self) -> dict[str, int] | None:
        """Free GPUs per partition as the batch system last reported them (None: the
        scheduler counts them itself)."""
        return None

    # -- interactive access (optional) ---------------------------------------------------

    def interactive_refusal(self) -> str | None:
        """Why sessions cannot be opened in this executor's jobs now, or None if they can."""
        return NO_INTERACTIVE_ACCESS

    def exec(self, target: SessionTarget, start: ExecStart) -> SessionProcess:
        """Start `start.argv` inside the running job `target` (see
        `kaic.center.executors.interactive`); raises ExecutorError when it cannot."""
        raise InteractiveUnsupported(NO_INTERACTIVE_ACCESS)

    def connect(self, target: SessionTarget, port: int) -> ForwardChannel:
        """A TCP connection to `port` on the job's node, opened from inside the job;
        ConnectionRefusedError when nothing listens there (a relay that announces itself
        may report that later), ExecutorError otherwise."""
        raise InteractiveUnsupported(NO_INTERACTIVE_ACCESS)
