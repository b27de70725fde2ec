"""The client's SSH key and certificate: created once, renewed when (nearly) expired."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from kaic.auth.credentials import Credentials
from kaic.auth.ssh import RENEW_MARGIN, SshIdentity, identity_dir, known_hosts_lines
from kaic.center.ssh_ca import UserCA
from kaic.client.api import CenterClient
from kaic.client.staging import staging_info
from kaic.errors import NotFound
from kaic.flows.session import Connector
from kaic.flows.ssh_target import ensure_identity, obtain_ssh_identity
from kaic.models.staging import StagingInfo

BASE = "https://center.test"
START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
VALIDITY = 3600
STAGING = {
    "host": "staging.test",
    "port": 2222,
    "username": "alice01",
    "host_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0 host@comment"],
    "roots": [{"name": "home", "path": "/home/alice01"}],
}


class FakeCenter:
    """Signs with a real UserCA at the fake time; counts certificate requests."""

    def __init__(self, state_dir: Path) -> None:
        self.ca = UserCA(state_dir)
        self.now = START
        self.signed = 0
        self.status: dict[str, int] = {}

    def clock(self) -> datetime:
        return self.now

    def __call__(self, request: httpx.Request) -> httpx.Response:
        status = self.status.get(request.url.path)
        if status is not None:
            error = {"code": "not_found" if status == 404 else "internal", "message": "no"}
            return httpx.Response(status, json={"error": {**error, "request_id": "r"}})
        if request.url.path == "/v1/staging":
            return httpx.Response(200, json=STAGING)
        if request.url.path == "/v1/ssh/certificates" and request.method == "POST":
            body = json.loads(request.content)
            self.signed += 1
            cert = self.ca.sign_user_key(
                body["public_key"],
                user="alice",
                principal="alice01",
                now=self.now,
                validity_seconds=VALIDITY,
            )
            return httpx.Response(201, json=cert.model_dump(mode="json"))
        return httpx.Response(404, json={"error": {"code": "not_found", "message": "?"}})

    def client(self, base: str = BASE) -> CenterClient:
        creds = Credentials(access_token="t", kind="api")
        return CenterClient(base, credentials=creds, transport=httpx.MockTransport(self))


@pytest.fixture
def fake(tmp_path: Path) -> FakeCenter:
    return FakeCenter(tmp_path / "center-state")


def _cert_serial(identity: SshIdentity) -> int:
    cert = serialization.load_ssh_public_identity(identity.cert_path.read_bytes())
    assert isinstance(cert, serialization.SSHCertificate)
    return cert.serial


def test_first_use_creates_key_and_certificate(fake: FakeCenter) -> None:
    with fake.client() as client:
        identity = ensure_identity(client, "prod", now=fake.clock)
    assert identity.key_path == identity_dir("prod") / "id_ed25519"
    assert identity.cert_path == identity_dir("prod") / "id_ed25519-cert.pub"
    assert identity.principal == "alice01"
    assert identity.valid_before == START + timedelta(seconds=VALIDITY)
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.cert_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(identity.key_path.parent.stat().st_mode) == 0o700
    assert identity.key_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    key = serialization.load_ssh_private_key(identity.key_path.read_bytes(), password=None)
    cert = serialization.load_ssh_public_identity(identity.cert_path.read_bytes())
    assert isinstance(cert, serialization.SSHCertificate)
    cert.verify_cert_signature()
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert cert.public_key().public_bytes(*raw) == key.public_key().public_bytes(*raw)
    assert fake.signed == 1


def test_no_profile_means_local(fake: FakeCenter) -> None:
    with fake.client() as client:
        identity = ensure_identity(client, None, now=fake.clock)
    assert identity.key_path.parent.name == "local"


def test_valid_certificate_is_reused(fake: FakeCenter) -> None:
    with fake.client() as client:
        first = ensure_identity(client, "prod", now=fake.clock)
        fake.now += timedelta(seconds=VALIDITY) - RENEW_MARGIN - timedelta(seconds=1)
        again = ensure_identity(client, "prod", now=fake.clock)
    assert again == first and fake.signed == 1


def test_nearly_expired_certificate_is_renewed(fake: FakeCenter) -> None:
    with fake.client() as client:
        first = ensure_identity(client, "prod", now=fake.clock)
        key = first.key_path.read_bytes()
        first_serial = _cert_serial(first)
        fake.now += timedelta(seconds=VALIDITY) - RENEW_MARGIN + timedelta(seconds=1)
        renewed = ensure_identity(client, "prod", now=fake.clock)
    assert fake.signed == 2
    assert renewed.valid_before > first.valid_before
    assert _cert_serial(renewed) > first_serial
    assert renewed.key_path.read_bytes() == key  # same key, new certificate


def test_expired_certificate_is_renewed_transparently(fake: FakeCenter) -> None:
    with fake.client() as client:
        ensure_identity(client, "prod", now=fake.clock)
        fake.now += timedelta(days=2)
        renewed = ensure_identity(client, "prod", now=fake.clock)
    assert renewed.valid_before == fake.now + timedelta(seconds=VALIDITY)
    assert fake.signed == 2


def test_certificate_of_another_key_or_garbage_is_replaced(fake: FakeCenter) -> None:
    with fake.client() as client:
        first = ensure_identity(client, "prod", now=fake.clock)
        other = ensure_identity(client, "other", now=fake.clock)
        first.cert_path.write_bytes(other.cert_path.read_bytes())
        ensure_identity(client, "prod", now=fake.clock)
        assert fake.signed == 3
        first.cert_path.write_text("garbage\n")
        ensure_identity(client, "prod", now=fake.clock)
        assert fake.signed == 4
        # A corrupt key is replaced by a new one (and a certificate for it).
        first.key_path.write_text("not a key\n")
        fresh = ensure_identity(client, "prod", now=fake.clock)
    assert fake.signed == 5
    assert fresh.key_path.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")


def test_certificate_from_another_center_is_replaced(fake: FakeCenter) -> None:
    # KAIC_TOKEN sessions have no profile and share the "local" directory.
    with fake.client() as client:
        first = ensure_identity(client, None, now=fake.clock)
        assert ensure_identity(client, None, now=fake.clock) == first
    with fake.client("https://other-center.test") as other:
        ensure_identity(other, None, now=fake.clock)
    assert fake.signed == 2


def test_loose_key_mode_is_tightened(fake: FakeCenter) -> None:
    with fake.client() as client:
        identity = ensure_identity(client, "prod", now=fake.clock)
        identity.key_path.chmod(0o644)
        ensure_identity(client, "prod", now=fake.clock)
    assert stat.S_IMODE(identity.key_path.stat().st_mode) == 0o600


def test_center_errors_propagate(fake: FakeCenter) -> None:
    fake.status["/v1/ssh/certificates"] = 404
    with fake.client() as client, pytest.raises(NotFound):
        ensure_identity(client, "prod", now=fake.clock)


def test_staging_info_and_known_hosts(fake: FakeCenter) -> None:
    with fake.client() as client:
        info = staging_info(client)
    assert info.username == "alice01" and info.roots[0].path == "/home/alice01"
    assert known_hosts_lines(info) == [
        "[staging.test]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0"
    ]
    default_port = StagingInfo(
        host="h.example",
        username="u",
        host_keys=["ssh-ed25519 AAAA1"],
        host_ca_keys=["ssh-ed25519 AAAA2 ca"],
    )
    assert known_hosts_lines(default_port) == [
        "h.example ssh-ed25519 AAAA1",
        "@cert-authority h.example ssh-ed25519 AAAA2",
    ]
    ipv6 = StagingInfo(host="::1", port=22, username="u", host_keys=["ssh-ed25519 AAAA1"])
    assert known_hosts_lines(ipv6) == ["::1 ssh-ed25519 AAAA1"]
    # ... and the connection side finds that key for the host (the two forms agree).
    from kaic.staging.connect import SshTarget, parse_known_hosts

    target = SshTarget("::1", 22, "u", "k", None, [])
    assert [k.key_b64 for k in parse_known_hosts(known_hosts_lines(ipv6), target)] == ["AAAA1"]


def _login_identity(fake: FakeCenter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setattr(
        "kaic.client.api.httpx.Client.__init__",
        _with_transport(httpx.MockTransport(fake)),
    )
    warnings: list[str] = []
    creds = Credentials(access_token="t", refresh_token="r", kind="session")
    obtain_ssh_identity(BASE, creds, "prod", Connector(warn=warnings.append))
    return warnings


def _with_transport(transport: httpx.BaseTransport) -> Callable[..., None]:
    original = httpx.Client.__init__

    def init(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        kwargs["transport"] = transport
        original(self, *args, **kwargs)

    return init


def test_login_gets_a_certificate_best_effort(
    fake: FakeCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _login_identity(fake, monkeypatch) == []
    assert fake.signed == 1 and (identity_dir("prod") / "id_ed25519-cert.pub").exists()


def test_login_skips_a_center_without_staging(
    fake: FakeCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.status["/v1/staging"] = 404
    assert _login_identity(fake, monkeypatch) == []
    assert fake.signed == 0 and not identity_dir("prod").exists()


def test_login_warns_once_on_other_failures(
    fake: FakeCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.status["/v1/ssh/certificates"] = 500
    warnings = _login_identity(fake, monkeypatch)
    assert len(warnings) == 1 and warnings[0].startswith("no SSH certificate for data staging")
