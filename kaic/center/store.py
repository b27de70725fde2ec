"""The center's identity rows: users, projects, memberships, access and refresh tokens.

`Store` is the center's database (`kaic.center.db.Database`: connection, transactions,
migrations, query helpers) with the queries for these tables; jobs have theirs in
`kaic.center.jobs.store`, over the same database. The tables are migrations 1 and 3 in
`kaic.center.migrations`.

Token secrets are never stored: only their sha256 hex digests.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from kaic.center.db import Database, format_time, parse_optional_time, parse_time

TokenKind = Literal["session", "api", "local"]
Role = Literal["member", "owner"]

_ID_ALPHABET = string.ascii_lowercase + string.digits


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


class Store(Database):
    """The center's database with the identity queries; safe to share between threads."""

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
        row = self.fetchone("SELECT * FROM users WHERE name = ?", (name,))
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
            self.execute(
                "INSERT INTO users (name, unix_account, password_hash, totp_secret, created_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (name, unix_account, password_hash, totp_secret, format_time(self.now())),
            )
            user = self.get_user(name)
        assert user is not None
        return user

    def user_names(self) -> list[str]:
        """Every user's name, sorted."""
        return [r["name"] for r in self.fetchall("SELECT name FROM users ORDER BY name")]

    def users_with_unix_account(self, unix_account: str) -> list[str]:
        """Names of the users mapped to `unix_account`, sorted."""
        rows = self.fetchall(
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
        row = self.fetchone("SELECT * FROM projects WHERE name = ?", (name,))
        return self._project(row) if row else None

    def upsert_project(
        self, name: str, *, gpu_hours_granted: float, member_ids: Sequence[int] = ()
    ) -> ProjectRow:
        """Create or update a project's grant and add members (existing members stay)."""
        with self.transaction():
            self.execute(
                "INSERT INTO projects (name, gpu_hours_granted, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET gpu_hours_granted = excluded.gpu_hours_granted",
                (name, gpu_hours_granted, format_time(self.now())),
            )
            project = self.get_project(name)
            assert project is not None
            for user_id in member_ids:
                self.execute(
                    "INSERT OR IGNORE INTO memberships (project_id, user_id) VALUES (?, ?)",
                    (project.id, user_id),
                )
        return project

    def user_memberships(self, user_id: int) -> list[MembershipRow]:
        """The projects a user belongs to, by project name."""
        rows = self.fetchall(
            "SELECT p.*, m.role FROM projects p JOIN memberships m ON m.project_id = p.id"
            " WHERE m.user_id = ? ORDER BY p.name",
            (user_id,),
        )
        return [MembershipRow(project=self._project(r), role=r["role"]) for r in rows]

    def project_members(self, project_id: int) -> list[str]:
        """Names of a project's members."""
        rows = self.fetchall(
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
            last_used_at=parse_optional_time(row["last_used_at"]),
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
            while self.fetchone("SELECT 1 FROM access_tokens WHERE id = ?", (token_id,)):
                token_id = new_token_id()
            self.execute(
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
                    format_time(self.now()),
                    format_time(expires_at),
                ),
            )
            row = self.fetchone(self._ACCESS_SELECT + " WHERE t.id = ?", (token_id,))
        assert row is not None
        return self._access(row)

    def find_access_token(self, token_hash: str) -> AccessTokenRow | None:
        """The access token with this hash (revoked and expired ones included), or None."""
        row = self.fetchone(self._ACCESS_SELECT + " WHERE t.token_hash = ?", (token_hash,))
        return self._access(row) if row else None

    def touch_access_token(self, token_id: str, *, min_interval_s: float = 60.0) -> None:
        """Record a use; skipped when the last recorded use is recent, to spare writes."""
        now = self.now()
        threshold = format_time(now - timedelta(seconds=min_interval_s))
        self.execute(
            "UPDATE access_tokens SET last_used_at = ?"
            " WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
            (format_time(now), token_id, threshold),
        )

    def list_api_tokens(self, user_id: int) -> list[AccessTokenRow]:
        """A user's API tokens, revoked ones included, newest first."""
        rows = self.fetchall(
            self._ACCESS_SELECT + " WHERE t.user_id = ? AND t.kind = 'api'"
            " ORDER BY t.created_at DESC, t.rowid DESC",
            (user_id,),
        )
        return [self._access(r) for r in rows]

    def revoke_api_token(self, user_id: int, token_id: str) -> bool:
        """Revoke one of the user's API tokens; False when the user has no such token."""
        with self.transaction():
            row = self.fetchone(
                "SELECT 1 FROM access_tokens WHERE id = ? AND user_id = ? AND kind = 'api'",
                (token_id, user_id),
            )
            if row is None:
                return False
            self.execute("UPDATE access_tokens SET revoked = 1 WHERE id = ?", (token_id,))
        return True

    def revoke_tokens_of_kind(self, kind: TokenKind, *, user_id: int | None = None) -> int:
        """Revoke all access tokens of one kind (of one user, if given); returns how many."""
        if user_id is None:
            cursor = self.execute(
                "UPDATE access_tokens SET revoked = 1 WHERE kind = ? AND revoked = 0", (kind,)
            )
        else:
            cursor = self.execute(
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
            used_at=parse_optional_time(row["used_at"]),
            revoked=bool(row["revoked"]),
        )

    def insert_refresh_token(
        self, *, token_hash: str, family_id: str, user_id: int, expires_at: datetime
    ) -> RefreshTokenRow:
        """Store a refresh token's hash in a session family."""
        with self.transaction():
            cursor = self.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at,"
                " expires_at) VALUES (?, ?, ?, ?, ?)",
                (
                    token_hash,
                    family_id,
                    user_id,
                    format_time(self.now()),
                    format_time(expires_at),
                ),
            )
            row = self.fetchone("SELECT * FROM refresh_tokens WHERE id = ?", (cursor.lastrowid,))
        assert row is not None
        return self._refresh(row)

    def find_refresh_token(self, token_hash: str) -> RefreshTokenRow | None:
        """The refresh token with this hash (used, revoked and expired included), or None."""
        row = self.fetchone("SELECT * FROM refresh_tokens WHERE token_hash = ?", (token_hash,))
        return self._refresh(row) if row else None

    def claim_totp_step(self, user_id: int, step: int) -> bool:
        """Record that the one-time code of TOTP time step `step` was used; False when that
        step (or a later one) was used already. One statement, so of two concurrent logins
        with the same code exactly one wins."""
        cursor = self.execute(
            "UPDATE users SET totp_last_step = ? WHERE id = ? AND totp_last_step < ?",
            (step, user_id, step),
        )
        return cursor.rowcount == 1

    def mark_refresh_used(self, refresh_id: int) -> bool:
        """Mark a refresh token used; False when it was already used or revoked.

        The check and the update are one statement, so of two concurrent rotations of the
        same token exactly one wins and the other is treated as reuse.
        """
        cursor = self.execute(
            "UPDATE refresh_tokens SET used_at = ? WHERE id = ? AND used_at IS NULL"
            " AND revoked = 0",
            (format_time(self.now()), refresh_id),
        )
        return cursor.rowcount == 1

    def revoke_family(self, family_id: str) -> None:
        """Revoke every refresh and access token of a session family."""
        with self.transaction():
            self.execute("UPDATE refresh_tokens SET revoked = 1 WHERE family_id = ?", (family_id,))
            self.execute("UPDATE access_tokens SET revoked = 1 WHERE family_id = ?", (family_id,))
