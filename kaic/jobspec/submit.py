"""A job file and the flags of `kaic submit` -> the `JobSubmit` to send.

Every flag given wins over the file; `--env` entries merge per name; `--after` replaces
`depends_on`; `-- COMMAND ARGS...` replaces `run`. The flags and the merge follow the
model's fields (`keys`): a field with a flag in its `JobKey` is a flag here, read like the
job file reads it. Everything wrong raises `UsageError` (exit 2) naming the flag, or the
file, line and key, before anything is sent.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Any

from pydantic import ValidationError

from kaic.durations import parse_duration
from kaic.errors import UsageError
from kaic.jobspec.jobfile import JOBFILE_HINT, JobFile, Transfer
from kaic.jobspec.keys import FIELDS, FLAGS, LEAVES, OPTIONS, env_name_ok, job_id_ok, short
from kaic.jobspec.keys import parse_array as check_array
from kaic.jobspec.secrets import parse_secret_flags
from kaic.models.fields import JobField
from kaic.models.followup import parse_notify, parse_retry
from kaic.models.jobs import JobSubmit
from kaic.models.limits import MAX_NAME_LENGTH


class SubmitOverrides:
    """The flags of `kaic submit` by their Python names: `name`, `gpus`, `gpu_type`,
    `time`, `env` (a list of `NAME=VALUE`), `after` (job ids), `command` (the words after
    `--`), ... — one attribute for each `JobKey` flag of `JobSubmit` (`keys.OPTIONS`). A flag
    that was not given is None or empty, and the file's value stands."""

    def __init__(self, **flags: Any) -> None:
        unknown = sorted(set(flags) - set(OPTIONS))
        if unknown:
            raise TypeError(f"not a flag of kaic submit: {', '.join(unknown)}")
        for name in OPTIONS:
            setattr(self, name, flags.get(name))

    def __getattr__(self, name: str) -> Any:
        # Only reached for names __init__ did not set: not a flag. (Declared so the type
        # checker accepts `overrides.gpus`: the flags are the model's, not listed here.)
        raise AttributeError(f"not a flag of kaic submit: {name}")

    def given(self) -> dict[str, Any]:
        """The flags given, by the key path they set (`resources.gpus`), as given."""
        values = {f.path: getattr(self, name) for name, f in OPTIONS.items()}
        return {
            path: value
            for path, value in values.items()
            if value is not None and not (isinstance(value, (list, tuple)) and not value)
        }

    def __repr__(self) -> str:
        shown = ", ".join(f"{LEAVES[p].option}={v!r}" for p, v in self.given().items())
        return f"SubmitOverrides({shown})"


def _flag_error(flag: str, message: str) -> UsageError:
    return UsageError(f"{flag}: {message}")


