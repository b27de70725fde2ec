"""The jobs API: idempotency, dry runs, quota, membership, isolation, scopes, listing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.admin import add_project

from .conftest import FakeClock, assert_error
from .jobs_support import PROJECT, JobsCenter, jobs_center


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path, gpus=4, gpu_type="H100") as c:
        yield c


def test_idempotent_resubmission(center: JobsCenter) -> None:
    body = {"run": "echo once", "name": "idem"}
    first = center.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201
    again = center.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = center.post(
        "/v1/jobs", json={**body, "name": "other"}, headers={"Idempotency-Key": "k-1"}
    )
    error = assert_error(other, 409, "idempotency_conflict")
    assert first.json()["id"] in error["message"]
    # Keys are per user: bob's k-1 is his own.
    bobs = center.post("/v1/jobs", "bob", json=body, headers={"Idempotency-Key": "k-1"})
    assert bobs.status_code == 201 and bobs.json()["id"] != first.json()["id"]
    listed = center.get("/v1/jobs").json()["jobs"]
    assert [j["id"] for j in listed] == [first.json()["id"]]


def test_dry_run_creates_nothing(center: JobsCenter) -> None:
    ok = center.post(
        "/v1/jobs",
        params={"dry_run": "true"},
        json={"run": "true", "resources": {"gpus": 2}, "time_limit_seconds": 3600},
    )
    assert ok.status_code == 200
    result = ok.json()
    assert result["dry_run"] is True and result["valid"] is True and result["problems"] == []
    assert result["estimated_gpu_hours"] == 2.0
    assert result["estimated_start"] is not None

    over = center.post(
        "/v1/jobs",
        params={"dry_run": "true"},
        json={"run": "true", "resources": {"gpus": 4}, "time_limit_seconds": 26 * 3600},
    ).json()
    assert over["valid"] is False and over["estimated_gpu_hours"] == 104.0
    assert any("quota" in p and PROJECT in p for p in over["problems"])

    invalid = center.post(
        "/v1/jobs", params={"dry_run": "true"}, json={"run": "true", "resources": {"gpus": 9}}
    ).json()
    assert invalid["valid"] is False and "has 4 in all" in invalid["problems"][0]
    assert center.get("/v1/jobs", params={"all": "true"}).json() == {
        "jobs": [],
        "next_cursor": None,
    }


def test_estimated_start_from_running_time_limits(center: JobsCenter) -> None:
    job = center.submit("sleep 30", resources={"gpus": 4}, time_limit_seconds=600)
    center.wait_state(job["id"], "RUNNING")
    result = center.post(
        "/v1/jobs", params={"dry_run": "true"}, json={"run": "x", "resources": {"gpus": 1}}
    ).json()
    started = center.job(job["id"])["started_at"]
    assert result["valid"] is True
    assert started < result["estimated_start"]
    center.post(f"/v1/jobs/{job['id']}/cancel")
    center.wait_done(job["id"])


def test_quota_and_membership(center: JobsCenter) -> None:
    response = center.post(
        "/v1/jobs", json={"run": "true", "resources": {"gpus": 4}, "time_limit_seconds": 100000}
    )
    assert "100.00 left" in assert_error(response, 403, "quota_exceeded")["message"]
    response = center.post("/v1/jobs", json={"run": "true", "project": "bob-lab"})
    message = assert_error(response, 403, "forbidden")["message"]
    assert "bob-lab" in message and PROJECT in message
    response = center.post("/v1/jobs", "carol", json={"run": "true"})
    message = assert_error(response, 422, "invalid_job")["message"]
    assert "kaic center project add" in message and "--member carol" in message
    # CPU jobs cost nothing, even on an exhausted project.
    add_project(center.state_dir, "empty", gpu_hours=0.0, members=["carol"])
    assert center.submit("true", "carol")["project"] == "empty"
    response = center.post("/v1/jobs", "carol", json={"run": "true", "resources": {"gpus": 1}})
    assert_error(response, 403, "quota_exceeded")


def test_other_users_jobs_are_invisible(center: JobsCenter) -> None:
    job = center.submit("sleep 30")
    center.wait_state(job["id"], "RUNNING")
    for response in (
        center.get(f"/v1/jobs/{job['id']}", "bob"),
        center.get(f"/v1/jobs/{job['id']}/events", "bob"),
        center.get(f"/v1/jobs/{job['id']}/logs", "bob"),
        center.get(f"/v1/jobs/{job['id']}/logs", "bob", params={"follow": "true"}),
        center.post(f"/v1/jobs/{job['id']}/cancel", "bob"),
    ):
        assert_error(response, 404, "not_found")
    assert center.get("/v1/jobs", "bob").json()["jobs"] == []
    response = center.post("/v1/jobs", "bob", json={"run": "true", "depends_on": [job["id"]]})
    assert_error(response, 422, "invalid_job")
    assert center.job(job["id"])["state"] == "RUNNING"
    center.post(f"/v1/jobs/{job['id']}/cancel")
    assert center.wait_done(job["id"])["state"] == "CANCELLED"


def test_scopes(center: JobsCenter) -> None:
    job = center.submit("true")
    response = center.post("/v1/jobs", "alice-read", json={"run": "true"})
    assert_error(response, 403, "insufficient_scope")
    response = center.post(f"/v1/jobs/{job['id']}/cancel", "alice-read")
    assert_error(response, 403, "insufficient_scope")
    assert center.get(f"/v1/jobs/{job['id']}", "alice-read").status_code == 200
    assert center.get("/v1/partitions", "alice-read").status_code == 200
    assert_error(center.client.get("/v1/jobs"), 401, "invalid_token")
    assert_error(center.client.get("/v1/partitions"), 401, "invalid_token")


def test_list_filters_and_pagination(tmp_path: Path) -> None:
    clock = FakeClock()
    with jobs_center(tmp_path, now=clock) as center:
        old = center.submit("true")
        center.wait_done(old["id"])
        clock.advance(2 * 3600)
        ids = [center.submit("exit 0" if i % 2 else "exit 1")["id"] for i in range(5)]
        for job_id in ids:
            center.wait_done(job_id)
        running = center.submit("sleep 30")
        center.wait_state(running["id"], "RUNNING")

        recent = center.get("/v1/jobs").json()
        assert [j["id"] for j in recent["jobs"]] == [running["id"], *reversed(ids)]
        everything = center.get("/v1/jobs", params={"all": "true"}).json()["jobs"]
        assert everything[-1]["id"] == old["id"] and len(everything) == 7
        failed = center.get("/v1/jobs", params={"state": "FAILED"}).json()["jobs"]
        assert [j["id"] for j in failed] == [ids[4], ids[2], ids[0]]
        both = center.get(
            "/v1/jobs", params=[("state", "RUNNING"), ("state", "FAILED"), ("all", "true")]
        ).json()["jobs"]
        assert len(both) == 4

        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, object] = {"all": "true", "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = center.get("/v1/jobs", params=params).json()
            seen += [j["id"] for j in page["jobs"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == [j["id"] for j in everything]

        assert_error(center.get("/v1/jobs", params={"limit": 0}), 422, "invalid_request")
        assert_error(center.get("/v1/jobs", params={"limit": 501}), 422, "invalid_request")
        assert_error(center.get("/v1/jobs", params={"cursor": "zz"}), 422, "invalid_request")
        assert_error(center.get("/v1/jobs", params={"state": "NOPE"}), 422, "invalid_request")
        assert_error(center.get("/v1/jobs/12345"), 404, "not_found")
        center.post(f"/v1/jobs/{running['id']}/cancel")
        center.wait_done(running["id"])


@pytest.mark.parametrize(
    "body",
    [
        {"run": "true", "resources": {"gpus": False}},
        {"run": "true", "resources": {"nodes": True}},
        {"run": "true", "time_limit_seconds": True},
    ],
)
def test_a_count_given_as_true_or_false_is_refused(
    center: JobsCenter, body: dict[str, object]
) -> None:
    # A bool is an int to Python: `"gpus": false` was a job with 0 GPUs (found by schemathesis).
    for dry_run in ("true", "false"):
        response = center.post("/v1/jobs", json=body, params={"dry_run": dry_run})
        assert "true/false" in assert_error(response, 422, "invalid_request")["message"]
