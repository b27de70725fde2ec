"""`GET /v1/jobs/{id}/metrics` and `GET /v1/metrics/running` over sample files written as
the sampler writes them (the sampler itself: `test_metrics_sampler.py`), and a job's
efficiency kept when it ends."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from kaic.models.metrics import JobMetrics, RunningMetrics
from tests.center.conftest import FakeClock
from tests.center.jobs_support import jobs_center, wait_for
from tests.center.metrics_support import header, sample, write_metrics

T0 = 1_780_000_000.0  # an epoch second, for sample times


def job_dir(state_dir: Path, job_id: str) -> Path:
    return state_dir / "jobs" / job_id


def test_metrics_of_a_job_samples_summary_and_since(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=4, metrics_interval=0) as c:
        job = c.submit("sleep 30", resources={"gpus": 2})
        c.wait_state(job["id"], "RUNNING")
        write_metrics(
            job_dir(c.state_dir, job["id"]),
            "n1",
            [
                header("n1", gpus=[2, 3]),
                sample(T0 + 5, 5, {2: 90.0, 3: 10.0}, mem=3 * 2**30, rss=7 * 2**20),
                sample(T0 + 10, 5, {2: 70.0, 3: 0.0}, mem=5 * 2**30, cpu=150.0),
            ],
        )
        response = c.get(f"/v1/jobs/{job['id']}/metrics")
        assert response.status_code == 200, response.text
        metrics = JobMetrics.model_validate(response.json())
        assert [s.at.timestamp() for s in metrics.samples] == [T0 + 5, T0 + 10]
        assert [g.index for g in metrics.samples[0].gpus] == [2, 3]
        assert metrics.samples[0].gpus[0].name == "NVIDIA H100 80GB HBM3"
        assert metrics.samples[0].gpus[0].uuid == "GPU-2"
        by_index = {s.index: s for s in metrics.summary}
        assert by_index[2].utilization_avg_pct == 80.0
        assert (by_index[2].utilization_min_pct, by_index[2].utilization_max_pct) == (70.0, 90.0)
        assert by_index[3].idle_seconds == 5.0 and by_index[3].sampled_seconds == 10.0
        assert by_index[2].memory_used_peak_bytes == 5 * 2**30
        assert metrics.cpu_pct_avg == 100.0 and metrics.rss_peak_bytes == 7 * 2**20
        assert metrics.efficiency is None  # still running

        since = metrics.next_since
        assert since is not None and since.timestamp() == T0 + 10
        newer = c.get(f"/v1/jobs/{job['id']}/metrics", params={"since": since.isoformat()})
        again = JobMetrics.model_validate(newer.json())
        assert again.samples == [] and again.next_since == since
        assert len(again.summary) == 2  # the summary is over the whole job, always
        c.post(f"/v1/jobs/{job['id']}/cancel")


def test_metrics_are_the_owners_only(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=4, metrics_interval=0) as c:
        job = c.submit("sleep 30", resources={"gpus": 1})
        c.wait_state(job["id"], "RUNNING")
        write_metrics(
            job_dir(c.state_dir, job["id"]), "n1", [header("n1", [0]), sample(T0, 5, {0: 99})]
        )
        assert c.get(f"/v1/jobs/{job['id']}/metrics", "bob").status_code == 404
        assert c.get(f"/v1/jobs/{job['id']}/metrics", "alice-read").status_code == 200
        running = RunningMetrics.model_validate(c.get("/v1/metrics/running", "bob").json())
        assert running.jobs == []
        assert c.get("/v1/jobs/nope/metrics").status_code == 404
        c.post(f"/v1/jobs/{job['id']}/cancel")


def test_running_metrics_latest_sample_and_idle_since(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=4, metrics_interval=0) as c:
        busy = c.submit("sleep 30", name="busy", resources={"gpus": 2})
        idle = c.submit("sleep 30", name="idle", resources={"gpus": 2})
        c.wait_state(busy["id"], "RUNNING")
        c.wait_state(idle["id"], "RUNNING")
        write_metrics(
            job_dir(c.state_dir, busy["id"]),
            "n1",
            [
                header("n1", [0, 1]),
                sample(T0 + 5, 5, {0: 0, 1: 0}),
                sample(T0 + 10, 5, {0: 0, 1: 60}),
            ],
        )
        idle_file = write_metrics(
            job_dir(c.state_dir, idle["id"]),
            "n1",
            [
                header("n1", [2, 3]),
                sample(T0 + 5, 5, {2: 80, 3: 1}),
                sample(T0 + 10, 5, {2: 4.9, 3: 0}),
                sample(T0 + 15, 5, {2: 0, 3: 0}),
            ],
        )
        jobs = {
            j.name: j
            for j in RunningMetrics.model_validate(c.get("/v1/metrics/running").json()).jobs
        }
        assert set(jobs) == {"busy", "idle"}
        assert jobs["busy"].idle_since is None and jobs["busy"].gpus == 2
        assert jobs["busy"].latest[0].gpus[1].utilization_pct == 60
        assert jobs["idle"].idle_since == datetime.fromtimestamp(T0 + 5, tz=timezone.utc)
        assert jobs["idle"].latest[0].at.timestamp() == T0 + 15

        # appended samples are picked up (after the freshness window), a busy one ends idleness
        with idle_file.open("a", encoding="utf-8") as f:
            f.write(
                '{"t": %r, "d": 5, "g": [[2, 30, 1, 2, 3, 4, 5], [3, 0, 1, 2, 3, 4, 5]]}\n'
                % (T0 + 20)
            )

        def refreshed() -> bool:
            body = RunningMetrics.model_validate(c.get("/v1/metrics/running").json())
            latest = {j.name: j for j in body.jobs}["idle"]
            return latest.latest[0].at.timestamp() == T0 + 20 and latest.idle_since is None

        wait_for(refreshed, timeout=5, what="the appended sample")
        for job in (busy, idle):
            c.post(f"/v1/jobs/{job['id']}/cancel")


def test_hostile_files_are_read_defensively(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=4, metrics_interval=0) as c:
        job = c.submit("sleep 30", resources={"gpus": 1})
        other = c.submit("sleep 30", "bob", resources={"gpus": 1})
        c.wait_state(job["id"], "RUNNING")
        c.wait_state(other["id"], "RUNNING", user="bob")
        directory = job_dir(c.state_dir, job["id"])
        write_metrics(
            directory,
            "n1",
            [
                {**header("n1", [0]), "node": "[bold red]n1\x1b[31m"},
                "not json at all",
                '{"t": "yesterday", "d": 5}',
                '["an", "array"]',
                '{"t": 1, "d": 5, "g": [[0, 1e999, -5, "x", 1, 1, 1]]}',
                "{" * 100_000,
                sample(T0, 5, {0: 150}),  # utilisation out of range: None
                sample(T0 + 5, 5, {0: 42}),
            ],
        )
        # bob's file, linked into alice's job: not followed
        bobs = write_metrics(
            job_dir(c.state_dir, other["id"]), "n9", [header("n9", [1]), sample(T0, 5, {1: 77})]
        )
        os.symlink(bobs, directory / "metrics" / "n9.jsonl")
        response = c.get(f"/v1/jobs/{job['id']}/metrics")
        assert response.status_code == 200, response.text
        metrics = JobMetrics.model_validate(response.json())
        assert {s.node for s in metrics.samples} == {"[bold red]n1[31m"}  # text, no control
        assert [s.gpus[0].utilization_pct for s in metrics.samples] == [None, None, 42]
        assert metrics.samples[0].gpus[0].memory_used_bytes is None
        for j in (job, other):
            c.post(f"/v1/jobs/{j['id']}/cancel", "alice" if j is job else "bob")


def test_efficiency_is_exact_for_a_known_trace_and_kept_with_the_job(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    with jobs_center(tmp_path, gpus=4, metrics_interval=0, now=clock) as c:
        release = tmp_path / "release"
        job = c.submit(f"while [ ! -e {release} ]; do sleep 0.05; done", resources={"gpus": 2})
        c.wait_state(job["id"], "RUNNING")
        # an hour of two GPUs: GPU 0 busy half the time, GPU 1 idle throughout; the second
        # half of GPU 0 already downsampled (a merged sample carries its idle time and peaks)
        write_metrics(
            job_dir(c.state_dir, job["id"]),
            "n1",
            [
                header("n1", [0, 1]),
                sample(T0 + 900, 900, {0: 100, 1: 0}, mem=10 * 2**30),
                sample(T0 + 1800, 900, {0: 50, 1: 0}, mem=30 * 2**30),
                {
                    "t": T0 + 3600,
                    "d": 1800,
                    "s": 1800,
                    "g": [
                        [
                            0,
                            1.0,
                            2**30,
                            80 * 2**30,
                            100.0,
                            40,
                            1980,
                            0.0,
                            2.0,
                            40 * 2**30,
                            200.0,
                            50,
                            1800,
                        ],
                        [
                            1,
                            0.0,
                            2**30,
                            80 * 2**30,
                            100.0,
                            40,
                            1980,
                            0.0,
                            0.0,
                            2**30,
                            100.0,
                            40,
                            1800,
                        ],
                    ],
                },
            ],
        )
        clock.advance(3600)
        release.touch()
        ended = c.wait_state(job["id"], "COMPLETED")
        # GPU 0: (100×900 + 50×900 + 1×1800) / 3600 = 38 %; GPU 1: 0 %; both: 19 %.
        # Idle: GPU 0 1800 s, GPU 1 3600 s of 7200 GPU-seconds = 0.75 of 2 GPU-hours.
        assert ended["efficiency"] == {
            "gpu_util_avg": 19.0,
            "gpu_mem_peak_bytes": 40 * 2**30,
            "gpu_hours": 2.0,
            "gpu_hours_idle": 1.5,
        }
        metrics = JobMetrics.model_validate(c.get(f"/v1/jobs/{job['id']}/metrics").json())
        assert metrics.efficiency is not None and metrics.efficiency.gpu_hours_idle == 1.5
        listed = c.get("/v1/jobs", params={"all": "true"}).json()["jobs"]
        assert [j["efficiency"] for j in listed if j["id"] == job["id"]] == [ended["efficiency"]]


def test_efficiency_of_a_cancelled_gpu_job_without_samples(tmp_path: Path) -> None:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc))
    with jobs_center(tmp_path, gpus=4, metrics_interval=0, now=clock) as c:
        job = c.submit("sleep 30", resources={"gpus": 1})
        cpu_only = c.submit("sleep 30")
        c.wait_state(job["id"], "RUNNING")
        c.wait_state(cpu_only["id"], "RUNNING")
        clock.advance(1800)
        for j in (job, cpu_only):
            c.post(f"/v1/jobs/{j['id']}/cancel")
        ended = c.wait_state(job["id"], "CANCELLED")
        assert ended["efficiency"] == {
            "gpu_util_avg": None,
            "gpu_mem_peak_bytes": None,
            "gpu_hours": 0.5,
            "gpu_hours_idle": None,
        }
        assert c.wait_state(cpu_only["id"], "CANCELLED")["efficiency"] is None
        notes = JobMetrics.model_validate(c.get(f"/v1/jobs/{job['id']}/metrics").json()).notes
        assert notes == ["no samples were recorded for this job"]
