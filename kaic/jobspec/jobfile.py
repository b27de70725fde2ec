"""Job files (ARCHITECTURE.md "Job file") and `kaic submit` flags -> the `JobSubmit` wire model.

`load_job_file` reads and checks a YAML job file, keeping the line of every key so that each
problem is reported as ``job.yaml:7: resources.gpus: must be a whole number >= 0 (got 'eight')``.
`build_submit` lays the flags of `kaic submit` over the file (every flag given wins; `--env`
entries merge per key; `--after` replaces `depends_on`; `-- COMMAND ARGS...` replaces `run`)
and validates the result with the wire model. Everything wrong raises `UsageError` (exit 2)
before anything is sent.

Scalars are read as written: ``env: {VERSION: 1.10, DEBUG: yes}`` gives the strings ``"1.10"``
and ``"yes"``, and ``time_limit: 4:00:00`` is four hours (not YAML 1.1's base-60 integer). A bare
number as `time_limit` is minutes, as in Slurm.
"""

from __future__ import annotations

import copy
import difflib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from kaic.durations import parse_duration
from kaic.errors import UsageError
from kaic.models.jobs import JobSubmit

__all__ = [
    "JobFile",
    "ResourceSpec",
    "SubmitOverrides",
    "Transfer",
    "build_submit",
    "load_job_file",
    "parse_array",
]

TOP_KEYS = (
    "name",
    "project",
    "partition",
    "resources",
    "time_limit",
    "image",
    "workdir",
    "env",
    "run",
    "inputs",
    "outputs",
    "array",
    "depends_on",
)
RESOURCE_KEYS = ("gpus", "gpu_type", "nodes", "cpus_per_gpu", "memory")
TRANSFER_KEYS = ("from", "to")

# Names people reach for that difflib would not match: key -> what to write instead.
_ALIASES = {
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
    "gpus": "resources.gpus",
    "gpu_type": "resources.gpu_type",
    "nodes": "resources.nodes",
    "cpus_per_gpu": "resources.cpus_per_gpu",
    "memory": "resources.memory",
    "mem": "resources.memory",
}
_RESOURCE_ALIASES = {"gpu": "gpus", "mem": "memory", "node": "nodes", "type": "gpu_type"}

# Which `kaic submit` flag sets which key (for messages about values that came from flags).
_FLAGS = {
    "name": "--name",
    "project": "--project",
    "partition": "--partition",
    "resources.gpus": "--gpus",
    "resources.gpu_type": "--gpu-type",
    "resources.nodes": "--nodes",
    "time_limit": "--time",
    "image": "--image",
    "workdir": "--workdir",
    "env": "--env",
    "run": "-- COMMAND",
    "array": "--array",
    "depends_on": "--after",
}

_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_WHOLE_RE = re.compile(r"^[0-9]+$")
_MEMORY_RE = re.compile(r"^([0-9]+)\s*(?:([KMGT])(?:i?B|i)?)?$", re.IGNORECASE)
_ARRAY_RE = re.compile(r"^([0-9]+(?:-[0-9]+)?(?:,[0-9]+(?:-[0-9]+)?)*)(?:%([0-9]+))?$")
_ARRAY_FORMS = "a range 0-15, a list 1,3,5, or both (0-3,8), optionally %N to run N at a time"
_MAX_NAME = 128

_STR_TAG = "tag:yaml.org,2002:str"
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
class ResourceSpec:
    """The file's `resources` mapping; None = not given (the center's default applies)."""

    gpus: int | None = None
    gpu_type: str | None = None
    nodes: int | None = None
    cpus_per_gpu: int | None = None
    memory: str | None = None


@dataclass
class JobFile:
    """A checked job file. `lines` maps key paths (``resources.gpus``, ``env.FOO``) to lines."""

    path: Path
    name: str | None = None
    project: str | None = None
    partition: str | None = None
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    time_limit_seconds: int | None = None
    image: str | None = None
    workdir: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    run: str | None = None
    inputs: list[Transfer] = field(default_factory=list)
    outputs: list[Transfer] = field(default_factory=list)
    array: str | None = None
    depends_on: list[str] = field(default_factory=list)
    lines: dict[str, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path)

    def line_of(self, key: str) -> int | None:
        """The line of `key` or of the nearest enclosing key that has one."""
        while key:
            if key in self.lines:
                return self.lines[key]
            cut = max(key.rfind("."), key.rfind("["))
            key = key[:cut] if cut > 0 else ""
        return None


