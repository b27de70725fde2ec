"""Profiles (one per center and account) and kaic's directories.

The config file is ``config_dir()/config.toml``::

    current_profile = "default"

    [profiles.default]
    center = "https://hpc.example.org"
    username = "alice"
    credential_store = "keyring"   # or "file"
    ca_bundle = "/etc/ssl/center-ca.pem"   # optional: trust this CA for the center's TLS
    insecure_http = false          # true only with `kaic login --insecure-http`

This module is on the CLI's start path, so it imports only the stdlib and platformdirs at
module level; ``tomli_w`` is imported inside `Config.save`.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import platformdirs

from kaic.errors import ConfigError, NotFound, UsageError
from kaic.urls import validate_center_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CredentialStore = Literal["keyring", "file"]
CREDENTIAL_STORES: tuple[str, ...] = ("keyring", "file")
CONFIG_FILE_NAME = "config.toml"
DEFAULT_PROFILE_NAME = "default"
_PROFILE_KEYS = ("center", "username", "credential_store", "ca_bundle", "insecure_http")

# Profile names become keyring usernames and credential file names: keep them path-safe.
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def config_dir() -> Path:
    """Where profiles and stored credentials live: `$KAIC_CONFIG_DIR` or the platform dir."""
    override = os.environ.get("KAIC_CONFIG_DIR")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_config_dir("kaic"))


def state_dir() -> Path:
    """Where the local center keeps state, logs and caches: `$KAIC_STATE_DIR` or platform dir.

    Always absolute: a relative `KAIC_STATE_DIR` is taken from the current directory, here,
    once (jobs run in other directories, where a relative path would point elsewhere)."""
    override = os.environ.get("KAIC_STATE_DIR")
    if override:
        return Path(os.path.abspath(Path(override).expanduser()))
    return Path(platformdirs.user_state_dir("kaic"))


def config_path() -> Path:
    """The config file: ``config_dir()/config.toml``."""
    return config_dir() / CONFIG_FILE_NAME


def validate_profile_name(name: str) -> str:
    """Return `name` if it can name a profile, else raise UsageError."""
    if not _PROFILE_NAME.match(name):
        raise UsageError(
            f"invalid profile name {name!r}: use letters, digits, '.', '_' and '-' "
            "(at most 64 characters, starting with a letter or digit)"
        )
    return name


@dataclass
class Profile:
    """One center + account: what `--profile` / `$KAIC_PROFILE` select."""

    name: str
    center: str
    username: str | None = None
    credential_store: CredentialStore = "keyring"
    #: a PEM file of the CA certificates to trust for this center (`kaic login --ca-bundle`)
    ca_bundle: str | None = None
    #: plain http to this (non-loopback) center allowed (`kaic login --insecure-http`)
    insecure_http: bool = False
    #: keys of the profile's table that this version does not know, kept on save
    extra: dict[str, Any] = field(default_factory=dict)

    def to_toml(self) -> dict[str, Any]:
        """The profile's table as written to config.toml."""
        table: dict[str, Any] = dict(self.extra)
        table["center"] = self.center
        if self.username is not None:
            table["username"] = self.username
        table["credential_store"] = self.credential_store
        if self.ca_bundle is not None:
            table["ca_bundle"] = self.ca_bundle
        if self.insecure_http:
            table["insecure_http"] = True
        return table


