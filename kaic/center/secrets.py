"""Users' secrets: stored encrypted, resolved into a job's environment when it starts.

**At rest.** Each value is encrypted with AES-GCM (256-bit key, a fresh 96-bit nonce per
write) and bound to its owner and name as associated data, so a ciphertext copied into
another user's row, or under another name, does not decrypt. The key lives in a file outside
the database — `state_dir/secrets.key` next to `center.db` (not inside it), or wherever the
operator points `--secrets-key` — created 0600 on the first start. A copy of the database
alone (a backup, a support bundle) reveals names and dates, never a value.

**Which key.** Every row records the id of the key that wrote it (a digest of the key, not
the key). A center that starts with a missing key file while secrets exist, or with a key
file that is not the one they were written with, refuses to start and says which file to
restore: it never makes a new key that would silently orphan them, and no job fails later
for it.

**In a job.** The job row keeps only references (`JobSubmit.secrets`, `{VAR: NAME}`); the
scheduler resolves them when the job starts (`jobs.launch.launch_spec`), so a rotated secret
reaches the next job, and a secret removed since the submission fails that job alone,
naming `kaic secret set`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kaic.center.db import Database, format_time, parse_time
from kaic.models.secrets import MAX_SECRETS_PER_USER, SecretInfo

#: the key file's name in the state dir (beside `center.db`, never in it)
KEY_FILE_NAME = "secrets.key"
_KEY_BYTES = 32
_NONCE_BYTES = 12
_KEY_HEADER = "kaic-secrets-key-v1 "


class SecretKeyError(ValueError):
    """The key file cannot be used (missing while secrets exist, another key, readable by
    others, malformed); the message says which file and what fixes it. A ValueError, so
    `kaic center serve` shows it as a usage error, without a traceback."""


class SecretUnavailable(Exception):
    """A job's secret cannot be put into its environment (removed since the submission, or
    it does not decrypt); the message, shown as the job's reason, names the fix."""


class TooManySecrets(Exception):
    """The user already keeps `MAX_SECRETS_PER_USER` secrets."""


def key_file_path(state_dir: Path, configured: Path | None) -> Path:
    """Where the key lives: the operator's path, or `state_dir/secrets.key`."""
    return Path(configured) if configured is not None else Path(state_dir) / KEY_FILE_NAME


