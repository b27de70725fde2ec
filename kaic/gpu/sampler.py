"""The job metrics sampler: `python -m kaic.gpu.sampler`, started with every job on each of
its nodes (by the job's wrapper: `kaic.center.executors.sampler`), stopped with it.

Every `--interval` seconds it reads, for the job's own GPUs only (`--gpus`, else
`CUDA_VISIBLE_DEVICES`: NVML indices, or UUIDs), utilisation, memory used/total, power,
temperature and SM clock through the NVML seam (`kaic.gpu.nvml`; GPUs named by
`kaic.gpu.inventory`, as `kaic bench` names them), and for the job's process tree (the
descendants of `--watch`) CPU % and resident memory, and appends one line to
`<dir>/<node>.jsonl` (the format: `kaic.center.metrics.files`). No NVML or no driver: CPU
and memory only, said once in the file's header.

Bounded: when a file holds more than `--limit` samples (default 2,048), the latest quarter
stays raw and the rest is merged into buckets of equal time (averages weighted by time, with
peaks and idle time kept; the bucket doubles whenever they would fill more than half the
limit), and the file is rewritten (a new file renamed over the old): a file never holds
more than `--limit` samples, however long the job runs (a 30-day job at 5 s: its last 40
minutes raw, the rest in buckets of 43 minutes).

It exits when the watched process does (a pidfd wakes it at once), on SIGTERM with the
job's process group, and on any error of its own: it never touches the job, whose exit
status its wrapper records. Its stdout/stderr are /dev/null.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kaic.gpu.nvml import (
    NVML_CLOCK_SM,
    NVML_TEMPERATURE_GPU,
    NvmlApi,
    close_nvml,
    open_nvml,
    optional,
)

DEFAULT_INTERVAL = 5.0
DEFAULT_LIMIT = 2048
IDLE_UTILIZATION_PCT = 5.0  # kaic.models.metrics; the sampler loads nothing of pydantic
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
_COMPACT = (",", ":")


# -- which GPUs ------------------------------------------------------------------------


def visible_gpus(text: str | None, uuids: Sequence[str | None]) -> list[int]:
    """NVML indices of the GPUs `text` (CUDA_VISIBLE_DEVICES: indices or UUID prefixes,
    comma-separated) names, given each NVML device's UUID; unknown entries are skipped."""
    out: list[int] = []
    for entry in (text or "").split(","):
        entry = entry.strip()
        if entry.isdigit() and int(entry) < len(uuids):
            out.append(int(entry))
        elif entry.startswith("GPU-"):
            out += [i for i, u in enumerate(uuids) if u and u.startswith(entry)][:1]
    return list(dict.fromkeys(out))


def gpu_row(api: NvmlApi, index: int, handle: Any) -> list[Any]:
    """[index, util %, mem used, mem total, power W, temp C, SM MHz] (None: not reported)."""
    util = optional(api, api.nvmlDeviceGetUtilizationRates, handle)
    mem = optional(api, api.nvmlDeviceGetMemoryInfo, handle)
    power = optional(api, api.nvmlDeviceGetPowerUsage, handle)
    return [
        index,
        util.gpu if util is not None else None,
        mem.used if mem is not None else None,
        mem.total if mem is not None else None,
        round(power / 1000, 1) if power is not None else None,
        optional(api, api.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU),
        optional(api, api.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_SM),
    ]


# -- the process tree ----------------------------------------------------------------------