@dataclass
class SubmitOverrides:
    """The flags of `kaic submit`; None / empty = not given (the file's value stands)."""

    name: str | None = None
    project: str | None = None
    partition: str | None = None
    gpus: int | None = None
    gpu_type: str | None = None
    nodes: int | None = None
    time: str | None = None
    image: str | None = None
    env: list[str] = field(default_factory=list)
    workdir: str | None = None
    array: str | None = None
    after: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# shared checks


def parse_array(text: str) -> str:
    """Check an array spec (``0-15%4``, ``1,3,5``, ``0-9``); returns it stripped.

    Raises ValueError saying what is wrong: bad syntax, a range whose start is above its end,
    or ``%0``.
    """
    spec = text.strip()
    match = _ARRAY_RE.match(spec)
    if match is None:
        raise ValueError(f"not a valid array spec {text!r}; use {_ARRAY_FORMS}")
    for part in match[1].split(","):
        if "-" in part:
            start, end = (int(x) for x in part.split("-"))
            if start > end:
                raise ValueError(f"range {part!r} starts after it ends (in {text!r})")
    if match[2] is not None and int(match[2]) < 1:
        raise ValueError(f"%{match[2]}: must run at least 1 task at a time (in {text!r})")
    return spec


def _normalize_memory(text: str) -> str | None:
    """``512G`` / ``512gb`` / ``512GiB`` -> ``512G``; a bare number stays; None if invalid."""
    match = _MEMORY_RE.match(text.strip())
    if match is None:
        return None
    number, unit = match.groups()
    return f"{int(number)}{(unit or '').upper()}"


def _suggest(key: str, known: tuple[str, ...], aliases: dict[str, str]) -> str:
    lowered = key.lower()
    if lowered in aliases and aliases[lowered] != key:
        return f" (did you mean '{aliases[lowered]}'?)"
    close = difflib.get_close_matches(lowered, known, n=1, cutoff=0.6)
    if close and close[0] != key:
        return f" (did you mean '{close[0]}'?)"
    return f" (known keys: {', '.join(known)})"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------------------------
# reading the file


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


