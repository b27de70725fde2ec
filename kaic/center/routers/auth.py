"""`/v1/auth`: password (+OTP) and refresh grants, and logout."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from kaic.center.deps import (
    ClientAddress,
    CurrentPrincipal,
    LoginLimiterDep,
    SettingsDep,
    StoreDep,
)
from kaic.center.errors import ApiError
from kaic.center.ratelimit import KeyLimit, Refusal, address_key
from kaic.center.security import check_password, hash_token, totp_step
from kaic.center.sessions import issue_session_tokens
from kaic.center.store import UserRow
from kaic.models import ErrorResponse, RevokeRequest, TokenRequest, TokenResponse

logger = logging.getLogger("kaic.center")

router = APIRouter(
    prefix="/v1/auth",
    tags=["auth"],
    responses={401: {"model": ErrorResponse}, 422: {"model": ErrorResponse}},
)

_BAD_CREDENTIALS = "invalid username or password"


@router.post(
    "/token",
    response_model=TokenResponse,
    responses={429: {"model": ErrorResponse, "description": "too many failed logins"}},
)
def token(
    body: TokenRequest,
    client: ClientAddress,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
) -> TokenResponse:
    """Exchange a password (+OTP) or a refresh token for a new access + refresh pair."""
    if body.grant_type == "password":
        return _password_grant(body, client, store, settings, limiter)
    return _refresh_grant(body, store, settings)


def _password_grant(
    body: TokenRequest,
    client: str,
    store: StoreDep,
    settings: SettingsDep,
    limiter: LoginLimiterDep,
) -> TokenResponse:
    """Check a password (+OTP) under the failed-login limits of its account and address.

    The account key protects one account: a few failures lock it, whatever the address.
    The address key stops guessing across many accounts (spraying), which the account keys
    cannot see; but everyone behind one NAT or untrusted proxy shares an address, so its
    limit is higher, only failures count, and while it is locked a password that comes
    with a one-time code is still checked: a guesser cannot produce the code, and any
    failure then gets the same 429, so the lock reveals nothing about the password.
    """
    if not body.username or body.password is None:
        raise ApiError(422, "invalid_request", "the password grant needs 'username' and 'password'")
    account_key = "user:" + body.username.lower()
    limits = (
        KeyLimit(account_key, limiter.max_failures),
        KeyLimit(
            address_key(client),
            settings.login_address_max_failures,
            pass_when_locked=bool(body.otp),
        ),
    )
    # Checked before the password, the same for real and made-up usernames.
    attempt = limiter.begin(limits)
    if isinstance(attempt, Refusal):
        raise _too_many(attempt.retry_after, account=attempt.key == account_key)
    address_locked = bool(attempt.passed_locks)
    failed = True
    try:
        user = _check_credentials(body, client, store, settings, need_otp=address_locked)
        failed = False
    finally:
        for key in limiter.end(attempt, failed=failed):
            _log_lock(body.username, client, store, settings, account=key == account_key)
    limiter.reset(account_key)
    logger.info("user %s logged in from %s", user.name, client)
    return issue_session_tokens(store, settings, user.id)


def _log_lock(
    username: str, client: str, store: StoreDep, settings: SettingsDep, *, account: bool
) -> None:
    """One warning per lock set, not per attempt refused: a flood does not flood the log.
    A user name is named only if it is a user's (people type passwords into that field)."""
    if not account:
        logger.warning(
            "too many failed logins from %s: password-only logins from it refused for %d s",
            client,
            settings.login_lockout,
        )
        return
    user = store.get_user(username)
    logger.warning(
        "too many failed logins for %s (last from %s): refused for %d s",
        f"user {user.name}" if user else "a user name that does not exist",
        client,
        settings.login_lockout,
    )


def _too_many(retry_after: int, *, account: bool) -> ApiError:
    if account:
        message = f"too many failed logins for this account; try again in {retry_after} s"
    else:
        message = (
            f"too many failed logins from your address; try again in {retry_after} s "
            "(an account with a one-time code can log in meanwhile)"
        )
    return ApiError(429, "rate_limited", message, headers={"Retry-After": str(retry_after)})


def _check_credentials(
    body: TokenRequest, client: str, store: StoreDep, settings: SettingsDep, *, need_otp: bool
) -> UserRow:
    """`_check_password_and_otp`, with every failure a 429 when `need_otp` (the address is
    locked)."""
    try:
        return _check_password_and_otp(body, client, store, settings, need_otp=need_otp)
    except ApiError:
        if need_otp:
            # From a locked address every failure looks the same: no hint which factor
            # was wrong, nor whether the account exists.
            raise _too_many(settings.login_lockout, account=False) from None
        raise


def _check_password_and_otp(
    body: TokenRequest, client: str, store: StoreDep, settings: SettingsDep, *, need_otp: bool
) -> UserRow:
    """The user whose password (and one-time code, if it has one) `body` carries.

    `need_otp`: only a password *with* a valid one-time code will do (the address is
    locked). Raises ApiError 401 otherwise; every such answer is a failed login.
    """
    assert body.username is not None and body.password is not None
    user = store.get_user(body.username)
    if need_otp and (
        user is None
        or not user.totp_secret
        or not body.otp
        or totp_step(user.totp_secret, body.otp, settings.now()) is None
    ):
        # From a locked address only a valid one-time code earns the (costly) password
        # check: a flood of guesses must not keep scrypt busy. Every such refusal is fast
        # and the same, so timing tells nothing but "the code was valid".
        logger.info("refused login from locked address %s", client)
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    # check_password runs scrypt even for unknown users, so timing does not tell them apart.
    if not check_password(body.password, user.password_hash if user else None) or user is None:
        logger.info("failed login for a user name from %s", client)
        raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
    if not user.totp_secret:
        if need_otp:
            logger.info("refused password-only login for user %s from %s", user.name, client)
            raise ApiError(401, "invalid_credentials", _BAD_CREDENTIALS)
        return user
    if not body.otp:
        # This answer confirms the password, so it counts as a failed attempt: password
        # guessing against an OTP account is rate limited like any other.
        raise ApiError(401, "otp_required", "this account needs a one-time code: send 'otp' too")
    step = totp_step(user.totp_secret, body.otp, settings.now())
    if step is None:
        logger.info("failed one-time code for user %s from %s", user.name, client)
        # Distinct from a wrong password (which is checked first): the user should fix the
        # code, not the password. `otp_required` already tells the password was right.
        raise ApiError(401, "invalid_otp", "the one-time code is wrong or expired")
    if not store.claim_totp_step(user.id, step):
        # Someone saw this code (shoulder, phishing proxy, log): it opens nothing twice.
        logger.warning("replayed one-time code for user %s from %s", user.name, client)
        raise ApiError(
            401, "otp_reused", "this one-time code was already used; wait for the next one"
        )
    return user


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