def _stat(pid: str) -> tuple[int, int, int] | None:
    """(parent pid, CPU ticks with reaped children's, resident pages) of a process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2 :].split()
    try:
        ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        return int(fields[1]), ticks, int(fields[21])
    except (IndexError, ValueError):
        return None


def tree_usage(root: int, exclude: int) -> tuple[int, int]:
    """(CPU ticks, resident bytes) of `root` and its descendants, `exclude` left out."""
    stats: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != exclude:
            found = _stat(name)
            if found is not None:
                stats[int(name)] = found
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    ticks = rss = 0
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        _, t, pages = stats[pid]
        ticks, rss = ticks + t, rss + pages * _PAGE
        todo += children.get(pid, [])
    return ticks, rss


# -- the file ----------------------------------------------------------------------------


def _avg(x: Any, wx: float, y: Any, wy: float) -> Any:
    """The average of `x` and `y` weighted by `wx`, `wy`; one of them when the other is None."""
    if x is None:
        return y
    if y is None or wx + wy <= 0:
        return x
    return round((x * wx + y * wy) / (wx + wy), 3)


def _peak(x: Any, y: Any, pick: Callable[[Any, Any], Any] = max) -> Any:
    if x is None:
        return y
    return x if y is None else pick(x, y)


def _expanded(row: list[Any], duration: float) -> list[Any]:
    """A GPU row with its peaks and idle time (a raw row's are its own values)."""
    if len(row) >= 13:
        return row
    util = row[1]
    idle = duration if util is not None and util < IDLE_UTILIZATION_PCT else 0.0
    return [*row[:7], util, util, row[2], row[4], row[5], idle]


def _merge_rows(x: list[Any], dx: float, y: list[Any], dy: float) -> list[Any]:
    mem, clock = _avg(x[2], dx, y[2], dy), _avg(x[6], dx, y[6], dy)
    return [
        x[0],
        _avg(x[1], dx, y[1], dy),
        int(mem) if mem is not None else None,
        y[3] if y[3] is not None else x[3],
        _avg(x[4], dx, y[4], dy),
        _avg(x[5], dx, y[5], dy),
        int(clock) if clock is not None else None,
        _peak(x[7], y[7], min),
        _peak(x[8], y[8]),
        _peak(x[9], y[9]),
        _peak(x[10], y[10]),
        _peak(x[11], y[11]),
        round(x[12] + y[12], 3),
    ]


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two consecutive samples as one: averages weighted by the time each stands for, the
    peaks of both, idle time added up, at the later one's time."""
    da, db = float(a["d"]), float(b["d"])
    rows_a = {row[0]: _expanded(row, da) for row in a.get("g", [])}
    rows_b = {row[0]: _expanded(row, db) for row in b.get("g", [])}
    gpus = []
    for index in sorted(rows_a.keys() | rows_b.keys()):
        x, y = rows_a.get(index), rows_b.get(index)
        gpus.append(_merge_rows(x, da, y, db) if x and y else (x or y))
    rss = _avg(a.get("r"), da, b.get("r"), db)
    return {
        "t": b["t"],
        "d": round(da + db, 3),
        "s": round(da + db, 3),
        "c": _avg(a.get("c"), da, b.get("c"), db),
        "r": int(rss) if rss is not None else None,
        "R": _peak(a.get("R", a.get("r")), b.get("R", b.get("r"))),
        "g": gpus,
    }


#: a bucket may grow this much beyond its span (the samples' durations jitter)
_SLACK = 1.25


def bucketed(
    samples: Sequence[tuple[dict[str, Any], bytes]], span: float
) -> list[tuple[dict[str, Any], bytes]]:
    """Consecutive samples merged into buckets of about `span` seconds (one already that
    long stays as it is): the time each stands for grows, what they add up to does not."""
    out: list[tuple[dict[str, Any], bytes]] = []
    current: dict[str, Any] | None = None
    line = b""
    for sample, sample_line in samples:
        if current is not None and float(current["d"]) + float(sample["d"]) <= span * _SLACK:
            current, line = merge(current, sample), b""
            continue
        if current is not None:
            out.append((current, line or _line(current)))
        current, line = sample, sample_line
    if current is not None:
        out.append((current, line or _line(current)))
    return out


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=_COMPACT).encode() + b"\n"


