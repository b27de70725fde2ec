"""`GET /v1/partitions`: the center's queues, their GPUs and queue depth."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from kaic.center.deps import Principal, require_scope
from kaic.center.jobs.scheduler import Scheduler
from kaic.models import ErrorResponse, Partition

router = APIRouter(
    prefix="/v1",
    tags=["resources"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.get("/partitions", response_model=list[Partition])
def list_partitions(
    principal: Annotated[Principal, Depends(require_scope("jobs:read"))], request: Request
) -> list[Partition]:
    """Each partition's GPU type, total and free GPUs, maximum time and pending jobs."""
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler.partition_views()
