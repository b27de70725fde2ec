"""A job row as the center holds it (`JobRow`), as the queue policies read it on every pass
(`QueueRow`), as inserted (`NewJob`), and as the API shows it (`to_job`): the types the job
store (`kaic.center.jobs.store`, the SQL) reads into and writes from.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal, NamedTuple

from pydantic import ValidationError

from kaic.center.db import parse_time
from kaic.models import Job, JobKind, JobState, JobSubmit, Resources
from kaic.models.metrics import Efficiency

logger = logging.getLogger("kaic.center.jobs")

#: what a row is: a job, an array or one of its tasks (not `Job.kind`: that is `job_kind`)
RowKind = Literal["job", "array", "task"]
ACTIVE = (JobState.PENDING.value, JobState.RUNNING.value, JobState.SUSPENDED.value,
          JobState.COMPLETING.value)  # fmt: skip


@dataclass(frozen=True)
class JobRow:
    id: str
    seq: int
    kind: RowKind
    array_job_id: str | None
    array_task_id: int | None
    array_limit: int | None
    user_id: int
    user: str
    project_id: int
    project: str
    name: str
    partition: str
    #: the stored submission as JSON (`spec` parses it)
    spec_json: str
    workdir: str
    time_limit_seconds: int | None
    gpus: int
    depends_on: tuple[str, ...]
    state: JobState
    reason: str | None
    exit_code: int | None
    submitted_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    deadline_epoch: float | None
    gpu_ids: tuple[int, ...]
    external_id: str | None
    pid: int | None
    pgid: int | None
    proc_start: int | None
    end_cause: str | None
    gpu_hours: float
    #: the unix account of the job's user (the Slurm executor submits as it)
    unix_account: str = ""
    #: `Job.kind`: a batch job, or an interactive allocation
    job_kind: JobKind = "batch"
    #: a finished GPU job's `Efficiency` as JSON (`kaic.center.metrics`), else None
    efficiency_json: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state.value not in ACTIVE

    @property
    def efficiency(self) -> Efficiency | None:
        """`Job.efficiency`: None until a GPU job has ended (or if the stored one is bad)."""
        if not self.efficiency_json:
            return None
        try:
            return Efficiency.model_validate_json(self.efficiency_json)
        except ValidationError:
            logger.warning("job %s: its stored efficiency does not validate", self.id)
            return None

    @cached_property
    def spec(self) -> JobSubmit:
        """The submission, parsed on first use."""
        return _load_spec(self.id, self.spec_json)


class QueueRow(NamedTuple):
    """An active job or task as the queue policies read it on every pass: what deciding
    needs, without what acting on it needs (the whole `JobRow`, from `JobStore.get`).

    The scheduler reads every active row on each pass, from one small index that holds
    exactly these columns (`jobs_queue`, migration 5) and into a tuple: several times
    cheaper than whole rows with their user's and project's names, times and submission."""

    id: str
    seq: int
    kind: RowKind
    array_job_id: str | None
    array_task_id: int | None
    array_limit: int | None
    partition: str
    gpus: int
    depends_on: tuple[str, ...]
    state: JobState
    reason: str | None
    deadline_epoch: float | None
    gpu_ids: tuple[int, ...]
    external_id: str | None
    end_cause: str | None
    time_limit_seconds: int | None

    @property
    def terminal(self) -> bool:
        return self.state.value not in ACTIVE


_STATES = {state.value: state for state in JobState}


def queue_row(row: Sequence[Any]) -> QueueRow:
    (job_id, seq, kind, array_job_id, array_task_id, array_limit, partition, gpus, depends_on,
     state, reason, deadline, gpu_ids, external_id, end_cause, time_limit) = row  # fmt: skip
    return QueueRow(
        job_id,
        seq,
        kind,
        array_job_id,
        array_task_id,
        array_limit,
        partition,
        gpus,
        split_list(depends_on or ""),
        _STATES[state],
        reason,
        deadline,
        tuple(map(int, gpu_ids.split(","))) if gpu_ids else (),
        external_id,
        end_cause,
        time_limit,
    )


def split_list(text: str) -> tuple[str, ...]:
    return tuple(part for part in text.split(",") if part)


def _load_spec(job_id: str, text: str) -> JobSubmit:
    """A stored submission. One accepted under older, looser rules (say, before the limits
    of `kaic.models.limits`) is kept as stored rather than refused: one bad row must not
    make every query that reads it fail; the scheduler fails the job if it cannot start."""
    try:
        return JobSubmit.model_validate_json(text)
    except ValidationError:
        logger.warning("job %s: its stored spec no longer validates; loaded as stored", job_id)
    data = json.loads(text)
    resources = Resources.model_construct(**(data.pop("resources", None) or {}))
    return JobSubmit.model_construct(resources=resources, **data)


def job_row(row: sqlite3.Row) -> JobRow:
    return JobRow(
        id=row["id"],
        seq=row["seq"],
        kind=row["kind"],
        array_job_id=row["array_job_id"],
        array_task_id=row["array_task_id"],
        array_limit=row["array_limit"],
        user_id=row["user_id"],
        user=row["user_name"],
        project_id=row["project_id"],
        project=row["project_name"],
        name=row["name"],
        partition=row["partition"],
        spec_json=row["spec"],
        workdir=row["workdir"],
        time_limit_seconds=row["time_limit_seconds"],
        gpus=row["gpus"],
        depends_on=split_list(row["depends_on"]),
        state=JobState(row["state"]),
        reason=row["reason"],
        exit_code=row["exit_code"],
        submitted_at=parse_time(row["submitted_at"]),
        started_at=parse_time(row["started_at"]) if row["started_at"] else None,
        ended_at=parse_time(row["ended_at"]) if row["ended_at"] else None,
        deadline_epoch=row["deadline_epoch"],
        gpu_ids=tuple(int(i) for i in split_list(row["gpu_ids"])),
        external_id=row["external_id"],
        pid=row["pid"],
        pgid=row["pgid"],
        proc_start=row["proc_start"],
        end_cause=row["end_cause"],
        gpu_hours=row["gpu_hours"],
        unix_account=row["unix_account"],
        job_kind=row["job_kind"],
        efficiency_json=row["efficiency"],
    )


@dataclass(frozen=True)
class NewJob:
    """A row to insert (see `JobStore.insert`)."""

    id: str
    seq: int
    kind: RowKind
    user_id: int
    project_id: int
    name: str
    partition: str
    spec: JobSubmit
    workdir: str
    time_limit_seconds: int | None
    gpus: int
    depends_on: Sequence[str] = ()
    array_job_id: str | None = None
    array_task_id: int | None = None
    array_limit: int | None = None
    reason: str | None = None
    job_kind: JobKind = "batch"


def to_job(row: JobRow, array_tasks: Sequence[str] = ()) -> Job:
    """The wire form of a job row: each field of `Job` from the row's attribute of the same
    name (the model lists them; a row has more), `resources` from the stored submission,
    `kind` from `job_kind` (the row's `kind` says job, array or task)."""
    values = {
        name: getattr(row, name)
        for name in Job.model_fields
        if hasattr(row, name) and name != "kind"
    }
    return Job(
        **values, kind=row.job_kind, resources=row.spec.resources, array_tasks=list(array_tasks)
    )
