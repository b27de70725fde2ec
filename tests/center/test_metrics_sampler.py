"""The metrics sampler with real jobs on the local center, NVML replaced by the fake the
sampler finds on its `PYTHONPATH` (`tests/center/fake_nvml/`, put there through the job's
environment): samples while a job runs, only of its own GPUs, none after it ends, across a
center restart; no NVML; a crashing sampler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaic.center.jobs.store import JobStore
from kaic.models.metrics import JobMetrics, RunningMetrics
from tests.center.jobs_support import (
    jobs_center,
    kill_job_processes,
    make_settings,
    open_center,
    prepare_state,
    wait_for,
)
from tests.center.metrics_support import fake_nvml_env, write_trace

INTERVAL = 0.2


def sampler_pids(pgid: int) -> list[int]:
    """The sampler processes in a job's process group."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if b"kaic.gpu.sampler" in cmdline and int(fields[2]) == pgid:
            found.append(int(name))
    return found


def job_pgid(c: object, job_id: str) -> int:
    jobs: JobStore = c.app.state.scheduler.jobs  # type: ignore[attr-defined]
    row = jobs.get(job_id)
    assert row is not None and row.pgid is not None
    return row.pgid


def metrics(c: object, job_id: str, user: str = "alice") -> JobMetrics:
    response = c.get(f"/v1/jobs/{job_id}/metrics", user)  # type: ignore[attr-defined]
    assert response.status_code == 200, response.text
    return JobMetrics.model_validate(response.json())


def test_two_jobs_on_a_4_gpu_center_each_see_their_own_gpus(tmp_path: Path) -> None:
    trace = write_trace(
        tmp_path / "trace.json", 4, utilization={0: [11], 1: [22], 2: [33], 3: [44]}
    )
    release = tmp_path / "release"
    run = f"while [ ! -e {release} ]; do sleep 0.05; done"
    with jobs_center(tmp_path, gpus=4, metrics_interval=INTERVAL) as c:
        jobs = [c.submit(run, resources={"gpus": 2}, env=fake_nvml_env(trace)) for _ in range(2)]
        for job in jobs:
            c.wait_state(job["id"], "RUNNING")
        seen = {}
        for job in jobs:
            got = wait_for(lambda job=job: metrics(c, job["id"]).samples, what="samples")
            seen[job["id"]] = {g.index for s in got for g in s.gpus}
            assert {g.utilization_pct for s in got for g in s.gpus} == {
                11.0 * (i + 1) for i in seen[job["id"]]
            }
            assert all(s.cpu_pct is not None and s.rss_bytes for s in got)
            assert got[0].gpus[0].name == "NVIDIA H100 80GB HBM3"
        assert sorted(map(sorted, seen.values())) == [[0, 1], [2, 3]]

        running = RunningMetrics.model_validate(c.get("/v1/metrics/running").json())
        assert {j.job_id for j in running.jobs} == {j["id"] for j in jobs}
        assert all(len(j.latest) == 1 and len(j.latest[0].gpus) == 2 for j in running.jobs)

        pgids = [job_pgid(c, j["id"]) for j in jobs]
        assert all(sampler_pids(pgid) for pgid in pgids)
        release.touch()
        for job in jobs:
            ended = c.wait_state(job["id"], "COMPLETED")
            assert ended["efficiency"]["gpu_hours"] > 0
            assert ended["efficiency"]["gpu_util_avg"] in (16.5, 38.5)
        for pgid in pgids:
            wait_for(lambda pgid=pgid: not sampler_pids(pgid), timeout=5, what="sampler exit")
        counts = [len(metrics(c, j["id"]).samples) for j in jobs]
        # no sampler is left to write: the files stay as they were
        wait_for(lambda: [len(metrics(c, j["id"]).samples) for j in jobs] == counts, timeout=2)


