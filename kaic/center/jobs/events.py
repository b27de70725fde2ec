"""SQL for job events: each job's timeline (`kaic show`, `GET /v1/jobs/{id}/events`).

The table is `job_events` (migration 2 in `kaic/center/migrations.py`): one row per event,
read by job through the index `job_events_job` in the order written. `JobStore.events` is
this log over the store's own database, so an event is written in the transaction of the
state change it records (`kaic.center.jobs.ledger`).
"""

from __future__ import annotations

from collections.abc import Sequence

from kaic.center.db import Database, format_time, parse_time
from kaic.models import JobEvent, JobState


class JobEvents:
    """The job event log, over the center's database (the `Store`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, job_id: str, message: str, state: JobState | None = None) -> None:
        self.add_many([job_id], message, state)

    def add_many(self, job_ids: Sequence[str], message: str, state: JobState | None = None) -> None:
        """The same event for each of `job_ids` (an array's tasks)."""
        at = format_time(self.db.now())
        value = state.value if state else None
        self.db.executemany(
            "INSERT INTO job_events (job_id, at, state, message) VALUES (?, ?, ?, ?)",
            [(job_id, at, value, message) for job_id in job_ids],
        )

    def of(self, job_id: str) -> list[JobEvent]:
        """The job's events, oldest first."""
        rows = self.db.fetchall("SELECT * FROM job_events WHERE job_id = ? ORDER BY id", (job_id,))
        return [
            JobEvent(
                at=parse_time(r["at"]),
                state=JobState(r["state"]) if r["state"] else None,
                message=r["message"],
            )
            for r in rows
        ]
