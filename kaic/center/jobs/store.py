"""SQL for jobs, job events and idempotency keys, over the center's database (`Store`).

The schema is migration 2 in `kaic/center/migrations.py` (and 4: `job_kind`). One row per
job; an array is a parent row (kind 'array', id "N") whose state the scheduler derives from
its task rows (kind 'task', ids "N_0", "N_1", ...). `seq` is the numeric id of a job or
array. `job_kind` is what the user submitted (`Job.kind`: batch or interactive).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from kaic.center.db import Database, format_time, parse_time
from kaic.models import Job, JobEvent, JobKind, JobState, JobSubmit, Resources

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
    spec: JobSubmit
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

    @property
    def terminal(self) -> bool:
        return self.state.value not in ACTIVE


def _split(text: str) -> tuple[str, ...]:
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


def _row(row: sqlite3.Row) -> JobRow:
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
        spec=_load_spec(row["id"], row["spec"]),
        workdir=row["workdir"],
        time_limit_seconds=row["time_limit_seconds"],
        gpus=row["gpus"],
        depends_on=_split(row["depends_on"]),
        state=JobState(row["state"]),
        reason=row["reason"],
        exit_code=row["exit_code"],
        submitted_at=parse_time(row["submitted_at"]),
        started_at=parse_time(row["started_at"]) if row["started_at"] else None,
        ended_at=parse_time(row["ended_at"]) if row["ended_at"] else None,
        deadline_epoch=row["deadline_epoch"],
        gpu_ids=tuple(int(i) for i in _split(row["gpu_ids"])),
        external_id=row["external_id"],
        pid=row["pid"],
        pgid=row["pgid"],
        proc_start=row["proc_start"],
        end_cause=row["end_cause"],
        gpu_hours=row["gpu_hours"],
        unix_account=row["unix_account"],
        job_kind=row["job_kind"],
    )


_SELECT = (
    "SELECT j.*, u.name AS user_name, u.unix_account AS unix_account,"
    " p.name AS project_name FROM jobs j"
    " JOIN users u ON u.id = j.user_id JOIN projects p ON p.id = j.project_id"
)

_UPDATABLE = frozenset(
    {
        "state",
        "reason",
        "exit_code",
        "started_at",
        "ended_at",
        "deadline_epoch",
        "gpu_ids",
        "external_id",
        "pid",
        "pgid",
        "proc_start",
        "end_cause",
        "gpu_hours",
    }
)


def _db_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


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


class JobStore:
    """Typed job queries over the center's database (the `Store`): its connection, lock and
    transactions."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def transaction(self) -> AbstractContextManager[None]:
        return self.db.transaction()

    def now(self) -> datetime:
        return self.db.now()

    # -- jobs ----------------------------------------------------------------------------

    def next_seq(self) -> int:
        """The next job number (call inside a transaction that inserts it)."""
        row = self.db.fetchone("SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM jobs")
        assert row is not None
        return int(row["n"])

    def insert(self, job: NewJob) -> None:
        self.db.execute(
            "INSERT INTO jobs (id, seq, kind, array_job_id, array_task_id, array_limit, user_id,"
            " project_id, name, partition, spec, workdir, time_limit_seconds, gpus, depends_on,"
            " state, reason, submitted_at, job_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.seq,
                job.kind,
                job.array_job_id,
                job.array_task_id,
                job.array_limit,
                job.user_id,
                job.project_id,
                job.name,
                job.partition,
                job.spec.model_dump_json(),
                job.workdir,
                job.time_limit_seconds,
                job.gpus,
                ",".join(job.depends_on),
                JobState.PENDING.value,
                job.reason,
                format_time(self.now()),
                job.job_kind,
            ),
        )

    def get(self, job_id: str, *, user_id: int | None = None) -> JobRow | None:
        """The job `job_id` (only if it belongs to `user_id`, when given)."""
        if user_id is None:
            row = self.db.fetchone(_SELECT + " WHERE j.id = ?", (job_id,))
        else:
            row = self.db.fetchone(_SELECT + " WHERE j.id = ? AND j.user_id = ?", (job_id, user_id))
        return _row(row) if row else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        rows = self.db.fetchall(_SELECT + f" WHERE j.id IN ({marks})", ids)
        return {r["id"]: _row(r) for r in rows}

    def tasks(self, array_job_id: str) -> list[JobRow]:
        """The tasks of an array, by task index."""
        rows = self.db.fetchall(
            _SELECT + " WHERE j.array_job_id = ? AND j.kind = 'task' ORDER BY j.array_task_id",
            (array_job_id,),
        )
        return [_row(r) for r in rows]

    def task_ids(self, array_job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Task ids per array id."""
        if not array_job_ids:
            return {}
        marks = ",".join("?" for _ in array_job_ids)
        rows = self.db.fetchall(
            f"SELECT array_job_id, id FROM jobs WHERE kind = 'task' AND array_job_id IN ({marks})"
            " ORDER BY array_task_id",
            list(array_job_ids),
        )
        result: dict[str, list[str]] = {a: [] for a in array_job_ids}
        for r in rows:
            result[r["array_job_id"]].append(r["id"])
        return result

    def active(self) -> list[JobRow]:
        """Runnable rows (jobs and tasks) that are not terminal, in queue order."""
        marks = ",".join("?" for _ in ACTIVE)
        rows = self.db.fetchall(
            _SELECT + f" WHERE j.kind != 'array' AND j.state IN ({marks})"
            " ORDER BY j.seq, COALESCE(j.array_task_id, -1)",
            ACTIVE,
        )
        return [_row(r) for r in rows]

    def list_for_user(
        self,
        user_id: int,
        *,
        states: Sequence[str] = (),
        ended_after: datetime | None = None,
        before_seq: int | None = None,
        limit: int = 50,
    ) -> list[JobRow]:
        """A user's jobs and arrays (not tasks), newest first.

        With `ended_after`, only active jobs and those that ended after that time.
        """
        sql = _SELECT + " WHERE j.user_id = ? AND j.kind != 'task'"
        params: list[object] = [user_id]
        if states:
            sql += f" AND j.state IN ({','.join('?' for _ in states)})"
            params.extend(states)
        if ended_after is not None:
            sql += f" AND (j.state IN ({','.join('?' for _ in ACTIVE)}) OR j.ended_at >= ?)"
            params.extend(ACTIVE)
            params.append(format_time(ended_after))
        if before_seq is not None:
            sql += " AND j.seq < ?"
            params.append(before_seq)
        sql += " ORDER BY j.seq DESC LIMIT ?"
        params.append(limit)
        return [_row(r) for r in self.db.fetchall(sql, params)]

    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns of one job (only the mutable ones)."""
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        if not fields:
            return
        assignments = ", ".join(f"{name} = ?" for name in fields)
        values = [_db_value(v) for v in fields.values()]
        self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job_id])

    def charge(self, project_id: int, gpu_hours: float) -> None:
        """Add GPU hours to a project's use."""
        if gpu_hours > 0:
            self.db.execute(
                "UPDATE projects SET gpu_hours_used = gpu_hours_used + ? WHERE id = ?",
                (gpu_hours, project_id),
            )

    # -- events --------------------------------------------------------------------------

    def add_event(self, job_id: str, message: str, state: JobState | None = None) -> None:
        self.db.execute(
            "INSERT INTO job_events (job_id, at, state, message) VALUES (?, ?, ?, ?)",
            (job_id, format_time(self.now()), state.value if state else None, message),
        )

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self.db.fetchall("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            JobEvent(
                at=parse_time(r["at"]),
                state=JobState(r["state"]) if r["state"] else None,
                message=r["message"],
            )
            for r in rows
        ]

    # -- idempotency keys ----------------------------------------------------------------

    def find_idempotency_key(self, user_id: int, key: str) -> tuple[str, str] | None:
        """(body hash, job id) recorded for the user's key, or None."""
        row = self.db.fetchone(
            "SELECT body_hash, job_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
            (user_id, key),
        )
        return (row["body_hash"], row["job_id"]) if row else None

    def save_idempotency_key(self, user_id: int, key: str, body_hash: str, job_id: str) -> None:
        self.db.execute(
            "INSERT INTO idempotency_keys (user_id, key, body_hash, job_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, key, body_hash, job_id, format_time(self.now())),
        )


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


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON form of `data` (sorted keys, no spaces)."""
    import hashlib

    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
