"""The backends kaic knows, how one is selected, and the benchmark plans (sizes, repetitions).

The protocol every backend implements is in ``protocol``; the backends import it, and only
this module imports the backends (inside ``select_backend``).

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

from dataclasses import dataclass

from kaic.bench.protocol import BenchBackend, BenchUnavailable

GIB = 2**30
MIB = 2**20


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
