"""Job metrics: what a job's sampler records and what `GET /v1/jobs/{id}/metrics` and
`GET /v1/metrics/running` answer (ARCHITECTURE.md "Job metrics").

A sampler started with the job on every node appends `MetricSample`s (its own GPUs, mapped
from `CUDA_VISIBLE_DEVICES` to NVML devices, and the job's process tree) to the job's
directory; the center reads those files — it never imports NVML. Numbers the hardware could
not give are None ("not supported" is not 0). Sizes are bytes, times ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

#: a GPU whose utilisation stays below this (percent) counts as idle: the `gpu_hours_idle`
#: of an efficiency, and the idle mark of `kaic jobs`
IDLE_UTILIZATION_PCT = 5.0
#: how long a running job's GPUs must have been idle for `kaic jobs` to mark it (seconds)
IDLE_MARK_SECONDS = 600


class GpuSample(BaseModel):
    """One GPU at one instant."""

    index: int = Field(description="the NVML index on its node")
    uuid: str | None = None
    name: str | None = Field(None, description="as `kaic bench` names it (the inventory's name)")
    utilization_pct: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    temperature_c: float | None = None
    sm_clock_mhz: int | None = None


class MetricSample(BaseModel):
    """One sample of one node of a job. A downsampled sample stands for `span_seconds` of
    samples (their averages; memory and utilisation peaks kept in the summary)."""

    at: datetime
    node: str = Field(description="the node's name (the local center: its host name)")
    span_seconds: float = Field(0.0, description="0: a raw sample; >0: an average over this span")
    gpus: list[GpuSample] = Field(default_factory=list)
    cpu_pct: float | None = Field(None, description="the job's process tree, % of one core")
    rss_bytes: int | None = Field(None, description="the job's process tree, resident memory")


class GpuSummary(BaseModel):
    """One GPU over the job's life (or its life so far)."""

    node: str
    index: int
    uuid: str | None = None
    name: str | None = None
    utilization_min_pct: float | None = None
    utilization_avg_pct: float | None = None
    utilization_max_pct: float | None = None
    memory_used_peak_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_avg_watts: float | None = None
    power_max_watts: float | None = None
    temperature_max_c: float | None = None
    idle_seconds: float = Field(0.0, description="time sampled below the idle threshold")
    sampled_seconds: float = Field(0.0, description="time covered by samples")


class Efficiency(BaseModel):
    """A finished GPU job in four numbers (CLI.md: Job.efficiency)."""

    gpu_util_avg: float | None = Field(None, description="average GPU utilisation, percent")
    gpu_mem_peak_bytes: int | None = Field(None, description="highest memory used on one GPU")
    gpu_hours: float = Field(description="GPU-hours charged")
    gpu_hours_idle: float | None = Field(
        None, description="GPU-hours below the idle threshold (utilisation < 5 %)"
    )


class JobMetrics(BaseModel):
    """`GET /v1/jobs/{id}/metrics?since=…`: the samples after `since` (all when absent) and a
    summary per GPU over the whole job."""

    job_id: str
    samples: list[MetricSample] = Field(default_factory=list)
    summary: list[GpuSummary] = Field(default_factory=list)
    cpu_pct_avg: float | None = None
    rss_peak_bytes: int | None = None
    efficiency: Efficiency | None = Field(None, description="set once a GPU job has ended")
    notes: list[str] = Field(
        default_factory=list, description='e.g. "no NVML on node n1: CPU and memory only"'
    )
    next_since: datetime | None = Field(None, description="pass as `since` to get only newer")


class RunningJobMetrics(BaseModel):
    """One running job in `GET /v1/metrics/running`: its latest sample per node."""

    job_id: str
    name: str
    started_at: datetime | None = None
    gpus: int = 0
    latest: list[MetricSample] = Field(default_factory=list, description="one per node")
    idle_since: datetime | None = Field(
        None, description="since when every GPU of the job has been below the idle threshold"
    )


class RunningMetrics(BaseModel):
    """`GET /v1/metrics/running`: the caller's running jobs, in one call (one request per
    refresh of `kaic top`, never one per job)."""

    jobs: list[RunningJobMetrics] = Field(default_factory=list)
    at: datetime
