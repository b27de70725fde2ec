"""`/v1/tokens`: named, scoped, expiring API tokens for CI (secret shown once)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response

from kaic.center.deps import InteractivePrincipal, SettingsDep, StoreDep
from kaic.center.errors import ApiError
from kaic.center.security import hash_token, new_api_token
from kaic.center.store import AccessTokenRow
from kaic.models import SCOPES, ApiTokenCreate, ApiTokenCreated, ApiTokenInfo, ErrorResponse

router = APIRouter(
    prefix="/v1/tokens",
    tags=["tokens"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse, "description": "API tokens cannot manage tokens"},
    },
)


def _info(row: AccessTokenRow) -> ApiTokenInfo:
    return ApiTokenInfo(
        id=row.id,
        name=row.name or "",
        scopes=list(row.scopes),
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=row.last_used_at,
        revoked=row.revoked,
    )


@router.post(
    "",
    status_code=201,
    response_model=ApiTokenCreated,
    responses={422: {"model": ErrorResponse}},
)
def create_token(
    body: ApiTokenCreate, principal: InteractivePrincipal, store: StoreDep, settings: SettingsDep
) -> ApiTokenCreated:
    """Create an API token; the secret is in this response only and is stored hashed."""
    unknown = [scope for scope in body.scopes if scope not in SCOPES]
    if unknown:
        raise ApiError(
            422,
            "invalid_request",
            f"unknown scope {unknown[0]!r}; valid scopes: {', '.join(SCOPES)}",
        )
    if not body.scopes:
        raise ApiError(422, "invalid_request", "an API token needs at least one scope")
    scopes = list(dict.fromkeys(body.scopes))  # de-duplicated, order kept
    secret = new_api_token()
    row = store.insert_access_token(
        token_hash=hash_token(secret),
        user_id=principal.user_id,
        kind="api",
        scopes=scopes,
        expires_at=settings.now() + timedelta(days=body.expires_in_days),
        name=body.name,
    )
    return ApiTokenCreated(**_info(row).model_dump(), token=secret)


@router.get("", response_model=list[ApiTokenInfo])
def list_tokens(principal: InteractivePrincipal, store: StoreDep) -> list[ApiTokenInfo]:
    """The caller's API tokens, revoked ones included, newest first (no secrets)."""
    return [_info(row) for row in store.list_api_tokens(principal.user_id)]


@router.delete(
    "/{token_id}",
    status_code=204,
    response_class=Response,
    response_model=None,
    responses={404: {"model": ErrorResponse}},
)
def revoke_token(token_id: str, principal: InteractivePrincipal, store: StoreDep) -> Response:
    """Revoke one of the caller's API tokens.

    Another user's token answers 404 exactly like an unknown id, so ids reveal nothing.
    """
    if not store.revoke_api_token(principal.user_id, token_id):
        raise ApiError(404, "not_found", f"no API token with id {token_id!r}")
    return Response(status_code=204)
