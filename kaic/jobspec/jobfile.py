"""Reading a job file (ARCHITECTURE.md "Job file"): YAML -> a checked `JobFile`.

Each key's line is kept, so that each problem is reported as
``job.yaml:7: resources.gpus: must be a whole number >= 0 (got 'eight')``. Every problem of a
file is found in one reading (`JobFile.problems`), so a user fixes them all in one go; only a
file that cannot be read as a mapping at all stops at once. The keys are the
wire model's (`keys`); a value is read by its field's type (text, a whole number at least
the model's minimum) unless it has a format of its own (a duration, `env`, the script, an
array, job ids, a size): those are read in `formats`, through the reader here.

Scalars are read as written: ``env: {VERSION: 1.10, DEBUG: yes}`` gives the strings ``"1.10"``
and ``"yes"``, and ``time_limit: 4:00:00`` is four hours (not YAML 1.1's base-60 integer). A bare
number as `time_limit` is minutes, as in Slurm.

Here are the loading of the file, the reader that keeps each key's line and records every
problem (`_Reader`), the groups (`resources`, ...) and `inputs`/`outputs`, and the choice of
reader for each key; the readers of the value formats live in `formats.py`, secrets in
`secrets.py`, the keys and flags in `keys.py`, building the request in `submit.py`.
"""

from __future__ import annotations

import copy
import re
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Union, get_args, get_origin

import yaml

from kaic.errors import UsageError
from kaic.jobspec.formats import FORMATS
from kaic.jobspec.keys import (
    ALIASES,
    GROUP_ALIASES,
    GROUPS,
    LEAVES,
    STAGING_KEYS,
    TOP_KEYS,
    TRANSFER_KEYS,
    short,
    suggest,
)
from kaic.jobspec.secrets import split_env_secrets
from kaic.models.fields import JobField

#: where a problem of a job file sends the user
JOBFILE_HINT = "every key, its type and an example: `kaic help jobfile`"

_WHOLE_RE = re.compile(r"^[0-9]+$")
_NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Transfer:
    """One `inputs`/`outputs` entry: copy `src` to `dst`.

    Inputs go from a local path to a path on center storage (staged before submit); outputs
    from center storage to a local path (fetched after `--wait`). Paths are kept as written.
    """

    src: str
    dst: str


@dataclass
class JobFile:
    """A checked job file. `values` holds what it sets, by key path (`name`, `time_limit`
    in seconds, `resources.gpus`, `env` as a dict, `depends_on` as a list); `lines` maps key
    paths (``resources.gpus``, ``env.FOO``) to lines."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    inputs: list[Transfer] = field(default_factory=list)
    outputs: list[Transfer] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)
    #: what is wrong in the file (`job.yaml:7: key: message`), in the order of its lines;
    #: the keys they are about have no value in `values`
    problems: list[str] = field(default_factory=list)
    #: the key paths those problems are about (so a later check does not report them again)
    problem_keys: set[str] = field(default_factory=set)

    @property
    def label(self) -> str:
        return str(self.path)

    def check(self) -> JobFile:
        """This file if it has no problems; else UsageError listing every one."""
        if self.problems:
            raise UsageError("\n".join(self.problems), hint=JOBFILE_HINT)
        return self

    def line_of(self, key: str) -> int | None:
        """The line of `key` or of the nearest enclosing key that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


# --------------------------------------------------------------------------------------------
# reading the file


class _Problem(Exception):
    """One problem of a job file: the value it is about is skipped, reading goes on."""

    def __init__(self, line: int, key: str | None, text: str) -> None:
        super().__init__(text)
        self.line = line
        self.key = key
        self.text = text


