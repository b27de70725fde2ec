"""Secrets in a job file and on `kaic submit`: references, never values.

A job names the secrets whose values its environment gets; the center resolves them when
the job starts (`JobSubmit.secrets`, `{VAR: NAME}`). Three ways to write one:

- in `env`, beside the plain variables: ``env: {WANDB_API_KEY: {secret: wandb}}``;
- the `secrets` key, a mapping VAR: NAME: ``secrets: {WANDB_API_KEY: wandb}``;
- the flag ``--secret WANDB_API_KEY=wandb``, or ``--secret wandb_api_key`` for the variable
  named as the secret, upper-cased (``WANDB_API_KEY``).

A variable is either a value or a secret: `env` keeps the plain ones, and a flag given for a
variable replaces what the file said of it, whichever of the two that was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from kaic.errors import UsageError
from kaic.jobspec.keys import env_name_ok, short
from kaic.models.secrets import MAX_SECRET_NAME_LENGTH, SECRET_NAME_PATTERN

if TYPE_CHECKING:
    from kaic.jobspec.jobfile import JobFile, _Reader

_NAME = re.compile(SECRET_NAME_PATTERN)
_NAME_RULE = (
    "letters, digits, '_', '.', '-', not starting with a punctuation mark, at most "
    f"{MAX_SECRET_NAME_LENGTH} characters"
)


@dataclass(frozen=True)
class SecretRef:
    """An `env` entry written `{secret: NAME}` (moved to `secrets` once the file is read)."""

    name: str


def secret_name_ok(name: str) -> bool:
    return len(name) <= MAX_SECRET_NAME_LENGTH and _NAME.match(name) is not None


def _name(reader: _Reader, line: int, key: str, node: yaml.Node) -> str:
    name = reader.text(line, key, node)
    if name is None:
        reader.fail(line, key, "names no secret (write the name of one: `kaic secret list`)")
    name = name.strip()
    if not secret_name_ok(name):
        reader.fail(line, key, f"{short(name)} is not a secret name ({_NAME_RULE})")
    return name


def read_env_secret(reader: _Reader, path: str, line: int, node: yaml.MappingNode) -> SecretRef:
    """An `env` entry written as a mapping: it must be `{secret: NAME}`."""
    keys = [str(k.value) if isinstance(k, yaml.ScalarNode) else "?" for k, _ in node.value]
    if keys != ["secret"]:
        reader.fail(
            line,
            path,
            "must be a single value or {secret: NAME}, NAME one of your secrets (got a "
            f"mapping of {', '.join(short(k) for k in keys) or 'nothing'})",
        )
    pairs = reader._pairs(node, path, ("secret",), {})
    name_line, name_node = pairs["secret"]
    return SecretRef(_name(reader, name_line, f"{path}.secret", name_node))


def read_secrets(reader: _Reader, line: int, key: str, node: yaml.Node) -> dict[str, str]:
    """The `secrets` key: a mapping VAR: NAME."""
    refs: dict[str, str] = {}
    if reader.is_null(node):
        return refs
    if not isinstance(node, yaml.MappingNode):
        reader.fail(line, key, f"must be a mapping VAR: NAME (got {reader.got(node)})")
    for var, (var_line, value) in reader._pairs(node, key, None, {}).items():
        with reader.reading():
            if not env_name_ok(var):
                reader.fail(
                    var_line,
                    f"{key}.{var}",
                    "not a valid variable name (letters, digits, _; not a digit first)",
                )
            refs[var] = _name(reader, var_line, f"{key}.{var}", value)
    return refs


def split_env_secrets(job: JobFile) -> None:
    """Move the `{secret: NAME}` entries of `env` to `secrets` (their lines too), after the
    file is read; a variable both in `env` and in `secrets` is a problem of the file."""
    env: dict[str, Any] = job.values.get("env") or {}
    refs = {var: v.name for var, v in env.items() if isinstance(v, SecretRef)}
    written: dict[str, str] = job.values.get("secrets") or {}
    for var in written:
        if var in env and var not in refs:
            _problem(
                job,
                f"secrets.{var}",
                f"is also set in env (line {job.lines.get(f'env.{var}')}); keep one",
            )
    if not refs:
        return
    job.values["env"] = {var: v for var, v in env.items() if not isinstance(v, SecretRef)}
    for var, name in refs.items():
        line = job.lines.get(f"env.{var}")
        if var in written:
            _problem(
                job,
                f"env.{var}",
                f"is also under secrets (line {job.lines.get(f'secrets.{var}')}); keep one",
            )
            continue
        written[var] = name
        if line is not None:
            job.lines[f"secrets.{var}"] = line
    job.values["secrets"] = written


def _problem(job: JobFile, key: str, message: str) -> None:
    line = job.lines.get(key)
    where = f"{job.label}:{line}" if line is not None else job.label
    job.problems.append(f"{where}: {key}: {message}")
    job.problem_keys.add(key)


def parse_secret_flags(items: list[str]) -> dict[str, str]:
    """`--secret VAR=NAME`, or `--secret NAME` for the variable NAME upper-cased."""
    refs: dict[str, str] = {}
    for item in items:
        var, sep, name = item.partition("=")
        if not sep:
            name, var = item, item.upper()
        if not secret_name_ok(name):
            raise UsageError(
                f"--secret: {short(name)} is not a secret name ({_NAME_RULE})",
                hint="write --secret VAR=NAME, e.g. --secret WANDB_API_KEY=wandb",
            )
        if not env_name_ok(var):
            raise UsageError(
                f"--secret: {short(var)} is not a valid variable name (letters, digits, _; "
                "not a digit first)",
                hint=f"name the variable: --secret VAR={name}",
            )
        refs[var] = name
    return refs
