"""A `--run-as-user` center runs a job's container runtime as the job's account, after the
privilege drop: the job is the account inside the image, what it writes is the account's,
and an image the account may not read does not run (root's rights never reach it)."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.containers.spec import Container, ResolvedImage
from kaic.center.executors.base import Ended, ExecutorError, JobPaths, LaunchSpec
from kaic.center.executors.local import LocalExecutor
from tests.center.containers_support import MARKER, MARKER_TEXT, make_rootfs, require_bwrap
from tests.center.jobs_support import wait_for
from tests.helpers import unavailable

ACCOUNT = "nobody"


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the account can traverse (pytest's own tmp dirs are root's, 0700)."""
    if os.geteuid() != 0:
        unavailable("running jobs as their users' accounts needs root")
    require_bwrap()
    path = Path(tempfile.mkdtemp(prefix="kaic-image-as-user-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _spec(base: Path, job_id: str, script: str, rootfs: Path) -> LaunchSpec:
    home = base / "storage" / "alice"
    return LaunchSpec(
        job_id=job_id,
        name=job_id,
        user="alice",
        script=script,
        paths=JobPaths(base / "jobs" / job_id),
        workdir=home / "run",
        home=home,
        unix_account=ACCOUNT,
        container=Container(ResolvedImage("img", "rootfs", str(rootfs)), "bubblewrap"),
    )


def _run(base: Path, job_id: str, script: str, rootfs: Path) -> tuple[Ended, str, str]:
    spec = _spec(base, job_id, script, rootfs)
    executor = LocalExecutor(kill_grace=0.2, run_as_users=True)
    ended: list[Ended] = []
    try:
        executor.start(spec)
        wait_for(lambda: ended.extend(executor.poll()) or ended, what=f"job {job_id} to end")
    finally:
        executor.shutdown(kill_jobs=True)
    return ended[0], spec.paths.stdout.read_text(), spec.paths.stderr.read_text()


def test_the_containerised_job_runs_as_the_account(base: Path) -> None:
    account = pwd.getpwnam(ACCOUNT)
    rootfs = make_rootfs(base / "image")
    ended, out, err = _run(base, "1", f"id -u; cat /{MARKER}; echo mine > f; exit 5", rootfs)
    assert ended.exit_code == 5, err
    assert out == f"{account.pw_uid}\n{MARKER_TEXT}"
    written = base / "storage" / "alice" / "run" / "f"
    assert written.read_text() == "mine\n" and written.stat().st_uid == account.pw_uid


def test_an_image_the_account_cannot_read_does_not_run(base: Path) -> None:
    rootfs = make_rootfs(base / "private")
    rootfs.chmod(0o700)  # root's alone: checked as the account, before root looks into it
    spec = _spec(base, "2", f"cat /{MARKER}", rootfs)
    executor = LocalExecutor(kill_grace=0.2, run_as_users=True)
    try:
        with pytest.raises(ExecutorError, match="cannot be read by unix account nobody"):
            executor.start(spec)
        assert executor.running() == []
    finally:
        executor.shutdown(kill_jobs=True)
