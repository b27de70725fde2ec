"""The credential store: `KAIC_TOKEN` > OS keyring (bounded by a timeout) > 0600 file.

Stored per profile. In the keyring: service ``"kaic"``, username = profile name, password =
the credentials as JSON. In a file: ``config_dir()/credentials/<profile>.json``, mode 0600 in a
0700 directory. Falling back from the keyring to the file is always announced through the
`warn` callback the caller passes (the CLI prints it on stderr): never silent.

Secrets never appear in reprs, messages or exceptions raised from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from kaic.auth.keyring_timeout import SERVICE, KeyringUnavailable, call_keyring
from kaic.config import atomic_write, config_dir, validate_profile_name
from kaic.errors import AuthRequired, ConfigError

if TYPE_CHECKING:
    from keyring.backend import KeyringBackend

    from kaic.models import TokenResponse

CredentialKind = Literal["session", "api"]
#: where credentials came from; "local" is used by the CLI for the embedded center
CredentialSource = Literal["env", "keyring", "file"]
Warn = Callable[[str], None]

_FORMAT_VERSION = 1

#: What a bearer token may hold: visible ASCII, no spaces. Anything else cannot travel in an
#: HTTP header (httpx refuses it, and the text after a line break would be echoed in the
#: error) and is never a token the center issued: a pasted second line, quotes, a BOM.
_TOKEN_TEXT = re.compile(r"[\x21-\x7e]+")


@dataclass(repr=False)
class Credentials:
    """An access token and, for a login session, the rotating refresh token."""

    access_token: str
    refresh_token: str | None = None
    expires_at: datetime | None = None
    kind: CredentialKind = "session"

    def __repr__(self) -> str:
        # Never show the tokens: reprs end up in tracebacks and debug logs.
        return (
            f"Credentials(kind={self.kind!r}, expires_at={self.expires_at!r}, "
            f"refresh_token={'set' if self.refresh_token else None})"
        )

    __str__ = __repr__

    def to_json(self) -> str:
        """Serialise for the keyring or the credentials file."""
        return json.dumps(
            {
                "version": _FORMAT_VERSION,
                "kind": self.kind,
                "access_token": self.access_token,
                "refresh_token": self.refresh_token,
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Credentials:
        """Parse `to_json` output; ValueError (without any secret in it) if malformed."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not JSON (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        access = doc.get("access_token")
        if not isinstance(access, str) or not access:
            raise ValueError("no access_token")
        refresh = doc.get("refresh_token")
        if refresh is not None and not isinstance(refresh, str):
            raise ValueError("refresh_token is not a string")
        kind = doc.get("kind", "session")
        if kind not in ("session", "api"):
            raise ValueError("kind must be 'session' or 'api'")
        raw_expiry = doc.get("expires_at")
        expires_at: datetime | None = None
        if raw_expiry is not None:
            try:
                expires_at = _aware(datetime.fromisoformat(str(raw_expiry)))
            except ValueError:
                raise ValueError("expires_at is not an ISO 8601 time") from None
        return cls(
            access_token=access,
            refresh_token=refresh,
            expires_at=expires_at,
            kind=cast(CredentialKind, kind),
        )

    @classmethod
    def from_token_response(cls, response: TokenResponse) -> Credentials:
        """Session credentials from a password or refresh grant."""
        return cls(
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            expires_at=_aware(response.expires_at),
            kind="session",
        )

    @classmethod
    def from_token(cls, token: str) -> Credentials:
        """Credentials for a bare token (``KAIC_TOKEN``, ``kaic login --with-token``)."""
        token = token.strip()
        return cls(access_token=token, kind="api" if token.startswith("kaic_") else "session")

    def is_expired(self, now: datetime | None = None, *, skew_s: float = 0) -> bool:
        """Whether the access token's known expiry has passed (False when unknown)."""
        if self.expires_at is None:
            return False
        now = now or datetime.now(timezone.utc)
        return (self.expires_at - now).total_seconds() <= skew_s


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def credentials_dir() -> Path:
    """Directory of the per-profile credential files (0700)."""
    return config_dir() / "credentials"


def credentials_path(profile_name: str) -> Path:
    """The credentials file of a profile: ``config_dir()/credentials/<profile>.json``."""
    return credentials_dir() / f"{validate_profile_name(profile_name)}.json"


def display_path(path: Path) -> str:
    """`path` with the home directory shown as ``~`` (for messages)."""
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------------
# public API


def check_token_text(token: str, source: str) -> str:
    """`token` if it can be a bearer token, else AuthRequired (exit 3) naming `source` and
    what is wrong with it — never the token itself, nor any part of it."""
    if _TOKEN_TEXT.fullmatch(token):
        return token
    if "\n" in token or "\r" in token:
        why = "a line break"
    elif any(c.isspace() for c in token):
        why = "a space or tab"
    elif any(ord(c) < 0x20 or ord(c) == 0x7F for c in token):
        why = "a control character"
    else:
        why = "a character that is not plain ASCII"
    raise AuthRequired(
        f"{source} is not a valid token: it contains {why}",
        hint="use the one-line token `kaic token create` printed (kaic_…), without quotes "
        "or a second line",
    )


def from_env() -> Credentials | None:
    """The credentials `$KAIC_TOKEN` holds (surrounding whitespace ignored), or None.

    A value that cannot be a token (a line break inside it, control or non-ASCII
    characters) is AuthRequired naming KAIC_TOKEN, before anything is sent anywhere.
    """
    token = os.environ.get("KAIC_TOKEN", "").strip()
    if not token:
        return None
    return Credentials.from_token(check_token_text(token, "KAIC_TOKEN"))


