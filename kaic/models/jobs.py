"""Job models: what a user submits, what the center reports, partitions and dry runs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from kaic.models.arrays import ARRAY_PATTERN, parse_array
from kaic.models.fields import JobKey, WireOnly
from kaic.models.followup import Notify, RetryPolicy
from kaic.models.limits import (
    MAX_ARRAY_INDEX,
    MAX_ARRAY_SPEC_LENGTH,
    MAX_ARRAY_TASKS,
    MAX_DEPENDENCIES,
    MAX_ENV_TOTAL_LENGTH,
    MAX_ENV_VARS,
    MAX_MEMORY_LENGTH,
    MAX_TIME_LIMIT_SECONDS,
    EnvMapping,
    ImageText,
    JobIdText,
    NameText,
    PathText,
    ScriptText,
)
from kaic.models.metrics import Efficiency
from kaic.models.secrets import SecretRefs
from kaic.models.states import JobState

#: `batch`: a job that runs its script; `interactive`: an allocation held for interactive
#: sessions (`kaic alloc`) until it is released, cancelled or times out
JobKind = Literal["batch", "interactive"]


def not_a_bool(value: object) -> object:
    """Counts are never `true`/`false`: a bool is an int to Python, so `"gpus": false` was
    taken as 0 GPUs (a job file's text "8" is still read as 8)."""
    if isinstance(value, bool):
        raise PydanticCustomError("int_type", "input should be a valid integer, not true/false")
    return value


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpus: Annotated[int, JobKey(flag="--gpus")] = Field(0, ge=0, le=1024)
    gpu_type: Annotated[NameText | None, JobKey(flag="--gpu-type")] = None
    nodes: Annotated[int, JobKey(flag="--nodes")] = Field(1, ge=1, le=1024)
    cpus_per_gpu: int | None = Field(None, ge=1, le=1024)
    memory: str | None = Field(
        None, max_length=MAX_MEMORY_LENGTH, pattern=r"^\d+[KMGT]?$", description="e.g. 512G"
    )

    @field_validator("gpus", "nodes", "cpus_per_gpu", mode="before")
    @classmethod
    def _counts_are_not_bools(cls, value: object) -> object:
        return not_a_bool(value)


class JobSubmit(BaseModel):
    """`POST /v1/jobs`: a job as the user asks for it (job file + CLI overrides).

    Every string that reaches a process environment, an argv or a path is bounded and free
    of control characters; the limits live in `kaic.models.limits`.
    """

    # (Not in the docstring, which is the OpenAPI description.) A field's job-file key and
    # `kaic submit` flag are its `JobKey` (`kaic.models.fields`): the job file's keys and the
    # flag overrides of `kaic.jobspec` are derived from this class, not listed again.
    model_config = ConfigDict(extra="forbid")

    name: Annotated[NameText | None, JobKey(flag="--name")] = None
    project: Annotated[NameText | None, JobKey(flag="--project")] = None
    partition: Annotated[NameText | None, JobKey(flag="--partition")] = None
    resources: Resources = Field(default_factory=lambda: Resources())
    time_limit_seconds: Annotated[int | None, JobKey("time_limit", flag="--time")] = Field(
        None, ge=1, le=MAX_TIME_LIMIT_SECONDS
    )
    image: Annotated[ImageText | None, JobKey(flag="--image")] = None
    workdir: Annotated[PathText | None, JobKey(flag="--workdir")] = Field(
        None, description="on center storage; `~` = the user's home"
    )
    env: Annotated[EnvMapping, JobKey(flag="--env")] = Field(
        default_factory=dict,
        description=f"environment variables: at most {MAX_ENV_VARS}, names and values "
        f"together at most {MAX_ENV_TOTAL_LENGTH} characters",
    )
    secrets: Annotated[SecretRefs, JobKey(flag="--secret")] = Field(
        default_factory=dict,
        description="environment variables whose values are the user's secrets, by name "
        "(`{VAR: NAME}`); the center resolves them when the job starts, and stores and "
        "shows only the names",
    )
    kind: Annotated[JobKind, WireOnly()] = Field(
        "batch",
        description="`interactive`: an allocation for interactive sessions (`kaic alloc`), "
        "held until released (cancelled) or its time limit; it needs no `run`",
    )
    run: Annotated[ScriptText | None, JobKey(flag="-- COMMAND")] = Field(
        None,
        description="the script (bash) the job runs; required unless `kind` is `interactive`",
        validate_default=True,
    )
    array: Annotated[str | None, JobKey(flag="--array")] = Field(
        None,
        max_length=MAX_ARRAY_SPEC_LENGTH,
        pattern=ARRAY_PATTERN,
        description=f"e.g. 0-15%4: at most {MAX_ARRAY_TASKS} tasks, indices up to "
        f"{MAX_ARRAY_INDEX}",
    )
    depends_on: Annotated[list[JobIdText], JobKey(flag="--after")] = Field(
        default_factory=list, max_length=MAX_DEPENDENCIES, description="after-ok dependencies"
    )
    retry: Annotated[RetryPolicy | None, JobKey(flag="--retry")] = Field(
        None,
        description="requeue the job (same id, next attempt) when the system ends it in one "
        "of `on`, at most `max` times",
    )
    notify: Annotated[Notify | None, JobKey(flag="--notify")] = Field(
        None, description="a webhook and/or a mail sent when the job ends"
    )

    @field_validator("time_limit_seconds", mode="before")
    @classmethod
    def _time_limit_is_not_a_bool(cls, value: object) -> object:
        return not_a_bool(value)

    @field_validator("run")
    @classmethod
    def _run_unless_interactive(cls, value: str | None, info: ValidationInfo) -> str | None:
        # `kind` is declared before `run`, so it has been validated when this runs.
        if value is None and info.data.get("kind", "batch") != "interactive":
            raise PydanticCustomError("missing", "Field required")
        return value

    @model_validator(mode="after")
    def _secrets_are_not_env(self) -> JobSubmit:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise PydanticCustomError(
                "env_and_secret",
                "{names}: set both in env and as a secret; keep one",
                {"names": ", ".join(both)},
            )
        return self

    @field_validator("array")
    @classmethod
    def _array_within_limits(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_array(value)
            except ValueError as exc:  # too many tasks, a backwards range, `%0`, ...
                raise PydanticCustomError("array", "{reason}", {"reason": str(exc)}) from None
        return value


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
    array_counts: dict[str, int] = Field(
        default_factory=dict, description="on an array: how many of its tasks are in each state"
    )
    depends_on: list[str] = Field(default_factory=list)
    gpu_ids: list[int] = Field(default_factory=list, description="GPUs handed to the job")
    nodes: list[str] = Field(
        default_factory=list, description="the names of the nodes it runs on, once it runs"
    )
    kind: JobKind = Field("batch", description="`interactive`: an allocation (`kaic alloc`)")
    attempt: int = Field(
        1, ge=1, description="1-based: the attempt running now (or the last), after requeues"
    )
    efficiency: Efficiency | None = Field(
        None, description="a finished GPU job: utilisation, peak memory, GPU-hours (idle)"
    )


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
