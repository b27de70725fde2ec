"""Slurm's records as the center reads them: `SlurmJob`, `SlurmNode` and `SlurmPartition`
from the elements of `GET /jobs`, `/nodes` and `/partitions`, and the decoding of their values
(numbers, exit codes, array task strings, GRES).

The readers accept both REST generations: v0.0.38 (Slurm 22.05), and v0.0.40+ (23.11+) with
`job_state` as a list of flags, numbers as `{"set", "infinite", "number"}` objects and exit
codes as `{"status", "return_code", "signal"}`. They are pure functions of an answer's decoded
JSON, apart from the client in `api` that fetches it, so both generations' shapes are read and
tested without a slurmrestd.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kaic.center.executors.slurm.hostlist import expand_hostlist
from kaic.center.executors.slurm.states import SlurmState, parse_job_state


@dataclass(frozen=True)
class SlurmJob:
    """One record of `GET /jobs`: a job, an array task, or an array's pending remainder."""

    job_id: int
    state: SlurmState
    state_reason: str | None = None
    #: the array's id (the first task's job id), None for a plain job
    array_job_id: int | None = None
    #: the task index of this record, None for a plain job or an array's pending remainder
    array_task_id: int | None = None
    #: indices of the array tasks still pending in this record (the remainder)
    pending_tasks: tuple[int, ...] = ()
    #: the exit status of the batch script, and the signal that killed it
    exit_code: int | None = None
    signal: int | None = None
    user: str | None = None
    comment: str | None = None
    name: str | None = None
    partition: str | None = None
    #: GPU indices on the node, from `gres_detail` ("gpu:2(IDX:0-1)")
    gpu_ids: tuple[int, ...] = ()
    #: the names of the nodes it runs on (its `nodes` host list expanded)
    nodes: tuple[str, ...] = ()
    #: when Slurm started and ended the job (Unix seconds; None = not yet / unknown)
    start_time: int | None = None
    end_time: int | None = None
    #: how many times Slurm requeued the job itself (`restart_cnt`)
    restarts: int = 0


@dataclass(frozen=True)
class SlurmNode:
    name: str
    state: str
    partitions: tuple[str, ...]
    gpus: int
    gpus_used: int
    gpu_type: str | None = None


@dataclass(frozen=True)
class SlurmPartition:
    name: str
    #: minutes; None = unlimited
    max_time_minutes: int | None
    default: bool
    state: str = "UP"


# -- value decoding (both REST generations) ----------------------------------------------


def decode_number(value: object) -> int | None:
    """An integer field: plain (v0.0.38; -1 or NO_VAL means unset) or `{"set", "infinite",
    "number"}` (v0.0.40+)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    # NO_VAL / INFINITE sentinels of the 32- and 64-bit kinds
    if number < 0 or number in (0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFE, 0xFFFFFFFFFFFFFFFF):
        return None
    return number


def decode_exit_code(value: object) -> tuple[int | None, int | None]:
    """(exit status, signal) of a job's `exit_code`.

    v0.0.38 gives the raw wait status (`7 << 8` for `exit 7`, `9` for SIGKILL); v0.0.40+ an
    object with `return_code` and `signal`. A signal gives the status 128 + N, like a shell.
    """
    if isinstance(value, dict):
        sig = decode_number((value.get("signal") or {}).get("id")) if value.get("signal") else None
        code = decode_number(value.get("return_code"))
        if sig:
            return 128 + sig, sig
        return code, None
    raw = decode_number(value)
    if raw is None:
        return None, None
    sig = raw & 0x7F
    if sig:
        return 128 + sig, sig
    return (raw >> 8) & 0xFF, None


def expand_indices(text: str) -> tuple[int, ...]:
    """Array task indices from Slurm's task string: "0,2-5:2%4" -> (0, 2, 4)."""
    text = text.split("%", 1)[0].strip()
    result: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        step = 1
        if ":" in part:
            part, step_text = part.split(":", 1)
            step = max(1, int(step_text))
        if "-" in part:
            low, high = part.split("-", 1)
            result.extend(range(int(low), int(high) + 1, step))
        else:
            result.append(int(part))
    return tuple(result)


_IDX = re.compile(r"IDX:([0-9,\-]+)")


