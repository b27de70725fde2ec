"""Jobs as real processes: exit codes, signals, time limits, cancel, environment, workdir."""

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


def test_exit_codes_and_signals(center: JobsCenter) -> None:
    ok = center.submit("echo hello", name="ok")
    failed = center.submit("echo oops >&2; exit 7")
    signalled = center.submit("kill -TERM $$; sleep 5")
    killed = center.submit("kill -KILL $$")
    assert ok["id"].isdigit() and ok["state"] == "PENDING" and ok["name"] == "ok"
    assert int(failed["id"]) == int(ok["id"]) + 1

    done = center.wait_done(ok["id"])
    assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
    assert done["started_at"] and done["ended_at"] and done["user"] == "alice"
    assert center.stdout(ok["id"]) == "hello\n"

    done = center.wait_done(failed["id"])
    assert (done["state"], done["exit_code"]) == ("FAILED", 7)
    assert center.logs(failed["id"], stream="stderr").text == "oops\n"

    done = center.wait_done(signalled["id"])
    assert (done["state"], done["exit_code"]) == ("FAILED", 128 + 15)
    done = center.wait_done(killed["id"])
    assert (done["state"], done["exit_code"]) == ("FAILED", 128 + 9)

    events = center.events(failed["id"])
    messages = [e["message"] for e in events]
    assert messages[0] == "submitted"
    assert any(m.startswith("started on partition local with GPUs none") for m in messages)
    assert events[-1]["state"] == "FAILED" and "exit code 7" in events[-1]["message"]


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


def test_time_limit_ends_job_with_timeout(center: JobsCenter) -> None:
    polite = center.submit("sleep 30", time_limit_seconds=1)
    stubborn = center.submit("trap '' TERM; while :; do sleep 0.1; done", time_limit_seconds=1)
    done = center.wait_done(polite["id"])
    assert (done["state"], done["exit_code"]) == ("TIMEOUT", 128 + 15)
    done = center.wait_done(stubborn["id"])
    assert (done["state"], done["exit_code"]) == ("TIMEOUT", 128 + 9)
    assert any("time limit" in e["message"] for e in center.events(stubborn["id"]))


def test_cancel_running_pending_and_terminal(center: JobsCenter) -> None:
    running = center.submit("sleep 30", resources={"gpus": 1})
    pending = center.submit("echo never", resources={"gpus": 1})
    center.wait_state(running["id"], "RUNNING")
    assert center.wait_state(pending["id"], "PENDING")["reason"] == "Resources"

    response = center.post(f"/v1/jobs/{pending['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "CANCELLED"

    response = center.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200
    done = center.wait_done(running["id"])
    assert done["state"] == "CANCELLED" and done["exit_code"] == 128 + 15
    assert any(e["message"].startswith("cancel requested") for e in center.events(running["id"]))

    again = center.post(f"/v1/jobs/{running['id']}/cancel").json()
    assert again == done
    assert center.stdout(pending["id"]) == ""


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
