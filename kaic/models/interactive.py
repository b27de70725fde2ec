"""Interactive access to a running job: the messages of `GET /v1/jobs/{id}/exec` and
`GET /v1/jobs/{id}/forward` (WebSockets; docs/interactive.md has the whole protocol).

exec: the client's first message is an `ExecStart` as **text** JSON; after it every message
is **binary**, its first byte a channel (`STDIN` ... `RESIZE`, Kubernetes' channel protocol)
and the rest the payload. An empty `STDIN` payload is EOF; `RESIZE` carries a
`TerminalSize` as JSON; `STATUS`, the last message of the server, an `ExecStatus`.

forward: binary messages only, the raw bytes of one TCP connection both ways; an empty one
is EOF in that direction.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from kaic.models.limits import (
    MAX_ARGV_ITEMS,
    MAX_ARGV_TOTAL_LENGTH,
    MAX_ENV_TOTAL_LENGTH,
    MAX_ENV_VARS,
    MAX_TERMINAL_DIMENSION,
    ArgText,
    EnvMapping,
)

#: the channels of an exec session (the first byte of every binary message)
STDIN: Final = 0
STDOUT: Final = 1
STDERR: Final = 2
STATUS: Final = 3
RESIZE: Final = 4
CHANNELS: Final = (STDIN, STDOUT, STDERR, STATUS, RESIZE)

#: WebSocket close codes of a session after the upgrade (refusals before it are HTTP answers
#: in the API's error shape): a normal end; the job ended under the session; the port
#: refused the connection inside the job; a message that breaks the protocol; a first
#: message that is not a valid `ExecStart` (4000 + the HTTP status it would have had)
CLOSE_NORMAL: Final = 1000
CLOSE_JOB_ENDED: Final = 4410
CLOSE_CONNECTION_REFUSED: Final = 4502
CLOSE_PROTOCOL_ERROR: Final = 4400
CLOSE_INVALID_START: Final = 4422

#: what `ExecStatus.reason` says when the job's end cut the session
JOB_ENDED: Final = "the job ended"

#: the TCP ports `forward` accepts
MIN_PORT: Final = 1
MAX_PORT: Final = 65535

TerminalDimension = Annotated[int, Field(ge=1, le=MAX_TERMINAL_DIMENSION)]


def _check_argv(argv: list[str]) -> list[str]:
    if not argv[0]:
        raise PydanticCustomError("empty_command", "the command (argv[0]) must not be empty", {})
    total = sum(len(word) for word in argv)
    if total > MAX_ARGV_TOTAL_LENGTH:
        raise PydanticCustomError(
            "too_long",
            "the command's words together must be at most {limit} characters, got {length}",
            {"limit": MAX_ARGV_TOTAL_LENGTH, "length": total},
        )
    return argv


class TerminalSize(BaseModel):
    """A terminal's size: the `RESIZE` channel's payload."""

    model_config = ConfigDict(extra="forbid")

    rows: TerminalDimension
    cols: TerminalDimension


class ExecStart(BaseModel):
    """The first message of an exec session: what to run in the job, and how.

    It runs in the job's allocation as the job's unix account, in its workdir, with its
    environment; `env` is added to that environment, except kaic's own variables (`KAIC_*`)
    and `CUDA_VISIBLE_DEVICES`, which stay the job's. `rows`/`cols` size the terminal of a
    `tty` session (default 24x80).
    """

    model_config = ConfigDict(extra="forbid")

    argv: Annotated[
        list[ArgText],
        Field(min_length=1, max_length=MAX_ARGV_ITEMS),
        AfterValidator(_check_argv),
    ] = Field(description=f"the command and its arguments: at most {MAX_ARGV_ITEMS} words")
    tty: bool = Field(False, description="run on a pseudo-terminal (stdout and stderr merged)")
    rows: TerminalDimension | None = None
    cols: TerminalDimension | None = None
    env: EnvMapping = Field(
        default_factory=dict,
        description=f"variables added to the job's environment: at most {MAX_ENV_VARS}, "
        f"names and values together at most {MAX_ENV_TOTAL_LENGTH} characters",
    )


class ExecStatus(BaseModel):
    """The last message of an exec session (`STATUS`): how the command ended.

    `exit_code` is 128+N when signal N killed it (as for jobs); None when no command ran
    (`reason` says why). `reason` is set when the session was cut rather than ended by the
    command (`"the job ended"`)."""

    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None
