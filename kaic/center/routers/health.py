"""`GET /v1/health`: liveness and identity of this center, without authentication."""

from __future__ import annotations

from fastapi import APIRouter, Request

from kaic import __version__
from kaic.center.deps import SettingsDep
from kaic.models import Health

router = APIRouter(prefix="/v1", tags=["health"])


@router.get("/health", response_model=Health)
def health(request: Request, settings: SettingsDep) -> Health:
    """Server status, version, executor and the random id of this server instance.

    `degraded` when the executor cannot reach its batch system (slurmrestd down or slow):
    jobs keep their last known state until it is back; `detail` says what is wrong.
    """
    executor_health = request.app.state.scheduler.executor.health()
    return Health(
        status="ok" if executor_health.ok else "degraded",
        detail=executor_health.detail,
        version=__version__,
        executor=settings.executor,
        instance_id=request.app.state.instance_id,
        local=bool(settings.local_user),
    )
