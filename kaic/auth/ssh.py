"""The client's SSH identity files for staging: a key per profile and a short-lived
certificate. No HTTP here: `kaic.flows.ssh_target.ensure_identity` asks the center for a
certificate (`kaic.client.staging`) and hands it to `store_certificate`.

The key (`config_dir()/ssh/<profile>/id_ed25519`, 0600, directory 0700) never leaves the
machine; the center signs its public half into `id_ed25519-cert.pub`, whose only principal is
the user's unix account. `stored_identity` finds the certificate unusable whenever it is
missing, belongs to another key or another center, has expired or has less than
`RENEW_MARGIN` left, so an expired certificate never surfaces as an SSH failure.

Host keys come only from `GET /v1/staging` (over the authenticated API) or the user's own
known_hosts: `known_hosts_lines` turns the former into lines for a known_hosts file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from kaic.models.staging import SshCertificate, StagingInfo

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519

#: a certificate with less than this left is renewed before use
RENEW_MARGIN = timedelta(minutes=5)
KEY_NAME = "id_ed25519"
LOCAL_PROFILE = "local"


@dataclass(frozen=True)
class SshIdentity:
    """A private key and the certificate to present with it."""

    key_path: Path
    cert_path: Path
    valid_before: datetime
    principal: str


def identity_dir(profile: str | None) -> Path:
    """Where the key and certificate of `profile` live (None = the local center)."""
    from kaic.config import config_dir, validate_profile_name

    name = validate_profile_name(profile) if profile else LOCAL_PROFILE
    return config_dir() / "ssh" / name


def _host_pattern(host: str, port: int) -> str:
    # OpenSSH's own form (IPv6 too: `::1` on port 22), the one `SshTarget.host_pattern_name`
    # matches.
    return host if port == 22 else f"[{host}]:{port}"


def known_hosts_lines(info: StagingInfo) -> list[str]:
    """known_hosts lines for the staging host: its keys, and `@cert-authority` host CAs."""
    pattern = _host_pattern(info.host, info.port)
    lines = [f"{pattern} {_key_part(key)}" for key in info.host_keys]
    lines += [f"@cert-authority {pattern} {_key_part(key)}" for key in info.host_ca_keys]
    return lines


def _key_part(line: str) -> str:
    # "type base64 [comment]" -> "type base64": a comment from the server has no business in
    # the user's known_hosts.
    return " ".join(line.split()[:2])


def load_or_create_key(key_path: Path) -> str:
    """The OpenSSH public key line of the key at `key_path`, generating it if missing."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from kaic.config import atomic_write

    key: ed25519.Ed25519PrivateKey | None = None
    if key_path.exists():
        try:
            loaded = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
        except (ValueError, TypeError):
            loaded = None
        if isinstance(loaded, ed25519.Ed25519PrivateKey):
            key = loaded
            if key_path.stat().st_mode & 0o077:
                key_path.chmod(0o600)
    if key is None:
        key = ed25519.Ed25519PrivateKey.generate()
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        if key_path.exists():  # unreadable or not ed25519: replace it
            atomic_write(key_path, data, mode=0o600, dir_mode=0o700)
        else:
            key = _create_key_once(key_path, data) or key
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode("ascii")


def _create_key_once(key_path: Path, data: bytes) -> ed25519.Ed25519PrivateKey | None:
    """Install `data` as the key unless another process got there first; returns theirs then.

    Two kaic processes starting at once must not each write a key and pair it with the
    other's certificate: link() makes the first one win.
    """
    import contextlib
    import os
    import secrets

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = key_path.with_name(f".{key_path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            with contextlib.suppress(ValueError, TypeError):
                theirs = serialization.load_ssh_private_key(key_path.read_bytes(), password=None)
                if isinstance(theirs, ed25519.Ed25519PrivateKey):
                    return theirs
            os.replace(tmp, key_path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return None


def _usable_certificate(
    cert_path: Path, public_line: str, now: datetime
) -> tuple[datetime, str] | None:
    """(valid_before, principal) of the certificate at `cert_path` if it can still be used."""
    from cryptography.hazmat.primitives import serialization

    try:
        loaded = serialization.load_ssh_public_identity(cert_path.read_bytes().strip())
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(loaded, serialization.SSHCertificate):
        return None
    certified = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    if certified.decode("ascii") != public_line or not loaded.valid_principals:
        return None
    valid_before = datetime.fromtimestamp(loaded.valid_before, timezone.utc)
    valid_after = datetime.fromtimestamp(loaded.valid_after, timezone.utc)
    if valid_before - now < RENEW_MARGIN or valid_after > now + RENEW_MARGIN:
        return None
    return valid_before, loaded.valid_principals[0].decode("utf-8", "replace")


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def key_path(profile: str | None) -> Path:
    """The private key of `profile` (created by `load_or_create_key`)."""
    return identity_dir(profile) / KEY_NAME


def stored_identity(
    profile: str | None, public_line: str, *, issuer: str, now: datetime
) -> SshIdentity | None:
    """The profile's key and certificate if the certificate is usable: for `public_line`'s
    key, signed by the center at `issuer`, valid for at least `RENEW_MARGIN` after `now`."""
    directory = identity_dir(profile)
    cert_path = directory / f"{KEY_NAME}-cert.pub"
    usable = _usable_certificate(cert_path, public_line, now)
    # Which center signed the certificate: a profile-less session (KAIC_TOKEN) shares the
    # "local" directory with the local center, and one center's certificate opens nothing
    # at another.
    if usable is None or _read_text(directory / f"{KEY_NAME}-cert.center") != issuer:
        return None
    valid_before, principal = usable
    return SshIdentity(directory / KEY_NAME, cert_path, valid_before, principal)


def store_certificate(
    profile: str | None, public_line: str, signed: SshCertificate, *, issuer: str
) -> SshIdentity:
    """Keep the certificate the center at `issuer` signed for `public_line`'s key."""
    from kaic.config import atomic_write

    directory = identity_dir(profile)
    cert_path = directory / f"{KEY_NAME}-cert.pub"
    atomic_write(cert_path, (signed.certificate.strip() + "\n").encode("ascii"), mode=0o600)
    atomic_write(directory / f"{KEY_NAME}-cert.center", issuer.encode("utf-8"), mode=0o600)
    # The public half next to the key, as ssh-keygen leaves it (ssh looks for it).
    pub_path = directory / f"{KEY_NAME}.pub"
    if _read_text(pub_path) != public_line:
        atomic_write(pub_path, (public_line + "\n").encode("ascii"), mode=0o644)
    principal = signed.principals[0] if signed.principals else ""
    return SshIdentity(directory / KEY_NAME, cert_path, signed.valid_before, principal)
