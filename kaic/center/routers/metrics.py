"""`/v1/jobs/{id}/metrics` and `/v1/metrics/running`: what the samplers recorded of the
caller's jobs (`kaic.center.metrics`).

Owner-only like logs: another user's job is a 404, never a 403.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from kaic.center.deps import Principal, require_scope
from kaic.center.metrics.service import MetricsService
from kaic.center.routers.jobs import ServiceDep
from kaic.models import ErrorResponse
from kaic.models.metrics import JobMetrics, RunningMetrics

router = APIRouter(
    prefix="/v1",
    tags=["metrics"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)


def get_metrics_service(request: Request) -> MetricsService:
    """The app's metrics service."""
    service: MetricsService = request.app.state.metrics
    return service


MetricsDep = Annotated[MetricsService, Depends(get_metrics_service)]
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]


@router.get(
    "/jobs/{job_id}/metrics", response_model=JobMetrics, responses={404: {"model": ErrorResponse}}
)
def job_metrics(
    job_id: str,
    principal: Reader,
    jobs: ServiceDep,
    metrics: MetricsDep,
    since: Annotated[
        datetime | None,
        Query(description="only samples after this time (the previous answer's `next_since`)"),
    ] = None,
) -> JobMetrics:
    """A job's (or array task's) samples after `since` (all when absent), a summary per GPU
    over the whole job, notes (no NVML on a node: CPU and memory only), and the efficiency
    of a finished GPU job. An array is a 422 naming its tasks: samples are per task."""
    row = jobs.get_task_row(
        job_id, principal.user_id, why="its metrics are per task; choose one of"
    )
    return metrics.job_metrics(row, since)


@router.get("/metrics/running", response_model=RunningMetrics)
def running_metrics(principal: Reader, metrics: MetricsDep) -> RunningMetrics:
    """The latest sample (one per node) of each of the caller's running jobs and array
    tasks, in one call, and since when each job's GPUs have all been idle."""
    return metrics.running(principal.user_id)