class SampleLog:
    """One node's file, appended to and compacted; `dir_fd` is the metrics directory."""

    def __init__(
        self, dir_fd: int, name: str, header: dict[str, Any], limit: int = DEFAULT_LIMIT
    ) -> None:
        if limit < 8:
            raise ValueError("the sample limit must be at least 8")
        self.dir_fd, self.name, self.limit = dir_fd, name, limit
        self.header = _line(header)
        #: how many seconds a merged sample stands for (doubled as the job grows)
        self.span = 2 * float(header.get("interval") or DEFAULT_INTERVAL)
        #: (sample, its line): a rewrite joins the lines, re-encoding only merged samples
        self.samples: list[tuple[dict[str, Any], bytes]] = []
        #: the file, open for appending (reopened after each rewrite)
        self._fd: int | None = None
        self._rewrite()

    def append(self, sample: dict[str, Any]) -> None:
        line = _line(sample)
        self.samples.append((sample, line))
        if len(self.samples) > self.limit:
            self.compact()
            return
        if self._fd is None:
            self._fd = self._open(self.name, os.O_APPEND)
        os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def compact(self) -> None:
        """Keep the latest quarter raw; merge the rest into buckets of `span` seconds, doubling
        `span` until they fit in half the limit, and rewrite the file."""
        keep = self.limit // 4
        older, recent = self.samples[:-keep], self.samples[-keep:]
        while True:
            merged = bucketed(older, self.span)
            if len(merged) <= self.limit // 2:
                break
            self.span *= 2
        self.samples = merged + recent
        self._rewrite()

    def _open(self, name: str, extra: int) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | extra
        return os.open(name, flags, 0o644, dir_fd=self.dir_fd)

    def _rewrite(self) -> None:
        tmp = f".{self.name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=self.dir_fd)
        fd = self._open(tmp, os.O_EXCL)
        try:
            data = self.header + b"".join(line for _, line in self.samples)
            while data:
                data = data[os.write(fd, data) :]
        finally:
            os.close(fd)
        os.replace(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self.close()


# -- the loop ----------------------------------------------------------------------------


@dataclass
class Gpus:
    """The job's GPUs as NVML handles (none without NVML), and what to say about them."""

    api: NvmlApi | None
    handles: list[tuple[int, Any]]
    info: list[dict[str, Any]]
    notes: list[str]


def open_gpus(wanted: str | None, node: str) -> Gpus:
    """NVML and the job's GPUs on it; without GPUs NVML is not even opened."""
    if not (wanted or "").strip():
        return Gpus(None, [], [], [])
    from kaic.gpu.inventory import inventory

    try:
        api = open_nvml()
    except Exception as exc:  # NotFound, or whatever a broken driver raises
        return Gpus(None, [], [], [f"no NVML on node {node}: CPU and memory only ({exc})"])
    count = optional(api, api.nvmlDeviceGetCount) or 0
    devices = [api.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    facts = [inventory(api, i, h) for i, h in enumerate(devices)]
    indices = visible_gpus(wanted, [f.uuid for f in facts])
    notes = [] if indices else [f"no GPU of {wanted!r} found by NVML on node {node}"]
    info = [{"i": i, "uuid": facts[i].uuid, "name": facts[i].name} for i in indices]
    return Gpus(api, [(i, devices[i]) for i in indices], info, notes)


def watch(pid: int) -> Callable[[float], bool]:
    """A wait of at most `timeout` seconds that returns True when `pid` has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None

    def wait(timeout: float) -> bool:
        if pidfd is not None:
            return bool(select.select([pidfd], [], [], timeout)[0])
        time.sleep(timeout)
        return not os.path.exists(f"/proc/{pid}")

    return wait


def run(args: argparse.Namespace) -> None:
    node = args.node or os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in node)[:64] or "node"
    wanted = args.gpus if args.gpus is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if args.dir_fd is not None:
        dir_fd = args.dir_fd
    else:
        os.makedirs(args.dir, mode=0o755, exist_ok=True)
        dir_fd = os.open(args.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    wait = watch(args.watch)
    gpus = open_gpus(wanted, node)
    header = {"v": 1, "node": node, "interval": args.interval, "gpus": gpus.info}
    log = SampleLog(dir_fd, f"{safe}.jsonl", {**header, "notes": gpus.notes}, args.limit)
    me = os.getpid()
    last_ticks, _ = tree_usage(args.watch, me)
    last = time.monotonic()
    pause = min(1.0, args.interval)  # a first sample soon: short jobs get one too
    try:
        while not wait(pause):
            now = time.monotonic()
            ticks, rss = tree_usage(args.watch, me)
            elapsed = max(now - last, 1e-6)
            rows = [gpu_row(gpus.api, i, h) for i, h in gpus.handles] if gpus.api else []
            sample = {
                "t": round(time.time(), 3),
                "d": round(elapsed, 3),
                "s": 0,
                "c": round(max(0, ticks - last_ticks) / _CLK_TCK / elapsed * 100, 1),
                "r": rss,
                "g": rows,
            }
            log.append(sample)
            last_ticks, last = ticks, now
            pause = args.interval
    finally:
        log.close()
        if gpus.api is not None:
            close_nvml(gpus.api)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kaic.gpu.sampler", description=__doc__)
    parser.add_argument("--watch", type=int, required=True, help="the job's process id")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="the job's metrics directory")
    where.add_argument("--dir-fd", type=int, help="the metrics directory, already open")
    parser.add_argument("--interval", type=float, default=DEFAULT_INTERVAL)
    parser.add_argument("--gpus", help="the job's GPUs (default: CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--node", help="this node's name (default: the host name)")
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.interval <= 3600:
        parser.error("--interval must be in (0, 3600] seconds")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    with contextlib.suppress(KeyboardInterrupt, BrokenPipeError):
        run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
