"""What a job's samples add up to: the wire samples, a summary per GPU, the efficiency.

Every average is weighted by the time a sample stands for (`Point.duration`), so a merged
(downsampled) sample counts as the samples it replaced, and idle time is carried through
merges (`GpuPoint.idle_seconds`): the numbers of a compacted file are those of the raw one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from kaic.center.metrics.files import GpuPoint, Header, NodeFile, Point
from kaic.models.metrics import Efficiency, GpuSample, GpuSummary, MetricSample

#: decimals kept: percentages, and GPU-hours (a millisecond of one GPU is ~3e-7 hours)
_PCT_DIGITS = 3
_HOURS_DIGITS = 6


def utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def wire_sample(point: Point, header: Header) -> MetricSample:
    """A sample as `MetricSample`, its GPUs named as the header names them."""
    return MetricSample(
        at=utc(point.at),
        node=header.node,
        span_seconds=point.span,
        cpu_pct=point.cpu,
        rss_bytes=point.rss,
        gpus=[
            GpuSample(
                index=g.index,
                uuid=header.gpus.get(g.index, (None, None))[0],
                name=header.gpus.get(g.index, (None, None))[1],
                utilization_pct=g.util,
                memory_used_bytes=g.mem,
                memory_total_bytes=g.mem_total,
                power_watts=g.power,
                temperature_c=g.temp,
                sm_clock_mhz=g.sm_clock,
            )
            for g in point.gpus
        ],
    )


class _Weighted:
    """A time-weighted average."""

    __slots__ = ("total", "weight")

    def __init__(self) -> None:
        self.total = 0.0
        self.weight = 0.0

    def add(self, value: float | None, weight: float) -> None:
        if value is not None and weight > 0:
            self.total += value * weight
            self.weight += weight

    def value(self) -> float | None:
        return round(self.total / self.weight, _PCT_DIGITS) if self.weight > 0 else None


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _min(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


@dataclass
class _GpuTotals:
    node: str
    index: int
    util: _Weighted
    power: _Weighted
    util_min: float | None = None
    util_max: float | None = None
    mem_peak: float | None = None
    mem_total: int | None = None
    power_max: float | None = None
    temp_max: float | None = None
    idle: float = 0.0
    #: time covered by samples with a utilisation reading (the idle share's denominator)
    util_seconds: float = 0.0
    sampled: float = 0.0

    def add(self, g: GpuPoint, duration: float) -> None:
        self.util.add(g.util, duration)
        self.power.add(g.power, duration)
        self.util_min = _min(self.util_min, g.util_min)
        self.util_max = _max(self.util_max, g.util_max)
        self.mem_peak = _max(self.mem_peak, g.mem_max)
        self.mem_total = g.mem_total if g.mem_total is not None else self.mem_total
        self.power_max = _max(self.power_max, g.power_max)
        self.temp_max = _max(self.temp_max, g.temp_max)
        self.idle += g.idle_seconds
        self.sampled += duration
        if g.util is not None:
            self.util_seconds += duration


@dataclass
class JobTotals:
    """A job's samples added up: per GPU, and its process tree's."""

    gpus: list[_GpuTotals]
    headers: dict[str, Header]
    cpu: _Weighted
    rss_peak: int | None

    def summary(self) -> list[GpuSummary]:
        out = []
        for t in self.gpus:
            uuid, name = self.headers[t.node].gpus.get(t.index, (None, None))
            out.append(
                GpuSummary(
                    node=t.node,
                    index=t.index,
                    uuid=uuid,
                    name=name,
                    utilization_min_pct=t.util_min,
                    utilization_avg_pct=t.util.value(),
                    utilization_max_pct=t.util_max,
                    memory_used_peak_bytes=int(t.mem_peak) if t.mem_peak is not None else None,
                    memory_total_bytes=t.mem_total,
                    power_avg_watts=t.power.value(),
                    power_max_watts=t.power_max,
                    temperature_max_c=t.temp_max,
                    idle_seconds=round(t.idle, 3),
                    sampled_seconds=round(t.sampled, 3),
                )
            )
        return out

    def efficiency(self, gpu_hours: float) -> Efficiency:
        """Average utilisation over every GPU and all time, peak memory on one GPU, the
        GPU-hours charged, and their share the GPUs spent below the idle threshold."""
        util = _Weighted()
        idle = covered = 0.0
        peak: float | None = None
        for t in self.gpus:
            util.total += t.util.total
            util.weight += t.util.weight
            idle += t.idle
            covered += t.util_seconds
            peak = _max(peak, t.mem_peak)
        return Efficiency(
            gpu_util_avg=util.value(),
            gpu_mem_peak_bytes=int(peak) if peak is not None else None,
            gpu_hours=round(gpu_hours, _HOURS_DIGITS),
            gpu_hours_idle=(
                round(min(idle, covered) / covered * gpu_hours, _HOURS_DIGITS) if covered else None
            ),
        )


def add_up(files: Iterable[NodeFile]) -> JobTotals:
    """Every sample of every node of a job, added up."""
    gpus: dict[tuple[str, int], _GpuTotals] = {}
    headers: dict[str, Header] = {}
    cpu = _Weighted()
    rss_peak: float | None = None
    for node_file in files:
        node = node_file.header.node
        headers[node] = node_file.header
        for point in node_file.points:
            cpu.add(point.cpu, point.duration)
            rss_peak = _max(rss_peak, point.rss_max)
            for g in point.gpus:
                key = (node, g.index)
                if key not in gpus:
                    gpus[key] = _GpuTotals(node, g.index, _Weighted(), _Weighted())
                gpus[key].add(g, point.duration)
    ordered = [gpus[key] for key in sorted(gpus)]
    return JobTotals(ordered, headers, cpu, int(rss_peak) if rss_peak is not None else None)
