"""The center's SQLite database: the connection, transactions, migrations, query helpers.

One connection per `Database`, shared by uvicorn's worker threads behind a re-entrant lock:
SQLite serialises writers anyway, and a single connection keeps transactions simple. A
transaction inside another is a savepoint: when it raises, only its own writes are undone
(the scheduler records many jobs in one transaction, and one job's failure must not leave
half of that job's writes behind).
WAL mode lets the admin commands (`kaic center user add`) write while a server runs;
`busy_timeout` makes such concurrent writers wait instead of failing.

The rows live in the modules that own their tables and speak SQL through the public
helpers here (`execute`, `fetchone`, `fetchall`, `transaction`): `kaic.center.store` (users,
projects, memberships, tokens; its `Store` is this database with those queries) and, in
`kaic.center.jobs`, `store` (jobs), `events` (job events) and `idempotency` (idempotency
keys). The schema is `kaic.center.migrations`.

Times are stored as fixed-width UTC ISO strings so they compare correctly as text.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from kaic.center.migrations import MIGRATIONS, SCHEMA_VERSION


def utc_now() -> datetime:
    """The current time as an aware UTC datetime (the default clock; `settings.utc_now` is
    the same, defined here too so that the database imports nothing of the settings)."""
    return datetime.now(timezone.utc)


DB_NAME = "center.db"

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


class SchemaTooNew(RuntimeError):
    """The database was written by a newer kaic than this one."""


def format_time(value: datetime) -> str:
    """A datetime as the database's sortable UTC text form."""
    return value.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(value: str) -> datetime:
    """The inverse of `format_time`: an aware UTC datetime."""
    if len(value) == 27 and value[-1] == "Z":
        # `fromisoformat` reads the fixed-width form ~10x faster than `strptime`, which
        # matters when the scheduler reads thousands of rows per tick.
        return datetime.fromisoformat(value[:-1]).replace(tzinfo=timezone.utc)
    return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=timezone.utc)


def parse_optional_time(value: str | None) -> datetime | None:
    """`parse_time`, or None for NULL."""
    return parse_time(value) if value is not None else None


class Database:
    """`state_dir/center.db`, migrated to `SCHEMA_VERSION`; safe to share between threads."""

    def __init__(self, state_dir: Path, *, now: Callable[[], datetime] = utc_now) -> None:
        state_dir = Path(state_dir)
        # The database holds password hashes and TOTP secrets: keep the directory private.
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / DB_NAME
        self._now = now
        self._lock = threading.RLock()
        self._depth = 0
        if not self.path.exists():
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        # isolation_level=None: we issue BEGIN/COMMIT ourselves (see `transaction`).
        self._conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._conn.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def now(self) -> datetime:
        """The current time, from the clock the database was given (tests set it)."""
        return self._now()

    def close(self) -> None:
        """Close the connection; the database cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    @property
    def schema_version(self) -> int:
        """The schema version of the open database (SQLite's user_version)."""
        with self._lock:
            return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        with self.transaction():
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(
                    f"{self.path} has schema version {version}, newer than this kaic "
                    f"understands ({SCHEMA_VERSION}); upgrade kaic"
                )
            for index in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[index].split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                # PRAGMA does not take parameters; the value is our own integer.
                self._conn.execute(f"PRAGMA user_version = {index + 1}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the enclosed calls atomically. A nested use is a savepoint of the outer one:
        if it raises, its own writes are undone and the outer transaction goes on."""
        with self._lock:
            if self._depth:
                savepoint = f"nested_{self._depth}"
                self._conn.execute(f"SAVEPOINT {savepoint}")
                self._depth += 1
                try:
                    yield
                except BaseException:
                    self._conn.execute(f"ROLLBACK TO {savepoint}")
                    self._conn.execute(f"RELEASE {savepoint}")
                    raise
                else:
                    self._conn.execute(f"RELEASE {savepoint}")
                finally:
                    self._depth -= 1
                return
            # IMMEDIATE takes the write lock up front, so read-then-write sequences
            # (refresh rotation) cannot interleave with another process's writer.
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                self._depth = 0

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        """Run one statement (its own transaction unless inside `transaction`)."""
        with self._lock:
            return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        """Run one statement for each of `rows` (inside `transaction` for one commit)."""
        with self._lock:
            self._conn.executemany(sql, rows)

    def fetchall(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        """Every row of a query."""
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        """The first row of a query, or None."""
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row
