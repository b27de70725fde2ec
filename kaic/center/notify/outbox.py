"""The notifications waiting to be sent (`notify_outbox`, migration 6): one row per job end
and channel, written in the transaction that records the end, so that neither a crash nor a
restart loses one; a row leaves when it is sent or given up (the job's events say which).
Times are the wall clock (`time.time()`), like time limits: they hold across restarts."""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, Literal

from kaic.center.db import Database, format_time

Channel = Literal["webhook", "email"]


@dataclass(frozen=True)
class Pending:
    """One notification to send: to `target` over `channel`, after `tries` failed tries."""

    id: int
    job_id: str
    channel: Channel
    target: str
    payload: dict[str, Any]
    tries: int


def _pending(row: Any) -> Pending:
    return Pending(
        row["id"], row["job_id"], row["channel"], row["target"], json.loads(row["payload"]),
        row["tries"],
    )  # fmt: skip


class Outbox:
    """`notify_outbox` rows, through the database's public helpers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, job_id: str, channel: Channel, target: str, payload: dict[str, Any],
            at: float) -> None:  # fmt: skip
        """Queue a notification, due at `at` (call inside the end's transaction)."""
        self.db.execute(
            "INSERT INTO notify_outbox (job_id, channel, target, payload, next_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, channel, target, json.dumps(payload), at, format_time(self.db.now())),
        )

    def due(self, now: float, *, skip: Collection[int] = (), limit: int = 32) -> list[Pending]:
        """The notifications due by `now`, oldest first, without those in `skip` (being
        sent)."""
        rows = self.db.fetchall(
            "SELECT id, job_id, channel, target, payload, tries FROM notify_outbox"
            " WHERE next_at <= ? ORDER BY next_at, id LIMIT ?",
            (now, limit + len(skip)),
        )
        found = [_pending(r) for r in rows if r["id"] not in skip]
        return found[:limit]

    def next_due(self) -> float | None:
        """When the next notification is due (None: none waits)."""
        row = self.db.fetchone("SELECT MIN(next_at) AS at FROM notify_outbox")
        return None if row is None or row["at"] is None else float(row["at"])

    def retry(self, item_id: int, tries: int, at: float) -> None:
        self.db.execute(
            "UPDATE notify_outbox SET tries = ?, next_at = ? WHERE id = ?", (tries, at, item_id)
        )

    def remove(self, item_id: int) -> None:
        self.db.execute("DELETE FROM notify_outbox WHERE id = ?", (item_id,))

    def count(self) -> int:
        row = self.db.fetchone("SELECT COUNT(*) AS n FROM notify_outbox")
        return 0 if row is None else int(row["n"])
