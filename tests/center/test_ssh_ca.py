"""The center's SSH user CA: key file, certificates as OpenSSH reads them, accepted keys."""

from __future__ import annotations

import shutil
import stat
import subprocess
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

from kaic.center.ssh_ca import (
    ForbiddenPrincipal,
    UnacceptableKey,
    UserCA,
    parse_user_public_key,
    read_host_key_files,
)
from tests.helpers import unavailable

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def openssh_line(key: object) -> str:
    public = key.public_key()  # type: ignore[attr-defined]
    raw: bytes = public.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode() + " someone@laptop"


def ed25519_line() -> str:
    return openssh_line(ed25519.Ed25519PrivateKey.generate())


def test_ca_key_created_once_with_mode_0600(tmp_path: Path) -> None:
    ca = UserCA(tmp_path)
    line = ca.public_key_line()
    assert line.startswith("ssh-ed25519 ") and line.endswith(" kaic-user-ca")
    assert stat.S_IMODE(ca.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ca.key_path.parent.stat().st_mode) == 0o700
    # Another instance over the same state dir (a restarted center) uses the same key.
    assert UserCA(tmp_path).public_key_line() == line


def test_certificate_fields_and_signature(tmp_path: Path) -> None:
    ca = UserCA(tmp_path)
    cert = ca.sign_user_key(
        ed25519_line(), user="alice", principal="alice01", now=NOW, validity_seconds=3600
    )
    assert cert.principals == ["alice01"]
    assert cert.key_id == f"kaic:alice:{cert.serial}"
    assert cert.valid_after == NOW - timedelta(minutes=1)
    assert cert.valid_before == NOW + timedelta(hours=1)
    assert cert.certificate.startswith("ssh-ed25519-cert-v01@openssh.com ")

    parsed = serialization.load_ssh_public_identity(cert.certificate.encode())
    assert isinstance(parsed, serialization.SSHCertificate)
    parsed.verify_cert_signature()
    assert parsed.type == serialization.SSHCertificateType.USER
    assert parsed.valid_principals == [b"alice01"]
    assert set(parsed.extensions) == {b"permit-pty", b"permit-user-rc"}
    assert parsed.critical_options == {}
    ca_public = ca.private_key().public_key()
    signer = parsed.signature_key()
    assert isinstance(signer, ed25519.Ed25519PublicKey)
    assert signer.public_bytes_raw() == ca_public.public_bytes_raw()


def test_no_certificate_names_root(tmp_path: Path) -> None:
    principal = "root"
    ca = UserCA(tmp_path)
    with pytest.raises(ForbiddenPrincipal, match="root"):
        ca.sign_user_key(
            ed25519_line(), user="ops", principal=principal, now=NOW, validity_seconds=60
        )
    # Only when the caller says the account is the center's own (the local center).
    cert = ca.sign_user_key(
        ed25519_line(),
        user="ops",
        principal=principal,
        now=NOW,
        validity_seconds=60,
        allow_root=True,
    )
    assert cert.principals == [principal]


def test_ssh_keygen_reads_the_certificate(tmp_path: Path) -> None:
    if shutil.which("ssh-keygen") is None:
        unavailable("needs ssh-keygen (apt-get install openssh-client)")
    ca = UserCA(tmp_path / "state")
    cert = ca.sign_user_key(
        ed25519_line(), user="alice", principal="alice01", now=NOW, validity_seconds=12 * 3600
    )
    path = tmp_path / "id_ed25519-cert.pub"
    path.write_text(cert.certificate + "\n")
    out = subprocess.run(
        ["ssh-keygen", "-L", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert "user certificate" in out
    assert f'Key ID: "kaic:alice:{cert.serial}"' in out
    assert f"Serial: {cert.serial}" in out
    principals = out.split("Principals:")[1].split("Critical Options:")[0].split()
    assert principals == ["alice01"]
    # ssh-keygen prints validity in local time; TZ=UTC in the env would be needed to compare
    # the clock time, so compare the span instead.
    valid = out.split("Valid: from ")[1].splitlines()[0]
    start, end = (datetime.fromisoformat(part) for part in valid.split(" to "))
    assert end - start == timedelta(hours=12, minutes=1)
    extensions = out.split("Extensions:")[1].split()
    assert extensions == ["permit-pty", "permit-user-rc"]
    assert "agent" not in out and "port-forwarding" not in out
    ca_fingerprint = subprocess.run(
        ["ssh-keygen", "-l", "-f", "/dev/stdin"],
        input=ca.public_key_line(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[1]
    assert f"Signing CA: ED25519 {ca_fingerprint}" in out


def test_serials_increase_across_instances(tmp_path: Path) -> None:
    serials = [
        UserCA(tmp_path)
        .sign_user_key(ed25519_line(), user="bob", principal="bob", now=NOW, validity_seconds=60)
        .serial
        for _ in range(3)
    ]
    assert serials == sorted(serials) and len(set(serials)) == 3 and serials[0] >= 1


@pytest.mark.parametrize(
    "make",
    [
        lambda: ec.generate_private_key(ec.SECP256R1()),
        lambda: ec.generate_private_key(ec.SECP384R1()),
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        lambda: ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p256", "p384", "rsa2048", "ed25519"],
)
def test_accepted_key_types(make: object) -> None:
    parse_user_public_key(openssh_line(make()))  # type: ignore[operator]


def test_rejected_keys(tmp_path: Path) -> None:
    weak_rsa = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(UnacceptableKey, match="too weak"):
        parse_user_public_key(openssh_line(weak_rsa))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # cryptography deprecates DSA
        dsa_line = openssh_line(dsa.generate_private_key(key_size=1024))
    with pytest.raises(UnacceptableKey, match="unsupported public key type 'ssh-dss'"):
        parse_user_public_key(dsa_line)
    for junk in ("", "hello", "ssh-ed25519 !!!notbase64", ed25519_line() + "\n" + ed25519_line()):
        with pytest.raises(UnacceptableKey):
            parse_user_public_key(junk)
    cert = UserCA(tmp_path).sign_user_key(
        ed25519_line(), user="a", principal="a", now=NOW, validity_seconds=60
    )
    with pytest.raises(UnacceptableKey, match="not a certificate"):
        parse_user_public_key(cert.certificate)


def test_read_host_key_files(tmp_path: Path) -> None:
    one = tmp_path / "ssh_host_ed25519_key.pub"
    line = ed25519_line()
    one.write_text(line + "\n")
    two = tmp_path / "more.pub"
    two.write_text("# comment\n\n" + openssh_line(ec.generate_private_key(ec.SECP256R1())))
    keys = read_host_key_files([one, two, one])
    assert keys[0] == " ".join(line.split()[:2]) and len(keys) == 2
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key\n")
    with pytest.raises(ValueError, match=r"bad\.pub:1"):
        read_host_key_files([bad])
    with pytest.raises(ValueError, match="cannot read"):
        read_host_key_files([tmp_path / "missing.pub"])
