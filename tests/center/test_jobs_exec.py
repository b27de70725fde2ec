"""Jobs as real processes on the local executor: environment, workdir, nothing outliving a job.

Exit codes, signals, time limits and cancels are the executor conformance suite's
(`tests/center/conformance/`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import assert_error
from .jobs_support import JobsCenter, jobs_center, wait_for


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path, gpus=1, gpu_type="H100") as c:
        yield c


def test_environment_workdir_and_home(center: JobsCenter) -> None:
    script = (
        'echo "id=$KAIC_JOB_ID name=$KAIC_JOB_NAME cuda=[$CUDA_VISIBLE_DEVICES]'
        ' gpus=[$KAIC_GPUS] task=[$KAIC_ARRAY_TASK_ID] mine=$MINE"\n'
        'echo "home=$HOME"\necho "pwd=$(pwd -P)"\n'
        'test -z "$SECRET_FROM_CENTER" && echo clean\n'
    )
    os.environ["SECRET_FROM_CENTER"] = "x"
    try:
        job = center.submit(
            script, name="envy", workdir="~/runs/a", env={"MINE": "1", "KAIC_JOB_ID": "spoof"}
        )
        gpu_job = center.submit('echo "[$CUDA_VISIBLE_DEVICES]"', resources={"gpus": 1})
        done = center.wait_done(job["id"])
    finally:
        del os.environ["SECRET_FROM_CENTER"]
    assert done["state"] == "COMPLETED" and done["workdir"] == "~/runs/a"
    home = (center.state_dir / "storage" / "alice").resolve()
    assert center.stdout(job["id"]).splitlines() == [
        f"id={job['id']} name=envy cuda=[] gpus=[] task=[] mine=1",
        f"home={center.state_dir / 'storage' / 'alice'}",
        f"pwd={home / 'runs' / 'a'}",
        "clean",
    ]
    assert center.wait_done(gpu_job["id"])["gpu_ids"] == [0]
    assert center.stdout(gpu_job["id"]) == "[0]\n"


@pytest.mark.parametrize("workdir", ["../bob", "~/../bob", "/etc", "~root/x"])
def test_workdir_outside_storage_is_rejected(center: JobsCenter, workdir: str) -> None:
    response = center.post("/v1/jobs", json={"run": "true", "workdir": workdir})
    error = assert_error(response, 422, "invalid_job")
    assert "workdir" in error["message"]


def test_workdir_symlink_escape_is_rejected(center: JobsCenter, tmp_path: Path) -> None:
    (center.home() / "out").symlink_to(tmp_path)
    response = center.post("/v1/jobs", json={"run": "true", "workdir": "~/out/x"})
    assert_error(response, 422, "invalid_job")


def test_job_processes_are_gone_after_the_job(center: JobsCenter) -> None:
    job = center.submit("sleep 300 & echo $! > bg.pid; exit 0", workdir="~")
    assert center.wait_done(job["id"])["state"] == "COMPLETED"
    pid = int((center.home() / "bg.pid").read_text())

    def gone() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        return stat[stat.rfind(")") + 2] in "ZX"

    wait_for(gone, what="the job's background process to be killed")
