"""The embedded SFTP endpoint's certificate check: only valid user certificates of our CA."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    SSHCertificateBuilder,
    SSHCertificateType,
)

from kaic.center.sftp.certs import (
    CertificateRejected,
    verify_user_certificate,
)
from kaic.center.ssh_ca import UserCA

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def _wire(public_key: object) -> bytes:
    line = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return base64.b64decode(line.split()[1])


def _line(public_key: object) -> str:
    raw: bytes = public_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode()


def _blob(certificate_line: str) -> bytes:
    return base64.b64decode(certificate_line.split()[1])


@pytest.fixture
def ca(tmp_path: Path) -> UserCA:
    return UserCA(tmp_path / "center")


def _ca_blob(ca: UserCA) -> bytes:
    return _wire(ca.private_key().public_key())


def _issue(
    ca: UserCA, *, principal: str = "alice01", now: datetime = NOW, seconds: int = 600
) -> tuple[ed25519.Ed25519PrivateKey, bytes]:
    user_key = ed25519.Ed25519PrivateKey.generate()
    signed = ca.sign_user_key(
        _line(user_key.public_key()),
        user="alice",
        principal=principal,
        now=now,
        validity_seconds=seconds,
    )
    return user_key, _blob(signed.certificate)


def _verify(ca: UserCA, blob: bytes, *, username: str = "alice01", now: datetime = NOW):  # type: ignore[no-untyped-def]
    return verify_user_certificate(
        blob, ca_public_key_blob=_ca_blob(ca), username=username, now=now
    )


def test_valid_certificate(ca: UserCA) -> None:
    user_key, blob = _issue(ca)
    verified = _verify(ca, blob)
    assert verified.user == "alice"
    assert verified.principals == ("alice01",)
    assert verified.key_id == f"kaic:alice:{verified.serial}"
    assert verified.public_key_blob == _wire(user_key.public_key())
    assert verified.valid_before == NOW + timedelta(seconds=600)


def test_validity_window(ca: UserCA) -> None:
    _key, blob = _issue(ca, seconds=600)
    # valid_after is a minute before issuance (clock skew); valid_before is exclusive
    _verify(ca, blob, now=NOW - timedelta(seconds=60))
    _verify(ca, blob, now=NOW + timedelta(seconds=599))
    with pytest.raises(CertificateRejected, match="expired"):
        _verify(ca, blob, now=NOW + timedelta(seconds=600))
    with pytest.raises(CertificateRejected, match="not yet valid"):
        _verify(ca, blob, now=NOW - timedelta(seconds=61))


def test_wrong_principal(ca: UserCA) -> None:
    _key, blob = _issue(ca, principal="bob02")
    with pytest.raises(CertificateRejected, match="not valid for 'alice01'"):
        _verify(ca, blob)


def test_foreign_ca(ca: UserCA, tmp_path: Path) -> None:
    other = UserCA(tmp_path / "other-center")
    _key, blob = _issue(other)
    with pytest.raises(CertificateRejected, match="not signed by this center"):
        _verify(ca, blob)


def _build(ca: UserCA, **changes: object) -> bytes:
    user_key = ed25519.Ed25519PrivateKey.generate()
    builder = (
        SSHCertificateBuilder()
        .public_key(user_key.public_key())
        .serial(7)
        .type(changes.get("type", SSHCertificateType.USER))  # type: ignore[arg-type]
        .key_id(changes.get("key_id", b"kaic:alice:7"))  # type: ignore[arg-type]
        .valid_after(int(NOW.timestamp()) - 60)
        .valid_before(int(NOW.timestamp()) + 600)
    )
    if changes.get("all_principals"):
        builder = builder.valid_for_all_principals()
    else:
        builder = builder.valid_principals([b"alice01"])
    for name, value in changes.get("critical", {}).items():  # type: ignore[attr-defined]
        builder = builder.add_critical_option(name, value)
    return _blob(builder.sign(ca.private_key()).public_bytes().decode())


def test_host_certificate_is_not_a_user_certificate(ca: UserCA) -> None:
    blob = _build(ca, type=SSHCertificateType.HOST)
    with pytest.raises(CertificateRejected, match="not a user certificate"):
        _verify(ca, blob)


def test_unknown_critical_option(ca: UserCA) -> None:
    blob = _build(ca, critical={b"force-command": b"/bin/true"})
    with pytest.raises(CertificateRejected, match=r"critical options.*force-command"):
        _verify(ca, blob)
    # the same certificate without the option passes
    _verify(ca, _build(ca))


def test_key_id_not_from_this_center(ca: UserCA) -> None:
    with pytest.raises(CertificateRejected, match="key id"):
        _verify(ca, _build(ca, key_id=b"someone-else"))


def test_tampered_signature(ca: UserCA) -> None:
    _key, blob = _issue(ca)
    tampered = blob[:-1] + bytes([blob[-1] ^ 0x01])
    with pytest.raises(CertificateRejected, match="signature is invalid"):
        _verify(ca, tampered)


def test_tampered_principal(ca: UserCA) -> None:
    _key, blob = _issue(ca, principal="bob0001")
    # same length, so the blob still parses; the CA signature no longer matches
    forged = blob.replace(b"bob0001", b"alice01")
    assert forged != blob
    with pytest.raises(CertificateRejected, match="signature is invalid"):
        _verify(ca, forged)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x00\x00\x00\x0bssh-ed25519" + b"\x00" * 36,
        _wire(ec.generate_private_key(ec.SECP256R1()).public_key()),
        b"\x00\x00\x00\x20ssh-ed25519-cert-v01@openssh.com" + b"garbage",
    ],
    ids=["empty", "plain-ed25519", "plain-ecdsa", "truncated-cert"],
)
def test_not_a_certificate(ca: UserCA, blob: bytes) -> None:
    with pytest.raises(CertificateRejected):
        _verify(ca, blob)


def test_no_principals_is_not_any_principal(ca: UserCA) -> None:
    # OpenSSH reads an empty principal list as "any user"; this endpoint refuses it.
    with pytest.raises(CertificateRejected, match="not valid for"):
        _verify(ca, _build(ca, all_principals=True))
