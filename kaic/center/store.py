"""The center's SQLite store: the only module that speaks SQL.

One connection per `Store`, shared by uvicorn's worker threads behind a re-entrant lock:
SQLite serialises writers anyway, and a single connection keeps transactions simple.
WAL mode lets the admin commands (`kaic center user add`) write while a server runs;
`busy_timeout` makes such concurrent writers wait instead of failing.

Times are stored as fixed-width UTC ISO strings so they compare correctly as text.
Token secrets are never stored: only their sha256 hex digests.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import string
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from kaic.center.settings import utc_now

DB_NAME = "center.db"

TokenKind = Literal["session", "api", "local"]
Role = Literal["member", "owner"]

_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_ID_ALPHABET = string.ascii_lowercase + string.digits

# Each entry migrates the schema from version i to i+1 (PRAGMA user_version).
# Append new migrations; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        unix_account  TEXT NOT NULL,
        password_hash TEXT,
        totp_secret   TEXT,
        created_at    TEXT NOT NULL
    );
    CREATE TABLE projects (
        id                INTEGER PRIMARY KEY,
        name              TEXT NOT NULL UNIQUE,
        gpu_hours_granted REAL NOT NULL,
        gpu_hours_used    REAL NOT NULL DEFAULT 0,
        created_at        TEXT NOT NULL
    );
    CREATE TABLE memberships (
        project_id INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        role       TEXT NOT NULL DEFAULT 'member' CHECK (role IN ('member', 'owner')),
        PRIMARY KEY (project_id, user_id)
    );
    CREATE TABLE access_tokens (
        id           TEXT PRIMARY KEY,
        token_hash   TEXT NOT NULL UNIQUE,
        user_id      INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        kind         TEXT NOT NULL CHECK (kind IN ('session', 'api', 'local')),
        scopes       TEXT NOT NULL,
        name         TEXT,
        family_id    TEXT,
        created_at   TEXT NOT NULL,
        expires_at   TEXT NOT NULL,
        last_used_at TEXT,
        revoked      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX access_tokens_user ON access_tokens(user_id, kind);
    CREATE INDEX access_tokens_family ON access_tokens(family_id);
    CREATE TABLE refresh_tokens (
        id         INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        family_id  TEXT NOT NULL,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at    TEXT,
        revoked    INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);
    """,
    # 2: jobs (SQL in kaic/center/jobs/store.py)
    """
    CREATE TABLE jobs (
        id                 TEXT PRIMARY KEY,
        seq                INTEGER NOT NULL,
        kind               TEXT NOT NULL CHECK (kind IN ('job', 'array', 'task')),
        array_job_id       TEXT,
        array_task_id      INTEGER,
        array_limit        INTEGER,
        user_id            INTEGER NOT NULL REFERENCES users(id),
        project_id         INTEGER NOT NULL REFERENCES projects(id),
        name               TEXT NOT NULL,
        partition          TEXT NOT NULL,
        spec               TEXT NOT NULL,
        workdir            TEXT NOT NULL,
        time_limit_seconds INTEGER,
        gpus               INTEGER NOT NULL,
        depends_on         TEXT NOT NULL DEFAULT '',
        state              TEXT NOT NULL,
        reason             TEXT,
        exit_code          INTEGER,
        submitted_at       TEXT NOT NULL,
        started_at         TEXT,
        ended_at           TEXT,
        deadline_epoch     REAL,
        gpu_ids            TEXT NOT NULL DEFAULT '',
        external_id        TEXT,
        pid                INTEGER,
        pgid               INTEGER,
        proc_start         INTEGER,
        end_cause          TEXT,
        gpu_hours          REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX jobs_user ON jobs(user_id, kind, seq);
    CREATE INDEX jobs_state ON jobs(state);
    CREATE INDEX jobs_array ON jobs(array_job_id);
    CREATE TABLE job_events (
        id      INTEGER PRIMARY KEY,
        job_id  TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
        at      TEXT NOT NULL,
        state   TEXT,
        message TEXT NOT NULL
    );
    CREATE INDEX job_events_job ON job_events(job_id, id);
    CREATE TABLE idempotency_keys (
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        key        TEXT NOT NULL,
        body_hash  TEXT NOT NULL,
        job_id     TEXT NOT NULL REFERENCES jobs(id),
        created_at TEXT NOT NULL,
        PRIMARY KEY (user_id, key)
    );
    """,
    # 3: one-time codes are single use: the last TOTP time step accepted per user.
    """
    ALTER TABLE users ADD COLUMN totp_last_step INTEGER NOT NULL DEFAULT -1;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer kaic than this one."""


