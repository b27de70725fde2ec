"""`kaic secret set|list|rm`: a user's secrets on the center (values write-only).

A value never comes from the command line (it would sit in the shell's history and in
`/proc/*/cmdline` for everyone on the machine): it is read from a hidden prompt or from
standard input, checked here, and sent once in a request body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kaic.errors import UsageError

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.models import SecretInfo

#: what the user typed for each part of a secret
_INPUTS = {"name": "NAME", "value": "the value"}


def check_name(name: str) -> None:
    """A usage error naming NAME when it cannot be a secret's name (before any prompt)."""
    from pydantic import TypeAdapter

    from kaic.flows.inputs import user_input
    from kaic.models.secrets import SecretName

    with user_input({"": "NAME"}):
        TypeAdapter(SecretName).validate_python(name)


def stdin_value(text: str) -> str:
    """The value piped in: all of it, less one final line break (what `echo` adds)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def set_secret(
    open_session: Callable[[], Session], name: str, read_value: Callable[[], str]
) -> SecretInfo:
    """Set (or replace) the secret `name` to what `read_value` returns (a hidden prompt or
    standard input); the value is checked before anything is sent."""
    from kaic.flows.inputs import user_input
    from kaic.models import SecretValue

    check_name(name)
    value = read_value()
    if not value:
        raise UsageError(
            f"the value of secret {name!r} is empty",
            hint='type it at the prompt, or pipe it in: `printf %s "$VALUE" | '
            f"kaic secret set {name} --stdin`",
        )
    with user_input(_INPUTS, secrets=("value",)):
        SecretValue(value=value)
    session = open_session()
    with user_input(_INPUTS, secrets=("value",)):
        return session.secrets.set(name, value)


def list_secrets(session: Session) -> list[SecretInfo]:
    """The user's secrets: names and dates, never values."""
    return session.secrets.all()


def remove_secret(open_session: Callable[[], Session], name: str) -> None:
    """Remove the secret `name` (a job that names it and has not started fails to start)."""
    check_name(name)
    open_session().secrets.remove(name)
