"""The SQLite store: schema versioning, pragmas, privacy, thread safety."""

from __future__ import annotations

import sqlite3
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kaic.center.db import SchemaTooNew, format_time, parse_time
from kaic.center.migrations import SCHEMA_VERSION
from kaic.center.store import Store


def test_new_database_is_versioned_wal_and_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store(state)
    assert store.schema_version == SCHEMA_VERSION >= 1
    journal_mode = store.fetchone("PRAGMA journal_mode")
    foreign_keys = store.fetchone("PRAGMA foreign_keys")
    assert journal_mode is not None and journal_mode[0] == "wal"
    assert foreign_keys is not None and foreign_keys[0] == 1
    store.close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "center.db").stat().st_mode) == 0o600
    # Reopening does not migrate again.
    reopened = Store(state)
    assert reopened.schema_version == SCHEMA_VERSION
    reopened.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "center.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="upgrade kaic"):
        Store(tmp_path)


def test_foreign_keys_are_enforced(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_refresh_token(
            token_hash="x", family_id="f", user_id=999, expires_at=datetime.now(timezone.utc)
        )
    store.close()


def test_time_format_round_trips_and_sorts() -> None:
    early = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc)
    late = early + timedelta(microseconds=1)
    assert parse_time(format_time(early)) == early
    assert format_time(early) < format_time(late)
    other_zone = early.astimezone(timezone(timedelta(hours=5)))
    assert format_time(other_zone) == format_time(early)


def test_failed_transaction_rolls_back(tmp_path: Path) -> None:
    store = Store(tmp_path)
    with pytest.raises(RuntimeError), store.transaction():
        store.create_user("alice", unix_account="alice")
        raise RuntimeError("abort")
    assert store.get_user("alice") is None
    store.close()


def test_concurrent_writers_from_threads(tmp_path: Path) -> None:
    store = Store(tmp_path)
    user = store.create_user("alice", unix_account="alice")
    expires = datetime.now(timezone.utc) + timedelta(days=1)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(25):
                store.insert_access_token(
                    token_hash=f"{worker}-{i}",
                    user_id=user.id,
                    kind="api",
                    scopes=["files"],
                    expires_at=expires,
                    name=f"t{worker}-{i}",
                )
                store.list_api_tokens(user.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors
    assert len(store.list_api_tokens(user.id)) == 200
    store.close()


def test_a_second_store_on_the_same_database_sees_writes(tmp_path: Path) -> None:
    # The admin commands write while a server holds its own connection.
    server_side = Store(tmp_path)
    admin_side = Store(tmp_path)
    admin_side.create_user("alice", unix_account="alice")
    assert server_side.get_user("alice") is not None
    admin_side.close()
    server_side.close()
