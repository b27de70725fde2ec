"""`GET /v1/me`: who the presented token belongs to."""

from __future__ import annotations

from fastapi import APIRouter

from kaic.center.deps import CurrentPrincipal, StoreDep
from kaic.models import ErrorResponse, Me, ProjectRef

router = APIRouter(prefix="/v1", tags=["auth"], responses={401: {"model": ErrorResponse}})


@router.get("/me", response_model=Me)
def me(principal: CurrentPrincipal, store: StoreDep) -> Me:
    """The caller's user, unix account, projects, and the presented token's kind and scopes."""
    return Me(
        user=principal.user,
        unix_account=principal.unix_account,
        projects=[
            ProjectRef(name=m.project.name, role=m.role)
            for m in store.user_memberships(principal.user_id)
        ],
        token_kind=principal.token_kind,
        scopes=list(principal.scopes),
        expires_at=principal.expires_at,
    )
