"""`kaic bench --remote` runs the bench as a job on the (local) center and reports it."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.test_login import login
from tests.helpers import run_cli, start_center


def test_remote_cpu_bench_on_local_center(isolated_dirs: Path) -> None:
    res = run_cli("bench", "--remote", "--device", "cpu", "--json", timeout=120)
    doc = res.json()
    assert isinstance(doc, dict)
    assert set(doc) == {
        "schema_version",
        "host",
        "timestamp",
        "driver",
        "cuda",
        "backend",
        "status",
        "gpus",
        "error",
    }
    assert doc["backend"].startswith("numpy")
    checks = {c["id"]: c for c in doc["gpus"][0]["checks"]}
    assert checks["gemm_fp32"]["value"] > 0 and checks["mem_copy"]["value"] > 0
    assert "Submitted bench job" in res.stderr
    # The human rendering of the same kind of run.
    human = run_cli("bench", "--remote", "--device", "cpu", timeout=120)
    assert "gemm_fp32" in human.stdout and "overall:" in human.stdout


def test_remote_gpu_bench_needs_a_gpu_partition(isolated_dirs: Path) -> None:
    # The local center here has no GPUs: asking for one is rejected before anything runs.
    res = run_cli("bench", "--remote", expect=6, timeout=120)
    assert "GPU" in res.stderr


def test_remote_bench_on_node_without_driver_exits_4(tmp_path: Path) -> None:
    # A center that hands out a (pretend) GPU; its node has no NVIDIA driver, so the
    # remote kaic finds nothing to validate and the local one exits as it would: 4.
    center = start_center(tmp_path / "gpu-center", "--gpus", "1")
    try:
        center.add_user("alice", "pw-alice-123456")
        center.add_project("p", 10, ["alice"])
        login(center, "alice", "pw-alice-123456")
        res = run_cli("bench", "--remote", "--gpus", "1", expect=4, timeout=120)
        assert "nvidia-ml-py" in res.stderr or "driver" in res.stderr
        # --json: the remote's document (status SKIP, why) on stdout, still exit 4.
        res = run_cli("bench", "--remote", "--gpus", "1", "--json", expect=4, timeout=120)
        doc = res.json()
        assert isinstance(doc, dict) and doc["status"] == "SKIP" and doc["gpus"] == []
        assert "nvidia-ml-py" in doc["error"] or "driver" in doc["error"]
    finally:
        center.stop()
