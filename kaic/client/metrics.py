"""The metrics area of the center API: a job's samples and per-GPU summary, and the latest
sample of every running job of the caller in one call (what `kaic top` refreshes from)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote

from kaic.client.api import CenterClient
from kaic.models.metrics import JobMetrics, RunningMetrics


class MetricsAPI:
    """`GET /v1/jobs/{id}/metrics` and `GET /v1/metrics/running` of one center."""

    def __init__(self, client: CenterClient) -> None:
        self.client = client

    def job(self, job_id: str, since: datetime | None = None) -> JobMetrics:
        """`GET /v1/jobs/{id}/metrics`: the job's samples (after `since`, all when None) and
        its per-GPU summary over the whole job, running or finished."""
        params = {"since": since.isoformat()} if since is not None else None
        path = f"/v1/jobs/{quote(job_id, safe='')}/metrics"
        return self.client.parse(self.client.request("GET", path, params=params), JobMetrics)

    def running(self) -> RunningMetrics:
        """`GET /v1/metrics/running`: the latest sample of each of the caller's running jobs —
        one request however many jobs run (never one per job)."""
        return self.client.parse(self.client.request("GET", "/v1/metrics/running"), RunningMetrics)
