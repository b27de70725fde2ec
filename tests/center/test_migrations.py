"""Migrations bring an existing database up to date without losing a row.

A center upgraded in place opens the database its previous version wrote: here one made by
the migrations before the history indexes (schema 3), filled as that version filled it, is
opened by this one — every row of every table must be there afterwards, unchanged, with the
new indexes, and the queries that need them must answer from it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from kaic.center.db import DB_NAME
from kaic.center.jobs.store import JobStore
from kaic.center.migrations import MIGRATIONS, SCHEMA_VERSION
from kaic.center.store import Store

#: the schema this test starts from: before migrations 4 (the job kind) and 5 (the indexes)
OLD_VERSION = 3
#: a table's columns as schema 3 had them, where later migrations add some
OLD_COLUMNS = {
    "jobs": "id, seq, kind, array_job_id, array_task_id, array_limit, user_id, project_id, name,"
    " partition, spec, workdir, time_limit_seconds, gpus, depends_on, state, reason, exit_code,"
    " submitted_at, started_at, ended_at, deadline_epoch, gpu_ids, external_id, pid, pgid,"
    " proc_start, end_cause, gpu_hours"
}
NEW_INDEXES = {
    "jobs_seq",
    "jobs_user_seq",
    "jobs_user_state",
    "jobs_user_ended",
    "jobs_array_state",
    "jobs_queue",
}
SPEC = '{"name":"x","run":"true","resources":{"gpus":1,"nodes":1},"env":{},"depends_on":[]}'
T = "2026-03-01T12:00:00.000000Z"


def old_database(path: Path) -> None:
    """A schema-3 database as kaic before migrations 4 and 5 left it: users, a project, jobs (an
    array with its tasks among them), events, an idempotency key, tokens."""
    conn = sqlite3.connect(path / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    for migration in MIGRATIONS[:OLD_VERSION]:
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {OLD_VERSION}")
    conn.executemany(
        "INSERT INTO users (name, unix_account, created_at) VALUES (?, ?, ?)",
        [("alice", "alice01", T), ("bob", "bob", T)],
    )
    conn.execute(
        "INSERT INTO projects (name, gpu_hours_granted, gpu_hours_used, created_at)"
        " VALUES ('p', 100, 1.5, ?)",
        (T,),
    )
    conn.executemany("INSERT INTO memberships (project_id, user_id) VALUES (1, ?)", [(1,), (2,)])
    jobs = [
        ("1", 1, "job", None, None, 1, "COMPLETED", T),
        ("2", 2, "job", None, None, 2, "FAILED", T),
        ("3", 3, "array", None, None, 1, "PENDING", None),
        ("3_0", 3, "task", "3", 0, 1, "RUNNING", None),
        ("3_1", 3, "task", "3", 1, 1, "PENDING", None),
        ("4", 4, "job", None, None, 1, "PENDING", None),
    ]
    conn.executemany(
        "INSERT INTO jobs (id, seq, kind, array_job_id, array_task_id, user_id, project_id,"
        " name, partition, spec, workdir, gpus, state, submitted_at, ended_at, gpu_ids)"
        " VALUES (?, ?, ?, ?, ?, ?, 1, 'x', 'local', ?, '~', 1, ?, ?, ?, ?)",
        [
            (i, seq, kind, array, task, user, SPEC, state, T, ended, "0" if i == "3_0" else "")
            for i, seq, kind, array, task, user, state, ended in jobs
        ],
    )
    conn.executemany(
        "INSERT INTO job_events (job_id, at, state, message) VALUES (?, ?, ?, ?)",
        [(i, T, "PENDING", "submitted") for i, *_ in jobs],
    )
    conn.execute(
        "INSERT INTO idempotency_keys (user_id, key, body_hash, job_id, created_at)"
        " VALUES (1, 'k', 'h', '1', ?)",
        (T,),
    )
    conn.execute(
        "INSERT INTO access_tokens (id, token_hash, user_id, kind, scopes, created_at,"
        " expires_at) VALUES ('tok_1', 'th', 1, 'api', 'jobs:read', ?, ?)",
        (T, T),
    )
    conn.close()


def table_rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path / DB_NAME)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        # the columns the old schema had (later migrations may add some: `jobs.job_kind`)
        return {
            t: conn.execute(f"SELECT {OLD_COLUMNS.get(t, '*')} FROM {t} ORDER BY rowid").fetchall()
            for t in tables
        }
    finally:
        conn.close()


def test_an_old_database_gains_the_indexes_and_keeps_every_row(tmp_path: Path) -> None:
    old_database(tmp_path)
    before = table_rows(tmp_path)
    assert sum(len(rows) for rows in before.values()) == 19

    store = Store(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION > OLD_VERSION
        assert store.fetchone("PRAGMA integrity_check")[0] == "ok"  # type: ignore[index]
        indexes = {r["name"] for r in store.fetchall("PRAGMA index_list(jobs)")}
        assert indexes >= NEW_INDEXES
        assert not indexes & {"jobs_user", "jobs_array"}  # replaced by the new ones

        jobs = JobStore(store)
        assert jobs.next_seq() == 5
        assert [r.id for r in jobs.list_for_user(1)] == ["4", "3", "1"]
        assert [r.id for r in jobs.list_for_user(1, states=["COMPLETED"])] == ["1"]
        assert [r.id for r in jobs.queue()] == ["3_0", "3_1", "4"]
        assert [t.id for t in jobs.tasks("3")] == ["3_0", "3_1"]
        assert jobs.partition_load() == {"local": (2, 1)}
        assert {r.attempt for r in jobs.get_many(["1", "3", "4"]).values()} == {1}
    finally:
        store.close()
    assert old_tables(table_rows(tmp_path), before) == before

    # Opening it again migrates nothing more.
    Store(tmp_path).close()
    assert old_tables(table_rows(tmp_path), before) == before


def old_tables(after: dict[str, list[Any]], before: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """The tables the old schema had, as they are now; tables later migrations added (e.g.
    `secrets`) must be empty."""
    for table, rows in after.items():
        assert table in before or not rows, f"new table {table} has rows"
    return {t: after[t] for t in before}


def test_every_migration_applies_in_order_to_an_empty_database(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        assert store.schema_version == SCHEMA_VERSION == len(MIGRATIONS)
        indexes = {r["name"] for r in store.fetchall("PRAGMA index_list(jobs)")}
        assert indexes >= NEW_INDEXES
    finally:
        store.close()
