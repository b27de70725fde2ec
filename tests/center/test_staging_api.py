"""`GET /v1/staging`, `POST /v1/ssh/certificates`, `GET /v1/files/checksum`."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient

from kaic.center.admin import add_user
from kaic.center.app import create_app
from kaic.center.settings import CenterSettings

from .conftest import PASSWORD, Center, FakeClock, assert_error, bearer

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0ZXN0aG9zdGtleXRlc3Rob3N0a2V5dGVzdGhvc3Q"


@pytest.fixture
def settings(tmp_path: Path, clock: FakeClock) -> CenterSettings:
    return CenterSettings(
        state_dir=tmp_path / "state",
        now=clock,
        staging_host="staging.example",
        staging_port=2222,
        staging_host_keys=[HOST_KEY],
        ssh_cert_validity=6 * 3600,
    )


def _session(center: Center, user: str = "alice") -> dict[str, str]:
    return bearer(center.login(user)["access_token"])


def _api_token(center: Center, scopes: list[str]) -> dict[str, str]:
    response = center.client.post(
        "/v1/tokens", json={"name": "ci", "scopes": scopes}, headers=_session(center)
    )
    assert response.status_code == 201, response.text
    return bearer(response.json()["token"])


def _public_line(key: object | None = None) -> str:
    key = key or ed25519.Ed25519PrivateKey.generate()
    raw: bytes = key.public_key().public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return raw.decode()


def test_staging_info(center: Center) -> None:
    response = center.client.get("/v1/staging", headers=_session(center))
    assert response.status_code == 200, response.text
    info = response.json()
    home = str(center.settings.state_dir / "storage" / "alice")
    assert info == {
        "host": "staging.example",
        "port": 2222,
        "username": "alice01",
        "host_keys": [HOST_KEY],
        "host_ca_keys": [],
        "roots": [{"name": "home", "path": home}],
        "certificates": True,
    }
    assert Path(home).is_dir()


def test_storage_root_template(tmp_path: Path, clock: FakeClock) -> None:
    settings = CenterSettings(
        state_dir=tmp_path / "state",
        now=clock,
        staging_host="127.0.0.1",
        storage_root=str(tmp_path / "home" / "{unix_account}"),
    )
    add_user(settings.state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account="a1")
    app = create_app(settings)
    with TestClient(app) as client:
        center = Center(app, client, settings, clock)
        info = client.get("/v1/staging", headers=_session(center)).json()
    assert info["roots"] == [{"name": "home", "path": str(tmp_path / "home" / "a1")}]
    assert info["port"] == 22 and info["username"] == "a1"


@pytest.mark.parametrize("template", ["home/{user}", "/home/{uid}", "/home/{user!r}"])
def test_bad_storage_root_template(tmp_path: Path, template: str) -> None:
    with pytest.raises(ValueError, match="storage root"):
        CenterSettings(state_dir=tmp_path, storage_root=template)


def test_no_staging_endpoint(tmp_path: Path, clock: FakeClock) -> None:
    settings = CenterSettings(state_dir=tmp_path / "state", now=clock)
    add_user(settings.state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    app = create_app(settings)
    with TestClient(app) as client:
        center = Center(app, client, settings, clock)
        error = assert_error(client.get("/v1/staging", headers=_session(center)), 404, "not_found")
    assert error["message"] == "this center has no staging endpoint"


def test_local_center_stages_on_loopback(tmp_path: Path, clock: FakeClock) -> None:
    settings = CenterSettings(state_dir=tmp_path / "state", now=clock, local_user="me")
    add_user(settings.state_dir, "me", password=PASSWORD, enable_otp=False, unix_account=None)
    app = create_app(settings)
    with TestClient(app) as client:
        center = Center(app, client, settings, clock)
        info = client.get("/v1/staging", headers=_session(center, "me")).json()
    assert info["host"] == "127.0.0.1" and info["username"] == "me"


def test_sign_certificate(center: Center) -> None:
    response = center.client.post(
        "/v1/ssh/certificates", json={"public_key": _public_line()}, headers=_session(center)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["principals"] == ["alice01"]
    assert body["key_id"] == f"kaic:alice:{body['serial']}"
    now = center.clock()
    assert datetime.fromisoformat(body["valid_after"]) == now - timedelta(minutes=1)
    assert datetime.fromisoformat(body["valid_before"]) == now + timedelta(hours=6)
    cert = serialization.load_ssh_public_identity(body["certificate"].encode())
    assert isinstance(cert, serialization.SSHCertificate)
    cert.verify_cert_signature()
    assert cert.valid_principals == [b"alice01"]


def test_requested_validity_is_capped(center: Center) -> None:
    headers = _session(center)
    short = center.client.post(
        "/v1/ssh/certificates",
        json={"public_key": _public_line(), "validity_seconds": 600},
        headers=headers,
    ).json()
    long = center.client.post(
        "/v1/ssh/certificates",
        json={"public_key": _public_line(), "validity_seconds": 7 * 86400},
        headers=headers,
    ).json()
    now = center.clock()
    assert datetime.fromisoformat(short["valid_before"]) == now + timedelta(seconds=600)
    assert datetime.fromisoformat(long["valid_before"]) == now + timedelta(hours=6)
    assert long["serial"] > short["serial"]


@pytest.mark.parametrize(
    "public_key",
    [
        "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
        "not a key",
        "ssh-ed25519 AAAA",
        "",
    ],
)
def test_unacceptable_public_keys(center: Center, public_key: str) -> None:
    response = center.client.post(
        "/v1/ssh/certificates", json={"public_key": public_key}, headers=_session(center)
    )
    assert_error(response, 422, "invalid_request")


def test_weak_rsa_is_refused(center: Center) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    response = center.client.post(
        "/v1/ssh/certificates", json={"public_key": _public_line(weak)}, headers=_session(center)
    )
    error = assert_error(response, 422, "invalid_request")
    assert "too weak" in error["message"]


def test_scopes(center: Center) -> None:
    reader = _api_token(center, ["jobs:read"])
    files = _api_token(center, ["files"])
    key = {"public_key": _public_line()}
    assert_error(
        center.client.post("/v1/ssh/certificates", json=key, headers=reader),
        403,
        "insufficient_scope",
    )
    assert_error(center.client.get("/v1/staging", headers=reader), 403, "insufficient_scope")
    assert_error(
        center.client.get("/v1/files/checksum", params={"path": "x"}, headers=reader),
        403,
        "insufficient_scope",
    )
    assert center.client.post("/v1/ssh/certificates", json=key, headers=files).status_code == 201
    assert center.client.get("/v1/staging", headers=files).status_code == 200
    for response in (
        center.client.post("/v1/ssh/certificates", json=key),
        center.client.get("/v1/staging"),
        center.client.get("/v1/files/checksum", params={"path": "x"}),
    ):
        assert_error(response, 401, "invalid_token")


def _home(center: Center, user: str) -> Path:
    home = center.settings.state_dir / "storage" / user
    home.mkdir(parents=True, exist_ok=True)
    return home


def test_checksum(center: Center) -> None:
    home = _home(center, "alice")
    (home / "data").mkdir()
    (home / "data" / "x.bin").write_bytes(b"hello\n")
    expected = hashlib.sha256(b"hello\n").hexdigest()
    headers = _session(center)
    for path in ("data/x.bin", "~/data/x.bin", str(home / "data" / "x.bin")):
        response = center.client.get("/v1/files/checksum", params={"path": path}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {
            "path": str(home / "data" / "x.bin"),
            "size": 6,
            "sha256": expected,
        }
    response = center.client.get("/v1/files/checksum", params={"path": "data"}, headers=headers)
    assert_error(response, 422, "invalid_request")


def test_checksum_never_reveals_other_files(center: Center, tmp_path: Path) -> None:
    alice_home = _home(center, "alice")
    bob_home = _home(center, "bob")
    (bob_home / "bobs.txt").write_text("bob's\n")
    (alice_home / "to-bob").symlink_to(bob_home / "bobs.txt")
    headers = _session(center, "alice")
    messages = set()
    for path in (
        str(bob_home / "bobs.txt"),
        "../bob/bobs.txt",
        "to-bob",
        "/etc/passwd",
        "~bob/bobs.txt",
        "missing.txt",
    ):
        response = center.client.get("/v1/files/checksum", params={"path": path}, headers=headers)
        error = assert_error(response, 404, "not_found")
        messages.add(error["message"].replace(path, "<path>"))
    # Outside and missing read the same: the answer says nothing about what exists elsewhere.
    assert messages == {"no such file in your storage: <path>"}
    # Bob himself can checksum his file.
    response = center.client.get(
        "/v1/files/checksum", params={"path": "bobs.txt"}, headers=_session(center, "bob")
    )
    assert response.status_code == 200


def test_module_entry_point_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kaic.center import __main__ as entry

    key_file = tmp_path / "ssh_host_ed25519_key.pub"
    key_file.write_text(_public_line() + " root@host\n")
    served: list[CenterSettings] = []
    monkeypatch.setattr(entry, "serve", lambda settings, ready_file: served.append(settings))
    common = ["--state-dir", str(tmp_path / "s"), "--staging-host", "127.0.0.1"]
    port = ["--staging-port", "2222"]
    root = ["--storage-root", "/home/{unix_account}"]
    entry.main([*common, *port, "--staging-host-key", str(key_file), *root])
    (settings,) = served
    assert settings.staging_port == 2222 and settings.storage_root == "/home/{unix_account}"
    assert settings.staging_host_keys == [" ".join(key_file.read_text().split()[:2])]
    for bad in (["--storage-root", "relative/{user}"], ["--staging-host-key", str(tmp_path)]):
        with pytest.raises(SystemExit) as exc:
            entry.main([*common, *bad])
        assert exc.value.code == 2


def _root_mapped_user(state_dir: Path, name: str) -> None:
    """A user an old database maps to root (today `user add` refuses that)."""
    from kaic.center.security import hash_password
    from kaic.center.store import Store

    store = Store(state_dir)
    try:
        store.create_user(name, unix_account="root", password_hash=hash_password(PASSWORD))
    finally:
        store.close()


def test_no_certificate_for_a_user_mapped_to_root(tmp_path: Path, clock: FakeClock) -> None:
    settings = CenterSettings(state_dir=tmp_path / "state", now=clock, staging_host="h")
    _root_mapped_user(settings.state_dir, "ops")
    app = create_app(settings)
    with TestClient(app) as client:
        center = Center(app, client, settings, clock)
        response = client.post(
            "/v1/ssh/certificates",
            json={"public_key": _public_line()},
            headers=_session(center, "ops"),
        )
    error = assert_error(response, 403, "forbidden")
    assert "root" in error["message"] and "ops" in error["message"]


@pytest.mark.parametrize("center_runs_as_root", [True, False])
def test_local_center_run_as_root_signs_for_its_own_user(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch, center_runs_as_root: bool
) -> None:
    """kaic run as root gets a local center whose user is root: its certificates give it
    nothing it does not have, so they are signed — for that user, as the center's account."""
    import kaic.center.accounts

    monkeypatch.setattr(
        kaic.center.accounts.os, "geteuid", lambda: 0 if center_runs_as_root else 4242
    )
    settings = CenterSettings(state_dir=tmp_path / "state", now=clock, local_user="root")
    _root_mapped_user(settings.state_dir, "root")
    _root_mapped_user(settings.state_dir, "ops")
    app = create_app(settings)
    with TestClient(app) as client:
        center = Center(app, client, settings, clock)
        own = client.post(
            "/v1/ssh/certificates",
            json={"public_key": _public_line()},
            headers=_session(center, "root"),
        )
        other = client.post(
            "/v1/ssh/certificates",
            json={"public_key": _public_line()},
            headers=_session(center, "ops"),
        )
    assert own.status_code == (201 if center_runs_as_root else 403), own.text
    assert_error(other, 403, "forbidden")
