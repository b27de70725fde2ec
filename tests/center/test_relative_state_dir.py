"""A relative state dir (`--state-dir ./center`, `KAIC_STATE_DIR=state`) works like an absolute
one: it is made absolute where it is read, so jobs, which run in their own directories, still
find their scripts. Every job used to fail with 127 (the README's own recipe did this)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from kaic.config import state_dir
from tests.helpers import RunningCenter, cli_env, run_cli

from .jobs_support import DEADLINE, TERMINAL, wait_for

PASSWORD = "alice-password-123"


def _serve_from(cwd: Path, *args: str) -> RunningCenter:
    """`kaic center serve ARGS` started in `cwd`, once it is ready (stopped by the caller)."""
    ready = cwd / "ready.json"
    log = cwd / "center.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kaic", "center", "serve", "--port", "0", *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            env=cli_env(),
        )
    center = RunningCenter("", proc.pid, cwd / "center", proc, log)
    try:
        data = wait_for(
            lambda: (
                proc.poll() is None
                and ready.exists()
                and json.loads(ready.read_text() or "{}").get("pid") == proc.pid
                and json.loads(ready.read_text())
            ),
            timeout=30,
            what="the center to be ready",
        )
    except AssertionError:
        center.stop()
        raise AssertionError(f"center not ready:\n{log.read_text()}") from None
    center.url = str(data["url"])
    return center


def test_readme_recipe_with_a_relative_state_dir_runs_jobs(tmp_path: Path) -> None:
    from kaic.center.security import totp_code

    # README, "Running a center", from a fresh directory.
    added = run_cli(
        "center", "user", "add", "alice", "--password-stdin", "--otp", "--state-dir", "./center",
        input=PASSWORD + "\n", cwd=tmp_path,
    )  # fmt: skip
    secret = added.stdout.split("secret=")[1].split("&")[0]
    run_cli(
        "center", "project", "add", "ai-2026-0042", "--gpu-hours", "5000", "--member", "alice",
        "--state-dir", "./center", cwd=tmp_path,
    )  # fmt: skip
    # As root (CI) the center runs jobs as root only when its operator accepts it.
    as_root = ("--single-account-ok",) if os.geteuid() == 0 else ()
    center = _serve_from(
        tmp_path, "--state-dir", "./center", "--ready-file", "ready.json", *as_root
    )
    try:
        with httpx.Client(base_url=center.url, timeout=DEADLINE) as client:
            token = client.post(
                "/v1/auth/token",
                json={
                    "grant_type": "password",
                    "username": "alice",
                    "password": PASSWORD,
                    "otp": totp_code(secret, time.time()),
                },
            )
            assert token.status_code == 200, token.text
            client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            job = client.post("/v1/jobs", json={"run": "echo hello from $PWD"}).json()

            def done() -> dict[str, object] | None:
                current: dict[str, object] = client.get(f"/v1/jobs/{job['id']}").json()
                return current if current["state"] in TERMINAL else None

            finished = wait_for(done, what="the job to end")
            log = client.get(f"/v1/jobs/{job['id']}/logs", params={"stream": "stderr"}).text
            assert (finished["state"], finished["exit_code"]) == ("COMPLETED", 0), log
            out = client.get(f"/v1/jobs/{job['id']}/logs").text
            assert out == f"hello from {tmp_path / 'center' / 'storage' / 'alice'}\n"
    finally:
        center.stop()


def test_a_relative_kaic_state_dir_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KAIC_STATE_DIR", "kaic-state")
    assert state_dir() == tmp_path / "kaic-state"
    monkeypatch.setenv("KAIC_STATE_DIR", "./a/../b")
    assert state_dir() == tmp_path / "b"


def test_the_local_center_runs_jobs_under_a_relative_kaic_state_dir(
    tmp_path: Path, isolated_dirs: Path
) -> None:
    """`KAIC_STATE_DIR=kaic-home/state kaic submit --wait` from the directory above it."""
    relative = isolated_dirs.relative_to(tmp_path) / "state"
    env = cli_env(KAIC_STATE_DIR=str(relative))
    res = run_cli("submit", "--wait", "--json", "--", "echo", "hi", env=env, cwd=tmp_path)
    job = json.loads(res.stdout)
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), res.explain()
