"""`/v1/auth`: password (+OTP) and refresh grants, and logout."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response

from kaic.center.deps import CurrentPrincipal, LoginLimiterDep, SettingsDep, StoreDep
from kaic.center.errors import ApiError
from kaic.center.security import check_password, hash_token, totp_step
from kaic.center.sessions import issue_session_tokens
from kaic.models import ErrorResponse, RevokeRequest, TokenRequest, TokenResponse

logger = logging.getLogger("kaic.center")

router = APIRouter(
    prefix="/v1/auth",
    tags=["auth"],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)

_BAD_CREDENTIALS = "invalid username or password"

#: The client-IP key locks after this many times the per-user failures.
IP_FAILURE_FACTOR = 5


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={429: {"model": ErrorResponse, "description": "too many failed logins"}},
)
def token(
    body: TokenRequest,
    request: Request,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
) -> TokenResponse:
    """Exchange a password (+OTP) or a refresh token for a new access + refresh pair."""
    if body.grant_type == "password":
        return _password_grant(body, _client_ip(request), store, settings, limiter)
    return _refresh_grant(body, store, settings)


def _password_grant(
    body: TokenRequest,
    client_ip: str,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
) -> TokenResponse:
    if not body.username or body.password is None:
        raise ApiError(422, "invalid_request", "the password grant needs 'username' and 'password'")
    user_key = "user:" + body.username.lower()
    ip_key = "ip:" + client_ip
    # Checked before the password, the same for real and made-up usernames, and counted as
    # a failure at once (taken back on success). Every client may share one IP behind a
    # proxy, so the IP key tolerates more failures than a user key: guessing other names
    # must not lock everyone out after five tries.
    for key, limit in ((user_key, None), (ip_key, IP_FAILURE_FACTOR * limiter.max_failures)):
        wait = limiter.attempt(key, limit=limit)
        if wait is not None:
            if key == ip_key:
                limiter.forgive(user_key)
            raise ApiError(
                429,
                "rate_limited",
                f"too many failed logins; try again in {wait} s",
                headers={"Retry-After": str(wait)},
            )

    def fail() -> ApiError:
        return ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)

    user = store.get_user(body.username)
    # check_password runs scrypt even for unknown users, so timing does not tell them apart.
    if not check_password(body.password, user.password_hash if user else None) or user is None:
        logger.info("failed login for a user name from %s", client_ip)
        raise fail()
    if user.totp_secret:
        if not body.otp:
            # This answer confirms the password, so it stays counted as a failed attempt:
            # password guessing against an OTP account is rate limited like any other.
            raise ApiError(
                401, "otp_required", "this account needs a one-time code: send 'otp' too"
            )
        step = totp_step(user.totp_secret, body.otp, settings.now())
        if step is None:
            logger.info("failed one-time code for user %s from %s", user.name, client_ip)
            raise fail()
        if not store.claim_totp_step(user.id, step):
            # Someone saw this code (shoulder, phishing proxy, log): it opens nothing twice.
            logger.warning("replayed one-time code for user %s from %s", user.name, client_ip)
            raise ApiError(
                401,
                "otp_reused",
                "this one-time code was already used; wait for the next one",
            )
    limiter.reset(user_key)
    limiter.forgive(ip_key)
    logger.info("user %s logged in from %s", user.name, client_ip)
    return issue_session_tokens(store, settings, user.id)


def _refresh_grant(body: TokenRequest, store: StoreDep, settings: SettingsDep) -> TokenResponse:
    if not body.refresh_token:
        raise ApiError(422, "invalid_request", "the refresh_token grant needs 'refresh_token'")
    with store.transaction():
        row = store.find_refresh_token(hash_token(body.refresh_token))
        if row is None:
            raise ApiError(401, "invalid_grant", "unknown refresh token; log in again")
        # Reuse is checked before expiry: a replayed token is a theft signal either way.
        reused = row.used_at is not None or row.revoked
        if not reused and row.expires_at <= settings.now():
            raise ApiError(401, "invalid_grant", "refresh token has expired; log in again")
        if not reused and store.mark_refresh_used(row.id):
            return issue_session_tokens(store, settings, row.user_id, family_id=row.family_id)
        store.revoke_family(row.family_id)
    # Raised after the transaction has committed the family's revocation.
    logger.warning("refresh token reuse; revoked session family %s", row.family_id)
    raise ApiError(
        401,
        "refresh_token_reused",
        "refresh token was already used or revoked; the whole session has been revoked, "
        "log in again",
    )


@router.post(
    "/revoke",
    status_code=204,
    response_class=Response,
    response_model=None,
)
def revoke(
    principal: CurrentPrincipal, store: StoreDep, body: RevokeRequest | None = None
) -> Response:
    """Log out: revoke the session family of the given refresh token and of the caller.

    The refresh token's family is revoked only when it belongs to the caller; a foreign or
    unknown refresh token is ignored without saying so. When the caller authenticates with
    a session token, its own family (access and refresh tokens) is revoked too. An API or
    local token is left alone: logging out must not destroy a CI token or the local
    center's token, so with one of those only the given refresh token's family goes.
    """
    with store.transaction():
        if body is not None and body.refresh_token:
            row = store.find_refresh_token(hash_token(body.refresh_token))
            if row is not None and row.user_id == principal.user_id:
                store.revoke_family(row.family_id)
        if principal.token_kind == "session" and principal.family_id:
            store.revoke_family(principal.family_id)
    return Response(status_code=204)
