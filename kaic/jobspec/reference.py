"""`kaic help jobfile`: every key of a job file with its type, default, limits, the flag that
sets it and an example — generated from the wire model, so it cannot drift from what
`kaic submit` accepts.

The keys, their order, defaults, limits and flags come from `JobSubmit` (through `keys`);
what a model cannot say — a line of explanation where the field has no description, and an
example — is in `_NOTES`, which a test keeps complete (every key has an entry, no entry is
stale) and honest (the examples, put together, are a job file `kaic submit` accepts).
"""

from __future__ import annotations

import types
from typing import Any, Union, get_args, get_origin

from pydantic_core import PydanticUndefined

from kaic.jobspec.keys import FIELDS, GROUPS, STAGING_KEYS, TOP_KEYS
from kaic.models.fields import JobField

#: per key path: (what it is, when the model has no description; an example as YAML)
_NOTES: dict[str, tuple[str, str]] = {
    "name": ("a name to recognise the job by (default: the job file's name)", "name: resnet50"),
    "project": ("the allocation charged (`kaic usage` lists yours)", "project: ai-2026-0042"),
    "partition": ("where the job runs (`kaic resources` lists them)", "partition: h100"),
    "resources": ("what the job needs, per node", "resources: {gpus: 8, gpu_type: H100}"),
    "resources.gpus": ("GPUs per node", "  gpus: 8"),
    "resources.gpu_type": ("a GPU model, when a partition has several", "  gpu_type: H100"),
    "resources.nodes": ("nodes (one `run` per node on a multi-node center)", "  nodes: 1"),
    "resources.cpus_per_gpu": ("CPU cores per GPU (needs gpus > 0)", "  cpus_per_gpu: 8"),
    "resources.memory": ("memory per node: K, M, G or T", "  memory: 512G"),
    "time_limit": (
        "the longest the job may run: 4h, 90m, 1-12:00:00, 4:00:00 (a bare number is minutes)",
        "time_limit: 4h",
    ),
    "image": (
        "a container image: a name from `kaic images`, or a path on center storage",
        "image: ~/images/pytorch",
    ),
    "workdir": ("where the job starts", "workdir: ~/runs/resnet50"),
    "env": (
        "",
        "env: {WANDB_MODE: offline, WANDB_API_KEY: {secret: wandb}}",
    ),
    "secrets": (
        "variables set from your secrets (`kaic secret set NAME`), VAR: NAME; the same as "
        "env's VAR: {secret: NAME}",
        "secrets: {HF_TOKEN: hf}",
    ),
    "run": (
        "the script the job runs (bash); required, unless `-- COMMAND` is given",
        "run: |\n  python train.py --epochs 90",
    ),
    "inputs": (
        "local paths pushed to center storage before the job is submitted",
        "inputs: [{from: ./data, to: ~/data/imagenet}]",
    ),
    "outputs": (
        "center paths pulled here after `--wait`/`--follow`, even when the job failed",
        "outputs: [{from: ~/runs/resnet50/ckpt, to: ./ckpt}]",
    ),
    "array": (
        "one job per index (0-15, 1,3,5); `%4` runs at most 4 at once",
        "array: 0-15%4",
    ),
    "depends_on": ("start only after these jobs completed (after-ok)", "depends_on: [1042]"),
    "retry": (
        "run the job again, same id and next attempt, when the system ends it (NODE_FAIL, "
        "PREEMPTED, BOOT_FAIL; never after its own exit code); `--retry 2` or "
        "`--retry NODE_FAIL,PREEMPTED:2`; `kaic logs --attempt N` reads an earlier attempt",
        "retry: {on: [NODE_FAIL, PREEMPTED], max: 2}",
    ),
    "notify": (
        "a webhook (JSON POST) and/or a mail when the job ends (`on: [fail]`: only when it "
        "does not complete); `--notify URL` or `--notify fail:ADDRESS`",
        "notify: {on: [end], webhook: https://hooks.example.org/kaic}",
    ),
}

