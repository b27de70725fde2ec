"""`serve()`: loopback only, ready file, local-center token, real HTTP in a subprocess."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from kaic.center.admin import add_user
from kaic.center.app import create_app
from kaic.center.listen import loopback_bind_address
from kaic.center.server import prepare_local_center, serve
from kaic.center.settings import CenterSettings
from kaic.models import SCOPES

from .conftest import PASSWORD, FakeClock, assert_error, bearer

START_DEADLINE_S = 20.0


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "localhost"])
def test_loopback_hosts_are_accepted(host: str) -> None:
    assert loopback_bind_address(host) in {"127.0.0.1", "127.3.2.1", "::1"}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.1", "example.com", ""])
def test_other_hosts_are_refused(tmp_path: Path, host: str) -> None:
    ready = tmp_path / "ready"
    settings = CenterSettings(state_dir=tmp_path / "state", host=host, port=0)
    with pytest.raises(ValueError, match="loopback"):
        serve(settings, ready_file=ready)
    assert not ready.exists()


def test_local_center_token_file(tmp_path: Path) -> None:
    clock = FakeClock()
    settings = CenterSettings(state_dir=tmp_path / "state", local_user="carol", now=clock)
    app = create_app(settings)
    with TestClient(app) as client:
        path = prepare_local_center(app.state.store, settings)
        assert path == settings.state_dir / "local-token"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        first = json.loads(path.read_text())
        assert set(first) == {"token", "user", "expires_at"}
        assert first["user"] == "carol"
        assert first["token"].startswith("kaic_")
        me = client.get("/v1/me", headers=bearer(first["token"])).json()
        assert me["token_kind"] == "local"
        assert me["unix_account"] == "carol"
        assert me["projects"] == [{"name": "local", "role": "member"}]
        assert me["scopes"] == list(SCOPES)  # a local token acts with every scope
        assert (
            client.get("/v1/projects", headers=bearer(first["token"])).json()[0][
                "gpu_hours_granted"
            ]
            == 1e6
        )
        # A local token manages API tokens like a session does.
        created = client.post("/v1/tokens", json={"name": "ci"}, headers=bearer(first["token"]))
        assert created.status_code == 201

        # A restart revokes the old local token and writes a new one.
        prepare_local_center(app.state.store, settings)
        second = json.loads(path.read_text())
        assert second["token"] != first["token"]
        assert_error(client.get("/v1/me", headers=bearer(first["token"])), 401, "invalid_token")
        assert client.get("/v1/me", headers=bearer(second["token"])).status_code == 200
        # The local user has no password, so the password grant cannot reach it.
        response = client.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": "carol", "password": ""},
        )
        assert_error(response, 401, "invalid_credentials")
        assert client.get("/v1/health").json()["local"] is True

        # A restart for another local user leaves only the new user's token alive.
        settings.local_user = "dave"
        third = json.loads(prepare_local_center(app.state.store, settings).read_text())
        assert third["user"] == "dave"
        assert_error(client.get("/v1/me", headers=bearer(second["token"])), 401, "invalid_token")
        assert client.get("/v1/me", headers=bearer(third["token"])).json()["user"] == "dave"


def _wait_for_file(path: Path, proc: subprocess.Popen[bytes], stderr: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            return data
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {stderr.read_text()}")
        time.sleep(0.02)
    pytest.fail(f"no ready file within {START_DEADLINE_S} s: {stderr.read_text()}")


def _wait_for_exit(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout)


@pytest.fixture
def real_center(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path, Path]]:
    state = tmp_path / "state"
    ready = tmp_path / "run" / "ready.json"
    ready.parent.mkdir()
    stderr = tmp_path / "center.log"
    add_user(state, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kaic.center",
                "--state-dir",
                str(state),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                "--local-user",
                "carol",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        yield proc, state, ready, stderr
    finally:
        # Only the process this test started, by its PID.
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        _wait_for_exit(proc)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_serve_for_real(
    real_center: tuple[subprocess.Popen[bytes], Path, Path, Path], stop_signal: signal.Signals
) -> None:
    proc, state, ready, stderr = real_center
    info = _wait_for_file(ready, proc, stderr)
    assert set(info) == {"pid", "port", "url", "instance_id", "started_at", "sftp_port"}
    assert info["pid"] == proc.pid
    assert isinstance(info["sftp_port"], int) and info["sftp_port"] > 0  # the local center's
    assert info["url"] == f"http://127.0.0.1:{info['port']}"
    # The token file is written before the ready file.
    token_file = state / "local-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    local_token = json.loads(token_file.read_text())["token"]

    with httpx.Client(base_url=info["url"], timeout=10) as http:
        health = http.get("/v1/health")
        assert health.status_code == 200
        assert health.headers["X-Request-ID"]
        assert health.json()["instance_id"] == info["instance_id"]
        assert health.json()["local"] is True

        login = http.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": "alice", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        me = http.get("/v1/me", headers=bearer(login.json()["access_token"]))
        assert me.json()["user"] == "alice"
        assert http.get("/v1/me", headers=bearer(local_token)).json()["token_kind"] == "local"

    os.kill(proc.pid, stop_signal)
    assert _wait_for_exit(proc) == 0
    assert not ready.exists()
    log = stderr.read_text()
    # Secrets stay out of the log.
    assert local_token not in log
    assert PASSWORD not in log
    assert login.json()["access_token"] not in log
