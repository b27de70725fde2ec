"""Job models: what a user submits, what the center reports, partitions and dry runs."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from kaic.models.states import JobState


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: int = Field(0, ge=0, le=1024)
    gpu_type: str | None = None
    nodes: int = Field(1, ge=1, le=1024)
    cpus_per_gpu: int | None = Field(None, ge=1, le=1024)
    memory: str | None = Field(None, pattern=r"^\d+[KMGT]?$", description="e.g. 512G")


class JobSubmit(BaseModel):
    """`POST /v1/jobs`: a job as the user asks for it (job file + CLI overrides)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, max_length=128)
    project: str | None = None
    partition: str | None = None
    resources: Resources = Field(default_factory=lambda: Resources())
    time_limit_seconds: int | None = Field(None, ge=1)
    image: str | None = None
    workdir: str | None = Field(None, description="on center storage; `~` = the user's home")
    env: dict[str, str] = Field(default_factory=dict)
    run: str = Field(min_length=1, description="the script (bash) the job runs")
    array: str | None = Field(
        None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*(%\d+)?$", description="e.g. 0-15%4"
    )
    depends_on: list[str] = Field(default_factory=list, description="after-ok dependencies")


class Job(BaseModel):
    """A job as the center reports it (CLI.md's JSON fields are a contract)."""

    id: str
    name: str
    state: JobState
    exit_code: int | None = None
    user: str
    project: str
    partition: str
    resources: Resources
    time_limit_seconds: int | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    reason: str | None = Field(None, description="why it is pending, or why it ended badly")
    workdir: str | None = None
    array_job_id: str | None = Field(None, description="set on array tasks: the array's id")
    array_task_id: int | None = None
    array_tasks: list[str] = Field(default_factory=list, description="on an array: its tasks")
    depends_on: list[str] = Field(default_factory=list)
    gpu_ids: list[int] = Field(default_factory=list, description="GPUs handed to the job")


class JobList(BaseModel):
    jobs: list[Job]
    next_cursor: str | None = None


class JobEvent(BaseModel):
    at: datetime
    state: JobState | None = None
    message: str


class DryRunResult(BaseModel):
    dry_run: Literal[True] = True
    valid: bool
    problems: list[str] = Field(default_factory=list)
    estimated_start: datetime | None = None
    estimated_gpu_hours: float = 0.0


class Partition(BaseModel):
    name: str
    gpu_type: str | None = None
    gpus_total: int
    gpus_free: int
    max_time: int | None = Field(None, description="seconds; null = no limit")
    pending_jobs: int = 0
    default: bool = False
