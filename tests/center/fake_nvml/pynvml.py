"""A stand-in for the `pynvml` module, for tests only: the metrics sampler finds it first on
its `PYTHONPATH` when a test puts this directory there through the job's environment
(`tests/center/metrics_support.fake_nvml_env`). Nothing in kaic switches to it.

It is the bench tests' fake (`tests/bench/fakes.py`) replaying a trace file
(`KAIC_FAKE_NVML_TRACE`, JSON): `gpus` (how many), `utilization` and `memory` (per GPU index,
one value per reading, the last held; the first reading — the sampler's inventory — and the
first sample both get the first value), `init_error` (NVML fails to start with this code),
`crash` (the sampler's process dies on its first sample).
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

from tests.bench.fakes import FakeGpu, FakeNvml, NVMLError

with open(os.environ["KAIC_FAKE_NVML_TRACE"], encoding="utf-8") as _file:
    _TRACE: dict[str, Any] = json.load(_file)


class _Replaying(FakeNvml):
    def __init__(self) -> None:
        super().__init__([FakeGpu(index=i) for i in range(int(_TRACE.get("gpus", 0)))],
                         init_error=_TRACE.get("init_error"))  # fmt: skip
        self.reads: dict[tuple[str, int], int] = {}

    def _next(self, what: str, index: int, default: Any) -> Any:
        values = _TRACE.get(what, {}).get(str(index)) or [default]
        n = self.reads.get((what, index), 0)
        self.reads[(what, index)] = n + 1
        return values[min(max(n - 1, 0), len(values) - 1)]

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        if _TRACE.get("crash") and self.reads.get(("utilization", h.index), 0) >= 1:
            raise SystemExit("the fake NVML crashes the sampler, as asked")
        return SimpleNamespace(gpu=self._next("utilization", h.index, 97), memory=40)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(total=h.memory_total, used=self._next("memory", h.index, 2**30))


_NVML = _Replaying()


def __getattr__(name: str) -> Any:
    return getattr(_NVML, name)


__all__ = ["NVMLError"]