def gpu_indices(gres_detail: object) -> tuple[int, ...]:
    """GPU indices from `gres_detail` entries like "gpu:1(IDX:0)", "gpu:h100:2(IDX:0-1)"."""
    found: list[int] = []
    if not isinstance(gres_detail, (list, tuple)):
        return ()
    for entry in gres_detail:
        text = str(entry)
        if not text.startswith("gpu"):
            continue
        match = _IDX.search(text)
        if match:
            found.extend(expand_indices(match.group(1)))
    return tuple(found)


def parse_gres(text: str) -> tuple[int, str | None]:
    """(GPU count, GPU type) of a node's GRES string: "gpu:2", "gpu:h100:8(S:0-1),shard:4"."""
    total = 0
    gpu_type: str | None = None
    # Commas also occur inside "(S:0-1)": split only on those outside parentheses.
    for entry in re.split(r",(?![^()]*\))", text or ""):
        entry = re.sub(r"\(.*?\)", "", entry.strip())
        parts = entry.split(":")
        if not parts or parts[0] != "gpu":
            continue
        count_text = parts[-1]
        if len(parts) >= 3:
            gpu_type = parts[1]
        try:
            total += int(count_text)
        except ValueError:
            total += 1 if len(parts) == 1 else 0
    return total, gpu_type


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None


def parse_job(doc: Mapping[str, Any]) -> SlurmJob:
    """A `SlurmJob` from one element of `GET /jobs`' `jobs` list (either generation)."""
    job_id = decode_number(doc.get("job_id"))
    if job_id is None:
        raise ValueError(f"job without a job_id: {doc!r:.200}")
    array_job_id = decode_number(doc.get("array_job_id")) or None
    array_task_id = decode_number(doc.get("array_task_id")) if array_job_id else None
    pending: tuple[int, ...] = ()
    task_string = doc.get("array_task_string") or ""
    if array_job_id and array_task_id is None and task_string:
        try:
            pending = expand_indices(str(task_string))
        except ValueError:
            pending = ()
    code, sig = decode_exit_code(doc.get("exit_code"))
    return SlurmJob(
        job_id=job_id,
        state=parse_job_state(doc.get("job_state") or "PENDING"),
        state_reason=_text(doc.get("state_reason")),
        array_job_id=array_job_id,
        array_task_id=array_task_id,
        pending_tasks=pending,
        exit_code=code,
        signal=sig,
        user=_text(doc.get("user_name")),
        comment=_text(doc.get("comment")),
        name=_text(doc.get("name")),
        partition=_text(doc.get("partition")),
        gpu_ids=gpu_indices(doc.get("gres_detail")),
        nodes=expand_hostlist(_text(doc.get("nodes"))),
        start_time=decode_number(doc.get("start_time")) or None,
        end_time=decode_number(doc.get("end_time")) or None,
        restarts=decode_number(doc.get("restart_cnt")) or 0,
    )


def parse_node(doc: Mapping[str, Any]) -> SlurmNode:
    gpus, gpu_type = parse_gres(str(doc.get("gres") or ""))
    used, _ = parse_gres(str(doc.get("gres_used") or ""))
    state = doc.get("state")
    if isinstance(state, list):  # v0.0.40+: a list of flags
        state = ",".join(str(s) for s in state)
    return SlurmNode(
        name=str(doc.get("name") or ""),
        state=str(state or "").lower(),
        partitions=tuple(str(p) for p in doc.get("partitions") or ()),
        gpus=gpus,
        gpus_used=used,
        gpu_type=gpu_type,
    )


def parse_partition(doc: Mapping[str, Any]) -> SlurmPartition:
    flags = doc.get("flags") or []
    if isinstance(doc.get("partition"), dict):  # v0.0.40+: {"state": [...]} etc.
        flags = flags or (doc["partition"].get("state") or [])
    default = "default" in [str(f).lower() for f in flags]
    max_time = doc.get("max_time_limit", doc.get("maximums", {}).get("time"))
    state = doc.get("state")
    if isinstance(doc.get("partition"), dict):
        state = ",".join(str(s) for s in doc["partition"].get("state") or ["UP"])
    return SlurmPartition(
        name=str(doc.get("name") or ""),
        max_time_minutes=decode_number(max_time),
        default=default,
        state=str(state or "UP"),
    )
