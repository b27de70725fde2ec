"""`/v1/jobs/{id}/metrics` and `/v1/metrics/running`: what the samplers recorded of the
caller's jobs (`kaic.center.metrics`).

Owner-only like logs: another user's job is a 404, never a 403.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from kaic.center.deps import Principal, require_scope
from kaic.center.errors import ApiError
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


def parse_since(text: str | None) -> datetime | None:
    """`since` as a time: ISO 8601 only (a bare number is not a time here), UTC when it
    names no zone; 422 otherwise."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.strip().upper().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(422, "invalid_request", f"since: {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _json(answer: JobMetrics | RunningMetrics) -> Response:
    """The answer, serialised once: it is built from the models already (a thousand jobs'
    samples), so FastAPI need not validate it again against the response model."""
    return Response(answer.model_dump_json(), media_type="application/json")


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
        str | None,
        Query(
            max_length=64,
            description="only samples after this time, ISO 8601 (the previous answer's "
            "`next_since`)",
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> Response:
    """A job's (or array task's) samples after `since` (all when absent), a summary per GPU
    over the whole job, notes (no NVML on a node: CPU and memory only), and the efficiency
    of a finished GPU job. An array is a 422 naming its tasks: samples are per task."""
    row = jobs.get_task_row(
        job_id, principal.user_id, why="its metrics are per task; choose one of"
    )
    return _json(metrics.job_metrics(row, parse_since(since)))


@router.get("/metrics/running", response_model=RunningMetrics)
def running_metrics(principal: Reader, metrics: MetricsDep) -> Response:
    """The latest sample (one per node) of each of the caller's running jobs and array
    tasks, in one call, and since when each job's GPUs have all been idle."""
    return _json(metrics.running(principal.user_id))
