"""Settings of one reference-center instance."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default clock)."""
    return datetime.now(timezone.utc)


@dataclass
class PartitionConfig:
    """One partition (queue) of the center: a pool of GPUs handed out exclusively."""

    name: str
    gpus: int = 0
    gpu_type: str | None = None
    #: the longest time limit a job may ask for (seconds); None = no limit
    max_time_seconds: int | None = None
    #: jobs that name no partition go to the default one (the first, if none is marked)
    default: bool = False


@dataclass
class CenterSettings:
    """Everything a center instance needs; tests build their own and inject a clock."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 8750
    executor: str = "local"
    gpus: int = 0
    gpu_type: str | None = None
    #: seconds an access token from a password or refresh grant stays valid
    access_token_ttl: int = 900
    #: seconds a refresh token stays valid (each rotation starts a new period)
    refresh_token_ttl: int = 30 * 86400
    #: failed logins per key (username, client IP) within `login_window` before a lockout
    login_max_failures: int = 5
    login_window: int = 300
    #: seconds a locked key is refused with 429
    login_lockout: int = 60
    #: set for the embedded local center: this user is created and gets a `local` token
    local_user: str | None = None
    #: the partitions; empty = one default partition `local` with `gpus` GPUs of `gpu_type`
    partitions: list[PartitionConfig] = field(default_factory=list)
    #: seconds between SIGTERM and SIGKILL when a job is cancelled or hits its time limit
    kill_grace: float = 10.0
    #: the scheduler wakes at least this often (seconds) to poll jobs and time limits
    job_poll_interval: float = 0.2
    #: the Slurm executor: slurmrestd's URL and a JWT of the SlurmUser (never logged)
    slurm_url: str | None = None
    slurm_token: str | None = field(default=None, repr=False)
    #: seconds between the Slurm executor's batched `GET /jobs` calls
    slurm_poll_interval: float = 1.0
    #: seconds a slurmrestd call may take before it counts as failed
    slurm_timeout: float = 10.0
    #: submit jobs with Slurm's `account` = the kaic project name
    slurm_account_from_project: bool = True
    now: Callable[[], datetime] = field(default=utc_now, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
