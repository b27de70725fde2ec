"""An array's tasks through the API: counted by state on the array, listed page by page by
`GET /v1/jobs/{id}/tasks`, invisible to other users."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import assert_error
from .jobs_support import JobsCenter, jobs_center

# task 1 and 4 fail with exit 3, the others complete
RUN = "exit $(( KAIC_ARRAY_TASK_ID % 3 == 1 ? 3 : 0 ))"


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path) as c:
        yield c


def test_the_array_counts_its_tasks_by_state_and_lists_them_by_page(center: JobsCenter) -> None:
    array = center.submit(RUN, array="0-5")
    final = center.wait_done(array["id"])
    assert final["state"] == "FAILED"
    assert final["array_counts"] == {"COMPLETED": 4, "FAILED": 2}
    listed = center.get("/v1/jobs").json()["jobs"]
    assert [j["array_counts"] for j in listed if j["id"] == array["id"]] == [final["array_counts"]]

    seen: list[dict] = []  # type: ignore[type-arg]
    cursor = None
    pages = 0
    while True:
        params = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        page = center.get(f"/v1/jobs/{array['id']}/tasks", params=params).json()
        seen += page["jobs"]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert pages == 2
    assert [t["id"] for t in seen] == [f"{array['id']}_{i}" for i in range(6)]
    assert [(t["state"], t["exit_code"]) for t in seen] == [
        ("COMPLETED", 0), ("FAILED", 3), ("COMPLETED", 0),
        ("COMPLETED", 0), ("FAILED", 3), ("COMPLETED", 0),
    ]  # fmt: skip
    assert all(t["array_counts"] == {} for t in seen)


def test_tasks_of_a_plain_job_or_of_another_users_array(center: JobsCenter) -> None:
    job = center.submit("true")
    assert_error(center.get(f"/v1/jobs/{job['id']}/tasks"), 422, "invalid_request")
    array = center.submit("true", array="0-1")
    assert_error(center.get(f"/v1/jobs/{array['id']}/tasks", "bob"), 404, "not_found")
    assert_error(center.get("/v1/jobs/nope/tasks"), 404, "not_found")
    bad = center.get(f"/v1/jobs/{array['id']}/tasks", params={"cursor": "bogus"})
    assert bad.status_code == 422
