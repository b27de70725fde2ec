"""Checking the OpenSSH user certificates the center's user CA issues.

paramiko's server side parses a `*-cert-v01@openssh.com` public key and verifies the login
signature with the key embedded in the certificate, but it checks nothing about the
certificate itself. `verify_user_certificate` does that part: the CA's signature, the
certificate type, the principal, the validity period and the critical options, the way
sshd does for `TrustedUserCAKeys`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import SSHCertificate, SSHCertificateType

from kaic.center.ssh_ca import ACCEPTED_TYPES

#: the certificate types this endpoint understands: those of the keys the user CA signs
CERT_TYPES = frozenset(f"{key_type}-cert-v01@openssh.com" for key_type in ACCEPTED_TYPES)
#: the key id the user CA writes: `kaic:<user>:<serial>`
KEY_ID_PREFIX = "kaic:"
_YEAR_9999 = 253402300799


class CertificateRejected(ValueError):
    """A certificate that does not open this endpoint; the message says why (no secrets)."""


@dataclass(frozen=True)
class VerifiedCertificate:
    """What a valid certificate says: who it was issued to and which key it certifies."""

    user: str
    principals: tuple[str, ...]
    key_id: str
    serial: int
    valid_before: datetime
    #: the certified public key in SSH wire form (what must sign the login)
    public_key_blob: bytes


def ssh_blob(key: object) -> bytes:
    line = key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def parse_certificate(blob: bytes) -> SSHCertificate:
    """An OpenSSH certificate from its wire blob; CertificateRejected if it is not one."""
    try:
        length = int.from_bytes(blob[:4], "big")
        key_type = blob[4 : 4 + length].decode("ascii")
    except (UnicodeDecodeError, ValueError):
        raise CertificateRejected("not an OpenSSH certificate") from None
    if key_type not in CERT_TYPES:
        raise CertificateRejected(f"unsupported key type {key_type[:60]!r}: needs a certificate")
    line = key_type.encode("ascii") + b" " + base64.b64encode(blob)
    try:
        loaded = serialization.load_ssh_public_identity(line)
    except Exception as exc:  # ValueError, UnsupportedAlgorithm: malformed or exotic
        raise CertificateRejected(f"malformed certificate ({type(exc).__name__})") from None
    if not isinstance(loaded, SSHCertificate):
        raise CertificateRejected("not an OpenSSH certificate")
    return loaded


def verify_user_certificate(
    blob: bytes, *, ca_public_key_blob: bytes, username: str, now: datetime
) -> VerifiedCertificate:
    """Check a certificate presented for login as `username`; CertificateRejected if not good.

    Accepts only a user certificate signed by the CA whose SSH wire public key is
    `ca_public_key_blob`, naming `username` among its principals, valid at `now`
    (valid_after <= now < valid_before), with no critical options (this endpoint
    enforces none, so it accepts none — as sshd refuses options it does not know) and a
    key id of the form `kaic:<user>:<serial>`.
    """
    cert = parse_certificate(blob)
    try:
        signer = ssh_blob(cert.signature_key())
    except Exception:
        raise CertificateRejected("certificate has an unusable CA key") from None
    if signer != ca_public_key_blob:
        raise CertificateRejected("certificate is not signed by this center's user CA")
    try:
        cert.verify_cert_signature()
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateRejected("certificate signature is invalid") from None
    if cert.type != SSHCertificateType.USER:
        raise CertificateRejected("not a user certificate")
    principals = tuple(p.decode("utf-8", "replace") for p in cert.valid_principals)
    if username not in principals:
        raise CertificateRejected(f"certificate is not valid for {username!r}")
    stamp = int(now.timestamp())
    if stamp < cert.valid_after:
        raise CertificateRejected("certificate is not yet valid")
    if stamp >= cert.valid_before:
        raise CertificateRejected("certificate has expired")
    if cert.critical_options:
        names = ", ".join(sorted(k.decode("utf-8", "replace") for k in cert.critical_options))
        raise CertificateRejected(f"certificate has critical options, refused: {names}")
    key_id = cert.key_id.decode("utf-8", "replace")
    parts = key_id.split(":")
    if len(parts) != 3 or not key_id.startswith(KEY_ID_PREFIX) or not parts[1]:
        raise CertificateRejected("certificate key id is not one this center issues")
    return VerifiedCertificate(
        user=parts[1],
        principals=principals,
        key_id=key_id,
        serial=cert.serial,
        # "forever" (2**64-1) is clamped to the year 9999, what datetime can hold
        valid_before=datetime.fromtimestamp(min(cert.valid_before, _YEAR_9999), timezone.utc),
        public_key_blob=ssh_blob(cert.public_key()),
    )