class _Reader:
    """Turns composed YAML nodes into checked values, recording each key's line and every
    problem (`fail` abandons the value at hand; `reading` is where the next one starts)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: dict[str, int] = {}
        self.problems: list[_Problem] = []
        self._constructor = yaml.SafeLoader("")

    # -- errors

    def fail(self, line: int, key: str | None, message: str) -> NoReturn:
        where = f"{self.label}:{line}: "
        raise _Problem(line, key, where + (f"{key}: {message}" if key else message))

    def note(self, line: int, key: str | None, message: str) -> None:
        """Record a problem and go on (a value that can simply be left out)."""
        try:
            self.fail(line, key, message)
        except _Problem as problem:
            self.problems.append(problem)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Read one value: a problem in it is recorded and the reading of the others goes on."""
        try:
            yield
        except _Problem as problem:
            self.problems.append(problem)

    def got(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return "nothing"
        return short(node.value)

    # -- structure

    def mapping(
        self, node: yaml.Node, prefix: str, known: tuple[str, ...], aliases: dict[str, str]
    ) -> dict[str, tuple[int, yaml.Node]]:
        """Key -> (line, value node) of a mapping with only `known` keys (None: empty)."""
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            what = f"'{prefix}'" if prefix else "a job file"
            self.fail(
                self.line_of(node),
                None,
                f"{what} must be a mapping of keys ({', '.join(known[:4])}, ...), "
                f"got {self.got(node)}",
            )
        return self._pairs(node, prefix, known, aliases)

    def _pairs(
        self,
        node: yaml.MappingNode,
        prefix: str,
        known: tuple[str, ...] | None,
        aliases: dict[str, str],
    ) -> dict[str, tuple[int, yaml.Node]]:
        # Duplicates among the keys written here are mistakes; keys brought in by a YAML merge
        # (`<<: *base`) are overridden by those written here, as YAML specifies.
        first_at: dict[str, int] = {}
        for key_node, _ in node.value:
            line = self.line_of(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL_TAG:
                self.fail(line, prefix or None, f"keys must be names, got {self.got(key_node)}")
            if key_node.tag == _MERGE_TAG:
                continue
            key = str(key_node.value)
            if key in first_at:
                full = f"{prefix}.{key}" if prefix else key
                self.note(line, None, f"duplicate key '{full}' (first at line {first_at[key]})")
            first_at[key] = line
        node = copy.deepcopy(node)  # flatten_mapping rewrites nodes (anchors may share them)
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.fail(mark.line + 1, prefix or None, f"invalid merge: {exc.problem}")
        pairs: dict[str, tuple[int, yaml.Node]] = {}
        for key_node, value_node in node.value:  # merged keys first, then these: last wins
            line = self.line_of(key_node)
            key = str(key_node.value)
            if known is not None and key not in known:
                hint = suggest(key, known, aliases)
                where = f" in '{prefix}'" if prefix else ""
                self.note(line, None, f"unknown key '{key}'{where}{hint}")
                continue
            pairs[key] = (line, value_node)
            self.lines[f"{prefix}.{key}" if prefix else key] = line
        return pairs

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG

    @staticmethod
    def line_of(node: yaml.Node) -> int:
        """The line `node` starts on, counted from 1 (PyYAML's marks count from 0)."""
        return node.start_mark.line + 1

    # -- scalars

    def text(self, line: int, key: str, node: yaml.Node, *, empty_ok: bool = False) -> str | None:
        """A scalar as written (numbers and booleans included); None for a null."""
        if self.is_null(node):
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.fail(line, key, f"must be a single value (got {self.got(node)})")
        value = str(node.value)
        if not empty_ok and not value.strip():
            self.fail(line, key, "must not be empty")
        return value

    def whole(self, line: int, key: str, node: yaml.Node, minimum: int) -> int | None:
        if self.is_null(node):
            return None
        raw = node.value.strip() if isinstance(node, yaml.ScalarNode) else None
        if raw is None or not _WHOLE_RE.match(raw) or int(raw) < minimum:
            self.fail(line, key, f"must be a whole number >= {minimum} (got {self.got(node)})")
        return int(raw)


def load_job_file(path: Path) -> JobFile:
    """Read and check a YAML job file; raises UsageError naming the file, line and key."""
    try:
        return _load_job_file(path)
    except RecursionError:
        # PyYAML composes (and the reader walks) nested collections recursively.
        raise UsageError(
            f"{path}: nested too deeply to be a job file (lists or mappings inside each "
            "other hundreds of levels deep)"
        ) from None


def _load_job_file(path: Path) -> JobFile:
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{label}: no such job file") from None
    except IsADirectoryError:
        raise UsageError(f"{label}: is a directory, not a job file") from None
    except UnicodeDecodeError:
        raise UsageError(f"{label}: not a UTF-8 text file") from None
    except OSError as exc:
        raise UsageError(f"{label}: cannot read the job file: {exc.strerror or exc}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = ", ".join(part for part in (exc.context, exc.problem) if part) or "bad syntax"
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        raise UsageError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{label}: invalid YAML: {exc}") from None
    if root is None or _Reader.is_null(root):
        raise UsageError(f"{label}: the job file is empty; it needs at least a `run:` script")
    reader = _Reader(label)
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(
            f"{label}:{reader.line_of(root)}: a job file must be a mapping of keys "
            f"(name, resources, run, ...), got {reader.got(root)}"
        )
    job = JobFile(path=path)
    with reader.reading():
        pairs = reader._pairs(root, "", TOP_KEYS, ALIASES)
        for key, (line, node) in pairs.items():
            with reader.reading():
                _read_key(reader, job, key, line, node)
    job.lines = reader.lines
    split_env_secrets(job)
    for found in sorted(reader.problems, key=lambda p: p.line):
        job.problems.append(found.text)
        if found.key:
            job.problem_keys.add(found.key)
    return job


def _read_key(reader: _Reader, job: JobFile, key: str, line: int, node: yaml.Node) -> None:
    if key in STAGING_KEYS:
        setattr(job, key, _read_transfers(reader, line, key, node))
    elif key in GROUPS:
        group = GROUPS[key]
        known = tuple(f.key for f in group.fields)
        pairs = reader.mapping(node, key, known, GROUP_ALIASES.get(key, {}))
        for f in group.fields:
            if f.key in pairs:
                sub_line, sub_node = pairs[f.key]
                with reader.reading():
                    job.values[f.path] = _read_value(reader, f, sub_line, sub_node)
    else:
        job.values[key] = _read_value(reader, LEAVES[key], line, node)


def _is_int(f: JobField) -> bool:
    annotation = f.info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        return int in get_args(annotation)
    return annotation is int


def _read_value(reader: _Reader, f: JobField, line: int, node: yaml.Node) -> Any:
    """A field's value as written: by its format if it has one, else by its type."""
    special = FORMATS.get(f.path)
    if special is not None:
        return special(reader, line, f.path, node)
    if _is_int(f):
        return reader.whole(line, f.path, node, f.constraint("ge") or 0)
    return reader.text(line, f.path, node)


def _read_transfers(reader: _Reader, line: int, key: str, node: yaml.Node) -> list[Transfer]:
    if reader.is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        reader.fail(line, key, f"must be a list of {{from: ..., to: ...}} (got {reader.got(node)})")
    transfers: list[Transfer] = []
    for index, item in enumerate(node.value):
        with reader.reading():
            transfers.append(_read_transfer(reader, f"{key}[{index}]", item))
    return transfers


def _read_transfer(reader: _Reader, prefix: str, item: yaml.Node) -> Transfer:
    item_line = reader.line_of(item)
    reader.lines[prefix] = item_line
    if not isinstance(item, yaml.MappingNode):
        reader.fail(
            item_line,
            prefix,
            f"must be a mapping {{from: ..., to: ...}} (got {reader.got(item)})",
        )
    pairs = reader._pairs(item, prefix, TRANSFER_KEYS, {"src": "from", "dst": "to"})
    values: dict[str, str] = {}
    for part in TRANSFER_KEYS:
        if part not in pairs:
            reader.fail(item_line, prefix, f"missing '{part}'")
        part_line, part_node = pairs[part]
        text = reader.text(part_line, f"{prefix}.{part}", part_node)
        if text is None:
            reader.fail(part_line, f"{prefix}.{part}", "must be a path (got nothing)")
        values[part] = text
    return Transfer(src=values["from"], dst=values["to"])
