"""Helpers for the jobs tests: a center with real job processes, tokens, polling.

Every center built here kills the process groups of its jobs when the test ends, whether
the jobs finished or not (a crashed-center test leaves them running on purpose).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient

from kaic.center.admin import add_project, add_user
from kaic.center.app import create_app
from kaic.center.db import DB_NAME
from kaic.center.executors.local import process_alive
from kaic.center.security import hash_token, new_api_token
from kaic.center.settings import CenterSettings, utc_now
from kaic.center.store import Store
from kaic.models import SCOPES, TERMINAL_STATES

PROJECT = "ai-2026-0042"
DEADLINE = 20.0
TERMINAL = {s.value for s in TERMINAL_STATES}


def mint_token(store: Store, user: str, scopes: tuple[str, ...] = SCOPES) -> str:
    """A long-lived API token for `user` (unaffected by fake clocks moving on)."""
    row = store.get_user(user)
    assert row is not None
    token = new_api_token()
    store.insert_access_token(
        token_hash=hash_token(token),
        user_id=row.id,
        kind="api",
        scopes=scopes,
        name=f"test-{len(scopes)}",
        expires_at=datetime(2100, 1, 1).astimezone(),
    )
    return token


def kill_job_processes(state_dir: Path) -> None:
    """SIGKILL every job process group recorded in the database that still runs."""
    db = state_dir / DB_NAME
    if not db.exists():
        return
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT pgid, proc_start FROM jobs WHERE pgid IS NOT NULL").fetchall()
    except sqlite3.Error:
        rows = []
    finally:
        conn.close()
    for pgid, proc_start in rows:
        if process_alive(pgid, proc_start):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)


def wait_for(check: Callable[[], Any], *, timeout: float = DEADLINE, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}: last saw {last!r}")


@dataclass
class JobsCenter:
    app: FastAPI
    client: TestClient
    settings: CenterSettings
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    def home(self, user: str = "alice") -> Path:
        path = self.state_dir / "storage" / user
        path.mkdir(parents=True, exist_ok=True)
        return path

    def auth(self, user: str = "alice") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def post(self, path: str, user: str = "alice", **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(user), **kwargs.pop("headers", {})}
        return self.client.post(path, headers=headers, **kwargs)

    def get(self, path: str, user: str = "alice", **kwargs: Any) -> httpx.Response:
        headers = {**self.auth(user), **kwargs.pop("headers", {})}
        return self.client.get(path, headers=headers, **kwargs)

    def submit(self, run: str, user: str = "alice", **spec: Any) -> dict[str, Any]:
        """Submit a job running `run` (none when empty: an interactive job)."""
        response = self.post("/v1/jobs", user, json={**({"run": run} if run else {}), **spec})
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def job(self, job_id: str, user: str = "alice") -> dict[str, Any]:
        response = self.get(f"/v1/jobs/{job_id}", user)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_state(
        self, job_id: str, *states: str, user: str = "alice", timeout: float = DEADLINE
    ) -> dict[str, Any]:
        wanted = set(states) or TERMINAL

        def check() -> dict[str, Any] | None:
            job = self.job(job_id, user)
            return job if job["state"] in wanted else None

        result: dict[str, Any] = wait_for(check, timeout=timeout, what=f"{job_id} in {wanted}")
        return result

    def wait_done(self, job_id: str, user: str = "alice") -> dict[str, Any]:
        return self.wait_state(job_id, user=user)

    def logs(self, job_id: str, user: str = "alice", **params: Any) -> httpx.Response:
        return self.get(f"/v1/jobs/{job_id}/logs", user, params=params)

    def stdout(self, job_id: str, user: str = "alice") -> str:
        response = self.logs(job_id, user)
        assert response.status_code == 200, response.text
        return response.text

    def events(self, job_id: str, user: str = "alice") -> list[dict[str, Any]]:
        response = self.get(f"/v1/jobs/{job_id}/events", user)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()
        return events


def prepare_state(state_dir: Path, *, gpu_hours: float = 100.0) -> None:
    """Users alice (project ai-2026-0042) and bob (project bob-lab) on a fresh state dir."""
    add_user(state_dir, "alice", password=None, enable_otp=False, unix_account="alice01")
    add_user(state_dir, "bob", password=None, enable_otp=False, unix_account=None)
    add_user(state_dir, "carol", password=None, enable_otp=False, unix_account=None)
    add_project(state_dir, PROJECT, gpu_hours=gpu_hours, members=["alice"])
    add_project(state_dir, "bob-lab", gpu_hours=10.0, members=["bob"])


def make_settings(state_dir: Path, **overrides: Any) -> CenterSettings:
    # Several users' jobs on the center's own account (root, when the tests run as root):
    # accepted explicitly, as an operator would (`--single-account-ok`).
    values: dict[str, Any] = {
        "kill_grace": 0.5,
        "job_poll_interval": 0.05,
        "now": utc_now,
        "single_account_ok": True,
    }
    values.update(overrides)
    return CenterSettings(state_dir=state_dir, **values)


@contextmanager
def open_center(settings: CenterSettings) -> Iterator[JobsCenter]:
    """A running app (lifespan on) over `settings`, with a token per user."""
    app = create_app(settings)
    with TestClient(app) as client:
        store: Store = app.state.store
        tokens = {user: mint_token(store, user) for user in ("alice", "bob", "carol")}
        tokens["alice-read"] = mint_token(store, "alice", ("jobs:read",))
        yield JobsCenter(app=app, client=client, settings=settings, tokens=tokens)


@contextmanager
def jobs_center(tmp_path: Path, **overrides: Any) -> Iterator[JobsCenter]:
    """A fresh center with users and projects; kills leftover job processes at the end."""
    state_dir = tmp_path / "state"
    prepare_state(state_dir, gpu_hours=overrides.pop("gpu_hours", 100.0))
    settings = make_settings(state_dir, **overrides)
    try:
        with open_center(settings) as center:
            yield center
    finally:
        kill_job_processes(state_dir)


def spans(text: str) -> tuple[float, float]:
    """(start, end) from a job's `start <t>` / `end <t>` output lines."""
    values = dict(line.split() for line in text.splitlines() if line.startswith(("start", "end")))
    return float(values["start"]), float(values["end"])


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at the same moment."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    current = best = 0
    for _, delta in points:
        current += delta
        best = max(best, current)
    return best


def hours_ago(hours: float) -> datetime:
    return utc_now() - timedelta(hours=hours)
