"""The keys of a job file and the flags of `kaic submit`, derived from the wire model.

Each field of `JobSubmit` (and of `Resources` inside it) is a job-file key; its `JobKey`
metadata (`kaic.models.fields`) names the key where it differs from the field
(`time_limit`) and the flag that sets it (`--gpu-type`). Only what the model cannot say is
listed here: the keys kaic handles itself (`inputs`, `outputs`: staging), the names people
reach for by mistake, and the checks of values written as text (sizes, ids, `NAME=VALUE`).
"""

from __future__ import annotations

import difflib
import re
from typing import get_args

from pydantic import BaseModel

from kaic.models.arrays import parse_array as _parse_array
from kaic.models.fields import JobField, job_fields
from kaic.models.jobs import JobSubmit

#: the model's fields, in its order (`resources` with its own)
FIELDS = job_fields(JobSubmit)
#: every field a value can be given for (those of `resources` by their dotted path)
LEAVES = {f.path: f for top in FIELDS for f in (top.fields or (top,))}
#: the keys of the model that are mappings of their own (`resources`)
GROUPS = {f.key: f for f in FIELDS if f.fields}
#: keys of a job file that are not part of the job sent: kaic stages them (after `run`)
STAGING_KEYS = ("inputs", "outputs")
TRANSFER_KEYS = ("from", "to")


def _top_keys() -> tuple[str, ...]:
    keys: list[str] = []
    for f in FIELDS:
        keys.append(f.key)
        if f.key == "run":
            keys.extend(STAGING_KEYS)
    return tuple(keys)


TOP_KEYS = _top_keys()


def _followup_model(f: JobField) -> type[BaseModel] | None:
    """The model of a top-level field that is an optional model of its own (`retry`,
    `notify`): written as a mapping of its keys, or on one line like its flag."""
    if f.fields:
        return None
    for arg in get_args(f.info.annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


#: key -> model of the fields whose value is a model of its own (`retry:`, `notify:`)
FOLLOWUP: dict[str, type[BaseModel]] = {
    f.key: model for f in FIELDS if (model := _followup_model(f)) is not None
}
#: which `kaic submit` flag sets which key path (for messages about values from flags)
FLAGS = {path: f.flag for path, f in LEAVES.items() if f.flag is not None}
#: the flags by their Python names (`--gpu-type` -> `gpu_type`): `SubmitOverrides`' names
OPTIONS: dict[str, JobField] = {f.option: f for f in LEAVES.values() if f.option is not None}

# Names people reach for that difflib would not match: key -> what to write instead. A key
# of a group written at the top (`gpus:`) points to where it belongs (`resources.gpus`).
ALIASES = {
    "time": "time_limit",
    "walltime": "time_limit",
    "timelimit": "time_limit",
    "command": "run",
    "script": "run",
    "cmd": "run",
    "environment": "env",
    "after": "depends_on",
    "dependencies": "depends_on",
    "dependency": "depends_on",
    "queue": "partition",
    "account": "project",
    "container": "image",
    **{f.key: f.path for group in GROUPS.values() for f in group.fields},
    "mem": "resources.memory",
}
GROUP_ALIASES = {"resources": {"gpu": "gpus", "mem": "memory", "node": "nodes", "type": "gpu_type"}}

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MEMORY_RE = re.compile(r"^([0-9]+)\s*(?:([KMGT])(?:i?B|i)?)?$", re.IGNORECASE)


def parse_array(text: str) -> str:
    """Check an array spec (``0-15%4``, ``1,3,5``, ``0-9``) with the model's one parser
    (`kaic.models.arrays`); returns it stripped. ValueError says what is wrong."""
    spec = text.strip()
    _parse_array(spec)
    return spec


def normalize_memory(text: str) -> str | None:
    """``512G`` / ``512gb`` / ``512GiB`` -> ``512G``; a bare number stays; None if invalid."""
    match = _MEMORY_RE.match(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return f"{int(number)}{(unit or '').upper()}"


def env_name_ok(name: str) -> bool:
    return _ENV_NAME_RE.match(name) is not None


def job_id_ok(text: str) -> bool:
    return bool(text) and not any(c.isspace() for c in text)


def suggest(key: str, known: tuple[str, ...], aliases: dict[str, str]) -> str:
    lowered = key.lower()
    if lowered in aliases and aliases[lowered] != key:
        return f" (did you mean '{aliases[lowered]}'?)"
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    if close and close[0] != key:
        return f" (did you mean '{close[0]}'?)"
    return f" (known keys: {', '.join(known)})"


def short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