@dataclass
class Config:
    """The whole config file. `Config.load()` of a missing file gives an empty config."""

    current_profile: str | None = None
    profiles: dict[str, Profile] = field(default_factory=dict)
    #: top-level keys this version does not know, kept on save
    extra: dict[str, Any] = field(default_factory=dict)
    #: whether the file existed when loaded
    exists: bool = False

    @classmethod
    def load(cls, path: Path | None = None) -> Config:
        """Read the config file; raise ConfigError (naming file and line) if it is corrupt.

        A corrupt file is never modified: the user may want to repair it by hand.
        """
        path = path or config_path()
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not valid UTF-8 (at byte {exc.start})",
                hint=f"fix or remove {path}",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            # The decode error's message carries "(at line N, column M)".
            raise ConfigError(
                f"{path}: invalid TOML: {exc}", hint=f"fix the line named above in {path}"
            ) from None
        return cls._from_doc(doc, path)

    @classmethod
    def _from_doc(cls, doc: dict[str, Any], path: Path) -> Config:
        def bad(why: str) -> ConfigError:
            return ConfigError(f"{path}: {why}", hint=f"fix or remove {path}")

        current = doc.get("current_profile")
        if current is not None and not isinstance(current, str):
            raise bad("current_profile must be a string")
        raw_profiles = doc.get("profiles", {})
        if not isinstance(raw_profiles, dict):
            raise bad("[profiles] must be a table of [profiles.NAME] tables")
        profiles: dict[str, Profile] = {}
        for name, table in raw_profiles.items():
            if not isinstance(table, dict):
                raise bad(f"profile {name!r} must be a table ([profiles.{name}])")
            center = table.get("center")
            if not isinstance(center, str):
                raise bad(f'profile {name!r} has no center URL (center = "https://...")')
            username = table.get("username")
            if username is not None and not isinstance(username, str):
                raise bad(f"profile {name!r}: username must be a string")
            store = table.get("credential_store", "keyring")
            if store not in CREDENTIAL_STORES:
                raise bad(
                    f"profile {name!r}: credential_store must be one of "
                    f"{', '.join(CREDENTIAL_STORES)}, not {store!r}"
                )
            ca_bundle = table.get("ca_bundle")
            if ca_bundle is not None and not isinstance(ca_bundle, str):
                raise bad(f"profile {name!r}: ca_bundle must be a file path (a string)")
            insecure_http = table.get("insecure_http", False)
            if not isinstance(insecure_http, bool):
                raise bad(f"profile {name!r}: insecure_http must be true or false")
            extra = {k: v for k, v in table.items() if k not in _PROFILE_KEYS}
            profiles[name] = Profile(
                name=name,
                center=center,
                username=username,
                credential_store=cast(CredentialStore, store),
                ca_bundle=ca_bundle,
                insecure_http=insecure_http,
                extra=extra,
            )
        extra = {k: v for k, v in doc.items() if k not in ("current_profile", "profiles")}
        return cls(current_profile=current, profiles=profiles, extra=extra, exists=True)

    def to_toml(self) -> dict[str, Any]:
        """The document as written to config.toml."""
        doc: dict[str, Any] = {}
        if self.current_profile is not None:
            doc["current_profile"] = self.current_profile
        doc.update(self.extra)
        doc["profiles"] = {name: p.to_toml() for name, p in sorted(self.profiles.items())}
        return doc

    def save(self, path: Path | None = None) -> Path:
        """Write the config atomically (temp file + rename) in a 0700 directory."""
        import tomli_w

        path = path or config_path()
        text = tomli_w.dumps(self.to_toml())
        atomic_write(path, text.encode("utf-8"), mode=0o600)
        self.exists = True
        return path

    def get(self, name: str) -> Profile:
        """The profile called `name`; NotFound (exit 4) listing the valid names otherwise."""
        try:
            return self.profiles[name]
        except KeyError:
            raise NotFound(
                f"no profile named {name!r}; {_choices(self.profiles)}",
                hint="see `kaic config show`, or create it with `kaic login --profile NAME`",
            ) from None

    def set_profile(self, profile: Profile, *, make_current: bool = False) -> None:
        """Add or replace a profile (name and center URL are validated)."""
        validate_profile_name(profile.name)
        profile.center = validate_center_url(profile.center)
        self.profiles[profile.name] = profile
        if make_current or self.current_profile is None:
            self.current_profile = profile.name

    def remove_profile(self, name: str) -> Profile:
        """Remove a profile; if it was current, no profile is current any more."""
        profile = self.get(name)
        del self.profiles[name]
        if self.current_profile == name:
            self.current_profile = None
        return profile


