"""What a request to the center may contain: every limit in one place, and the field types
that enforce them (shared by the center, which answers 422/413, and by `kaic submit`, which
refuses the same job file before sending it).

The limits are far above what a real job needs. They exist so that hostile or broken input
is refused at the API, naming the field and the limit, instead of reaching a process
environment, an argv, a path or the database: a NUL byte in a job name once made every
scheduler tick fail, and a 100 MB script was stored twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

KIB = 1024
MIB = 1024 * KIB

#: `name`, `project`, `partition`, `resources.gpu_type`
MAX_NAME_LENGTH = 128
#: `image` (a container reference: registry/path:tag@sha256:digest)
MAX_IMAGE_LENGTH = 1024
#: `workdir` (Linux's PATH_MAX)
MAX_PATH_LENGTH = 4096
#: one job id (`depends_on` items, list cursors)
MAX_JOB_ID_LENGTH = 64
#: `depends_on` entries
MAX_DEPENDENCIES = 1000
#: `run`, in characters (JSON Schema's `maxLength` counts characters too)
MAX_SCRIPT_LENGTH = 1 * MIB
#: `env`: variables, the length of one name and of one value, and all names and values
#: together (a value stays below the kernel's 128 KiB per environment string even in UTF-8)
MAX_ENV_VARS = 256
MAX_ENV_NAME_LENGTH = 128
MAX_ENV_VALUE_LENGTH = 32 * KIB
MAX_ENV_TOTAL_LENGTH = 128 * KIB
#: `array`: the spec's length, its tasks, and the highest task index (Slurm's own ceiling
#: for MaxArraySize is 4000001)
MAX_ARRAY_SPEC_LENGTH = 1024
MAX_ARRAY_TASKS = 10_000
MAX_ARRAY_INDEX = 4_000_000
#: `time_limit_seconds`: one year
MAX_TIME_LIMIT_SECONDS = 366 * 86400
#: `resources.memory` (e.g. `512G`)
MAX_MEMORY_LENGTH = 32
#: a password or a token in a request
MAX_SECRET_LENGTH = 1024
#: an OpenSSH public key line (an RSA key of 16384 bits takes about 2.8 KB)
MAX_PUBLIC_KEY_LENGTH = 16 * KIB
#: a whole request body; larger ones are refused with 413 before they are read. Above the
#: largest valid submission (a 1 Mi-character script may take 6 MiB as JSON escapes).
MAX_REQUEST_BYTES = 8 * MIB
#: a log byte offset: the largest integer every JSON client represents exactly
MAX_LOG_OFFSET = 2**53 - 1
#: `tail` lines of a log
MAX_TAIL_LINES = 1_000_000_000
#: an opaque list cursor
MAX_CURSOR_LENGTH = 128
#: the largest integer SQLite stores (a forged cursor past it is refused, not a 500)
MAX_SQLITE_INTEGER = 2**63 - 1
#: an interactive session's command (`kaic exec`): its words, the length of one word and of
#: all together (the kernel's own ceiling for one word is 128 KiB, for all about 2 MiB)
MAX_ARGV_ITEMS = 1024
MAX_ARG_LENGTH = 32 * KIB
MAX_ARGV_TOTAL_LENGTH = 256 * KIB
#: a terminal's rows and columns
MAX_TERMINAL_DIMENSION = 1000
#: one WebSocket message of an interactive session, either way (a larger one closes the
#: session with 1009); a session's data travels in chunks of at most `CHUNK_BYTES`
MAX_FRAME_BYTES = 1 * MIB
CHUNK_BYTES = 64 * KIB

#: C0 and C1 control characters, DEL included (NUL, ESC, newline, ...)
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
NO_NUL_PATTERN = r"^[^\x00]*$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _escape(char: str) -> str:
    return {"\0": "NUL", "\n": "newline", "\r": "carriage return", "\t": "tab"}.get(
        char, f"\\x{ord(char):02x}"
    )


@dataclass(frozen=True)
class Text:
    """Pydantic metadata for a bounded string that refuses some characters.

    Messages name the limit (`must be at most 128 characters, got 300`; `must not contain
    control characters such as NUL, ESC or newline; found \\x1b at index 3`); the JSON
    schema says the same as `maxLength` and `pattern`.
    """

    max_length: int
    #: a regex character class (without brackets) of the refused characters
    refused: str = CONTROL_CHARACTERS
    #: what the message calls the refused characters
    refused_name: str = "control characters such as NUL, ESC or newline"
    min_length: int = 0

    def _check(self, value: str) -> str:
        if len(value) > self.max_length:
            raise PydanticCustomError(
                "too_long",
                "must be at most {limit} characters, got {length}",
                {"limit": self.max_length, "length": len(value)},
            )
        if len(value) < self.min_length:
            raise PydanticCustomError("too_short", "must not be empty", {"limit": self.min_length})
        found = re.search(f"[{self.refused}]", value)
        if found is not None:
            raise PydanticCustomError(
                "refused_character",
                "must not contain {what}; found {char} at index {index}",
                {"what": self.refused_name, "char": _escape(found.group()), "index": found.start()},
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["maxLength"] = self.max_length
        if self.min_length:
            json_schema["minLength"] = self.min_length
        json_schema["pattern"] = f"^[^{self.refused}]*$"
        return json_schema


#: a short name (job, project, partition, GPU type)
NameText = Annotated[str, Text(MAX_NAME_LENGTH)]
ImageText = Annotated[str, Text(MAX_IMAGE_LENGTH)]
PathText = Annotated[str, Text(MAX_PATH_LENGTH)]
JobIdText = Annotated[str, Text(MAX_JOB_ID_LENGTH, min_length=1)]
#: one word of a command (argv): anything but NUL, which cannot reach a process
ArgText = Annotated[str, Text(MAX_ARG_LENGTH, refused=r"\x00", refused_name="NUL characters")]
#: a script: newlines and tabs are its substance; only NUL cannot reach bash
ScriptText = Annotated[
    str, Text(MAX_SCRIPT_LENGTH, refused=r"\x00", refused_name="NUL characters", min_length=1)
]


_ENV_NAME = re.compile(ENV_NAME_PATTERN)


def _check_env_name(name: str) -> str:
    if len(name) > MAX_ENV_NAME_LENGTH or not _ENV_NAME.match(name):
        raise PydanticCustomError(
            "env_name",
            "{name} is not a valid variable name (letters, digits and _, not a digit first, "
            "at most {limit} characters)",
            {"name": repr(name[:40]), "limit": MAX_ENV_NAME_LENGTH},
        )
    return name


#: an environment variable's name (POSIX: letters, digits, `_`, not a digit first)
EnvName = Annotated[str, AfterValidator(_check_env_name)]


def _check_env_size(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_VARS:
        raise PydanticCustomError(
            "too_many",
            "at most {limit} variables, got {count}",
            {"limit": MAX_ENV_VARS, "count": len(env)},
        )
    total = sum(len(name) + len(value) for name, value in env.items())
    if total > MAX_ENV_TOTAL_LENGTH:
        raise PydanticCustomError(
            "too_long",
            "names and values together must be at most {limit} characters, got {length}",
            {"limit": MAX_ENV_TOTAL_LENGTH, "length": total},
        )
    return env


ENV_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "maxProperties": MAX_ENV_VARS,
    "propertyNames": {"pattern": ENV_NAME_PATTERN, "maxLength": MAX_ENV_NAME_LENGTH},
    "additionalProperties": {
        "type": "string",
        "maxLength": MAX_ENV_VALUE_LENGTH,
        "pattern": NO_NUL_PATTERN,
    },
}
#: `env`, a process environment: POSIX names; values (newlines are fine) without NUL; the
#: count and the total size bounded. The schema says all but the total, which it cannot.
EnvMapping = Annotated[
    dict[
        EnvName,
        Annotated[str, Text(MAX_ENV_VALUE_LENGTH, refused=r"\x00", refused_name="NUL characters")],
    ],
    AfterValidator(_check_env_size),
    WithJsonSchema(ENV_JSON_SCHEMA),
]
