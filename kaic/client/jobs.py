"""The jobs area of the center API: jobs, their events and cancellation, and the partitions
and projects a job runs on and is charged to."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from kaic.client.api import CenterClient
from kaic.client.retry import IDEMPOTENCY_HEADER
from kaic.models import (
    DryRunResult,
    Job,
    JobEvent,
    JobList,
    JobSubmit,
    Partition,
    ProjectInfo,
)


def _job_path(job_id: str, suffix: str = "") -> str:
    return f"/v1/jobs/{quote(job_id, safe='')}{suffix}"


class JobsAPI:
    """The jobs API of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def submit(self, spec: JobSubmit, *, idempotency_key: str | None = None) -> Job:
        """Submit a job. Always carries an Idempotency-Key, so a retried POST cannot
        submit the job twice (sfapi_client's lesson)."""
        key = idempotency_key or str(uuid.uuid4())
        resp = self.client.request(
            "POST",
            "/v1/jobs",
            json=spec.model_dump(mode="json", exclude_none=True),
            headers={IDEMPOTENCY_HEADER: key},
        )
        return self.client.parse(resp, Job)

    def dry_run(self, spec: JobSubmit) -> DryRunResult:
        resp = self.client.request(
            "POST",
            "/v1/jobs",
            params={"dry_run": "true"},
            json=spec.model_dump(mode="json", exclude_none=True),
            headers={IDEMPOTENCY_HEADER: str(uuid.uuid4())},
        )
        return self.client.parse(resp, DryRunResult)

    def get(self, job_id: str) -> Job:
        return self.client.parse(self.client.request("GET", _job_path(job_id)), Job)

    def events(self, job_id: str) -> list[JobEvent]:
        resp = self.client.request("GET", _job_path(job_id, "/events"))
        return self.client.parse_list(resp, JobEvent)

    def cancel(self, job_id: str) -> Job:
        # Cancelling is idempotent on the center, so the key only makes the retry explicit.
        resp = self.client.request(
            "POST", _job_path(job_id, "/cancel"), headers={IDEMPOTENCY_HEADER: str(uuid.uuid4())}
        )
        return self.client.parse(resp, Job)

    def iter_jobs(
        self, *, states: Iterable[str] = (), all_jobs: bool = False, limit: int | None = None
    ) -> Iterator[Job]:
        """The caller's jobs, newest first, following the cursor until `limit` jobs."""
        cursor: str | None = None
        seen = 0
        while True:
            params: dict[str, object] = {"state": list(states), "all": str(all_jobs).lower()}
            page = min(limit - seen, 500) if limit else 100
            params["limit"] = page
            if cursor:
                params["cursor"] = cursor
            result = self.client.parse(
                self.client.request("GET", "/v1/jobs", params=params), JobList
            )
            for job in result.jobs:
                yield job
                seen += 1
                if limit and seen >= limit:
                    return
            if not result.next_cursor or not result.jobs:
                return
            cursor = result.next_cursor

    def tasks(self, array_id: str) -> Iterator[Job]:
        """An array's tasks, by index (`GET /v1/jobs/{id}/tasks`, following the cursor)."""
        cursor: str | None = None
        while True:
            params: dict[str, object] = {"limit": 1000}
            if cursor:
                params["cursor"] = cursor
            resp = self.client.request("GET", _job_path(array_id, "/tasks"), params=params)
            page = self.client.parse(resp, JobList)
            yield from page.jobs
            if not page.next_cursor or not page.jobs:
                return
            cursor = page.next_cursor

    def partitions(self) -> list[Partition]:
        return self.client.parse_list(self.client.request("GET", "/v1/partitions"), Partition)

    def projects(self) -> list[ProjectInfo]:
        """`GET /v1/projects`: GPU-hour allocations of the user's projects."""
        return self.client.parse_list(self.client.request("GET", "/v1/projects"), ProjectInfo)