def _choices(profiles: Mapping[str, Profile]) -> str:
    if not profiles:
        return "no profiles are configured"
    return "valid profiles: " + ", ".join(sorted(profiles))


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600, dir_mode: int = 0o700) -> None:
    """Replace `path` with `data` atomically: readers see the old or the new file, never half.

    The temp file is created with `mode` from the start (no window where it is readable by
    others) and the parent directory is created with `dir_mode`.
    """
    path.parent.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: never follow or reuse something already at the temp name.
    flags = os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_config(path: Path | None = None) -> Config:
    """`Config.load()`: the config file, or an empty config when there is none."""
    return Config.load(path)


def save_config(config: Config, path: Path | None = None) -> Path:
    """`config.save()`: write the config file atomically; returns its path."""
    return config.save(path)


def resolve_profile(explicit: str | None = None) -> Profile | None:
    """The profile to use: `explicit` (`--profile`) > `$KAIC_PROFILE` > `current_profile`.

    Returns None when nothing selects a profile and none is configured (the caller then uses
    the embedded local center); the only profile when there is exactly one and none is marked
    current. A named profile that does not exist raises NotFound listing the valid names; a
    profile whose center URL is malformed raises UsageError. `$KAIC_CENTER` is not applied
    here: the caller overrides the returned profile's center with it.
    """
    name = explicit or os.environ.get("KAIC_PROFILE") or None
    config = Config.load()
    if name is None:
        name = config.current_profile
    if name is None:
        if not config.profiles:
            return None
        if len(config.profiles) == 1:
            # One profile and none marked current: there is nothing to choose between.
            name = next(iter(config.profiles))
        else:
            raise UsageError(
                "several profiles are configured and none is selected; "
                + _choices(config.profiles),
                hint="pick one with `kaic config use PROFILE` or `--profile PROFILE`",
            )
    profile = config.get(name)
    try:
        center = validate_center_url(profile.center)
    except UsageError as exc:
        raise UsageError(
            f"{exc.message} (profile {profile.name!r} in {config_path()})", hint=exc.hint
        ) from None
    return Profile(
        name=profile.name,
        center=center,
        username=profile.username,
        credential_store=profile.credential_store,
        ca_bundle=profile.ca_bundle,
        insecure_http=profile.insecure_http,
        extra=dict(profile.extra),
    )


def _host_label(center_url: str) -> str:
    """A profile-name-safe label for a center: its host, plus the port when one is given."""
    parts = urlsplit(center_url)
    host = (parts.hostname or "center").strip("[]").replace(":", "-")
    label = f"{host}-{parts.port}" if parts.port else host
    label = re.sub(r"[^A-Za-z0-9._-]", "-", label).lstrip("._-") or "center"
    return label[:64]


def profile_name_for(center_url: str, username: str | None, *, config: Config | None = None) -> str:
    """The profile name `kaic login` uses when none is given.

    "default" for the first profile; the existing profile's name when one already points at
    the same center and user (re-login); otherwise the center's host (``hpc.example.org``),
    then host + username, then a numbered variant, whichever is free first.
    """
    center = validate_center_url(center_url)
    config = config if config is not None else Config.load()
    if not config.profiles:
        return DEFAULT_PROFILE_NAME
    for name, p in sorted(config.profiles.items()):
        same_center = _same_center(p.center, center)
        if same_center and (username is None or p.username in (None, username)):
            return name
    base = _host_label(center)
    candidates = [base]
    if username:
        candidates.append(f"{base}-{re.sub(r'[^A-Za-z0-9._-]', '-', username)}"[:64])
    for candidate in candidates:
        if candidate not in config.profiles:
            return candidate
    n = 2
    while f"{candidates[-1]}-{n}"[:64] in config.profiles:
        n += 1
    return f"{candidates[-1]}-{n}"[:64]


def _same_center(a: str, b: str) -> bool:
    try:
        return validate_center_url(a) == validate_center_url(b)
    except UsageError:
        return False


def use_profile(name: str) -> Profile:
    """Make `name` the current profile (`kaic config use`); NotFound if it does not exist."""
    config = Config.load()
    profile = config.get(name)
    config.current_profile = name
    config.save()
    return profile