def load(
    profile_name: str,
    *,
    credential_store: str | None = None,
    warn: Warn | None = None,
    use_env: bool = True,
) -> tuple[Credentials, CredentialSource] | None:
    """The credentials to use for a profile and where they came from, or None.

    Precedence: ``$KAIC_TOKEN`` ("env") > keyring ("keyring") > file ("file").
    Pass the profile's `credential_store`: when it is "file", the keyring is not consulted at
    all, so a machine whose keyring hangs does not pay the timeout on every command. If the
    keyring is unavailable, `warn` (when given) is told so. `use_env=False` ignores
    ``$KAIC_TOKEN`` (`kaic logout` revokes the stored session, not the environment's token).
    """
    if use_env:
        found = from_env()
        if found is not None:
            return found, "env"
    path = credentials_path(profile_name)
    keyring_problem: str | None = None
    if credential_store != "file":
        try:
            value = call_keyring(lambda kr: kr.get_password(SERVICE, profile_name))
        except KeyringUnavailable as exc:
            keyring_problem = exc.reason
        else:
            if value is not None:
                try:
                    return Credentials.from_json(value), "keyring"
                except ValueError as exc:
                    raise ConfigError(
                        f"the credentials stored in the keyring for profile {profile_name!r} "
                        f"are unreadable ({exc})",
                        hint="run `kaic login` to store new ones",
                    ) from None
    creds = _read_file(path)
    if keyring_problem is not None and warn is not None:
        if creds is not None:
            warn(
                f"warning: keyring unavailable ({keyring_problem}); "
                f"using credentials from {display_path(path)}"
            )
        else:
            warn(f"warning: keyring unavailable ({keyring_problem}); could not look up credentials")
    if creds is None:
        return None
    return creds, "file"


def save(
    profile_name: str,
    creds: Credentials,
    *,
    insecure_storage: bool = False,
    warn: Warn,
) -> Literal["keyring", "file"]:
    """Store credentials for a profile; return where they went ("keyring" or "file").

    `insecure_storage` (``--insecure-storage``) writes the 0600 file without touching the
    keyring. Otherwise the keyring is tried (bounded by ``$KAIC_KEYRING_TIMEOUT``); if it is
    unusable the file is used and `warn` is called with the reason and the file's path.
    The caller should record the returned store in the profile (``credential_store``) and
    pass it back to `load`.
    """
    path = credentials_path(profile_name)
    if insecure_storage:
        _write_file(path, creds)
        return "file"
    value = creds.to_json()

    def store(kr: KeyringBackend) -> None:
        kr.set_password(SERVICE, profile_name, value)
        # Some backends accept a write and keep nothing (null-like ones); read it back.
        if kr.get_password(SERVICE, profile_name) != value:
            raise KeyringUnavailable("the keyring did not keep the credentials")

    try:
        call_keyring(store, secrets=(value, creds.access_token, creds.refresh_token or ""))
    except KeyringUnavailable as exc:
        _write_file(path, creds)
        warn(
            f"warning: keyring unavailable ({exc.reason}); "
            f"storing credentials in {display_path(path)} (0600)"
        )
        return "file"
    # The keyring now holds the current credentials: an older file copy must not linger.
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return "keyring"


def delete(profile_name: str, *, warn: Warn | None = None, keyring: bool = True) -> bool:
    """Remove a profile's credentials from the keyring (bounded) and the file.

    Returns whether anything was removed. A keyring that cannot be reached is reported
    through `warn` (its entry, if any, stays); `keyring=False` skips it.
    """
    removed = False
    if keyring:

        def remove(kr: KeyringBackend) -> bool:
            if kr.get_password(SERVICE, profile_name) is None:
                return False
            kr.delete_password(SERVICE, profile_name)
            return True

        try:
            removed = call_keyring(remove)
        except KeyringUnavailable as exc:
            if warn is not None:
                warn(
                    f"warning: keyring unavailable ({exc.reason}); "
                    "credentials stored there, if any, were not removed"
                )
    try:
        credentials_path(profile_name).unlink()
        removed = True
    except FileNotFoundError:
        pass
    return removed


# ---------------------------------------------------------------------------------------------
# the file store


def _read_file(path: Path) -> Credentials | None:
    """Read a credentials file, refusing one that group or others can access."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"cannot read credentials file {path}: {exc.strerror or exc}",
            hint="check the file, or run `kaic login` to store new credentials",
        ) from None
    with os.fdopen(fd, "rb") as fh:
        # fstat on the open descriptor: the checked file is the one read.
        mode = os.fstat(fh.fileno()).st_mode
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"credentials file {path} is accessible by other users "
                f"(mode {stat.S_IMODE(mode):04o}); refusing to use it; "
                f"fix it with `chmod 600 {path}`",
                hint=f"run `chmod 600 {path}`, then `kaic logout` and `kaic login` if others "
                "may have read it",
            )
        raw = fh.read()
    try:
        return Credentials.from_json(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise ConfigError(
            f"credentials file {path} is unreadable ({reason})",
            hint="run `kaic login` to store new credentials",
        ) from None


def _write_file(path: Path, creds: Credentials) -> None:
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        # An existing directory may predate kaic or have been loosened: tighten it.
        with contextlib.suppress(OSError):
            os.chmod(directory, 0o700)
    atomic_write(path, creds.to_json().encode("utf-8"), mode=0o600)
