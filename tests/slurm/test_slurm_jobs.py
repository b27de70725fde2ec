"""Jobs end to end through the real CLI, against a real center over a real single-node Slurm
(2 fake GPUs, jobs run as the unix account `kaicslurm`): what only Slurm does. What every
executor does is the conformance suite's (`test_conformance.py`)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from kaic.center.executors.slurm.api import SlurmRestClient
from tests.helpers import poll, run_cli
from tests.slurm.cluster import SlurmCluster
from tests.slurm.conftest import SlurmCenter


def job_json(job_id: str) -> dict[str, Any]:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return doc


def health(center: SlurmCenter) -> dict[str, Any]:
    return httpx.get(f"{center.url}/v1/health", timeout=5).json()  # type: ignore[no-any-return]


def test_exit_code_passes_through(alice: SlurmCenter) -> None:
    assert health(alice)["executor"] == "slurm"
    res = run_cli("submit", "--wait", "--", "bash", "-c", "echo hi; whoami; exit 7", expect=7)
    assert "FAILED" in res.stderr and "exit code 7" in res.stderr
    job_id = res.stdout.strip()  # `submit --wait` prints the id alone on stdout
    ok = run_cli("submit", "--wait", "--json", "--", "true").json()
    assert isinstance(ok, dict)
    assert ok["state"] == "COMPLETED" and ok["exit_code"] == 0
    assert run_cli("logs", job_id).stdout == "hi\nkaicslurm\n"


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


def test_a_listing_since_a_time_says_no_change_until_a_job_changes(
    slurm_cluster: SlurmCluster,
) -> None:
    # The executor's quiet polls rest on this (`SlurmRestClient.jobs(changed_since=…)`):
    # slurmrestd answers 304 when no job changed since then, and every job once one did.
    client = SlurmRestClient(slurm_cluster.url, slurm_cluster.token)
    job_id = ""
    try:
        assert client.jobs() is not None
        assert client.jobs(changed_since=int(time.time()) + 3600) is None
        since = int(time.time())
        done = slurm_cluster.run(
            "sbatch", "--parsable", "--hold", "-o", "/dev/null", "--wrap", "true"
        )
        assert done.returncode == 0, done.stderr
        job_id = done.stdout.strip().split(";")[0]
        listed = client.jobs(changed_since=since)
        assert listed is not None and int(job_id) in [job.job_id for job in listed]
    finally:
        if job_id:
            slurm_cluster.run("scancel", job_id)
        client.close()
