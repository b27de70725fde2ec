"""The checksum API of a `--run-as-user` center reads with the user's own rights.

Such a center runs as root; hashing as root would tell a user the sha256 of a file in their
storage they cannot read (a root-owned 0600 file, one in a directory closed to them). So it
hashes in a helper process running as the user's unix account, and the kernel decides.

Needs root and a real account (tests/e2e/test_sftp_as_users.py's, created if missing):
skipped otherwise, failed when `CI=true`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kaic.center.admin import add_user
from kaic.center.app import create_app
from kaic.center.settings import CenterSettings
from tests.e2e.test_sftp_as_users import ensure_account

from .conftest import PASSWORD, Center, FakeClock, bearer
from .test_sftp_byte_names import ACCOUNT, account_storage


@pytest.fixture
def center(tmp_path: Path, clock: FakeClock) -> Iterator[Center]:
    with account_storage("a --run-as-user center") as template:
        settings = CenterSettings(
            state_dir=tmp_path / "state", now=clock, run_as_users=True, storage_root=template
        )
        add_user(
            settings.state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account=ACCOUNT
        )
        add_user(
            settings.state_dir,
            "ghost",
            password=PASSWORD,
            enable_otp=False,
            unix_account="kaic-no-such-account",
        )
        app = create_app(settings)
        with TestClient(app) as client:
            yield Center(app=app, client=client, settings=settings, clock=clock)


def _home(center: Center) -> Path:
    return center.settings.storage_root_for("alice", ACCOUNT)


def _write(path: Path, data: bytes, *, mode: int, owner: str | None) -> None:
    path.write_bytes(data)
    path.chmod(mode)
    if owner is not None:
        entry = ensure_account(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def test_only_what_the_user_may_read_is_hashed(center: Center) -> None:
    home = _home(center)
    account = ensure_account(ACCOUNT)
    _write(home / "mine.txt", b"mine\n", mode=0o644, owner=ACCOUNT)
    _write(home / "roots-secret", b"root only\n", mode=0o600, owner=None)
    _write(home / "unreadable-own", b"mode 0\n", mode=0o000, owner=ACCOUNT)
    closed = home / "closed"
    closed.mkdir(mode=0o700)  # root's
    _write(closed / "inner.txt", b"world-readable, closed directory\n", mode=0o644, owner=None)
    (home / "to-passwd").symlink_to("/etc/passwd")  # readable by the user, but outside
    (home / "sub").mkdir()
    os.chown(home / "sub", account.pw_uid, account.pw_gid)
    headers = bearer(center.login("alice")["access_token"])

    single = center.client.get("/v1/files/checksum", params={"path": "mine.txt"}, headers=headers)
    assert single.status_code == 200, single.text
    assert single.json() == {
        "path": str(home / "mine.txt"),
        "size": 5,
        "sha256": hashlib.sha256(b"mine\n").hexdigest(),
    }
    refused = ["roots-secret", "unreadable-own", "closed/inner.txt", "to-passwd", "/etc/passwd"]
    for path in refused:
        response = center.client.get("/v1/files/checksum", params={"path": path}, headers=headers)
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]["message"] == f"no such file in your storage: {path}"

    # the batch: one helper for all of them, each answered as the single route answers it
    batch = center.client.post(
        "/v1/files/checksums", json={"paths": [*refused, "mine.txt", "sub"]}, headers=headers
    )
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    for path, result in zip(refused, results, strict=False):
        assert result["sha256"] is None and result["error"]["code"] == "not_found", path
    assert results[-2]["sha256"] == hashlib.sha256(b"mine\n").hexdigest()
    assert results[-1]["error"]["code"] == "invalid_request"  # a directory, not a file


def test_a_user_whose_account_does_not_exist_reads_nothing(center: Center) -> None:
    headers = bearer(center.login("ghost")["access_token"])
    response = center.client.post("/v1/files/checksums", json={"paths": ["x"]}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["error"]["code"] == "not_found"
