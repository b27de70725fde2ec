"""Issuing tokens: login sessions (access + rotating refresh) and the local-center token."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from kaic.center.security import (
    hash_token,
    new_access_token,
    new_api_token,
    new_family_id,
    new_refresh_token,
)
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import SCOPES, TokenResponse

LOCAL_TOKEN_TTL = timedelta(days=365)


def issue_session_tokens(
    store: Store, settings: CenterSettings, user_id: int, *, family_id: str | None = None
) -> TokenResponse:
    """A new access + refresh pair, in `family_id` or (for a fresh login) a new family."""
    now = settings.now()
    family = family_id or new_family_id()
    access = new_access_token()
    refresh = new_refresh_token()
    access_expires = now + timedelta(seconds=settings.access_token_ttl)
    with store.transaction():
        store.insert_access_token(
            token_hash=hash_token(access),
            user_id=user_id,
            kind="session",
            scopes=SCOPES,
            expires_at=access_expires,
            family_id=family,
        )
        store.insert_refresh_token(
            token_hash=hash_token(refresh),
            family_id=family,
            user_id=user_id,
            expires_at=now + timedelta(seconds=settings.refresh_token_ttl),
        )
    return TokenResponse(
        access_token=access,
        refresh_token=refresh,
        expires_in=settings.access_token_ttl,
        expires_at=access_expires,
    )


@dataclass(frozen=True)
class LocalToken:
    token: str
    user: str
    expires_at: datetime


def mint_local_token(store: Store, user_id: int, user: str, now: datetime) -> LocalToken:
    """Revoke every earlier local token and mint a new one, with every scope, for the user.

    All local tokens go, not just this user's: one local center has one live local token,
    even when it is restarted for a different local user.
    """
    token = new_api_token()
    expires_at = now + LOCAL_TOKEN_TTL
    with store.transaction():
        store.revoke_tokens_of_kind("local")
        store.insert_access_token(
            token_hash=hash_token(token),
            user_id=user_id,
            kind="local",
            scopes=SCOPES,
            expires_at=expires_at,
            name="local",
        )
    return LocalToken(token=token, user=user, expires_at=expires_at)
