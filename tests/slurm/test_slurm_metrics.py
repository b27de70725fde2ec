"""The metrics sampler on a real Slurm: started by the batch script on the node, as the job's
account, for the GPUs Slurm gave the job, gone when the job ends. NVML is the tests' fake
(`tests/center/fake_nvml/`), put on the sampler's `PYTHONPATH` through the job's environment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.center.metrics_support import fake_nvml_env
from tests.helpers import poll, run_cli
from tests.slurm.conftest import SlurmCenter


def sampler_running(metrics_dir: Path) -> bool:
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"kaic.gpu.sampler" in cmdline and str(metrics_dir).encode() in cmdline:
                return True
    return False


def job_metrics(center: SlurmCenter, job_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{center.url}/v1/jobs/{job_id}/metrics",
        headers={"Authorization": f"Bearer {center.token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_samples_of_the_jobs_own_gpu_while_it_runs(alice: SlurmCenter) -> None:
    trace = alice.center.state_dir.parent / f"trace-{os.getpid()}.json"
    trace.write_text(json.dumps({"gpus": 2, "utilization": {"0": [10], "1": [20]}}))
    trace.chmod(0o644)
    env = [f"--env={k}={v}" for k, v in fake_nvml_env(trace).items()]
    job_id = run_cli(
        "submit",
        "--gpus",
        "1",
        *env,
        "--",
        "bash",
        "-c",
        'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 60',
    ).stdout.strip()
    gpu = int(poll(lambda: run_cli("logs", job_id).stdout.strip()).split("=")[1])
    samples = poll(
        lambda: [s for s in job_metrics(alice, job_id)["samples"] if s["gpus"]], timeout=30
    )
    assert {g["index"] for s in samples for g in s["gpus"]} == {gpu}
    assert {g["utilization_pct"] for s in samples for g in s["gpus"]} == {10.0 * (gpu + 1)}
    assert samples[0]["gpus"][0]["name"] == "NVIDIA H100 80GB HBM3"
    metrics_dir = alice.center.state_dir / "jobs" / job_id / "metrics"
    assert sampler_running(metrics_dir)
    run_cli("cancel", job_id)
    ended = poll(
        lambda: (j := run_cli("show", job_id, "--json").json())["state"] == "CANCELLED" and j
    )
    assert ended["efficiency"]["gpu_util_avg"] == 10.0 * (gpu + 1)  # type: ignore[index]
    poll(lambda: not sampler_running(metrics_dir), timeout=15)
    trace.unlink()
