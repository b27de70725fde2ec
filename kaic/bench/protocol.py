"""What a benchmark backend is: the ``BenchBackend`` protocol, its results, and timing helpers.

The backends (``backend_torch``, ``backend_cupy``, ``backend_numpy``) implement it and import
it (and plain helpers such as ``results``), never the registry that picks one
(``backends.select_backend``, which imports them lazily): backends and registry form no
import circle.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kaic.gpu.inventory import Inventory


class BenchUnavailable(Exception):
    """This backend cannot run this benchmark here (dtype unsupported, API missing…)."""


@dataclass(frozen=True)
class Measurement:
    """One benchmark's result: ``value`` in ``unit`` from the median of ``iterations``."""

    value: float
    unit: str
    seconds: float  # median seconds per iteration
    iterations: int


@dataclass(frozen=True)
class BurnResult:
    """A sustained GEMM run on one device: throughput and result consistency."""

    tflops: float
    iterations: int
    mismatches: int  # iterations whose result differed from the first one
    seconds: float


class BenchBackend(Protocol):
    """What a benchmark backend offers; devices are the backend's own indices."""

    name: str  # e.g. "torch 2.5.1 (CUDA 12.4)", "numpy 2.1.0"
    device_kind: str  # "cuda" or "cpu"

    def locate(self, gpu: Inventory, nvml_count: int) -> int | None:
        """The backend's device index for this NVML GPU, or None if it cannot see it."""
        ...

    def gemm_dtypes(self, device: int, compute_capability: tuple[int, int] | None) -> list[str]:
        """The GEMM dtypes this backend can run on this device."""
        ...

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        """n x n x n matmul on random data; TFLOP/s from FLOPs = 2n^3 and the median time."""
        ...

    def memory_copy(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        """Device-to-device copy of ``nbytes``; GB/s counting read + write (2 x nbytes)."""
        ...

    def host_to_device(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        """Pinned host buffer to the device; GB/s."""
        ...

    def device_to_host(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        """Device to a pinned host buffer; GB/s."""
        ...

    def all_reduce(
        self, devices: list[int], nbytes: int, iterations: int, warmup: int
    ) -> Measurement:
        """All-reduce of ``nbytes`` per device; bus bandwidth GB/s = algbw x 2(n-1)/n."""
        ...

    def burn(self, devices: list[int], seconds: float, n: int, dtype: str) -> dict[int, BurnResult]:
        """Sustained GEMM on all devices at once, comparing every result with the first."""
        ...


def median_seconds(run_once: Callable[[], object], iterations: int, warmup: int) -> float:
    """Median wall time of ``run_once`` after ``warmup`` untimed calls (CPU timing)."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bus_bandwidth(nbytes: int, seconds: float, ranks: int) -> float:
    """NCCL-tests bus bandwidth in GB/s for an all-reduce: algbw x 2(n-1)/n."""
    return nbytes / seconds / 1e9 * 2 * (ranks - 1) / ranks