class _Reader:
    """Turns composed YAML nodes into checked values, recording each key's line."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lines: dict[str, int] = {}
        self._constructor = yaml.SafeLoader("")

    # -- errors

    def fail(self, line: int, key: str | None, message: str) -> NoReturn:
        where = f"{self.label}:{line}: "
        raise UsageError(where + (f"{key}: {message}" if key else message))

    def got(self, node: yaml.Node) -> str:
        if isinstance(node, yaml.MappingNode):
            return "a mapping"
        if isinstance(node, yaml.SequenceNode):
            return "a list"
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return "nothing"
        return _short(node.value)

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
                _line(node),
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
            line = _line(key_node)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _NULL_TAG:
                self.fail(line, prefix or None, f"keys must be names, got {self.got(key_node)}")
            if key_node.tag == _MERGE_TAG:
                continue
            key = str(key_node.value)
            if key in first_at:
                full = f"{prefix}.{key}" if prefix else key
                self.fail(line, None, f"duplicate key '{full}' (first at line {first_at[key]})")
            first_at[key] = line
        node = copy.deepcopy(node)  # flatten_mapping rewrites nodes (anchors may share them)
        try:
            self._constructor.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or node.start_mark
            self.fail(mark.line + 1, prefix or None, f"invalid merge: {exc.problem}")
        pairs: dict[str, tuple[int, yaml.Node]] = {}
        for key_node, value_node in node.value:  # merged keys first, then these: last wins
            line = _line(key_node)
            key = str(key_node.value)
            if known is not None and key not in known:
                hint = _suggest(key, known, aliases)
                where = f" in '{prefix}'" if prefix else ""
                self.fail(line, None, f"unknown key '{key}'{where}{hint}")
            pairs[key] = (line, value_node)
            self.lines[f"{prefix}.{key}" if prefix else key] = line
        return pairs

    @staticmethod
    def is_null(node: yaml.Node) -> bool:
        return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG

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
        reader.fail(
            _line(root),
            None,
            f"a job file must be a mapping of keys (name, resources, run, ...), "
            f"got {reader.got(root)}",
        )
    pairs = reader._pairs(root, "", TOP_KEYS, _ALIASES)
    job = JobFile(path=path)
    for key, (line, node) in pairs.items():
        _read_key(reader, job, key, line, node)
    job.lines = reader.lines
    return job


def _read_key(reader: _Reader, job: JobFile, key: str, line: int, node: yaml.Node) -> None:
    if key in ("name", "project", "partition", "image", "workdir"):
        setattr(job, key, reader.text(line, key, node))
    elif key == "resources":
        job.resources = _read_resources(reader, node)
    elif key == "time_limit":
        raw = reader.text(line, key, node)
        if raw is not None:
            try:
                job.time_limit_seconds = parse_duration(raw)
            except ValueError as exc:
                reader.fail(line, key, str(exc))
    elif key == "env":
        job.env = _read_env(reader, node)
    elif key == "run":
        if isinstance(node, yaml.SequenceNode):
            reader.fail(line, key, "must be a string; use `run: |` for a multi-line script")
        job.run = reader.text(line, key, node)
        if job.run is None:
            reader.fail(line, key, "is empty; give the script the job runs")
    elif key in ("inputs", "outputs"):
        setattr(job, key, _read_transfers(reader, key, line, node))
    elif key == "array":
        raw = reader.text(line, key, node)
        if raw is not None:
            try:
                job.array = parse_array(raw)
            except ValueError as exc:
                reader.fail(line, key, str(exc))
    elif key == "depends_on":
        job.depends_on = _read_depends(reader, line, node)


def _read_resources(reader: _Reader, node: yaml.Node) -> ResourceSpec:
    spec = ResourceSpec()
    for key, (line, value) in reader.mapping(
        node, "resources", RESOURCE_KEYS, _RESOURCE_ALIASES
    ).items():
        full = f"resources.{key}"
        if key == "gpus":
            spec.gpus = reader.whole(line, full, value, 0)
        elif key == "nodes":
            spec.nodes = reader.whole(line, full, value, 1)
        elif key == "cpus_per_gpu":
            spec.cpus_per_gpu = reader.whole(line, full, value, 1)
        elif key == "gpu_type":
            spec.gpu_type = reader.text(line, full, value)
        elif key == "memory":
            raw = reader.text(line, full, value)
            if raw is not None:
                memory = _normalize_memory(raw)
                if memory is None:
                    reader.fail(
                        line,
                        full,
                        f"must be a size like 512G, 64000M or 2T (got {reader.got(value)})",
                    )
                spec.memory = memory
    return spec


def _read_env(reader: _Reader, node: yaml.Node) -> dict[str, str]:
    env: dict[str, str] = {}
    if reader.is_null(node):
        return env
    if not isinstance(node, yaml.MappingNode):
        reader.fail(_line(node), "env", f"must be a mapping NAME: value (got {reader.got(node)})")
    for name, (line, value) in reader._pairs(node, "env", None, {}).items():
        key = f"env.{name}"
        if not _ENV_NAME_RE.match(name):
            reader.fail(
                line, key, "not a valid variable name (letters, digits, _; not a digit first)"
            )
        if reader.is_null(value):
            reader.fail(line, key, f'has no value; write {name}: "" for an empty one')
        text = reader.text(line, key, value, empty_ok=True)
        assert text is not None
        env[name] = text
    return env


def _read_transfers(reader: _Reader, key: str, line: int, node: yaml.Node) -> list[Transfer]:
    if reader.is_null(node):
        return []
    if not isinstance(node, yaml.SequenceNode):
        reader.fail(line, key, f"must be a list of {{from: ..., to: ...}} (got {reader.got(node)})")
    transfers: list[Transfer] = []
    for index, item in enumerate(node.value):
        prefix = f"{key}[{index}]"
        item_line = _line(item)
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
        transfers.append(Transfer(src=values["from"], dst=values["to"]))
    return transfers


def _read_depends(reader: _Reader, line: int, node: yaml.Node) -> list[str]:
    if reader.is_null(node):
        return []
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    ids: list[str] = []
    for index, item in enumerate(items):
        key = f"depends_on[{index}]" if isinstance(node, yaml.SequenceNode) else "depends_on"
        item_line = _line(item)
        if (
            not isinstance(item, yaml.ScalarNode)
            or reader.is_null(item)
            or (item.tag not in (_STR_TAG, "tag:yaml.org,2002:int"))
        ):
            reader.fail(item_line, key, f"must be a job id (got {reader.got(item)})")
        job_id = str(item.value).strip()
        if not job_id or any(c.isspace() for c in job_id):
            reader.fail(item_line, key, f"must be a job id (got {reader.got(item)})")
        ids.append(job_id)
    return ids


# --------------------------------------------------------------------------------------------
# file + flags -> JobSubmit


def _flag_error(flag: str, message: str) -> UsageError:
    return UsageError(f"{flag}: {message}")


def _flag_text(flag: str, value: str | None) -> str | None:
    if value is not None and not value.strip():
        raise _flag_error(flag, "must not be empty")
    return value


def _parse_env_flags(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not _ENV_NAME_RE.match(name):
            raise _flag_error("--env", f"expected NAME=VALUE (got {_short(item)})")
        env[name] = value
    return env


def _parse_after(items: list[str]) -> list[str]:
    ids: list[str] = []
    for item in items:
        for part in str(item).split(","):
            job_id = part.strip()
            if not job_id or any(c.isspace() for c in job_id):
                raise _flag_error("--after", f"expected a job id (got {_short(item)})")
            ids.append(job_id)
    return ids


def _default_name(job_file: JobFile | None, command: list[str]) -> str:
    if job_file is not None:
        name = job_file.path.stem
    else:
        name = PurePosixPath(command[0]).name if command else ""
    return (name or "job")[:_MAX_NAME]


def build_submit(
    job_file: JobFile | None, overrides: SubmitOverrides
) -> tuple[JobSubmit, list[Transfer], list[Transfer]]:
    """The job to send, its inputs to stage and its outputs to fetch.

    Every flag given in `overrides` wins over the file; `--env` entries merge with the file's
    `env` (the flag wins per name); `--after` replaces `depends_on`; `-- COMMAND ARGS...`
    becomes `run` as one shell-quoted line. Raises UsageError for anything wrong, naming the
    flag, or the file, line and key.
    """
    o = overrides
    jf = job_file
    from_flag: set[str] = set()  # key paths whose value came from a flag

    def pick(key: str, flag_value: Any, file_value: Any) -> Any:
        if flag_value is not None:
            from_flag.add(key)
            return flag_value
        return file_value

    # -- the flags on their own
    for flag, value in (
        ("--name", o.name),
        ("--project", o.project),
        ("--partition", o.partition),
        ("--gpu-type", o.gpu_type),
        ("--image", o.image),
        ("--workdir", o.workdir),
    ):
        _flag_text(flag, value)
    if o.gpus is not None and o.gpus < 0:
        raise _flag_error("--gpus", f"must be a whole number >= 0 (got {o.gpus})")
    if o.nodes is not None and o.nodes < 1:
        raise _flag_error("--nodes", f"must be a whole number >= 1 (got {o.nodes})")
    time_limit: int | None = None
    if o.time is not None:
        try:
            time_limit = parse_duration(o.time)
        except ValueError as exc:
            raise _flag_error("--time", str(exc)) from None
    array: str | None = None
    if o.array is not None:
        try:
            array = parse_array(o.array)
        except ValueError as exc:
            raise _flag_error("--array", str(exc)) from None
    flag_env = _parse_env_flags(list(o.env))
    after = _parse_after(list(o.after))
    command = list(o.command)

    # -- what to run
    if command:
        # One argument holding a whole shell line (`-- "make && ./run"`) is run as a script,
        # like `sbatch --wrap`; several arguments are quoted so each stays one word.
        single_line = len(command) == 1 and any(c in command[0] for c in " \t;&|<>$`")
        run: str | None = command[0] if single_line else shlex.join(command)
        from_flag.add("run")
    elif jf is None:
        raise UsageError(
            "nothing to run: give a job file or `-- COMMAND`",
            hint="e.g. `kaic submit job.yaml` or `kaic submit --gpus 1 -- python train.py`",
        )
    elif jf.run is None:
        raise UsageError(
            f"{jf.label}: no `run:` script; add one or give `-- COMMAND` on the command line"
        )
    else:
        run = jf.run

    # -- merge
    base = jf if jf is not None else JobFile(path=Path("job"))
    res = base.resources
    resources: dict[str, Any] = {}
    for key, flag_value, file_value in (
        ("gpus", o.gpus, res.gpus),
        ("gpu_type", o.gpu_type, res.gpu_type),
        ("nodes", o.nodes, res.nodes),
        ("cpus_per_gpu", None, res.cpus_per_gpu),
        ("memory", None, res.memory),
    ):
        value = pick(f"resources.{key}", flag_value, file_value)
        if value is not None:
            resources[key] = value
    env = dict(base.env)
    env.update(flag_env)
    from_flag.update(f"env.{name}" for name in flag_env)
    data: dict[str, Any] = {
        "name": pick("name", o.name, base.name) or _default_name(jf, command),
        "project": pick("project", o.project, base.project),
        "partition": pick("partition", o.partition, base.partition),
        "resources": resources,
        "time_limit_seconds": pick("time_limit", time_limit, base.time_limit_seconds),
        "image": pick("image", o.image, base.image),
        "workdir": pick("workdir", o.workdir, base.workdir),
        "env": env,
        "run": run,
        "array": pick("array", array, base.array),
        "depends_on": pick("depends_on", after or None, base.depends_on),
    }

    # -- impossible combinations
    if resources.get("cpus_per_gpu") is not None and resources.get("gpus", 0) == 0:
        raise _located(
            jf,
            from_flag,
            "resources.cpus_per_gpu",
            "needs resources.gpus > 0 (the job asks for no GPUs)",
        )

    try:
        submit = JobSubmit.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(jf, from_flag, exc) from None
    inputs = list(jf.inputs) if jf is not None else []
    outputs = list(jf.outputs) if jf is not None else []
    return submit, inputs, outputs


def _key_of(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the key a user wrote (``time_limit``, ``env.FOO``)."""
    parts: list[str] = []
    for item in loc:
        if item == "[key]":  # pydantic's marker for a mapping's key: the key is the problem
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            name = "time_limit" if item == "time_limit_seconds" else item
            parts.append(f".{name}" if parts else name)
    return "".join(parts)


