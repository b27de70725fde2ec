"""Typed errors and the one table that maps them to exit codes and next-step hints.

Every layer (client, auth, config, staging, bench) raises these; only the CLI renders them.
This module imports nothing heavy so the CLI can use it on its start path.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes of CLI.md; waiting commands also return the job's own code."""

    OK = 0
    ERROR = 1
    USAGE = 2
    AUTH = 3
    NOT_FOUND = 4
    UNREACHABLE = 5
    REJECTED = 6
    JOB_TIMEOUT = 124
    JOB_CANCELLED = 125
    JOB_SYSTEM_END = 126
    INTERRUPTED = 130


class KaicError(Exception):
    """Base of every error kaic reports to a user: a message, an optional hint, an exit code."""

    exit_code: ExitCode = ExitCode.ERROR
    default_hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint if hint is not None else self.default_hint
        #: machine-readable error code from the center, when there is one
        self.code = code


class UsageError(KaicError):
    exit_code = ExitCode.USAGE
    default_hint = "see `kaic --help`"


class ConfigError(KaicError):
    """A config or credentials file that cannot be used (corrupt, unsafe permissions)."""

    exit_code = ExitCode.ERROR


class AuthRequired(KaicError):
    exit_code = ExitCode.AUTH
    default_hint = "run `kaic login`"


class NotFound(KaicError):
    exit_code = ExitCode.NOT_FOUND


class Unreachable(KaicError):
    exit_code = ExitCode.UNREACHABLE
    default_hint = "check the center URL and your network, then retry"


class TlsError(Unreachable):
    """TLS with the center failed: its certificate is not trusted (unknown CA, expired, issued
    for another host) or it does not speak TLS. Exit 5 like any transport failure, but it
    fails the same way every time, so it is never retried."""


class Rejected(KaicError):
    exit_code = ExitCode.REJECTED


class RateLimited(Rejected):
    """Too many attempts; `retry_after` seconds until the center accepts another."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object):
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        if self.hint is None and retry_after is not None:
            self.hint = f"wait {int(retry_after + 0.999)} s and try again"


class Interrupted(KaicError):
    """The user pressed Ctrl-C (exit 130, as a shell reports SIGINT). `hint` says how to
    continue, e.g. "run the same command again to resume" for a transfer."""

    exit_code = ExitCode.INTERRUPTED


class ServerError(KaicError):
    """The center failed (HTTP 500) in a way that retrying will not fix."""

    exit_code = ExitCode.ERROR
    default_hint = "report this to the center's operators with the request id"


# HTTP status -> error class: the one place the center's answers become exit codes.
HTTP_STATUS_ERRORS: dict[int, type[KaicError]] = {
    400: Rejected,
    401: AuthRequired,
    403: Rejected,
    404: NotFound,
    409: Rejected,
    413: Rejected,
    422: Rejected,
    429: RateLimited,
    500: ServerError,
    502: Unreachable,
    503: Unreachable,
    504: Unreachable,
}


def error_for_status(status: int) -> type[KaicError]:
    """The error class for an HTTP status (unknown 4xx are rejections, 5xx server errors)."""
    if status in HTTP_STATUS_ERRORS:
        return HTTP_STATUS_ERRORS[status]
    if 400 <= status < 500:
        return Rejected
    return ServerError
