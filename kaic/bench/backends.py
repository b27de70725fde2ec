"""The ``BenchBackend`` protocol, the benchmark plans, and backend selection.

Backends: torch if importable (and it sees a GPU), else cupy, else the benchmarks are SKIP
with an install hint; ``--device cpu`` uses numpy (the ``kaic[cpu-bench]`` extra). None is a
dependency of kaic: each is imported inside ``select_backend``.

How much a run costs (quick mode, per GPU, H100-class, measured sizes below):

=========================  ========================================================
part                       duration
=========================  ========================================================
torch import + CUDA init   ~3 s once, ~0.5 s per GPU for its context
GEMM 8192^3 x 5 dtypes     ~1.5 s per GPU (3 warm-up + 20 timed each; fp32 ~0.5 s)
device copy 2 GiB          ~0.2 s per GPU (allocation included)
host<->device 1 GiB        ~1.5 s per GPU (pinned allocation ~0.5 s, 2 x 20 copies)
NVML checks + kernel log   ~1 s for the node
all-reduce 1 GiB (NCCL)    ~5 s for the node, most of it communicator set-up
=========================  ========================================================

GPUs are benchmarked one after another so each figure is the GPU's own (host<->device
bandwidth in particular shares the PCIe/NUMA fabric): ~4 s per GPU, so an 8-GPU node
needs ~32 s + ~9 s fixed = ~41 s, under the 60 s target. Standard mode adds the 60 s burn,
run on all GPUs at once (node power and cooling are part of what it tests), with NVML
sampled every 200 ms. CPU mode uses n=1024 GEMMs and 128 MiB copies: a few seconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from kaic.bench.results import Inventory

GIB = 2**30
MIB = 2**20


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


@dataclass(frozen=True)
class BenchPlan:
    """Sizes and repetitions for one run (quick/standard x cuda/cpu)."""

    gemm_n: int
    gemm_dtypes: tuple[str, ...]
    iterations: int  # timed iterations per benchmark (BENCH.md: >= 20)
    warmup: int
    copy_bytes: int  # per buffer; the copy moves 2x this (read + write)
    host_bytes: int  # 0: no host<->device benchmark (CPU mode)
    allreduce_bytes: int  # 0: no all-reduce
    burn_seconds: float  # 0: no burn (quick mode)
    burn_n: int
    burn_dtype: str


def plan_for(mode: str, device: str) -> BenchPlan:
    """The plan for ``--mode`` (quick|standard) on ``--device`` (cuda|cpu)."""
    burn = 60.0 if mode == "standard" else 0.0
    if device == "cpu":
        return BenchPlan(
            gemm_n=1024,
            gemm_dtypes=("fp32", "fp64"),
            iterations=20,
            warmup=2,
            copy_bytes=128 * MIB,
            host_bytes=0,
            allreduce_bytes=0,
            burn_seconds=burn,
            burn_n=1024,
            burn_dtype="fp32",
        )
    return BenchPlan(
        gemm_n=8192,
        gemm_dtypes=("bf16", "fp16", "tf32", "fp32", "fp8"),
        iterations=20,
        warmup=3,
        copy_bytes=2 * GIB,  # far larger than any L2 (B200: 126 MB)
        host_bytes=1 * GIB,
        allreduce_bytes=1 * GIB,
        burn_seconds=burn,
        burn_n=8192,
        burn_dtype="bf16",
    )


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


def select_backend(device: str) -> tuple[BenchBackend | None, str]:
    """The backend for ``device`` and its name, or (None, an install hint) when none works."""
    if device == "cpu":
        try:
            from kaic.bench.backend_numpy import NumpyBackend

            cpu = NumpyBackend()
        except ImportError:
            return None, "CPU benchmarks need numpy: pip install 'kaic[cpu-bench]'"
        return cpu, cpu.name
    errors = []
    try:
        from kaic.bench.backend_torch import TorchBackend

        torch_backend = TorchBackend()
    except (ImportError, BenchUnavailable) as exc:
        errors.append(f"torch: {exc}")
    else:
        return torch_backend, torch_backend.name
    try:
        from kaic.bench.backend_cupy import CupyBackend

        cupy_backend = CupyBackend()
    except (ImportError, BenchUnavailable) as exc:
        errors.append(f"cupy: {exc}")
    else:
        return cupy_backend, cupy_backend.name
    return None, (
        "GPU benchmarks need torch (pip install torch) or cupy (pip install cupy-cuda12x); "
        + "; ".join(errors)
    )
