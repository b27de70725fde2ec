"""What the user typed, turned into request models: the one mapping of a model's validation
errors to usage errors that name the flag.

A flow that builds a request model from flags or arguments (a job for `kaic bench --remote`,
an API token, a password grant) does it inside `user_input`, which turns pydantic's
ValidationError into a `UsageError` (exit 2): `--partition: must not contain control
characters …`, never a traceback or "internal error". A job file's keys are mapped the same
way, with file and line, by `kaic.jobspec`.

Only models built inside the block are affected: an answer from the center that does not fit
its model is the client's `ServerError`, never a ValidationError.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager

from pydantic import ValidationError

from kaic.errors import UsageError


def _quoted(value: object) -> str:
    """The rejected value as Python writes it (control characters escaped), at most 60
    characters, as `kaic.jobspec` quotes a job file's values."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def usage_error(
    exc: ValidationError, names: Mapping[str, str], secrets: Collection[str] = ()
) -> UsageError:
    """One line per problem: the flag (or argument) that gave the value, and why it is
    refused. `names` maps a field path (`partition`, `resources.gpus`) to what the user
    typed (`--partition`, `--gpus`, `NAME`); the values of `secrets` (a password) are never
    quoted back."""
    lines = []
    for error in exc.errors():
        path = ".".join(str(part) for part in error["loc"])
        name = names.get(path) or names.get(path.split(".")[0]) or path or "input"
        message = str(error["msg"])
        message = message[:1].lower() + message[1:]
        secret = path in secrets or path.split(".")[0] in secrets
        if "input" in error and not secret and not isinstance(error["input"], (dict, list)):
            message += f" (got {_quoted(error['input'])})"
        lines.append(f"{name}: {message}")
    return UsageError("\n".join(lines))


@contextmanager
def user_input(names: Mapping[str, str], *, secrets: Collection[str] = ()) -> Iterator[None]:
    """Build request models from user input inside this block (see the module docstring)."""
    try:
        yield
    except ValidationError as exc:
        raise usage_error(exc, names, secrets) from None
