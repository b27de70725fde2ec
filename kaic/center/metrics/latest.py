"""The latest sample of each running job, kept in memory for `GET /v1/metrics/running`.

A `kaic top` asks for all of its user's running jobs every two seconds, and a user may run
a thousand jobs: reading each job's file per call would read megabytes. Instead each node
file is followed: the bytes appended since the last look are read (a sample is ~100 bytes
plus ~90 per GPU, so one look reads a few new lines), the latest sample and since when every
GPU has been idle are updated from them, and a file looked at less than `FRESH_SECONDS` ago
is not looked at again (the sampler writes every few seconds). A file the sampler rewrote
(its compaction: another inode, or shorter) is read again from its start, once, within the
caps of `files`. A job's entry is dropped when the job ends (`forget`, a ledger listener).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kaic.center.metrics.files import (
    MAX_FILE_BYTES,
    MAX_LINE_BYTES,
    Header,
    Point,
    node_name,
    open_metrics_dir,
    open_sample_file,
    parse_header,
    parse_line,
    parse_point,
    read_range,
    sample_files,
    split_lines,
)
from kaic.models.metrics import IDLE_UTILIZATION_PCT

#: a file looked at more recently than this is answered from memory
FRESH_SECONDS = 1.0
#: how often a job's metrics directory is listed again for new node files
RELIST_SECONDS = 10.0
#: what a first look reads at a time, from the end of a file backwards
_BACK_CHUNK = 16 * 1024


def all_idle(point: Point) -> bool:
    """Whether every GPU of the sample was below the idle threshold (False without GPUs)."""
    return bool(point.gpus) and all(
        g.util is not None and g.util < IDLE_UTILIZATION_PCT for g in point.gpus
    )


@dataclass
class NodeTail:
    """What is known of one node file: where it was read up to, its latest sample, and since
    when (epoch seconds) its GPUs have all been idle."""

    node: str
    header: Header
    identity: tuple[int, int] = (0, 0)
    offset: int = 0
    partial: bytes = b""
    #: inside a line longer than any sample (written by the job): dropped to its end
    skipping: bool = False
    latest: Point | None = None
    idle_since: float | None = None

    def reset(self, identity: tuple[int, int]) -> None:
        self.identity, self.offset, self.partial = identity, 0, b""
        self.skipping = False
        self.latest, self.idle_since = None, None

    def take(self, point: Point) -> None:
        if self.latest is not None and point.at <= self.latest.at:
            return
        if all_idle(point):
            if self.idle_since is None:
                self.idle_since = point.at - point.duration
        else:
            self.idle_since = None
        self.latest = point

    def feed(self, chunk: bytes) -> None:
        if self.skipping:  # the rest of a line too long to keep: drop it up to its end
            end = chunk.find(b"\n")
            if end < 0:
                return
            chunk, self.skipping = chunk[end + 1 :], False
        lines, self.partial = split_lines(self.partial + chunk)
        if len(self.partial) > MAX_LINE_BYTES:  # no line is that long: never kept growing
            self.partial, self.skipping = b"", True
        for line in lines:
            data = parse_line(line)
            if data is None:
                continue
            if "v" in data:
                self.header = parse_header(data, self.node)
                continue
            point = parse_point(data)
            if point is not None:
                self.take(point)

    def read_back(self, fd: int, size: int) -> None:
        """A file seen for the first time (or rewritten): its header, then its samples from
        the end backwards, only as far as its GPUs have been idle — for a busy job, its last
        line — within `MAX_FILE_BYTES`."""
        first, _ = split_lines(read_range(fd, 0, min(size, MAX_LINE_BYTES)))
        if first:
            self.feed(first[0] + b"\n")
        end, floor = size, max(0, size - MAX_FILE_BYTES)
        tail = read_range(fd, max(floor, end - _BACK_CHUNK), min(end - floor, _BACK_CHUNK))
        self.partial = b"" if tail.endswith(b"\n") else tail[tail.rfind(b"\n") + 1 :]
        end -= len(self.partial)
        self.offset = size
        while end > floor:
            start = max(floor, end - _BACK_CHUNK)
            chunk = read_range(fd, start, end - start)
            cut = chunk.find(b"\n") + 1 if start > floor else 0
            if start > floor and cut == 0:
                return  # a line longer than a chunk: not a sample
            for line in reversed(chunk[cut:].split(b"\n")):
                data = parse_line(line) if line else None
                point = parse_point(data) if data is not None and "v" not in data else None
                if point is None:
                    continue
                if self.latest is None:
                    self.latest = point
                if not all_idle(point):
                    return
                self.idle_since = point.at - point.duration
            end = start + cut

    def refresh(self, dir_fd: int, name: str) -> None:
        opened = open_sample_file(dir_fd, name)
        if opened is None:
            return
        fd, info = opened
        try:
            identity = (info.st_dev, info.st_ino)
            if identity != self.identity or info.st_size < self.offset:
                self.reset(identity)
                self.read_back(fd, info.st_size)
            if info.st_size > self.offset:
                chunk = read_range(fd, self.offset, min(info.st_size - self.offset, MAX_FILE_BYTES))
                self.offset += len(chunk)
                self.feed(chunk)
        finally:
            os.close(fd)


@dataclass
class JobTail:
    nodes: dict[str, NodeTail] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    looked_at: float = -1e9
    listed_at: float = -1e9


class LatestSamples:
    """The latest samples of running jobs, by job id (thread-safe: routes run on a pool)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._jobs: dict[str, JobTail] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._jobs)

    def nodes(self, job_id: str, job_dir: Path | str) -> list[NodeTail]:
        """The job's node files, brought up to date unless looked at just now."""
        now = self._clock()
        with self._lock:
            tail = self._jobs.setdefault(job_id, JobTail())
            fresh = now - tail.looked_at < FRESH_SECONDS
            if not fresh:
                tail.looked_at = now
        if not fresh:
            self._refresh(tail, job_dir, now)
        return [node for node in list(tail.nodes.values()) if node.latest is not None]

    @staticmethod
    def _refresh(tail: JobTail, job_dir: Path | str, now: float) -> None:
        dir_fd = open_metrics_dir(job_dir)
        if dir_fd is None:
            return
        try:
            # a job's nodes are listed again now and then (a node that starts late)
            if not tail.nodes or now - tail.listed_at >= RELIST_SECONDS:
                tail.names, tail.listed_at = sample_files(dir_fd), now
            for name in tail.names:
                node = tail.nodes.get(name)
                if node is None:
                    node = tail.nodes[name] = NodeTail(node_name(name), Header(node_name(name)))
                node.refresh(dir_fd, name)
        finally:
            with contextlib.suppress(OSError):
                os.close(dir_fd)
