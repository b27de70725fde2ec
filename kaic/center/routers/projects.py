"""`GET /v1/projects`: the caller's GPU-hour allocations."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from kaic.center.deps import Principal, StoreDep, require_scope
from kaic.models import ErrorResponse, ProjectInfo

router = APIRouter(
    prefix="/v1",
    tags=["resources"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.get("/projects", response_model=list[ProjectInfo])
def list_projects(
    principal: Annotated[Principal, Depends(require_scope("jobs:read"))], store: StoreDep
) -> list[ProjectInfo]:
    """The projects the caller belongs to, with granted, used and remaining GPU hours."""
    return [
        ProjectInfo(
            name=m.project.name,
            gpu_hours_granted=m.project.gpu_hours_granted,
            gpu_hours_used=m.project.gpu_hours_used,
            # An overdrawn project has nothing left, not a negative balance.
            gpu_hours_remaining=max(0.0, m.project.gpu_hours_granted - m.project.gpu_hours_used),
        )
        for m in store.user_memberships(principal.user_id)
    ]
