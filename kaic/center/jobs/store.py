"""SQL for jobs, over the center's database (`Store`): every statement on the `jobs` table.

The rows it reads and writes are `kaic.center.jobs.rows`. The schema is migration 2 in
`kaic/center/migrations.py` (4: `job_kind`; 5: its indexes). One row per job; an array is a
parent row (kind 'array', id "N") whose state the scheduler derives from its task rows (kind
'task', ids "N_0", "N_1", ...). `seq` is the numeric id of a job or array. `job_kind` is
what the user submitted (`Job.kind`: batch or interactive).

A center keeps its history (millions of finished rows at a busy site), so every query here
reads in proportion to what it returns, or to the active jobs — never to the finished ones:
each has an index range to walk (docs/benchmarks.md shows their plans). And reading a row
is cheap: its stored submission is parsed only when asked for (`JobRow.spec`), since the
scheduler reads every active row on each of its passes and needs few of them whole.

Every statement on `jobs` is here, in one file, so that each query's index range can be
checked against the migrations in one read; rows and their parsing live in `rows.py`. The
other tables of migration 2 have modules of their own, over the same database: job events in
`events.py` (`JobStore.events`, so that a state change and its event share a transaction),
idempotency keys in `idempotency.py` (read and written by `JobService.submit` only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Literal

from kaic.center.db import Database, format_time, parse_optional_time, parse_time
from kaic.center.jobs.events import JobEvents
from kaic.center.jobs.rows import (
    ACTIVE,
    JobRow,
    NewJob,
    QueueRow,
    RunningRow,
    job_row,
    queue_row,
)
from kaic.models import JobState, JobSubmit

#: `ACTIVE` as SQL text: written into the queries, not bound, so that the query planner
#: sees the states (a bound list hides them from it)
_ACTIVE_SQL = "(" + ", ".join(f"'{state}'" for state in ACTIVE) + ")"
#: the rows of the queue (the partial index `jobs_queue` holds exactly these): active jobs
#: and tasks, not array parents
_QUEUED = f"state IN {_ACTIVE_SQL} AND kind != 'array'"
#: how many GPU indices a row's `gpu_ids` text ("0,1,5") holds, in SQL
_HELD_GPUS_SQL = (
    "CASE WHEN gpu_ids = '' THEN 0 ELSE length(gpu_ids) - length(replace(gpu_ids, ',', '')) + 1 END"
)
#: above every job number: "no cursor"
_NO_CURSOR = 2**63 - 1


#: the columns of `QueueRow`, in its order
_QUEUE_COLUMNS = ", ".join(QueueRow._fields)
#: which active rows `JobStore.queue` returns: all, those not handed over to the executor
#: yet, or those whose cancel the executor is to be told of (the hand-over policy's pass)
QueueFilter = Literal["all", "unsubmitted", "cancelling"]
_QUEUE_FILTERS: dict[str, str] = {
    "all": "",
    "unsubmitted": " AND state = 'PENDING' AND external_id IS NULL",
    "cancelling": " AND end_cause = 'cancel' AND external_id IS NOT NULL",
}


def _select(indexed_by: str = "") -> str:
    """A job row with its user's and project's names; `indexed_by` names the index the
    query must walk (SQLite refuses the query rather than scan without it)."""
    index = f" INDEXED BY {indexed_by}" if indexed_by else ""
    return (
        "SELECT j.*, u.name AS user_name, u.unix_account AS unix_account,"
        f" p.name AS project_name FROM jobs j{index}"
        " JOIN users u ON u.id = j.user_id JOIN projects p ON p.id = j.project_id"
    )


_SELECT = _select()

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
        "nodes",
        "attempt",
        "efficiency",
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


class JobStore:
    """Typed job queries over the center's database (the `Store`): its connection, lock and
    transactions; `events` is the job event log over the same database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.events = JobEvents(db)

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
        self.insert_many([job])

    def insert_many(self, jobs: Sequence[NewJob]) -> None:
        """Insert rows in one statement's loop (an array's tasks): a submission shared by
        several rows is serialised once."""
        submitted_at = format_time(self.now())
        specs: dict[int, str] = {}

        def spec_json(spec: JobSubmit) -> str:
            text = specs.get(id(spec))
            if text is None:
                text = specs[id(spec)] = spec.model_dump_json()
            return text

        self.db.executemany(
            "INSERT INTO jobs (id, seq, kind, array_job_id, array_task_id, array_limit, user_id,"
            " project_id, name, partition, spec, workdir, time_limit_seconds, gpus, depends_on,"
            " state, reason, submitted_at, job_kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
            " ?, ?, ?, ?, ?, ?, ?)",
            [
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
                    spec_json(job.spec),
                    job.workdir,
                    job.time_limit_seconds,
                    job.gpus,
                    ",".join(job.depends_on),
                    JobState.PENDING.value,
                    job.reason,
                    submitted_at,
                    job.job_kind,
                )
                for job in jobs
            ],
        )

    def get(self, job_id: str, *, user_id: int | None = None) -> JobRow | None:
        """The job `job_id` (only if it belongs to `user_id`, when given)."""
        if user_id is None:
            row = self.db.fetchone(_SELECT + " WHERE j.id = ?", (job_id,))
        else:
            row = self.db.fetchone(_SELECT + " WHERE j.id = ? AND j.user_id = ?", (job_id, user_id))
        return job_row(row) if row else None

    def get_many(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        marks = ",".join("?" for _ in ids)
        rows = self.db.fetchall(_SELECT + f" WHERE j.id IN ({marks})", ids)
        return {r["id"]: job_row(r) for r in rows}

    def tasks(self, array_job_id: str) -> list[JobRow]:
        """The tasks of an array, by task index."""
        rows = self.db.fetchall(
            _SELECT + " WHERE j.array_job_id = ? AND j.kind = 'task' ORDER BY j.array_task_id",
            (array_job_id,),
        )
        return [job_row(r) for r in rows]

    def task_ids(self, array_job_ids: Sequence[str]) -> dict[str, list[str]]:
        """Task ids per array id."""
        return {a: ids for a, (ids, _) in self.task_summary(array_job_ids).items()}

    def task_summary(
        self, array_job_ids: Sequence[str]
    ) -> dict[str, tuple[list[str], dict[str, int]]]:
        """Per array id: its task ids (by index) and how many tasks are in each state — one
        read of the arrays' index range (`jobs_array_state`)."""
        if not array_job_ids:
            return {}
        marks = ",".join("?" for _ in array_job_ids)
        rows = self.db.fetchall(
            f"SELECT array_job_id, id, state FROM jobs WHERE kind = 'task'"
            f" AND array_job_id IN ({marks}) ORDER BY array_task_id",
            list(array_job_ids),
        )
        result: dict[str, tuple[list[str], dict[str, int]]] = {a: ([], {}) for a in array_job_ids}
        for r in rows:
            ids, counts = result[r["array_job_id"]]
            ids.append(r["id"])
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        return result

    def task_page(self, array_job_id: str, *, after_index: int, limit: int) -> list[JobRow]:
        """An array's tasks with an index above `after_index`, by index, at most `limit`."""
        rows = self.db.fetchall(
            _SELECT + " WHERE j.array_job_id = ? AND j.kind = 'task' AND j.array_task_id > ?"
            " ORDER BY j.array_task_id LIMIT ?",
            (array_job_id, after_index, limit),
        )
        return [job_row(r) for r in rows]

    # -- what the scheduler reads: active rows only ---------------------------------------

    def active(self) -> list[JobRow]:
        """Runnable rows (jobs and tasks) that are not terminal, in queue order."""
        rows = self.db.fetchall(
            _select("jobs_queue") + f" WHERE {_QUEUED} ORDER BY j.seq, j.array_task_id"
        )
        return [job_row(r) for r in rows]

    def queue(self, after_seq: int = 0, *, only: QueueFilter = "all") -> list[QueueRow]:
        """`active` as the queue policies read it on every pass (`QueueRow`); with
        `after_seq`, only the jobs numbered after it (the index's range from there: the
        submissions since a pass, `QueuePolicy.arrivals`); with `only`, only the rows a
        policy acts on (`_QUEUE_FILTERS`), filtered by SQLite in the same index rather
        than read whole."""
        rows = self.db.fetchall(
            f"SELECT {_QUEUE_COLUMNS} FROM jobs INDEXED BY jobs_queue WHERE {_QUEUED}"
            f" AND seq > ?{_QUEUE_FILTERS[only]} ORDER BY seq, array_task_id",
            (after_seq,),
        )
        return [queue_row(r) for r in rows]

    def partition_load(self) -> dict[str, tuple[int, int]]:
        """Per partition: (pending jobs, GPUs the running jobs hold), counted by SQLite over
        the active rows."""
        rows = self.db.fetchall(
            "SELECT partition, SUM(state = 'PENDING') AS pending,"
            f" SUM(CASE WHEN state = 'RUNNING' THEN {_HELD_GPUS_SQL} ELSE 0 END) AS held"
            f" FROM jobs INDEXED BY jobs_queue WHERE {_QUEUED} GROUP BY partition"
        )
        return {r["partition"]: (int(r["pending"]), int(r["held"])) for r in rows}

    def gpu_demand(self, partition: str) -> tuple[int, int]:
        """A partition's GPU jobs: (the GPUs the pending ones ask for in all, the GPUs the
        running ones hold), summed by SQLite over the queue's index (a dry run's estimate:
        no row read into Python)."""
        row = self.db.fetchone(
            "SELECT COALESCE(SUM(CASE WHEN state = 'PENDING' THEN gpus ELSE 0 END), 0) AS wanted,"
            f" COALESCE(SUM(CASE WHEN state = 'RUNNING' THEN {_HELD_GPUS_SQL} ELSE 0 END), 0)"
            f" AS held FROM jobs INDEXED BY jobs_queue WHERE {_QUEUED} AND partition = ?"
            " AND gpus > 0",
            (partition,),
        )
        assert row is not None
        return int(row["wanted"]), int(row["held"])

    def deadline_freeing(self, partition: str, gpus: int) -> float | None:
        """The earliest time limit (epoch) by which the partition's running GPU jobs, ending
        in deadline order, free `gpus` GPUs; None if those with limits never free as many.
        One window over the running rows, in SQLite."""
        row = self.db.fetchone(
            "SELECT deadline_epoch FROM (SELECT deadline_epoch, SUM("
            f"{_HELD_GPUS_SQL}) OVER (ORDER BY deadline_epoch ROWS UNBOUNDED PRECEDING) AS freed"
            f" FROM jobs INDEXED BY jobs_queue WHERE {_QUEUED} AND partition = ? AND gpus > 0"
            " AND state = 'RUNNING' AND deadline_epoch IS NOT NULL)"
            " WHERE freed >= ? ORDER BY deadline_epoch LIMIT 1",
            (partition, gpus),
        )
        return float(row["deadline_epoch"]) if row else None

    # -- an array's derived state (`Ledger.refresh_array`) ------------------------------

    def array_has_tasks_in(self, array_job_id: str, states: Sequence[str]) -> bool:
        """Whether any task of the array is in one of `states` (an index seek per state)."""
        marks = ",".join("?" for _ in states)
        row = self.db.fetchone(
            f"SELECT 1 FROM jobs WHERE array_job_id = ? AND state IN ({marks}) LIMIT 1",
            (array_job_id, *states),
        )
        return row is not None

    def first_pending_reason(self, array_job_id: str) -> str | None:
        """Why the array's first pending task (by index) waits."""
        row = self.db.fetchone(
            "SELECT reason FROM jobs WHERE array_job_id = ? AND state = 'PENDING'"
            " ORDER BY array_task_id LIMIT 1",
            (array_job_id,),
        )
        return row["reason"] if row else None

    def first_unsuccessful_task(self, array_job_id: str) -> JobRow | None:
        """The array's first task (by index) that did not complete (reads every task: for an
        array whose tasks have all ended)."""
        row = self.db.fetchone(
            _SELECT + " WHERE j.array_job_id = ? AND j.state != 'COMPLETED'"
            " ORDER BY j.array_task_id LIMIT 1",
            (array_job_id,),
        )
        return job_row(row) if row else None

    def last_task_end(self, array_job_id: str) -> datetime | None:
        """When the array's last task ended (reads every task: for an ended array)."""
        row = self.db.fetchone(
            "SELECT MAX(ended_at) AS ended_at FROM jobs WHERE array_job_id = ?", (array_job_id,)
        )
        return parse_time(row["ended_at"]) if row and row["ended_at"] else None

    def add_task_progress(
        self, array_job_id: str, *, started_at: datetime | None = None, gpu_hours: float = 0.0
    ) -> None:
        """A task of the array started at `started_at` or was charged `gpu_hours`: the
        array's first start and GPU-hours follow (kept as they change, not re-summed)."""
        if started_at is not None:
            at = format_time(started_at)
            self.db.execute(
                "UPDATE jobs SET started_at = ? WHERE id = ?"
                " AND (started_at IS NULL OR started_at > ?)",
                (at, array_job_id, at),
            )
        if gpu_hours:
            self.db.execute(
                "UPDATE jobs SET gpu_hours = gpu_hours + ? WHERE id = ?",
                (gpu_hours, array_job_id),
            )

    # -- listings ------------------------------------------------------------------------

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

        Each form walks an index range bounded by the page, or by the user's active and
        recently ended jobs, never by their history: all jobs, newest first
        (`jobs_user_seq`); by state, one range per state, each cut at the page size
        (`jobs_user_state`); recently ended (`jobs_user_ended`).
        """
        before = before_seq if before_seq is not None else _NO_CURSOR
        if ended_after is None and not states:
            rows = self.db.fetchall(
                _select("jobs_user_seq") + " WHERE j.user_id = ? AND j.kind != 'task' AND j.seq < ?"
                " ORDER BY j.seq DESC LIMIT ?",
                (user_id, before, limit),
            )
            return [job_row(r) for r in rows]
        wanted = list(dict.fromkeys(states))
        parts: list[str] = []
        params: list[object] = []
        by_state = (
            wanted if ended_after is None else [s for s in ACTIVE if not wanted or s in wanted]
        )
        for state in by_state:
            parts.append(
                "SELECT id FROM (SELECT id FROM jobs INDEXED BY jobs_user_state"
                " WHERE user_id = ? AND kind != 'task' AND state = ? AND seq < ?"
                " ORDER BY seq DESC LIMIT ?)"
            )
            params += [user_id, state, before, limit]
        ended = [s for s in wanted if s not in ACTIVE]
        if ended_after is not None and (ended or not wanted):
            sql = (
                "SELECT id FROM jobs INDEXED BY jobs_user_ended WHERE user_id = ?"
                f" AND kind != 'task' AND ended_at >= ? AND seq < ? AND state NOT IN {_ACTIVE_SQL}"
            )
            params += [user_id, format_time(ended_after), before]
            if wanted:
                sql += f" AND state IN ({','.join('?' for _ in ended)})"
                params += ended
            parts.append(sql)
        if not parts:
            return []
        rows = self.db.fetchall(
            _SELECT + f" WHERE j.id IN ({' UNION ALL '.join(parts)}) ORDER BY j.seq DESC LIMIT ?",
            (*params, limit),
        )
        return [job_row(r) for r in rows]

    def running_for_user(self, user_id: int) -> list[RunningRow]:
        """A user's running jobs and array tasks (not arrays), oldest first: one range of
        the partial index `jobs_user_running` (migration 6), whatever the history, and only
        the columns `GET /v1/metrics/running` shows."""
        rows = self.db.fetchall(
            "SELECT id, name, started_at, gpus FROM jobs INDEXED BY jobs_user_running"
            " WHERE user_id = ? AND state = 'RUNNING' AND kind != 'array'"
            " ORDER BY seq, array_task_id",
            (user_id,),
        )
        return [
            RunningRow(r["id"], r["name"], parse_optional_time(r["started_at"]), r["gpus"])
            for r in rows
        ]

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
