"""The values of a job file written in a form of their own, and their readers (`FORMATS`).

`jobfile` reads a field of the wire model by its type (text, or a whole number at least the
model's minimum) unless the field is listed here: `time_limit` is a duration (a bare number
is minutes, as in Slurm), `run` the script (a string, never a list), `array` an array spec
(``1,3,5``), `depends_on` one job id or a list of them, `resources.memory` a size (``512G``),
`env` a mapping NAME: value where a value may be ``{secret: NAME}`` (read in `secrets`, like
the `secrets` key), and `retry`/`notify` a mapping of their model's keys or the flag's
one-line form.

A reader gets the job file's reader (`jobfile._Reader`), the key's line and path and the YAML
node; it returns the value, or reports what is wrong through that reader, which names the
file and line and goes on with the other keys. The readers stand apart from `jobfile`
(loading the file, keeping each key's line, choosing each key's reader) so that a new format
is one function and one entry in `FORMATS`, and each side can be read alone. They use the
job file's reader only through the instance they are handed, so this module imports
`jobfile` for type checking alone: `jobfile` imports this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import BaseModel

from kaic.durations import parse_duration
from kaic.jobspec.keys import FOLLOWUP, env_name_ok, job_id_ok, normalize_memory, parse_array
from kaic.jobspec.secrets import SecretRef, read_env_secret, read_secrets
from kaic.models.followup import Notify, RetryPolicy, parse_notify, parse_retry

if TYPE_CHECKING:
    from kaic.jobspec.jobfile import _Reader

_STR_TAG = "tag:yaml.org,2002:str"


def _parsed(
    reader: _Reader, line: int, key: str, node: yaml.Node, parse: Callable[[str], Any]
) -> Any:
    """A scalar converted by `parse` (None for a null); its ValueError names the line."""
    raw = reader.text(line, key, node)
    if raw is None:
        return None
    try:
        return parse(raw)
    except ValueError as exc:
        reader.fail(line, key, str(exc))


def _read_duration(reader: _Reader, line: int, key: str, node: yaml.Node) -> int | None:
    return _parsed(reader, line, key, node, parse_duration)


def _read_array(reader: _Reader, line: int, key: str, node: yaml.Node) -> str | None:
    return _parsed(reader, line, key, node, parse_array)


def _read_run(reader: _Reader, line: int, key: str, node: yaml.Node) -> str:
    if isinstance(node, yaml.SequenceNode):
        reader.fail(line, key, "must be a string; use `run: |` for a multi-line script")
    run = reader.text(line, key, node)
    if run is None:
        reader.fail(line, key, "is empty; give the script the job runs")
    return run


def _read_memory(reader: _Reader, line: int, key: str, node: yaml.Node) -> str | None:
    raw = reader.text(line, key, node)
    if raw is None:
        return None
    memory = normalize_memory(raw)
    if memory is None:
        reader.fail(line, key, f"must be a size like 512G, 64000M or 2T (got {reader.got(node)})")
    return memory


def _read_env(reader: _Reader, line: int, key: str, node: yaml.Node) -> dict[str, str | SecretRef]:
    env: dict[str, str | SecretRef] = {}
    if reader.is_null(node):
        return env
    if not isinstance(node, yaml.MappingNode):
        reader.fail(
            reader.line_of(node), "env", f"must be a mapping NAME: value (got {reader.got(node)})"
        )
    for name, (name_line, value) in reader._pairs(node, "env", None, {}).items():
        with reader.reading():
            env[name] = _read_env_value(reader, name, name_line, value)
    return env


def _read_env_value(reader: _Reader, name: str, line: int, value: yaml.Node) -> str | SecretRef:
    path = f"env.{name}"
    if not env_name_ok(name):
        reader.fail(line, path, "not a valid variable name (letters, digits, _; not a digit first)")
    if isinstance(value, yaml.MappingNode):  # {secret: NAME}
        return read_env_secret(reader, path, line, value)
    if reader.is_null(value):
        reader.fail(line, path, f'has no value; write {name}: "" for an empty one')
    text = reader.text(line, path, value, empty_ok=True)
    assert text is not None
    return text


def _read_depends(reader: _Reader, line: int, key: str, node: yaml.Node) -> list[str]:
    if reader.is_null(node):
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    ids: list[str] = []
    for index, item in enumerate(items):
        where = f"depends_on[{index}]" if isinstance(node, yaml.SequenceNode) else "depends_on"
        item_line = reader.line_of(item)
        if (
            not isinstance(item, yaml.ScalarNode)
            or reader.is_null(item)
            or (item.tag not in (_STR_TAG, "tag:yaml.org,2002:int"))
        ):
            reader.fail(item_line, where, f"must be a job id (got {reader.got(item)})")
        job_id = str(item.value).strip()
        if not job_id_ok(job_id):
            reader.fail(item_line, where, f"must be a job id (got {reader.got(item)})")
        ids.append(job_id)
    return ids


def _read_followup(reader: _Reader, line: int, key: str, node: yaml.Node) -> Any:
    """`retry:` / `notify:`: a mapping of the model's keys (checked by the model), or the
    flag's one-line form (`retry: NODE_FAIL:2`, `notify: https://…`)."""
    if reader.is_null(node):
        return None
    model = FOLLOWUP[key]
    if isinstance(node, yaml.MappingNode):
        pairs = reader.mapping(node, key, tuple(model.model_fields), {})
        construct = reader._constructor.construct_object
        return {k: construct(v, deep=True) for k, (_, v) in pairs.items()}
    parse = _ONE_LINE[model]
    return _parsed(reader, line, key, node, lambda text: parse(text).model_dump())


#: how each follow-up model is written on one line (the flag's form)
_ONE_LINE: dict[type[BaseModel], Callable[[str], BaseModel]] = {
    RetryPolicy: parse_retry,
    Notify: parse_notify,
}


#: the fields written in a format of their own (by key path); the others are read by type
FORMATS: dict[str, Callable[[_Reader, int, str, yaml.Node], Any]] = {
    "time_limit": _read_duration,
    "env": _read_env,
    "run": _read_run,
    "array": _read_array,
    "depends_on": _read_depends,
    "resources.memory": _read_memory,
    **dict.fromkeys(FOLLOWUP, _read_followup),
}
# `secrets` (VAR: NAME) is read with the rest of the secrets syntax (`jobspec.secrets`)
FORMATS["secrets"] = read_secrets
