"""The queue: GPUs handed out exclusively, FIFO, arrays with limits, dependencies, partitions,
GPU-hour charging."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kaic.center.settings import PartitionConfig
from kaic.models.arrays import parse_array

from .conftest import FakeClock, assert_error
from .jobs_support import PROJECT, jobs_center, max_overlap, spans, wait_for

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


def test_array_respects_its_limit(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=0) as center:
        script = (
            'echo "task $KAIC_ARRAY_TASK_ID of $KAIC_ARRAY_JOB_ID as $KAIC_JOB_ID"\n'
            'echo "start $(date +%s.%N)"\nsleep 0.3\necho "end $(date +%s.%N)"\n'
        )
        parent = center.submit(script, array="0-3%2", name="arr")
        array_id = parent["id"]
        assert parent["array_tasks"] == [f"{array_id}_{i}" for i in range(4)]
        assert parent["state"] == "PENDING"
        done = center.wait_done(array_id)
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        intervals = []
        for index, task_id in enumerate(parent["array_tasks"]):
            task = center.job(task_id)
            assert task["array_job_id"] == array_id and task["array_task_id"] == index
            assert task["state"] == "COMPLETED"
            out = center.stdout(task_id)
            assert out.startswith(f"task {index} of {array_id} as {task_id}\n")
            intervals.append(spans(out))
        assert max_overlap(intervals) <= 2
        assert any(
            e["message"] == "pending: JobArrayTaskLimit" for t in parent["array_tasks"]
            for e in center.events(t)
        )  # fmt: skip

        listed = center.get("/v1/jobs").json()["jobs"]
        assert [j["id"] for j in listed] == [array_id]
        response = center.logs(array_id)
        error = assert_error(response, 422, "invalid_request")
        assert f"{array_id}_0" in error["message"]


def test_array_state_is_that_of_its_first_failed_task(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center:
        parent = center.submit('exit "$KAIC_ARRAY_TASK_ID"', array="0,3,5")
        done = center.wait_done(parent["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 3)
        assert done["reason"].startswith(f"task {parent['id']}_3 ended FAILED")
        cancelled = center.submit("sleep 30", array="0-5%1")
        center.wait_state(cancelled["array_tasks"][0], "RUNNING")
        assert center.job(cancelled["id"])["state"] == "RUNNING"
        center.post(f"/v1/jobs/{cancelled['id']}/cancel")
        done = center.wait_done(cancelled["id"])
        assert done["state"] == "CANCELLED"
        states = {center.job(t)["state"] for t in cancelled["array_tasks"]}
        assert states == {"CANCELLED"}


def test_dependencies_after_ok(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center:
        first = center.submit(WAIT_FOR_GO + "echo first")
        second = center.submit("echo second", depends_on=[first["id"]])
        wait_for(lambda: center.job(second["id"])["reason"] == "Dependency")
        assert center.job(second["id"])["depends_on"] == [first["id"]]
        (center.home() / "go").touch()
        assert center.wait_done(second["id"])["state"] == "COMPLETED"
        assert center.job(first["id"])["ended_at"] <= center.job(second["id"])["started_at"]

        failing = center.submit("exit 1")
        dependant = center.submit("echo never", depends_on=[failing["id"], first["id"]])
        done = center.wait_done(dependant["id"])
        assert done["state"] == "CANCELLED"
        assert done["reason"] == f"DependencyNeverSatisfied: job {failing['id']} ended FAILED"
        assert center.stdout(dependant["id"]) == ""

        response = center.post("/v1/jobs", json={"run": "true", "depends_on": ["999"]})
        assert_error(response, 422, "invalid_job")


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