def _parse_env_flags(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not env_name_ok(name):
            raise _flag_error("--env", f"expected NAME=VALUE (got {short(item)})")
        env[name] = value
    return env


def _parse_after(items: list[str]) -> list[str]:
    ids: list[str] = []
    for item in items:
        for part in str(item).split(","):
            job_id = part.strip()
            if not job_id_ok(job_id):
                raise _flag_error("--after", f"expected a job id (got {short(item)})")
            ids.append(job_id)
    return ids


def _flag_value(f: JobField, value: Any) -> Any:
    """A flag's value checked and converted like the job file's (seconds, a dict, ...)."""
    flag = f.flag or f.path
    try:
        if f.path == "time_limit":
            return parse_duration(value)
        if f.path == "array":
            return check_array(value)
        if f.path == "retry":
            return parse_retry(str(value)).model_dump()
        if f.path == "notify":
            return parse_notify(str(value)).model_dump(exclude_none=True)
    except ValueError as exc:
        raise _flag_error(flag, str(exc)) from None
    if f.path == "env":
        return _parse_env_flags(list(value))
    if f.path == "secrets":
        return parse_secret_flags(list(value))
    if f.path == "depends_on":
        return _parse_after(list(value))
    if f.path == "run":
        return list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        minimum = f.constraint("ge") or 0
        if value < minimum:
            raise _flag_error(flag, f"must be a whole number >= {minimum} (got {value})")
        return value
    if not str(value).strip():
        raise _flag_error(flag, "must not be empty")
    return value


def _default_name(job_file: JobFile | None, command: list[str]) -> str:
    if job_file is not None:
        name = job_file.path.stem
    else:
        name = PurePosixPath(command[0]).name if command else ""
    return (name or "job")[:MAX_NAME_LENGTH]


def _script(jf: JobFile | None, command: list[str]) -> str:
    """What the job runs: `-- COMMAND ARGS...`, else the file's `run`."""
    if command:
        # One argument holding a whole shell line (`-- "make && ./run"`) is run as a script,
        # like `sbatch --wrap`; several arguments are quoted so each stays one word.
        single_line = len(command) == 1 and any(c in command[0] for c in " \t;&|<>$`")
        return command[0] if single_line else shlex.join(command)
    if jf is None:
        raise UsageError(
            "nothing to run: give a job file or `-- COMMAND`",
            hint="e.g. `kaic submit job.yaml` or `kaic submit --gpus 1 -- python train.py`",
        )
    run = jf.values.get("run")
    if run is None:
        raise UsageError(
            f"{jf.label}: no `run:` script; add one or give `-- COMMAND` on the command line"
        )
    return str(run)


def build_submit(
    job_file: JobFile | None, overrides: SubmitOverrides
) -> tuple[JobSubmit, list[Transfer], list[Transfer]]:
    """The job to send, its inputs to stage and its outputs to fetch.

    Every flag given in `overrides` wins over the file; `--env` entries merge with the file's
    `env` (the flag wins per name); `--after` replaces `depends_on`; `-- COMMAND ARGS...`
    becomes `run` as one shell-quoted line. Raises UsageError for anything wrong, naming the
    flag, or the file, line and key — every problem of the file at once.
    """
    jf = job_file
    flags = {path: _flag_value(LEAVES[path], v) for path, v in overrides.given().items()}
    command: list[str] = flags.pop("run", [])
    from_flag: set[str] = {"run"} if command else set()  # key paths whose value is a flag's
    # What the file got wrong, then what the model finds in the rest (keys already reported
    # are not reported again)
    problems = list(jf.problems) if jf is not None else []
    reported = set(jf.problem_keys) if jf is not None else set()
    try:
        run: str | None = _script(jf, command)
    except UsageError as exc:
        if jf is None or not jf.problems:
            raise
        if "run" not in reported:
            problems.append(exc.message)
        reported.add("run")
        run = None

    # -- merge: by key path, the flag's value or the file's
    written = jf.values if jf is not None else {}
    values: dict[str, Any] = {"run": run}
    for path in LEAVES:
        if path == "run":
            continue
        if path in ("env", "secrets"):
            # Per variable; a flag's variable replaces the file's, value or secret alike.
            flagged = {**flags.get("env", {}), **flags.get("secrets", {})}
            from_file = {k: v for k, v in (written.get(path) or {}).items() if k not in flagged}
            values[path] = {**from_file, **flags.get(path, {})}
            from_flag.update(f"{path}.{name}" for name in flags.get(path, {}))
        elif path in flags:
            values[path] = flags[path]
            from_flag.add(path)
        else:
            values[path] = written.get(path)
    values["name"] = values["name"] or _default_name(jf, command)
    data: dict[str, Any] = {}
    for top in FIELDS:
        if top.fields:
            group = {f.name: values[f.path] for f in top.fields if values[f.path] is not None}
            data[top.name] = group
        elif values[top.path] is not None:
            data[top.name] = values[top.path]

    # -- impossible combinations
    resources = data["resources"]
    if resources.get("cpus_per_gpu") is not None and resources.get("gpus", 0) == 0:
        problems.append(
            _located(
                jf,
                from_flag,
                "resources.cpus_per_gpu",
                "needs resources.gpus > 0 (the job asks for no GPUs)",
            ).message
        )

    try:
        submit = JobSubmit.model_validate(data)
    except ValidationError as exc:
        problems += _validation_problems(jf, from_flag, exc, reported)
    if problems:
        raise UsageError("\n".join(problems), hint=JOBFILE_HINT if jf is not None else None)
    inputs = list(jf.inputs) if jf is not None else []
    outputs = list(jf.outputs) if jf is not None else []
    return submit, inputs, outputs


def _key_of(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the key a user wrote (``time_limit``, ``env.FOO``)."""
    parts: list[str] = []
    fields = FIELDS
    for item in loc:
        if item == "[key]":  # pydantic's marker for a mapping's key: the key is the problem
            continue
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        f = next((f for f in fields if f.name == item), None)
        name = f.key if f is not None else item
        fields = f.fields if f is not None else ()
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
            flag = FLAGS.get(candidate) or FLAGS.get(candidate.split(".")[0], candidate)
            return UsageError(f"{flag}: {message}")
    if jf is not None:
        line = jf.line_of(key)
        where = f"{jf.label}:{line}" if line is not None else jf.label
        return UsageError(f"{where}: {key}: {message}")
    return UsageError(f"{key}: {message}")


def _covered(key: str, reported: set[str]) -> bool:
    """Whether a problem about `key` was already reported (about it or a key around it)."""
    return any(key == k or key.startswith((f"{k}.", f"{k}[")) for k in reported)


def _validation_problems(
    jf: JobFile | None, from_flag: set[str], exc: ValidationError, reported: set[str]
) -> list[str]:
    problems: list[str] = []
    for error in exc.errors():
        key = _key_of(tuple(error["loc"])) or "job"
        if _covered(key, reported):
            continue
        message = str(error["msg"])
        message = message[:1].lower() + message[1:]
        if "input" in error and not isinstance(error["input"], (dict, list)):
            message += f" (got {short(error['input'])})"
        problems.append(_located(jf, from_flag, key, message).message)
    return problems
