"""`/v1/secrets`: a user's named secrets, write-only (`kaic secret set|list|rm`).

A value goes in with `PUT` and never comes out: every answer carries names and dates only.
Setting and removing need the `secrets:write` scope; listing needs `secrets:read` (a token
made for jobs need not learn which secrets exist). Another user's secret answers 404 exactly
like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response

from kaic.center.deps import Principal, require_scope
from kaic.center.errors import ApiError
from kaic.center.secrets import Secrets, TooManySecrets
from kaic.models import ErrorResponse, SecretInfo, SecretValue
from kaic.models.secrets import (
    MAX_SECRET_NAME_LENGTH,
    MAX_SECRETS_PER_USER,
    SECRET_NAME_PATTERN,
)

router = APIRouter(
    prefix="/v1/secrets",
    tags=["secrets"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)

Reader = Annotated[Principal, Depends(require_scope("secrets:read"))]
Writer = Annotated[Principal, Depends(require_scope("secrets:write"))]
SecretNameParam = Annotated[
    str,
    Path(
        min_length=1,
        max_length=MAX_SECRET_NAME_LENGTH,
        pattern=SECRET_NAME_PATTERN,
        description="letters, digits, '_', '.', '-'; not starting with a punctuation mark",
    ),
]


def _secrets(request: Request) -> Secrets:
    secrets: Secrets = request.app.state.secrets
    return secrets


SecretsDep = Annotated[Secrets, Depends(_secrets)]


def _not_found(name: str) -> ApiError:
    return ApiError(404, "not_found", f"no secret {name!r}; `kaic secret list` shows yours")


@router.get("", response_model=list[SecretInfo])
def list_secrets(principal: Reader, secrets: SecretsDep) -> list[SecretInfo]:
    """The caller's secrets by name, with when each was set (never their values)."""
    return secrets.store.infos(principal.user_id)


@router.get("/{name}", response_model=SecretInfo, responses={404: {"model": ErrorResponse}})
def get_secret(name: SecretNameParam, principal: Reader, secrets: SecretsDep) -> SecretInfo:
    """One of the caller's secrets: its name and dates (never its value)."""
    info = secrets.store.info(principal.user_id, name)
    if info is None:
        raise _not_found(name)
    return info


@router.put(
    "/{name}",
    response_model=SecretInfo,
    responses={
        201: {"model": SecretInfo, "description": "a new secret"},
        422: {"model": ErrorResponse},
    },
)
def set_secret(
    name: SecretNameParam,
    body: SecretValue,
    principal: Writer,
    secrets: SecretsDep,
    response: Response,
) -> SecretInfo:
    """Set (or replace) one of the caller's secrets; the answer is 201 for a new one, 200
    for a replaced one, and never holds the value. Jobs that start from now on get it."""
    try:
        info, created = secrets.set(principal.user_id, name, body.value)
    except TooManySecrets:
        raise ApiError(
            422,
            "invalid_request",
            f"you keep {MAX_SECRETS_PER_USER} secrets already, the most a user may; remove "
            "one with `kaic secret rm NAME`",
        ) from None
    response.status_code = 201 if created else 200
    return info


@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    response_model=None,
    responses={404: {"model": ErrorResponse}},
)
def remove_secret(name: SecretNameParam, principal: Writer, secrets: SecretsDep) -> Response:
    """Remove one of the caller's secrets. Pending jobs that name it fail when they start."""
    if not secrets.store.delete(principal.user_id, name):
        raise _not_found(name)
    return Response(status_code=204)