def file_error(
    jf: JobFile | None, key: str, message: str, *, hint: str | None = None
) -> UsageError:
    """A UsageError about `key` of a job file, naming the file and line (`job.yaml:3: key: …`)."""
    error = _located(jf, set(), key, message)
    error.hint = hint
    return error


def _located(jf: JobFile | None, from_flag: set[str], key: str, message: str) -> UsageError:
    """A UsageError naming the flag that set `key`, or the file line where it was written."""
    for candidate in (key, key.split("[")[0], key.split(".")[0]):
        if candidate in from_flag:
            flag = _FLAGS.get(candidate) or _FLAGS.get(candidate.split(".")[0], candidate)
            return UsageError(f"{flag}: {message}")
    if jf is not None:
        line = jf.line_of(key)
        where = f"{jf.label}:{line}" if line is not None else jf.label
        return UsageError(f"{where}: {key}: {message}")
    return UsageError(f"{key}: {message}")


def _from_validation(jf: JobFile | None, from_flag: set[str], exc: ValidationError) -> UsageError:
    problems: list[str] = []
    for error in exc.errors():
        key = _key_of(tuple(error["loc"])) or "job"
        message = str(error["msg"])
        message = message[:1].lower() + message[1:]
        if "input" in error and not isinstance(error["input"], (dict, list)):
            message += f" (got {_short(error['input'])})"
        problems.append(_located(jf, from_flag, key, message).message)
    return UsageError("\n".join(problems))