@dataclass(frozen=True)
class SecretKey:
    """The key that encrypts every secret, and its public id (a digest)."""

    path: Path
    key: bytes

    @property
    def key_id(self) -> str:
        return hashlib.sha256(b"kaic secrets key id\0" + self.key).hexdigest()[:16]

    def encrypt(self, user_id: int, name: str, value: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + AESGCM(self.key).encrypt(nonce, value.encode(), _bound(user_id, name))

    def decrypt(self, user_id: int, name: str, blob: bytes) -> str:
        """The value; InvalidTag when the blob is not this key's for this user and name."""
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        return AESGCM(self.key).decrypt(nonce, sealed, _bound(user_id, name)).decode()


def _bound(user_id: int, name: str) -> bytes:
    """The associated data: a ciphertext decrypts only as this user's secret `name`."""
    return f"kaic secret\0{user_id}\0{name}".encode()


def _read_key(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise SecretKeyError(f"cannot read the secrets key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise SecretKeyError(f"the secrets key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise SecretKeyError(
                f"the secrets key file {path} is readable by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); fix with: chmod 600 {path}"
            )
        text = os.read(fd, 4096).decode("ascii", errors="replace").strip()
    finally:
        os.close(fd)
    key = b""
    if text.startswith(_KEY_HEADER):
        try:
            key = base64.b64decode(text[len(_KEY_HEADER) :], validate=True)
        except ValueError:
            key = b""
    if len(key) != _KEY_BYTES:
        raise SecretKeyError(
            f"the secrets key file {path} is not a kaic secrets key (it should hold one line "
            f"'{_KEY_HEADER.strip()} <base64 of {_KEY_BYTES} bytes>'); restore the right file"
        )
    return key


def _create_key(path: Path) -> bytes:
    key = AESGCM.generate_key(bit_length=_KEY_BYTES * 8)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    line = f"{_KEY_HEADER}{base64.b64encode(key).decode()}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class SecretStore:
    """The `secrets` table (migration 6): encrypted rows, SQL through the database's helpers."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def key_ids(self) -> dict[str, int]:
        """How many secrets each key id wrote."""
        rows = self.db.fetchall("SELECT key_id, COUNT(*) AS n FROM secrets GROUP BY key_id")
        return {row["key_id"]: row["n"] for row in rows}

    def infos(self, user_id: int) -> list[SecretInfo]:
        rows = self.db.fetchall(
            "SELECT name, created_at, updated_at FROM secrets WHERE user_id = ? ORDER BY name",
            (user_id,),
        )
        return [_info(row) for row in rows]

    def info(self, user_id: int, name: str) -> SecretInfo | None:
        row = self.db.fetchone(
            "SELECT name, created_at, updated_at FROM secrets WHERE user_id = ? AND name = ?",
            (user_id, name),
        )
        return _info(row) if row else None

    def sealed(self, user_id: int, names: Sequence[str]) -> dict[str, bytes]:
        """The ciphertexts of those of `names` that exist."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = self.db.fetchall(
            f"SELECT name, ciphertext FROM secrets WHERE user_id = ? AND name IN ({marks})",
            (user_id, *wanted),
        )
        return {row["name"]: bytes(row["ciphertext"]) for row in rows}

    def put(self, user_id: int, name: str, blob: bytes, key_id: str) -> bool:
        """Insert or replace; True when the secret is new. Refuses a new one past the limit."""
        now = format_time(self.db.now())
        with self.db.transaction():
            if self.info(user_id, name) is not None:
                self.db.execute(
                    "UPDATE secrets SET ciphertext = ?, key_id = ?, updated_at = ? "
                    "WHERE user_id = ? AND name = ?",
                    (blob, key_id, now, user_id, name),
                )
                return False
            count = self.db.fetchone(
                "SELECT COUNT(*) AS n FROM secrets WHERE user_id = ?", (user_id,)
            )
            if count is not None and count["n"] >= MAX_SECRETS_PER_USER:
                raise TooManySecrets
            self.db.execute(
                "INSERT INTO secrets (user_id, name, ciphertext, key_id, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (user_id, name, blob, key_id, now, now),
            )
            return True

    def delete(self, user_id: int, name: str) -> bool:
        cursor = self.db.execute(
            "DELETE FROM secrets WHERE user_id = ? AND name = ?", (user_id, name)
        )
        return cursor.rowcount > 0


def _info(row: sqlite3.Row) -> SecretInfo:
    return SecretInfo(
        name=row["name"],
        created_at=parse_time(row["created_at"]),
        updated_at=parse_time(row["updated_at"]),
    )


class Secrets:
    """Users' secrets: set, list, remove (no way to read a value back), and resolve a
    job's references into values for its environment."""

    def __init__(self, db: Database, key: SecretKey) -> None:
        self.store = SecretStore(db)
        self.key = key

    @classmethod
    def open(cls, db: Database, key_path: Path) -> Secrets:
        """The secrets of `db` with the key at `key_path`, created when neither exists yet.

        Raises SecretKeyError when the key is missing while secrets exist, or is not the
        key they were written with (see the module's docstring)."""
        store = SecretStore(db)
        written = store.key_ids()
        if not key_path.exists() and not key_path.is_symlink():
            if written:
                raise SecretKeyError(
                    f"the secrets key file {key_path} is missing, but the database holds "
                    f"{sum(written.values())} secrets encrypted with it; restore the file "
                    "from a backup (or point --secrets-key at it). Without it they cannot "
                    "be decrypted"
                )
            key = SecretKey(key_path, _create_key(key_path))
        else:
            key = SecretKey(key_path, _read_key(key_path))
        others = {key_id: n for key_id, n in written.items() if key_id != key.key_id}
        if others:
            raise SecretKeyError(
                f"the secrets key file {key_path} (key id {key.key_id}) is not the key "
                f"{sum(others.values())} stored secrets were encrypted with (key id "
                f"{', '.join(sorted(others))}); restore that key file or point --secrets-key "
                "at it"
            )
        return cls(db, key)

    def set(self, user_id: int, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Store `value` as the user's secret `name`; (its info, whether it is new)."""
        created = self.store.put(
            user_id, name, self.key.encrypt(user_id, name, value), self.key.key_id
        )
        info = self.store.info(user_id, name)
        assert info is not None
        return info, created

    def missing(self, user_id: int, names: Sequence[str]) -> list[str]:
        """Those of `names` the user has no secret for, sorted."""
        found = self.store.sealed(user_id, names)
        return sorted(set(names) - set(found))

    def resolve(self, user_id: int, refs: Mapping[str, str]) -> dict[str, str]:
        """The environment `refs` (`{VAR: NAME}`) stands for: each variable with the value
        of the user's secret. Raises SecretUnavailable naming what is wrong and the fix."""
        if not refs:
            return {}
        sealed = self.store.sealed(user_id, list(refs.values()))
        env: dict[str, str] = {}
        for var, name in refs.items():
            blob = sealed.get(name)
            if blob is None:
                raise SecretUnavailable(
                    f"secret {name!r} (for {var}) no longer exists; set it with "
                    f"`kaic secret set {name}` and submit the job again"
                )
            try:
                env[var] = self.key.decrypt(user_id, name, blob)
            except (InvalidTag, ValueError):
                raise SecretUnavailable(
                    f"secret {name!r} (for {var}) does not decrypt with the center's key; "
                    f"set it again with `kaic secret set {name}`"
                ) from None
        return env
