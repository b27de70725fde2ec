"""Known metrics, as the center answers them, for the tests of `kaic top`, `kaic stats`, the
efficiency line and the idle mark: every number chosen so that what the commands show can be
written out by hand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.inprocess import NOW, FakeCenter, job

GIB = 2**30
#: started 1:02:03 before NOW
STARTED = NOW - timedelta(hours=1, minutes=2, seconds=3)


def gpu(index: int, util: float | None, used_gib: float, power: float | None) -> dict[str, Any]:
    return {
        "index": index,
        "name": "H100",
        "utilization_pct": util,
        "memory_used_bytes": int(used_gib * GIB),
        "memory_total_bytes": 80 * GIB,
        "power_watts": power,
    }


def running_job(
    job_id: str,
    name: str,
    gpus: list[dict[str, Any]],
    *,
    idle_minutes: float | None = None,
    cpu: float | None = 153.2,
    rss_gib: float = 12.3,
    node: str = "n1",
) -> dict[str, Any]:
    """A `RunningJobMetrics` entry: the latest sample of one node."""
    return {
        "job_id": job_id,
        "name": name,
        "started_at": STARTED.isoformat(),
        "gpus": len(gpus),
        "latest": [
            {
                "at": NOW.isoformat(),
                "node": node,
                "gpus": gpus,
                "cpu_pct": cpu,
                "rss_bytes": int(rss_gib * GIB),
            }
        ],
        "idle_since": (
            None if idle_minutes is None else (NOW - timedelta(minutes=idle_minutes)).isoformat()
        ),
    }


#: the brief's example: 87 % average, 61.2 GiB peak, 16 GPU-hours of which 0.4 idle
GOOD = {
    "gpu_util_avg": 87.4,
    "gpu_mem_peak_bytes": int(61.2 * GIB),
    "gpu_hours": 16.0,
    "gpu_hours_idle": 0.4,
}
GOOD_LINE = "efficiency: GPU util 87 % avg · peak mem 61.2 GiB · 16.0 GPU-h charged, 0.4 idle"
#: 42 % average and 40 % of its GPU-hours idle: a hint
POOR = {
    "gpu_util_avg": 42.0,
    "gpu_mem_peak_bytes": 3 * GIB,
    "gpu_hours": 2.0,
    "gpu_hours_idle": 0.8,
}
POOR_LINE = "efficiency: GPU util 42 % avg · peak mem 3.0 GiB · 2.0 GPU-h charged, 0.8 idle"


def samples(utils: list[float | None], *, node: str = "n1") -> list[dict[str, Any]]:
    """One sample a minute from STARTED, GPU 0 at each utilisation in turn."""
    return [
        {
            "at": (STARTED + timedelta(minutes=i)).isoformat(),
            "node": node,
            "gpus": [gpu(0, util, 10.0 + i, 300.0)],
            "cpu_pct": 100.0,
            "rss_bytes": 2 * GIB,
        }
        for i, util in enumerate(utils)
    ]


def job_metrics(job_id: str, utils: list[float | None], **fields: Any) -> dict[str, Any]:
    """A `JobMetrics` document for one GPU on n1, its summary matching the samples."""
    known = [u for u in utils if u is not None]
    doc = {
        "job_id": job_id,
        "samples": samples(utils),
        "summary": [
            {
                "node": "n1",
                "index": 0,
                "name": "H100",
                "utilization_min_pct": min(known),
                "utilization_avg_pct": sum(known) / len(known),
                "utilization_max_pct": max(known),
                "memory_used_peak_bytes": int((10.0 + len(utils) - 1) * GIB),
                "memory_total_bytes": 80 * GIB,
                "power_avg_watts": 300.0,
                "power_max_watts": 412.0,
                "sampled_seconds": 60.0 * len(utils),
            }
        ],
        "cpu_pct_avg": 100.0,
        "rss_peak_bytes": 2 * GIB,
    }
    doc.update(fields)
    return doc


def serve(center: FakeCenter) -> FakeCenter:
    """The fake center answering the jobs and metrics APIs."""
    center.serve_jobs()
    center.serve_metrics()
    return center


def gpu_job(job_id: str, state: str, **fields: Any) -> dict[str, Any]:
    """A GPU job (2 GPUs) as the center answers it."""
    base: dict[str, Any] = {"resources": {"gpus": 2}, "name": "train-llm"}
    if state != "PENDING":
        base["started_at"] = STARTED.isoformat()
    base.update(fields)
    return job(job_id, state, **base)
