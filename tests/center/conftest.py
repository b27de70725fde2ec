"""Fixtures for center tests: a settable clock, an app over a temp state dir, users."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kaic.center import security
from kaic.center.admin import add_project, add_user
from kaic.center.app import create_app
from kaic.center.settings import CenterSettings

PASSWORD = "correct horse battery staple"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.current = start or datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.current

    def advance(self, seconds: float) -> None:
        self.current += timedelta(seconds=seconds)


@dataclass
class Center:
    """An app under test plus the handles tests need."""

    app: FastAPI
    client: TestClient
    settings: CenterSettings
    clock: FakeClock

    def client_from(self, ip: str) -> TestClient:
        """Another client on the same app that appears to come from `ip`."""
        return TestClient(self.app, client=(ip, 50000))

    def login(self, user: str = "alice", password: str = PASSWORD, **extra: Any) -> dict[str, Any]:
        response = self.client.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": user, "password": password, **extra},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Check the one error shape and the request-id header; returns the error body."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "request_id"}
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


@pytest.fixture(autouse=True)
def _fast_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Production cost (n=2**14, ~50 ms) on every login would make these tests slow; the
    # parameters travel inside each hash, so a cheaper n exercises the same code.
    monkeypatch.setattr(security, "SCRYPT_N", 2**10)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, clock: FakeClock) -> CenterSettings:
    # Several users on the center's own account (root, when the tests run as root): what
    # these tests exercise is the API, not the account switch (tests/e2e/test_run_as_user.py).
    return CenterSettings(state_dir=tmp_path / "state", now=clock, single_account_ok=True)


@pytest.fixture
def center(settings: CenterSettings, clock: FakeClock) -> Iterator[Center]:
    add_user(
        settings.state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account="alice01"
    )
    add_user(settings.state_dir, "bob", password=PASSWORD, enable_otp=False, unix_account=None)
    add_project(settings.state_dir, "ai-2026-0042", gpu_hours=100.0, members=["alice"])
    app = create_app(settings)
    with TestClient(app) as client:
        yield Center(app=app, client=client, settings=settings, clock=clock)
