"""The center's SSH user CA: signs short-lived OpenSSH user certificates for staging.

The CA key is an ed25519 key in `state_dir/ssh/user_ca` (0600, created on first use); an
operator puts its public key (`kaic center ssh-ca`) in sshd's `TrustedUserCAKeys`. A
certificate names exactly one principal, the user's unix account, carries the key id
`kaic:<user>:<serial>` (serials only grow, so sshd's log ties a login to one issuance) and
permits a pty and ~/.ssh/rc, nothing else: no agent, port or X11 forwarding.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    SSHCertificateBuilder,
    SSHCertificateType,
)

from kaic.center.accounts import is_root_account
from kaic.models import SshCertificate

logger = logging.getLogger("kaic.center")

CA_KEY_FILE = "user_ca"
SERIAL_FILE = "user_ca.serial"
#: certificates start this long before they are issued, so a client or sshd whose clock is
#: a little behind still accepts them
CLOCK_SKEW = timedelta(minutes=1)
MIN_RSA_BITS = 2048
#: what a staging login needs; agent/port/X11 forwarding are deliberately left out
EXTENSIONS = (b"permit-pty", b"permit-user-rc")

ACCEPTED_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    }
)

SshUserKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class UnacceptableKey(ValueError):
    """A public key the CA will not sign; the message says why."""


class ForbiddenPrincipal(ValueError):
    """A principal the CA will not name in a certificate (root); the message says why."""


def parse_user_public_key(text: str) -> SshUserKey:
    """An OpenSSH public key line (`ssh-ed25519 AAAA… comment`) the CA accepts.

    Only ed25519, ECDSA (nistp256/384/521) and RSA of at least 2048 bits; anything else,
    including certificates and DSA keys, raises UnacceptableKey.
    """
    line = text.strip()
    if not line or "\n" in line or "\0" in line:
        raise UnacceptableKey("expected one OpenSSH public key line, e.g. `ssh-ed25519 AAAA…`")
    key_type = line.split(maxsplit=1)[0]
    if "-cert-v01@openssh.com" in key_type:
        raise UnacceptableKey("expected a public key, not a certificate")
    if key_type not in ACCEPTED_TYPES:
        raise UnacceptableKey(
            f"unsupported public key type {key_type[:40]!r}; use ed25519, ECDSA or RSA >= 2048 bits"
        )
    try:
        key = serialization.load_ssh_public_key(line.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise UnacceptableKey(f"not an OpenSSH public key this center accepts ({exc})") from None
    except Exception as exc:  # UnsupportedAlgorithm and kin: e.g. sk- keys
        raise UnacceptableKey(f"unsupported public key type ({exc})") from None
    if isinstance(key, ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey):
        return key
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise UnacceptableKey(
                f"RSA key of {key.key_size} bits is too weak; use ed25519 (or RSA >= 2048 bits)"
            )
        return key
    raise UnacceptableKey("unsupported public key type; use ed25519, ECDSA or RSA >= 2048 bits")


def openssh_public_line(text: str) -> str:
    """`type base64` of one OpenSSH public key line (comment dropped); ValueError if invalid."""
    parts = text.strip().split()
    if len(parts) < 2:
        raise ValueError(f"not an OpenSSH public key line: {text.strip()[:40]!r}")
    line = f"{parts[0]} {parts[1]}"
    serialization.load_ssh_public_key(line.encode("ascii"))
    return line


def read_host_key_files(paths: list[Path]) -> list[str]:
    """OpenSSH public host keys from files such as sshd's `ssh_host_ed25519_key.pub`.

    Every non-empty, non-comment line must be a public key; ValueError names the file.
    """
    keys: list[str] = []
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"cannot read host key file {path}: {exc}") from None
        found = 0
        for number, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip() or raw.lstrip().startswith("#"):
                continue
            try:
                line = openssh_public_line(raw)
            except Exception:
                raise ValueError(f"{path}:{number}: not an OpenSSH public key") from None
            if line not in keys:
                keys.append(line)
            found += 1
        if not found:
            raise ValueError(f"host key file {path} holds no public key")
    return keys


def create_ed25519_key_file(path: Path) -> None:
    """Make `path` hold an ed25519 private key (OpenSSH format, 0600) unless it exists.

    Several processes may start at once over one state dir: the key is written to a private
    temporary name and linked into place, so the first one wins and the others keep it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.exists():
        return
    data = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # link() fails if another process created the key meanwhile: keep theirs.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class UserCA:
    """The user CA of one center state dir (thread-safe; serials are safe across processes)."""

    def __init__(self, state_dir: Path) -> None:
        self.directory = Path(state_dir) / "ssh"
        self.key_path = self.directory / CA_KEY_FILE
        self._serial_path = self.directory / SERIAL_FILE
        self._lock = threading.Lock()
        self._key: ed25519.Ed25519PrivateKey | None = None

    def private_key(self) -> ed25519.Ed25519PrivateKey:
        """The CA key, created (0600) on first use."""
        with self._lock:
            if self._key is None:
                self._key = self._load_or_create()
            return self._key

    def public_key_line(self, comment: str = "kaic-user-ca") -> str:
        """The CA's OpenSSH public key line, for sshd's `TrustedUserCAKeys`."""
        public = self.private_key().public_key()
        raw = public.public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        return f"{raw.decode('ascii')} {comment}".rstrip()

    def sign_user_key(
        self,
        public_key: str,
        *,
        user: str,
        principal: str,
        now: datetime,
        validity_seconds: int,
        allow_root: bool = False,
    ) -> SshCertificate:
        """A user certificate for `public_key`: principal `principal`, key id `kaic:<user>:<n>`.

        Valid from a minute before `now` until `now + validity_seconds`. Raises
        UnacceptableKey for a key the CA does not sign, and ForbiddenPrincipal for root
        (the name or uid 0) unless `allow_root` — only for the embedded local center's own
        user, whose center already runs as that account.
        """
        if is_root_account(principal) and not allow_root:
            logger.warning(
                "refused an SSH certificate for %s: principal %s is root", user, principal
            )
            raise ForbiddenPrincipal(
                f"no SSH certificate for user {user}: it is mapped to the unix account "
                f"{principal!r}, which is root; an administrator must map it to a personal "
                "account"
            )
        key = parse_user_public_key(public_key)
        if validity_seconds < 1:
            raise ValueError("validity must be positive")
        ca_key = self.private_key()
        serial = self._next_serial()
        key_id = f"kaic:{user}:{serial}"
        now = now.astimezone(timezone.utc).replace(microsecond=0)
        valid_after = now - CLOCK_SKEW
        valid_before = now + timedelta(seconds=validity_seconds)
        builder = (
            SSHCertificateBuilder()
            .public_key(key)
            .serial(serial)
            .type(SSHCertificateType.USER)
            .key_id(key_id.encode())
            .valid_principals([principal.encode()])
            .valid_after(int(valid_after.timestamp()))
            .valid_before(int(valid_before.timestamp()))
        )
        for extension in EXTENSIONS:
            builder = builder.add_extension(extension, b"")
        certificate = builder.sign(ca_key)
        logger.info(
            "signed SSH certificate %s for %s (principal %s) valid until %s",
            key_id,
            user,
            principal,
            valid_before.isoformat(),
        )
        return SshCertificate(
            certificate=certificate.public_bytes().decode("ascii") + f" {key_id}",
            principals=[principal],
            valid_after=valid_after,
            valid_before=valid_before,
            serial=serial,
            key_id=key_id,
        )

    def _load_or_create(self) -> ed25519.Ed25519PrivateKey:
        create_ed25519_key_file(self.key_path)
        loaded = serialization.load_ssh_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(loaded, ed25519.Ed25519PrivateKey):
            raise ValueError(f"{self.key_path} is not an ed25519 key")
        return loaded

    def _next_serial(self) -> int:
        # A small counter file under an exclusive lock: serials grow across restarts and
        # across processes sharing the state dir.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._serial_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            serial = (int(text) if text.isdigit() else 0) + 1
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{serial}\n".encode("ascii"))
            os.fsync(fd)
            return serial
        finally:
            os.close(fd)
