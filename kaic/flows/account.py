"""Who you are on the center (`kaic whoami`) and your API tokens (`kaic token create`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.models import ApiTokenCreated

#: what the user typed for each field of a new API token
_TOKEN_INPUTS = {"name": "NAME", "scopes": "--scope", "expires_in_days": "--expires"}


def whoami(session: Session) -> dict[str, Any]:
    """The user, their unix account and projects, and where the token comes from
    (`token_source`: env | keyring | file | local)."""
    me = session.auth.me()
    return {
        "user": me.user,
        "unix_account": me.unix_account,
        "center": session.center_url,
        "profile": session.profile,
        "token_source": session.token_source,
        "expires_at": me.expires_at.isoformat() if me.expires_at else None,
        "projects": [p.name for p in me.projects],
    }


def create_token(
    session: Session, name: str, scopes: list[str], expires_in_days: int
) -> ApiTokenCreated:
    """A new API token (validated before anything is sent: a bad name is a usage error)."""
    from kaic.flows.inputs import user_input

    with user_input(_TOKEN_INPUTS):
        return session.tokens.create(name, scopes, expires_in_days)