#: the type of the keys written in a format of their own
_FORMAT_TYPES = {
    "time_limit": "duration",
    "env": "mapping NAME: value or {secret: NAME}",
    "secrets": "mapping VAR: secret name",
    "run": "bash script",
    "array": "array spec",
    "depends_on": "job id, or a list of them",
    "resources.memory": "size",
    "inputs": "list of {from, to}",
    "outputs": "list of {from, to}",
    "resources": "mapping",
    "retry": "mapping {on, max}, or STATES:N",
    "notify": "mapping {on, webhook, email}, or a URL/address",
}


def _type(f: JobField) -> str:
    if f.path in _FORMAT_TYPES:
        return _FORMAT_TYPES[f.path]
    annotation: Any = f.info.annotation
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return "whole number" if annotation is int else "text"


def _default(f: JobField) -> str | None:
    default = f.info.default
    if default is PydanticUndefined or default is None or default in ({}, []):
        return None
    return str(default)


def _limits(f: JobField) -> str | None:
    parts = []
    low, high = f.constraint("ge"), f.constraint("le")
    if f.path == "time_limit" and high is not None:  # kept in seconds, written as a duration
        return f"at most {high // 86400} days"
    if low is not None and high is not None:
        parts.append(f"{low} to {high}")
    elif low is not None:
        parts.append(f"at least {low}")
    length = f.constraint("max_length")
    if length is not None and f.path == "depends_on":
        parts.append(f"at most {length} jobs")
    elif length is not None and f.path != "array":
        parts.append(f"at most {length} characters")
    return ", ".join(parts) or None


def _entry(f: JobField) -> list[str]:
    summary, example = _NOTES[f.path]
    indent = "  " if "." in f.path else ""
    lines = [f"{indent}{f.path}  ({_type(f)})"]
    facts = [summary or (f.info.description or "").rstrip(".")]
    default = _default(f)
    if default is not None:
        facts.append(f"default: {default}")
    limits = _limits(f)
    if limits:
        facts.append(limits)
    if f.flag:
        facts.append(f"flag: {f.flag}")
    lines += [f"{indent}    {fact}" for fact in facts if fact]
    if example:
        lines += [f"{indent}    e.g.  {line}" for line in example.splitlines()[:1]]
        lines += [f"{indent}          {line}" for line in example.splitlines()[1:]]
    return lines


def _staging_entry(key: str) -> list[str]:
    summary, example = _NOTES[key]
    return [f"{key}  ({_FORMAT_TYPES[key]})", f"    {summary}", f"    e.g.  {example}"]


def documented_keys() -> list[str]:
    """Every key path the reference covers, in its order."""
    paths: list[str] = []
    for top in TOP_KEYS:
        paths.append(top)
        paths += [f.path for f in next((t.fields for t in FIELDS if t.key == top), ())]
    return paths


def example_job_file() -> str:
    """The examples of the reference, together: a job file (tested to be a valid one)."""
    parts = []
    for path in documented_keys():
        # a group is written as its header, its keys' examples below it
        parts.append(f"{path}:" if path in GROUPS else _NOTES[path][1])
    return "\n".join(parts) + "\n"


def reference() -> str:
    """The page `kaic help jobfile` prints."""
    out = [
        "kaic job file reference (YAML; `kaic submit JOBFILE`, flags override keys)",
        "",
        "Every key is optional except `run` (or `-- COMMAND` on the command line). A flag",
        "given to `kaic submit` wins over the file; `--env` merges with `env`, `--secret`",
        "with `secrets`. A secret's value never goes in the file: `kaic secret set NAME`.",
        "",
    ]
    by_key = {f.key: f for f in FIELDS}
    for key in TOP_KEYS:
        if key in STAGING_KEYS:
            out += _staging_entry(key)
        else:
            f = by_key[key]
            out += _entry(f)
            for sub in f.fields:
                out += _entry(sub)
        out.append("")
    out += [
        "A complete example:",
        "",
        *("  " + line for line in example_job_file().splitlines()),
        "",
        "Check a file without submitting it: kaic submit job.yaml --dry-run",
    ]
    return "\n".join(out) + "\n"
