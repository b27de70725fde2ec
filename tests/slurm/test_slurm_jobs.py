"""Jobs end to end through the real CLI, against a real center over a real single-node Slurm
(2 fake GPUs, jobs run as the unix account `kaicslurm`)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.helpers import cli_env, run_cli, start_center
from tests.slurm.conftest import SlurmCenter


def poll(fn: Callable[[], Any], *, timeout: float = 30, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def job_json(job_id: str) -> dict[str, Any]:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return doc


def health(center: SlurmCenter) -> dict[str, Any]:
    return httpx.get(f"{center.url}/v1/health", timeout=5).json()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def timeout_job(slurm_center: SlurmCenter) -> str:
    """A job that runs into its time limit. Slurm counts whole minutes, so it is submitted
    first and checked by the last test, while the others run."""
    response = httpx.post(
        f"{slurm_center.url}/v1/jobs",
        headers={"Authorization": f"Bearer {slurm_center.token}"},
        json={"run": "sleep 600", "time_limit_seconds": 60, "name": "too-slow"},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_exit_code_passes_through(alice: SlurmCenter, timeout_job: str) -> None:
    assert health(alice)["executor"] == "slurm"
    res = run_cli("submit", "--wait", "--", "bash", "-c", "echo hi; whoami; exit 7", expect=7)
    assert "FAILED" in res.stderr and "exit code 7" in res.stderr
    job_id = res.stdout.strip()  # `submit --wait` prints the id alone on stdout
    ok = run_cli("submit", "--wait", "--json", "--", "true").json()
    assert isinstance(ok, dict)
    assert ok["state"] == "COMPLETED" and ok["exit_code"] == 0
    assert run_cli("logs", job_id).stdout == "hi\nkaicslurm\n"


def test_signal_exit_code(alice: SlurmCenter) -> None:
    run_cli("submit", "--wait", "--", "bash", "-c", "kill -USR1 $$", expect=128 + 10)


def test_cancel_exits_125(alice: SlurmCenter) -> None:
    job_id = run_cli("submit", "--", "sleep", "60").stdout.strip()
    poll(lambda: job_json(job_id)["state"] == "RUNNING")
    run_cli("cancel", job_id)
    res = run_cli("wait", job_id, "--json", expect=125)
    doc = res.json()[0]  # type: ignore[index]
    assert doc["state"] == "CANCELLED" and doc["reason"] == "cancelled by the user"


def test_gpus_and_pending_reason(alice: SlurmCenter) -> None:
    (partition,) = run_cli("resources", "--json").json()  # type: ignore[misc]
    assert partition["name"] == "debug" and partition["gpus_total"] == 2
    ids = [
        run_cli(
            "submit",
            "--gpus",
            "1",
            "--",
            "bash",
            "-c",
            'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 60',
        ).stdout.strip()
        for _ in range(3)
    ]
    poll(lambda: [job_json(i)["state"] for i in ids[:2]] == ["RUNNING", "RUNNING"])
    third = poll(lambda: (j := job_json(ids[2]))["reason"] and j)
    assert third["state"] == "PENDING" and third["reason"] == "Resources"
    outputs = poll(
        lambda: (
            all(run_cli("logs", i).stdout for i in ids[:2])
            and sorted(run_cli("logs", i).stdout for i in ids[:2])
        )
    )
    assert outputs == ["gpu=0\n", "gpu=1\n"]
    assert sorted(job_json(i)["gpu_ids"][0] for i in ids[:2]) == [0, 1]
    run_cli("cancel", *ids)
    run_cli("wait", *ids, expect=125)


def test_array_and_dependency(alice: SlurmCenter) -> None:
    arr = run_cli(
        "submit",
        "--array",
        "0-3%2",
        "--",
        "bash",
        "-c",
        'echo "task $KAIC_ARRAY_TASK_ID $KAIC_JOB_ID"; sleep 2',
    ).stdout.strip()
    dep = run_cli("submit", "--after", arr, "--", "echo", "after").stdout.strip()
    # The array runs >= 4 s (2 at a time): the dependant is seen pending on its dependency.
    assert poll(lambda: job_json(dep)["reason"] == "Dependency")
    assert job_json(dep)["state"] == "PENDING"
    run_cli("wait", arr, dep, timeout=90)
    doc = job_json(arr)
    assert doc["state"] == "COMPLETED" and len(doc["array_tasks"]) == 4
    assert run_cli("logs", doc["array_tasks"][3]).stdout == f"task 3 {arr}_3\n"
    assert run_cli("logs", dep).stdout == "after\n"
    # A failed dependency ends the dependant, with a reason.
    bad = run_cli("submit", "--", "bash", "-c", "sleep 1; false").stdout.strip()
    child = run_cli("submit", "--after", bad, "--", "echo", "never").stdout.strip()
    res = run_cli("wait", child, "--json", expect=125, timeout=90)
    assert "Dependency" in (res.json()[0]["reason"] or "")  # type: ignore[index]


def test_logs_follow_complete_and_ordered(alice: SlurmCenter) -> None:
    script = (
        "for b in $(seq 0 19); do for i in $(seq 1 500); do n=$((b*500+i)); "
        'echo "out $n"; echo "err $n" >&2; done; sleep 0.1; done; exit 3'
    )
    job_id = run_cli("submit", "--", "bash", "-c", script).stdout.strip()
    follow = subprocess.run(
        [sys.executable, "-m", "kaic", "logs", "-f", job_id],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=90,
    )
    assert follow.returncode == 3, follow.stderr[-2000:]
    assert follow.stdout.splitlines() == [f"out {n}" for n in range(1, 10_001)]
    errs = [ln for ln in follow.stderr.splitlines() if ln.startswith("err ")]
    assert errs == [f"err {n}" for n in range(1, 10_001)]


def test_slurmrestd_restart_mid_job(alice: SlurmCenter) -> None:
    cluster = alice.cluster
    job_id = run_cli("submit", "--", "bash", "-c", "sleep 6; echo done; exit 3").stdout.strip()
    poll(lambda: job_json(job_id)["state"] == "RUNNING")
    cluster.stop_rest()
    try:
        poll(lambda: health(alice)["status"] == "degraded", timeout=15)
        assert "slurmrestd" in (health(alice)["detail"] or "")
        # Submitted while Slurm is unreachable: stays pending with a reason.
        later = run_cli("submit", "--", "echo", "later").stdout.strip()
        # The job ends while nobody can see it; its last known state stays.
        time.sleep(7)
        assert job_json(job_id)["state"] == "RUNNING"
        waiting = job_json(later)
        assert waiting["state"] == "PENDING" and "Slurm" in (waiting["reason"] or "")
    finally:
        cluster.start_rest()
    res = run_cli("wait", job_id, "--json", expect=3, timeout=60)
    assert res.json()[0]["state"] == "FAILED"  # type: ignore[index]
    assert run_cli("logs", job_id).stdout == "done\n"
    run_cli("wait", later, timeout=60)
    assert run_cli("logs", later).stdout == "later\n"
    poll(lambda: health(alice)["status"] == "ok", timeout=15)


def test_center_restart_reattaches(alice: SlurmCenter) -> None:
    running = run_cli("submit", "--", "bash", "-c", "sleep 4; exit 5").stdout.strip()
    poll(lambda: job_json(running)["state"] == "RUNNING")
    waiting = run_cli("submit", "--after", running, "--", "echo", "next").stdout.strip()
    center = alice.center
    port = center.url.rsplit(":", 1)[1]
    center.stop(kill_jobs=False)  # SIGTERM: Slurm keeps the jobs
    restarted = start_center(
        center.state_dir,
        "--executor",
        "slurm",
        "--slurmrestd",
        alice.cluster.url,
        "--slurm-poll-interval",
        "0.5",
        port=int(port),
        env={"KAIC_SLURM_JWT": alice.cluster.token},
    )
    alice.center = restarted
    res = run_cli("wait", running, "--json", expect=5, timeout=60)
    assert res.json()[0]["state"] == "FAILED"  # type: ignore[index]
    # its dependant was Slurm's to cancel (afterok failed), and the new center saw it
    res = run_cli("wait", waiting, "--json", expect=125, timeout=60)
    assert "Dependency" in (res.json()[0]["reason"] or "")  # type: ignore[index]


def test_timeout_exits_124(alice: SlurmCenter, timeout_job: str) -> None:
    res = run_cli("wait", timeout_job, "--json", expect=124, timeout=150)
    doc = res.json()[0]  # type: ignore[index]
    assert doc["state"] == "TIMEOUT" and doc["reason"] == "time limit reached"