def test_a_cancelled_job_takes_its_sampler_along(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "trace.json", 1)
    with jobs_center(tmp_path, gpus=1, metrics_interval=INTERVAL) as c:
        job = c.submit("sleep 60", resources={"gpus": 1}, env=fake_nvml_env(trace))
        c.wait_state(job["id"], "RUNNING")
        pgid = job_pgid(c, job["id"])
        wait_for(lambda: sampler_pids(pgid), what="the sampler")
        c.post(f"/v1/jobs/{job['id']}/cancel")
        assert c.wait_state(job["id"], "CANCELLED")["efficiency"] is not None
        wait_for(lambda: not sampler_pids(pgid), timeout=5, what="the sampler's end")


def test_samples_survive_a_center_restart(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "trace.json", 2, utilization={0: [0], 1: [100]})
    release = tmp_path / "release"
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    settings = make_settings(state_dir, gpus=2, metrics_interval=INTERVAL)
    try:
        with open_center(settings) as c:
            job = c.submit(
                f"while [ ! -e {release} ]; do sleep 0.05; done",
                resources={"gpus": 2},
                env=fake_nvml_env(trace),
            )
            c.wait_state(job["id"], "RUNNING")
            wait_for(lambda: len(metrics(c, job["id"]).samples) >= 2, what="samples")
        # the center is down; the job and its sampler go on, then the job ends
        release.touch()
        with open_center(settings) as c:
            ended = c.wait_state(job["id"], "COMPLETED")
            after = metrics(c, job["id"])
            assert len(after.samples) >= 2
            assert [s.index for s in after.summary] == [0, 1]
            # learnt after the restart: kept all the same; GPU 0 idle, GPU 1 busy throughout
            assert ended["efficiency"]["gpu_util_avg"] == 50.0
            efficiency = ended["efficiency"]
            assert efficiency["gpu_hours_idle"] == pytest.approx(
                efficiency["gpu_hours"] / 2, abs=1e-6
            )
    finally:
        kill_job_processes(state_dir)


def test_no_nvml_gives_cpu_and_memory_and_says_so(tmp_path: Path) -> None:
    trace = write_trace(tmp_path / "trace.json", 2)
    no_driver = tmp_path / "no-driver.json"
    no_driver.write_text('{"gpus": 2, "init_error": 12}', encoding="utf-8")
    with jobs_center(tmp_path, gpus=2, metrics_interval=INTERVAL) as c:
        job = c.submit("sleep 60", resources={"gpus": 1}, env=fake_nvml_env(no_driver))
        cpu_only = c.submit("sleep 60", env=fake_nvml_env(trace))
        for j in (job, cpu_only):
            c.wait_state(j["id"], "RUNNING")
            samples = wait_for(lambda j=j: metrics(c, j["id"]).samples, what="samples")
            assert all(s.gpus == [] and s.rss_bytes for s in samples)
        notes = metrics(c, job["id"]).notes
        assert len(notes) == 1 and notes[0].startswith("no NVML on node ")
        assert "CPU and memory only" in notes[0]
        assert metrics(c, cpu_only["id"]).notes == []
        for j in (job, cpu_only):
            c.post(f"/v1/jobs/{j['id']}/cancel")
        ended = c.wait_state(job["id"], "CANCELLED")
        assert ended["efficiency"]["gpu_util_avg"] is None
        assert ended["efficiency"]["gpu_hours_idle"] is None


def test_a_crashing_sampler_leaves_the_exit_code_alone(tmp_path: Path) -> None:
    crash = tmp_path / "crash.json"
    crash.write_text('{"gpus": 1, "crash": true}', encoding="utf-8")
    with jobs_center(tmp_path, gpus=1, metrics_interval=INTERVAL) as c:
        # `wait` waits for the script's own children only: not for the sampler
        failing = c.submit(
            "sleep 1 & wait; exit 3", resources={"gpus": 1}, env=fake_nvml_env(crash)
        )
        assert c.wait_state(failing["id"], "FAILED")["exit_code"] == 3
        fine = c.submit("sleep 1 & wait", resources={"gpus": 1}, env=fake_nvml_env(crash))
        assert c.wait_state(fine["id"], "COMPLETED")["exit_code"] == 0
        assert metrics(c, fine["id"]).samples == []  # it died before its first sample
