"""Secret models: a user's named secrets, write-only through the API.

A value goes to the center once (`PUT /v1/secrets/{name}`) and comes back from it never: the
answers carry names and dates only. A job names the secrets it needs (`JobSubmit.secrets`,
`{VAR: NAME}`); the center puts their values into the job's environment when it starts.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, WithJsonSchema
from pydantic_core import PydanticCustomError

from kaic.models.limits import (
    ENV_NAME_PATTERN,
    MAX_ENV_NAME_LENGTH,
    MAX_ENV_VALUE_LENGTH,
    EnvName,
    Text,
)

#: a secret's name: what `kaic secret set NAME` and `{secret: NAME}` write
SECRET_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
MAX_SECRET_NAME_LENGTH = 64
#: a secret's value becomes one environment variable's: the same bound
MAX_SECRET_VALUE_LENGTH = MAX_ENV_VALUE_LENGTH
#: the most secrets one user may keep (each a row; listing them is one page)
MAX_SECRETS_PER_USER = 256

_NAME = re.compile(SECRET_NAME_PATTERN)


def check_secret_name(name: str) -> str:
    """`name` if it is a valid secret name; a pydantic error naming the rule otherwise."""
    if len(name) > MAX_SECRET_NAME_LENGTH or not _NAME.match(name):
        raise PydanticCustomError(
            "secret_name",
            "{name} is not a valid secret name (letters, digits, '_', '.', '-', not starting "
            "with a punctuation mark, at most {limit} characters)",
            {"name": repr(name[:40]), "limit": MAX_SECRET_NAME_LENGTH},
        )
    return name


SECRET_NAME_JSON_SCHEMA = {
    "type": "string",
    "pattern": SECRET_NAME_PATTERN,
    "minLength": 1,
    "maxLength": MAX_SECRET_NAME_LENGTH,
}
SecretName = Annotated[
    str, AfterValidator(check_secret_name), WithJsonSchema(SECRET_NAME_JSON_SCHEMA)
]


class SecretValue(BaseModel):
    """`PUT /v1/secrets/{name}`: the value (never echoed, never logged, never answered)."""

    value: Annotated[
        str,
        Text(
            MAX_SECRET_VALUE_LENGTH,
            refused=r"\x00",
            refused_name="NUL characters",
            min_length=1,
        ),
    ]


class SecretInfo(BaseModel):
    """A secret as the API shows it: its name and dates, never its value."""

    name: str
    created_at: datetime
    updated_at: datetime


def _check_refs_size(refs: dict[str, str]) -> dict[str, str]:
    if len(refs) > MAX_SECRETS_PER_USER:
        raise PydanticCustomError(
            "too_many",
            "at most {limit} secrets, got {count}",
            {"limit": MAX_SECRETS_PER_USER, "count": len(refs)},
        )
    return refs


#: `JobSubmit.secrets`: environment variable -> the name of one of the user's secrets
SecretRefs = Annotated[
    dict[EnvName, SecretName],
    AfterValidator(_check_refs_size),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_SECRETS_PER_USER,
            "propertyNames": {"pattern": ENV_NAME_PATTERN, "maxLength": MAX_ENV_NAME_LENGTH},
            "additionalProperties": SECRET_NAME_JSON_SCHEMA,
        }
    ),
]
