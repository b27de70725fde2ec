"""Reading a job's sample files, defensively: they are written by a process that runs as the
job's account (`kaic.gpu.sampler`), so nothing in them is trusted.

A job's directory holds `metrics/`, one file per node, `<node>.jsonl`, JSON lines (the
sampler's docstring is the format's other half):

- a header, the first line: `{"v": 1, "node": "n1", "interval": 5.0,
  "gpus": [{"i": 2, "uuid": "GPU-…", "name": "NVIDIA H100 80GB HBM3"}], "notes": ["…"]}`
- samples: `{"t": <epoch s>, "d": <seconds it stands for>, "s": <span: 0 raw, else merged>,
  "c": <cpu %>, "r": <rss bytes>, "R": <rss peak>, "g": [[index, util %, mem used, mem total,
  power W, temp C, SM MHz, util min, util max, mem peak, power max, temp max, idle s], …]}`;
  a raw sample's GPU rows stop after the SM clock (its peaks are its values, its idle time
  `d` when utilisation is below the threshold).

Reading: the directory and each file are opened without following links (the account owns
the directory), only regular files with one link are read, at most `MAX_FILES` files and
`MAX_FILE_BYTES` of each (beyond it: the header and the last part, said in a note), lines
longer than `MAX_LINE_BYTES` or that do not parse are skipped, numbers outside their range
become None, strings lose control characters and are cut to `MAX_TEXT`. What comes out is
plain data (`Point`), shown by clients as text.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kaic.models.metrics import IDLE_UTILIZATION_PCT

METRICS_DIR = "metrics"
SUFFIX = ".jsonl"
MAX_FILES = 64
MAX_FILE_BYTES = 8 * 2**20
#: what one job's files may cost a request in all: a job on many nodes has each node's file
#: read only as far back as its share (parsed samples take ~16x their bytes in memory)
MAX_JOB_BYTES = 16 * 2**20
MAX_LINE_BYTES = 64 * 2**10
MAX_GPUS = 16
MAX_NOTES = 8
MAX_TEXT = 200
#: the largest byte count kept (1 EiB); anything above is nonsense
_MAX_BYTES = 2**60


@dataclass(frozen=True)
class GpuPoint:
    """One GPU in one sample (averages over its span, with the span's peaks)."""

    index: int
    util: float | None
    mem: int | None
    mem_total: int | None
    power: float | None
    temp: float | None
    sm_clock: int | None
    util_min: float | None
    util_max: float | None
    mem_max: int | None
    power_max: float | None
    temp_max: float | None
    idle_seconds: float


@dataclass(frozen=True)
class Point:
    """One sample of one node: at `at` (epoch seconds, the end of its span), standing for
    `duration` seconds (`span` 0: a raw sample)."""

    at: float
    duration: float
    span: float
    cpu: float | None
    rss: int | None
    rss_max: int | None
    gpus: tuple[GpuPoint, ...]


@dataclass
class Header:
    node: str
    interval: float | None = None
    #: NVML index -> (uuid, name)
    gpus: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class NodeFile:
    """What one node's file says."""

    header: Header
    points: list[Point] = field(default_factory=list)


def clean_text(value: Any) -> str | None:
    """A string from the file: control characters removed, cut to `MAX_TEXT`."""
    if not isinstance(value, str):
        return None
    kept = "".join(ch for ch in value if ch.isprintable())
    return kept[:MAX_TEXT] or None


def _number(value: Any, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    if not math.isfinite(number) or number < low or number > high:
        return None
    return number


def _count(value: Any) -> int | None:
    number = _number(value, 0, _MAX_BYTES)
    return int(number) if number is not None else None


def _pct(value: Any) -> float | None:
    return _number(value, 0.0, 100.0)


def _gpu(row: Any, duration: float) -> GpuPoint | None:
    if not isinstance(row, list) or len(row) < 7:
        return None
    index = _number(row[0], 0, 1023)
    if index is None or index != int(index):
        return None
    util = _pct(row[1])
    mem = _count(row[2])
    power = _number(row[4], 0.0, 100_000.0)
    temp = _number(row[5], -100.0, 300.0)
    sm_clock = _number(row[6], 0, 100_000)
    if len(row) >= 13:
        util_min, util_max = _pct(row[7]), _pct(row[8])
        mem_max, power_max = _count(row[9]), _number(row[10], 0.0, 100_000.0)
        temp_max = _number(row[11], -100.0, 300.0)
        idle = _number(row[12], 0.0, duration) or 0.0
    else:
        util_min = util_max = util
        mem_max, power_max, temp_max = mem, power, temp
        idle = duration if util is not None and util < IDLE_UTILIZATION_PCT else 0.0
    return GpuPoint(
        index=int(index),
        util=util,
        mem=mem,
        mem_total=_count(row[3]),
        power=power,
        temp=temp,
        sm_clock=int(sm_clock) if sm_clock is not None else None,
        util_min=util_min,
        util_max=util_max,
        mem_max=mem_max,
        power_max=power_max,
        temp_max=temp_max,
        idle_seconds=idle,
    )


def parse_point(data: dict[str, Any]) -> Point | None:
    """A sample line's object as a `Point`, or None when it is not a usable sample."""
    at = _number(data.get("t"), 0.0, 1e11)
    duration = _number(data.get("d"), 0.0, 1e9)
    if at is None or duration is None:
        return None
    span = _number(data.get("s", 0), 0.0, 1e9) or 0.0
    rows = data.get("g", [])
    if not isinstance(rows, list) or len(rows) > MAX_GPUS:
        return None
    gpus = [_gpu(row, duration) for row in rows]
    rss = _count(data.get("r"))
    return Point(
        at=at,
        duration=duration,
        span=span,
        cpu=_number(data.get("c"), 0.0, 1e6),
        rss=rss,
        rss_max=_count(data.get("R")) if "R" in data else rss,
        gpus=tuple(g for g in gpus if g is not None),
    )


def parse_header(data: dict[str, Any], fallback_node: str) -> Header:
    header = Header(node=clean_text(data.get("node")) or fallback_node)
    header.interval = _number(data.get("interval"), 0.0, 86400.0)
    gpus = data.get("gpus")
    if isinstance(gpus, list):
        for gpu in gpus[:MAX_GPUS]:
            if not isinstance(gpu, dict):
                continue
            index = _number(gpu.get("i"), 0, 1023)
            if index is not None:
                header.gpus[int(index)] = (clean_text(gpu.get("uuid")), clean_text(gpu.get("name")))
    notes = data.get("notes")
    if isinstance(notes, list):
        header.notes = [n for n in (clean_text(x) for x in notes[:MAX_NOTES]) if n]
    return header


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One line as a JSON object, or None (too long, not JSON, not an object)."""
    if len(line) > MAX_LINE_BYTES:
        return None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def split_lines(chunk: bytes) -> tuple[list[bytes], bytes]:
    """Complete lines of `chunk`, and what follows the last newline (a line being written)."""
    end = chunk.rfind(b"\n")
    if end < 0:
        return [], chunk
    return chunk[:end].split(b"\n"), chunk[end + 1 :]


def node_name(filename: str) -> str:
    """The node a file is named for (the header names it too; this is the fallback)."""
    return clean_text(filename[: -len(SUFFIX)]) or "node"


def open_metrics_dir(job_dir: Path | str) -> int | None:
    """A descriptor of `job_dir/metrics` (not followed if a link), or None if there is none."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(os.path.join(job_dir, METRICS_DIR), flags)
    except OSError:
        return None


def sample_files(dir_fd: int) -> list[str]:
    """The sample files in the metrics directory, by name (at most `MAX_FILES`)."""
    try:
        names = os.listdir(dir_fd)
    except OSError:
        return []
    return sorted(n for n in names if n.endswith(SUFFIX) and not n.startswith("."))[:MAX_FILES]


def open_sample_file(dir_fd: int, name: str) -> tuple[int, os.stat_result] | None:
    """An open regular file of the metrics directory and its status, or None: links are
    not followed and a file with other names (a hard link to someone else's) is refused."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dir_fd)
    except OSError:
        return None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        return None
    return fd, info


def read_range(fd: int, start: int, length: int) -> bytes:
    """Up to `length` bytes of `fd` from `start`."""
    parts: list[bytes] = []
    while length > 0:
        chunk = os.pread(fd, min(length, 1 << 20), start)
        if not chunk:
            break
        parts.append(chunk)
        start += len(chunk)
        length -= len(chunk)
    return b"".join(parts)


def _lines(fd: int, size: int, budget: int = MAX_FILE_BYTES) -> Iterator[bytes]:
    """The file's complete lines: the first, then those of the last `budget` bytes."""
    start = max(0, size - budget)
    if start > 0:
        first, _ = split_lines(read_range(fd, 0, MAX_LINE_BYTES))
        yield from first[:1]
    body = read_range(fd, start, size - start)
    lines, _ = split_lines(body)
    yield from lines[1:] if start > 0 else lines


def read_node_file(dir_fd: int, name: str, budget: int = MAX_FILE_BYTES) -> NodeFile | None:
    """One node's file, whole within the caps (its last `budget` bytes at most)."""
    opened = open_sample_file(dir_fd, name)
    if opened is None:
        return None
    fd, info = opened
    result = NodeFile(Header(node=node_name(name)))
    try:
        for number, line in enumerate(_lines(fd, info.st_size, budget)):
            data = parse_line(line)
            if data is None:
                continue
            if number == 0 and "v" in data:
                result.header = parse_header(data, result.header.node)
                continue
            point = parse_point(data)
            if point is not None:
                result.points.append(point)
    finally:
        os.close(fd)
    if info.st_size > budget:
        result.header.notes.append(
            f"the samples of node {result.header.node} exceed {budget} bytes: "
            "only the latest were read"
        )
    result.points.sort(key=lambda p: p.at)
    return result


def read_job_files(job_dir: Path) -> list[NodeFile]:
    """Every node's file of a job (none when the job has no metrics directory)."""
    dir_fd = open_metrics_dir(job_dir)
    if dir_fd is None:
        return []
    try:
        names = sample_files(dir_fd)
        budget = min(MAX_FILE_BYTES, MAX_JOB_BYTES // max(1, len(names)))
        files = [read_node_file(dir_fd, name, budget) for name in names]
    finally:
        with contextlib.suppress(OSError):
            os.close(dir_fd)
    return [f for f in files if f is not None]
