"""`GET /v1/health`: liveness and identity of this center, without authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kaic import __version__
from kaic.center.deps import SettingsDep
from kaic.models import Health

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request, settings: SettingsDep) -> Health:
    """Server status, version, executor and the random id of this server instance."""
    return Health(
        status="ok",
        version=__version__,
        executor=settings.executor,
        instance_id=request.app.state.instance_id,
        local=bool(settings.local_user),
    )
