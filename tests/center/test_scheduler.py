"""The center's own queue: GPUs handed out exclusively, FIFO, partitions, GPU-hour charging.

Arrays with limits and dependencies are the executor conformance suite's
(`tests/center/conformance/`): every executor's queue must honour them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kaic.center.settings import PartitionConfig
from kaic.models.arrays import parse_array

from .conftest import FakeClock, assert_error
from .jobs_support import PROJECT, jobs_center, wait_for

WAIT_FOR_GO = 'while [ ! -e "$HOME/go" ]; do sleep 0.02; done\n'


def test_parse_array() -> None:
    assert parse_array("0-3%2") == ([0, 1, 2, 3], 2)
    assert parse_array("1,3,5") == ([1, 3, 5], None)
    assert parse_array("0-2,1-4") == ([0, 1, 2, 3, 4], None)
    for bad in ("3-1", "0-5%0", "x", "0-99999"):
        try:
            parse_array(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_gpus_are_exclusive_and_jobs_queue_fifo(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=2, gpu_type="H100") as center:
        script = 'echo "gpus=$CUDA_VISIBLE_DEVICES"\n' + WAIT_FOR_GO
        jobs = [center.submit(script, resources={"gpus": 1}) for _ in range(3)]
        first = center.wait_state(jobs[0]["id"], "RUNNING")
        second = center.wait_state(jobs[1]["id"], "RUNNING")
        third = center.wait_state(jobs[2]["id"], "PENDING")
        wait_for(lambda: center.job(jobs[2]["id"])["reason"] == "Resources")
        assert sorted(first["gpu_ids"] + second["gpu_ids"]) == [0, 1]
        assert third["gpu_ids"] == []
        two_gpus = center.submit("true", resources={"gpus": 2})
        wait_for(lambda: center.job(two_gpus["id"])["reason"] == "Priority")
        cpu_only = center.submit("echo cpu")
        assert center.wait_done(cpu_only["id"])["state"] == "COMPLETED"  # not blocked

        (partition,) = center.get("/v1/partitions").json()
        assert partition == {
            "name": "local",
            "gpu_type": "H100",
            "gpus_total": 2,
            "gpus_free": 0,
            "max_time": None,
            "pending_jobs": 2,
            "default": True,
        }
        dry = center.post(
            "/v1/jobs", params={"dry_run": "true"}, json={"run": "x", "resources": {"gpus": 1}}
        ).json()
        assert dry["valid"] is True and dry["estimated_start"] is None  # no time limits

        (center.home() / "go").touch()
        for job in jobs:
            done = center.wait_done(job["id"])
            assert done["state"] == "COMPLETED"
            assert center.stdout(job["id"]) == f"gpus={done['gpu_ids'][0]}\n"
        assert center.wait_done(two_gpus["id"])["gpu_ids"] == [0, 1]
        assert center.get("/v1/partitions").json()[0]["gpus_free"] == 2


def test_partitions_and_limits(tmp_path: Path) -> None:
    partitions = [
        PartitionConfig("cpu", gpus=0),
        PartitionConfig("h100", gpus=8, gpu_type="H100", max_time_seconds=3600, default=True),
        PartitionConfig("a100", gpus=4, gpu_type="A100"),
    ]
    with jobs_center(tmp_path, partitions=partitions) as center:
        views = center.get("/v1/partitions").json()
        assert [(p["name"], p["gpus_total"], p["default"]) for p in views] == [
            ("cpu", 0, False),
            ("h100", 8, True),
            ("a100", 4, False),
        ]
        assert center.submit("true")["partition"] == "h100"
        by_type = center.submit("true", resources={"gpus": 1, "gpu_type": "a100"})
        assert by_type["partition"] == "a100"
        assert center.submit("true", time_limit_seconds=10)["time_limit_seconds"] == 10
        assert center.submit("true")["time_limit_seconds"] == 3600  # the partition's max

        bad: list[tuple[dict[str, Any], str]] = [
            ({"partition": "nope"}, "unknown partition 'nope'"),
            ({"partition": "a100", "resources": {"gpus": 5}}, "has 4 in all"),
            ({"time_limit_seconds": 7200}, "exceeds partition 'h100'"),
            ({"resources": {"nodes": 2}}, "2 nodes"),
            ({"partition": "a100", "resources": {"gpu_type": "H100"}}, "A100 GPUs, not H100"),
            ({"image": "nvcr.io/x"}, "image"),
        ]
        for extra, fragment in bad:
            response = center.post("/v1/jobs", json={"run": "true", **extra})
            error = assert_error(response, 422, "invalid_job")
            assert fragment in error["message"], (extra, error)
        response = center.post(
            "/v1/jobs", json={"run": "true", "partition": "nope", "resources": {"nodes": 3}}
        )
        message = assert_error(response, 422, "invalid_job")["message"]
        assert "unknown partition" in message and "3 nodes" in message
        # What no center could run is refused by the model itself (kaic.models.limits).
        response = center.post("/v1/jobs", json={"run": "true", "env": {"BAD-NAME": "1"}})
        assert "BAD-NAME" in assert_error(response, 422, "invalid_request")["message"]


def test_gpu_hours_are_charged(tmp_path: Path) -> None:
    clock = FakeClock()
    with jobs_center(tmp_path, gpus=2, now=clock) as center:
        job = center.submit(WAIT_FOR_GO, resources={"gpus": 2})
        center.wait_state(job["id"], "RUNNING")
        clock.advance(1800)
        (center.home() / "go").touch()
        center.wait_done(job["id"])
        (project,) = center.get("/v1/projects").json()
        assert project["name"] == PROJECT
        assert project["gpu_hours_used"] == 1.0
        assert project["gpu_hours_remaining"] == 99.0
        assert "charged 1.0000 GPU-hours" in center.events(job["id"])[-1]["message"]
