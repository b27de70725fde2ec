"""Helpers for the job metrics tests: sample files written as the sampler writes them, and
the fake NVML the sampler finds on its `PYTHONPATH` in tests (`tests/center/fake_nvml/`)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: a directory holding `pynvml.py`, a shim over `tests/bench/fakes.py` that replays a trace
FAKE_NVML_DIR = Path(__file__).parent / "fake_nvml"
REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_nvml_env(trace: Path) -> dict[str, str]:
    """The job environment that makes its sampler load the fake NVML replaying `trace`."""
    return {
        "PYTHONPATH": os.pathsep.join([str(FAKE_NVML_DIR), str(REPO_ROOT)]),
        "KAIC_FAKE_NVML_TRACE": str(trace),
    }


def write_trace(path: Path, gpus: int, utilization: dict[int, Sequence[float]] | None = None,
                memory: dict[int, Sequence[int]] | None = None) -> Path:  # fmt: skip
    """A trace for the fake NVML: `gpus` GPUs, each replaying its utilisation (and memory
    used) one reading per sample, holding the last."""
    trace = {
        "gpus": gpus,
        "utilization": {str(k): list(v) for k, v in (utilization or {}).items()},
        "memory": {str(k): list(v) for k, v in (memory or {}).items()},
    }
    path.write_text(json.dumps(trace), encoding="utf-8")
    return path


def header(node: str, gpus: Sequence[int] = (), notes: Sequence[str] = ()) -> dict[str, Any]:
    return {
        "v": 1,
        "node": node,
        "interval": 5.0,
        "gpus": [{"i": i, "uuid": f"GPU-{i}", "name": "NVIDIA H100 80GB HBM3"} for i in gpus],
        "notes": list(notes),
    }


def sample(at: float, duration: float, gpus: dict[int, float], *, mem: int = 2**30,
           cpu: float = 50.0, rss: int = 2**20) -> dict[str, Any]:  # fmt: skip
    """A raw sample: utilisation per GPU index."""
    return {
        "t": at,
        "d": duration,
        "s": 0,
        "c": cpu,
        "r": rss,
        "g": [[i, u, mem, 80 * 2**30, 300.0, 50, 1980] for i, u in gpus.items()],
    }


def write_metrics(job_dir: Path, node: str, lines: Sequence[dict[str, Any] | str]) -> Path:
    """A node's sample file in `job_dir/metrics/` (strings are written as they are)."""
    path = job_dir / "metrics" / f"{node}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")
    return path
