"""FastAPI dependencies: the store, the settings, the client's address, and the
authenticated principal."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from kaic.center.errors import ApiError
from kaic.center.ratelimit import LoginRateLimiter
from kaic.center.security import hash_token
from kaic.center.settings import CenterSettings, IPNetwork
from kaic.center.store import Store, TokenKind
from kaic.models import SCOPES


def get_store(request: Request) -> Store:
    """The app's store."""
    store: Store = request.app.state.store
    return store


def get_settings(request: Request) -> CenterSettings:
    """The app's settings."""
    settings: CenterSettings = request.app.state.settings
    return settings


def get_login_limiter(request: Request) -> LoginRateLimiter:
    """The app's failed-login limiter."""
    limiter: LoginRateLimiter = request.app.state.login_limiter
    return limiter


StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[CenterSettings, Depends(get_settings)]
LoginLimiterDep = Annotated[LoginRateLimiter, Depends(get_login_limiter)]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a proxy writes it (`1.2.3.4`, `::1`, `[::1]:443`, `1.2.3.4:80`), IPv4
    mapped into IPv6 unwrapped; None if it is not one."""
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the TCP `peer`, unless the peer is a trusted proxy — then the
    right-most `X-Forwarded-For` address that is not a trusted proxy itself.

    Only the right end of the header is believed: each trusted proxy appends the address it
    saw, while anything further left came from the client and may be made up. An entry that
    is not an address ends the walk at the last trusted hop.
    """
    peer_ip = _ip(peer)
    if peer_ip is None:
        return peer

    def is_trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip in network for network in trusted)

    if not is_trusted(peer_ip):
        return str(peer_ip)
    hops = [hop for header in forwarded_for for hop in header.split(",") if hop.strip()]
    client = peer_ip
    for hop in reversed(hops):
        ip = _ip(hop)
        if ip is None:
            break
        client = ip
        if not is_trusted(ip):
            break
    return str(client)


def get_client_address(request: Request, settings: SettingsDep) -> str:
    """The calling client's IP address (see `forwarded_client`), as logs and limits use it."""
    peer = request.client.host if request.client else "unknown"
    return forwarded_client(
        peer, request.headers.getlist("x-forwarded-for"), settings.trusted_proxy_networks
    )


ClientAddress = Annotated[str, Depends(get_client_address)]


@dataclass(frozen=True)
class Principal:
    """Who is calling, and with which token."""

    user_id: int
    user: str
    unix_account: str
    token_id: str
    token_kind: TokenKind
    scopes: tuple[str, ...]
    expires_at: datetime
    #: the session family of a session token (None for api and local tokens)
    family_id: str | None


# auto_error=False: a missing header must produce our error shape, not FastAPI's.
_bearer = HTTPBearer(auto_error=False, description="access, API or local token")


def _invalid_token(message: str, *, missing: bool = False) -> ApiError:
    # RFC 6750: no error attribute when no credentials were sent at all.
    challenge = "Bearer" if missing else 'Bearer error="invalid_token"'
    return ApiError(401, "invalid_token", message, headers={"WWW-Authenticate": challenge})


def authenticate(store: Store, settings: CenterSettings, token: str | None) -> Principal:
    """The principal a bearer `token` stands for; ApiError 401 when it stands for none."""
    if not token:
        raise _invalid_token("missing bearer token; log in first", missing=True)
    row = store.find_access_token(hash_token(token))
    if row is None or row.revoked:
        raise _invalid_token("token is unknown or has been revoked; log in again")
    if row.expires_at <= settings.now():
        raise _invalid_token("token has expired; refresh it or log in again")
    store.touch_access_token(row.id)
    # Session and local tokens act with every scope; API tokens with the ones they were given.
    scopes = row.scopes if row.kind == "api" else SCOPES
    return Principal(
        user_id=row.user_id,
        user=row.user_name,
        unix_account=row.unix_account,
        token_id=row.id,
        token_kind=row.kind,
        scopes=tuple(scopes),
        expires_at=row.expires_at,
        family_id=row.family_id,
    )


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header (None without one)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def get_principal(
    store: StoreDep,
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the `Authorization: Bearer` token of the request (401 otherwise)."""
    return authenticate(store, settings, credentials.credentials if credentials else None)


def check_scope(principal: Principal, scope: str) -> Principal:
    """`principal` if it holds `scope`; ApiError 403 otherwise."""
    if scope not in principal.scopes:
        raise ApiError(403, "insufficient_scope", f"this token lacks the '{scope}' scope")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]


def require_scope(scope: str) -> Callable[[Principal], Principal]:
    """A dependency that admits only principals holding `scope` (403 otherwise)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def dependency(principal: CurrentPrincipal) -> Principal:
        return check_scope(principal, scope)

    return dependency


def require_interactive(principal: CurrentPrincipal) -> Principal:
    """Admit session and local tokens only: API tokens may not manage tokens."""
    if principal.token_kind == "api":
        raise ApiError(
            403,
            "insufficient_scope",
            "insufficient scope: API tokens cannot manage tokens; "
            "use a login session (`kaic login`)",
        )
    return principal


InteractivePrincipal = Annotated[Principal, Depends(require_interactive)]
