"""`kaic center serve --run-as-user`: each job runs as its user's unix account.

Needs root (to create the account and to switch to it): skipped otherwise, failed when
`CI=true`.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_login import login
from tests.helpers import RunningCenter, run_cli, start_center, unavailable
from tests.sshd import STAGING_USER, ensure_unix_user

PASSWORD = "correct horse battery staple"


@pytest.fixture
def as_users_center(tmp_path: Path) -> Iterator[RunningCenter]:
    if os.geteuid() != 0:
        unavailable("--run-as-user tests need root")
    ensure_unix_user(STAGING_USER)
    center = start_center(
        tmp_path / "state",
        "--run-as-user",
        "--storage-root",
        "/home/{unix_account}",
        "--kill-grace",
        "1",
    )
    try:
        center.add_user("alice", PASSWORD, unix_account=STAGING_USER)
        center.add_user("ghost", PASSWORD, unix_account="kaic-no-such-account")
        center.add_project("p1", 100, ["alice", "ghost"])
        yield center
    finally:
        center.stop()


def test_jobs_run_as_the_users_account(as_users_center: RunningCenter, tmp_path: Path) -> None:
    center = as_users_center
    login(center, "alice", PASSWORD)
    account = pwd.getpwnam(STAGING_USER)
    db = center.state_dir / "center.db"
    script = (
        "id -un\n"
        "touch ~/kaic-run-as-user-marker\n"
        f"cat {db} > /dev/null 2>&1 && echo center-db-readable || echo center-db-denied\n"
        "cat $0 > /dev/null && echo own-script-readable\n"
        "exit 7\n"
    )
    job = tmp_path / "job.yaml"
    job.write_text("workdir: ~/kaic-run-as-user/nested\nrun: |\n" + _indent(script))
    res = run_cli("submit", str(job), "--wait", "--json", expect=7)
    doc = res.json()
    assert doc["state"] == "FAILED" and doc["exit_code"] == 7  # type: ignore[index]
    out = run_cli("logs", doc["id"]).stdout  # type: ignore[index]
    assert out.splitlines() == [STAGING_USER, "center-db-denied", "own-script-readable"], out
    home = Path(account.pw_dir)
    try:
        assert (home / "kaic-run-as-user-marker").stat().st_uid == account.pw_uid
        # The workdir the center created for the job is the account's, not root's.
        assert (home / "kaic-run-as-user" / "nested").stat().st_uid == account.pw_uid
        assert (home / "kaic-run-as-user").stat().st_uid == account.pw_uid
    finally:
        (home / "kaic-run-as-user-marker").unlink(missing_ok=True)
        for d in (home / "kaic-run-as-user" / "nested", home / "kaic-run-as-user"):
            if d.exists():
                d.rmdir()

    # Cancelling still stops the whole job (the wrapper is root, the job the account).
    job_id = run_cli("submit", "--", "sleep", "300").stdout.strip()
    _wait_running(job_id)
    run_cli("cancel", job_id)
    res = run_cli("wait", job_id, "--json", expect=125)
    assert res.json()[0]["state"] == "CANCELLED"  # type: ignore[index]


def test_a_user_without_an_account_gets_a_clear_failure(as_users_center: RunningCenter) -> None:
    login(as_users_center, "ghost", PASSWORD)
    res = run_cli("submit", "--wait", "--json", "--", "true", expect=1)
    doc = res.json()
    assert doc["state"] == "FAILED"  # type: ignore[index]
    assert "kaic-no-such-account" in doc["reason"]  # type: ignore[index]
    assert "does not exist" in doc["reason"]  # type: ignore[index]


def test_run_as_user_needs_a_storage_root(tmp_path: Path) -> None:
    res = run_cli("center", "serve", "--run-as-user", "--state-dir", str(tmp_path), expect=2)
    expected = "storage root" if os.geteuid() == 0 else "needs a center running as root"
    assert expected in res.stderr, res.explain()


def _indent(text: str) -> str:
    return "".join("  " + line + "\n" for line in text.splitlines())


def _wait_running(job_id: str) -> None:
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if run_cli("show", job_id, "--json").json()["state"] == "RUNNING":  # type: ignore[index]
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never ran")
