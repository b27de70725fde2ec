"""SQL for idempotency keys: a retried submission returns the job its first try created.

A client sends `Idempotency-Key` with `POST /v1/jobs`; the center records, per user and key,
the hash of the submitted body (`canonical_hash`) and the job it created, in the submission's
transaction (`JobService.submit`). The same key with the same body again is that job; with
another body, a conflict. The table is `idempotency_keys` (migration 2 in
`kaic/center/migrations.py`), keyed by (user, key).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kaic.center.db import Database, format_time


def canonical_hash(data: Any) -> str:
    """sha256 of the canonical JSON form of `data` (sorted keys, no spaces)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class IdempotencyKeys:
    """Users' idempotency keys, over the center's database (the `Store`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def find(self, user_id: int, key: str) -> tuple[str, str] | None:
        """(body hash, job id) recorded for the user's key, or None."""
        row = self.db.fetchone(
            "SELECT body_hash, job_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
            (user_id, key),
        )
        return (row["body_hash"], row["job_id"]) if row else None

    def save(self, user_id: int, key: str, body_hash: str, job_id: str) -> None:
        self.db.execute(
            "INSERT INTO idempotency_keys (user_id, key, body_hash, job_id, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (user_id, key, body_hash, job_id, format_time(self.db.now())),
        )
