"""`--json FIELDS`, as `gh` has it: `kaic jobs --json id,state` prints only those fields of
each job (`--jq` then runs over what is left).

Click options take a value always or never, so `--json` stays a flag and the fields are taken
off the command line before Click reads it (`split_json_fields`): `--json=FIELDS` always,
`--json FIELDS` when the next word is a list of field names (a comma in it, or a name the
JSON documents use) and not a file here — so `kaic wait --json 42` and `kaic data push --json
data results` keep their arguments.
"""

from __future__ import annotations

import os
import re
from functools import cache
from typing import Any

from kaic.errors import UsageError

_NAMES = re.compile(r"[a-z_][a-z0-9_]*(,[a-z_][a-z0-9_]*)*")

#: keys of the JSON documents that are not fields of a wire model
_DOCUMENT_KEYS = frozenset(
    {
        "tasks", "events", "files_transferred", "files_skipped", "files_deleted",
        "bytes_transferred", "seconds", "verified", "token_source", "center", "profile",
        "inputs", "outputs", "path", "size", "mtime", "mode", "type",
    }
)  # fmt: skip


@cache
def field_vocabulary() -> frozenset[str]:
    """Every field name kaic's JSON documents use: the wire models' and the documents'."""
    import pydantic

    import kaic.models as models

    names: set[str] = set(_DOCUMENT_KEYS)
    for value in vars(models).values():
        if isinstance(value, type) and issubclass(value, pydantic.BaseModel):
            names.update(value.model_fields)
    return frozenset(names)


def _fields(word: str) -> bool:
    if not _NAMES.fullmatch(word) or os.path.exists(word):
        return False
    return "," in word or word in field_vocabulary()


def split_json_fields(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """`argv` with `--json FIELDS` / `--json=FIELDS` turned into `--json`, and the fields
    (None when none were named). Nothing after `--` is touched (a job's own command)."""
    out: list[str] = []
    fields: list[str] | None = None
    words = iter(argv)
    for word in words:
        if word == "--":
            out += [word, *words]
            break
        if word.startswith("--json="):
            fields = [f for f in word.split("=", 1)[1].split(",") if f]
            out.append("--json")
            continue
        out.append(word)
        if word == "--json":
            following = next(words, None)
            if following is None:
                break
            if _fields(following):
                fields = following.split(",")
            else:
                out.append(following)
                if following == "--":
                    out += list(words)
                    break
    return out, fields or None


def select_fields(data: Any, fields: list[str]) -> Any:
    """Only `fields` of a document, or of each document of a list; UsageError naming the
    fields there are when one is unknown."""

    def pick(doc: Any) -> Any:
        if not isinstance(doc, dict):
            return doc
        unknown = [f for f in fields if f not in doc]
        if unknown:
            raise UsageError(
                f"--json: unknown field {unknown[0]!r}",
                hint="fields: " + ", ".join(sorted(doc)),
            )
        return {f: doc[f] for f in fields}

    return [pick(d) for d in data] if isinstance(data, list) else pick(data)