def format_time(value: datetime) -> str:
    """A datetime as the store's sortable UTC text form."""
    return value.astimezone(timezone.utc).strftime(_TIME_FORMAT)


def parse_time(value: str) -> datetime:
    """The inverse of `format_time`: an aware UTC datetime."""
    return datetime.strptime(value, _TIME_FORMAT).replace(tzinfo=timezone.utc)


def _opt_time(value: str | None) -> datetime | None:
    return parse_time(value) if value is not None else None


def new_token_id() -> str:
    """A short public id for an access token, e.g. `tok_k3x9a0qz`."""
    return "tok_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    unix_account: str
    password_hash: str | None
    totp_secret: str | None
    created_at: datetime


@dataclass(frozen=True)
class ProjectRow:
    id: int
    name: str
    gpu_hours_granted: float
    gpu_hours_used: float


@dataclass(frozen=True)
class MembershipRow:
    project: ProjectRow
    role: Role


@dataclass(frozen=True)
class AccessTokenRow:
    id: str
    user_id: int
    user_name: str
    unix_account: str
    kind: TokenKind
    scopes: tuple[str, ...]
    name: str | None
    family_id: str | None
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class RefreshTokenRow:
    id: int
    family_id: str
    user_id: int
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None
    revoked: bool


class Store:
    """Typed access to `state_dir/center.db`; safe to share between threads."""

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

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
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
        """Run the enclosed store calls atomically (nested uses join the outer one)."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
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

    def _execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self._conn.execute(sql, params)

    def _fetchall(self, sql: str, params: Sequence[object] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _fetchone(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Row | None:
        with self._lock:
            row: sqlite3.Row | None = self._conn.execute(sql, params).fetchone()
            return row

    # -- users ---------------------------------------------------------------------------

    @staticmethod
    def _user(row: sqlite3.Row) -> UserRow:
        return UserRow(
            id=row["id"],
            name=row["name"],
            unix_account=row["unix_account"],
            password_hash=row["password_hash"],
            totp_secret=row["totp_secret"],
            created_at=parse_time(row["created_at"]),
        )

    def get_user(self, name: str) -> UserRow | None:
        """The user called `name`, or None."""
        row = self._fetchone("SELECT * FROM users WHERE name = ?", (name,))
        return self._user(row) if row else None

    def create_user(
        self,
        name: str,
        *,
        unix_account: str,
        password_hash: str | None = None,
        totp_secret: str | None = None,
    ) -> UserRow:
        """Insert a user; raises `sqlite3.IntegrityError` when the name is taken."""
        with self.transaction():
            self._execute(
                "INSERT INTO users (name, unix_account, password_hash, totp_secret, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, unix_account, password_hash, totp_secret, format_time(self._now())),
            )
            user = self.get_user(name)
        assert user is not None
        return user

    def user_names(self) -> list[str]:
        """Every user's name, sorted."""
        return [r["name"] for r in self._fetchall("SELECT name FROM users ORDER BY name")]

    def users_with_unix_account(self, unix_account: str) -> list[str]:
        """Names of the users mapped to `unix_account`, sorted."""
        rows = self._fetchall(
            "SELECT name FROM users WHERE unix_account = ? ORDER BY name", (unix_account,)
        )
        return [r["name"] for r in rows]

    # -- projects ------------------------------------------------------------------------

    @staticmethod
    def _project(row: sqlite3.Row) -> ProjectRow:
        return ProjectRow(
            id=row["id"],
            name=row["name"],
            gpu_hours_granted=row["gpu_hours_granted"],
            gpu_hours_used=row["gpu_hours_used"],
        )

    def get_project(self, name: str) -> ProjectRow | None:
        """The project called `name`, or None."""
        row = self._fetchone("SELECT * FROM projects WHERE name = ?", (name,))
        return self._project(row) if row else None

    def upsert_project(
        self, name: str, *, gpu_hours_granted: float, member_ids: Sequence[int] = ()
    ) -> ProjectRow:
        """Create or update a project's grant and add members (existing members stay)."""
        with self.transaction():
            self._execute(
                "INSERT INTO projects (name, gpu_hours_granted, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET gpu_hours_granted = excluded.gpu_hours_granted",
                (name, gpu_hours_granted, format_time(self._now())),
            )
            project = self.get_project(name)
            assert project is not None
            for user_id in member_ids:
                self._execute(
                    "INSERT OR IGNORE INTO memberships (project_id, user_id) VALUES (?, ?)",
                    (project.id, user_id),
                )
        return project

    def user_memberships(self, user_id: int) -> list[MembershipRow]:
        """The projects a user belongs to, by project name."""
        rows = self._fetchall(
            "SELECT p.*, m.role FROM projects p JOIN memberships m ON m.project_id = p.id"
            " WHERE m.user_id = ? ORDER BY p.name",
            (user_id,),
        )
        return [MembershipRow(project=self._project(r), role=r["role"]) for r in rows]

    def project_members(self, project_id: int) -> list[str]:
        """Names of a project's members."""
        rows = self._fetchall(
            "SELECT u.name FROM users u JOIN memberships m ON m.user_id = u.id"
            " WHERE m.project_id = ? ORDER BY u.name",
            (project_id,),
        )
        return [r["name"] for r in rows]

    # -- access tokens (session, api, local) ---------------------------------------------

    @staticmethod
    def _access(row: sqlite3.Row) -> AccessTokenRow:
        return AccessTokenRow(
            id=row["id"],
            user_id=row["user_id"],
            user_name=row["user_name"],
            unix_account=row["unix_account"],
            kind=row["kind"],
            scopes=tuple(row["scopes"].split()),
            name=row["name"],
            family_id=row["family_id"],
            created_at=parse_time(row["created_at"]),
            expires_at=parse_time(row["expires_at"]),
            last_used_at=_opt_time(row["last_used_at"]),
            revoked=bool(row["revoked"]),
        )

    _ACCESS_SELECT = (
        "SELECT t.*, u.name AS user_name, u.unix_account AS unix_account"
        " FROM access_tokens t JOIN users u ON u.id = t.user_id"
    )

    def insert_access_token(
        self,
        *,
        token_hash: str,
        user_id: int,
        kind: TokenKind,
        scopes: Sequence[str],
        expires_at: datetime,
        name: str | None = None,
        family_id: str | None = None,
    ) -> AccessTokenRow:
        """Store an access token's hash; returns the row with its new public id."""
        with self.transaction():
            token_id = new_token_id()
            while self._fetchone("SELECT 1 FROM access_tokens WHERE id = ?", (token_id,)):
                token_id = new_token_id()
            self._execute(
                "INSERT INTO access_tokens (id, token_hash, user_id, kind, scopes, name,"
                " family_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token_id,
                    token_hash,
                    user_id,
                    kind,
                    " ".join(scopes),
                    name,
                    family_id,
                    format_time(self._now()),
                    format_time(expires_at),
                ),
            )
            row = self._fetchone(self._ACCESS_SELECT + " WHERE t.id = ?", (token_id,))
        assert row is not None
        return self._access(row)

    def find_access_token(self, token_hash: str) -> AccessTokenRow | None:
        """The access token with this hash (revoked and expired ones included), or None."""
        row = self._fetchone(self._ACCESS_SELECT + " WHERE t.token_hash = ?", (token_hash,))
        return self._access(row) if row else None

    def touch_access_token(self, token_id: str, *, min_interval_s: float = 60.0) -> None:
        """Record a use; skipped when the last recorded use is recent, to spare writes."""
        now = self._now()
        threshold = format_time(now - timedelta(seconds=min_interval_s))
        self._execute(
            "UPDATE access_tokens SET last_used_at = ?"
            " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            (format_time(now), token_id, threshold),
        )

    def list_api_tokens(self, user_id: int) -> list[AccessTokenRow]:
        """A user's API tokens, revoked ones included, newest first."""
        rows = self._fetchall(
            self._ACCESS_SELECT + " WHERE t.user_id = ? AND t.kind = 'api'"
            " ORDER BY t.created_at DESC, t.rowid DESC",
            (user_id,),
        )
        return [self._access(r) for r in rows]

    def revoke_api_token(self, user_id: int, token_id: str) -> bool:
        """Revoke one of the user's API tokens; False when the user has no such token."""
        with self.transaction():
            row = self._fetchone(
                "SELECT 1 FROM access_tokens WHERE id = ? AND user_id = ? AND kind = 'api'",
                (token_id, user_id),
            )
            if row is None:
                return False
            self._execute("UPDATE access_tokens SET revoked = 1 WHERE id = ?", (token_id,))
        return True

    def revoke_tokens_of_kind(self, kind: TokenKind, *, user_id: int | None = None) -> int:
        """Revoke all access tokens of one kind (of one user, if given); returns how many."""
        if user_id is None:
            cursor = self._execute(
                "UPDATE access_tokens SET revoked = 1 WHERE kind = ? AND revoked = 0", (kind,)
            )
        else:
            cursor = self._execute(
                "UPDATE access_tokens SET revoked = 1"
                " WHERE kind = ? AND user_id = ? AND revoked = 0",
                (kind, user_id),
            )
        return cursor.rowcount

    # -- refresh tokens and session families ----------------------------------------------

    @staticmethod
    def _refresh(row: sqlite3.Row) -> RefreshTokenRow:
        return RefreshTokenRow(
            id=row["id"],
            family_id=row["family_id"],
            user_id=row["user_id"],
            created_at=parse_time(row["created_at"]),
            expires_at=parse_time(row["expires_at"]),
            used_at=_opt_time(row["used_at"]),
            revoked=bool(row["revoked"]),
        )

    def insert_refresh_token(
        self, *, token_hash: str, family_id: str, user_id: int, expires_at: datetime
    ) -> RefreshTokenRow:
        """Store a refresh token's hash in a session family."""
        with self.transaction():
            cursor = self._execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    token_hash,
                    family_id,
                    user_id,
                    format_time(self._now()),
                    format_time(expires_at),
                ),
            )
            row = self._fetchone("SELECT * FROM refresh_tokens WHERE id = ?", (cursor.lastrowid,))
        assert row is not None
        return self._refresh(row)

    def find_refresh_token(self, token_hash: str) -> RefreshTokenRow | None:
        """The refresh token with this hash (used, revoked and expired included), or None."""
        row = self._fetchone("SELECT * FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
        return self._refresh(row) if row else None

    def claim_totp_step(self, user_id: int, step: int) -> bool:
        """Record that the one-time code of TOTP time step `step` was used; False when that
        step (or a later one) was used already. One statement, so of two concurrent logins
        with the same code exactly one wins."""
        cursor = self._execute(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
            (step, user_id, step),
        )
        return cursor.rowcount == 1

    def mark_refresh_used(self, refresh_id: int) -> bool:
        """Mark a refresh token used; False when it was already used or revoked.

        The check and the update are one statement, so of two concurrent rotations of the
        same token exactly one wins and the other is treated as reuse.
        """
        cursor = self._execute(
            "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL"
            " AND revoked = 0",
            (format_time(self._now()), refresh_id),
        )
        return cursor.rowcount == 1

    def revoke_family(self, family_id: str) -> None:
        """Revoke every refresh and access token of a session family."""
        with self.transaction():
            self._execute("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = ?", (family_id,))
            self._execute("UPDATE access_tokens SET revoked = 1 WHERE family_id = ?", (family_id,))
