"""The numpy CPU backend, run for real at tiny sizes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from kaic.bench.backends import BenchPlan, plan_for
from kaic.bench.protocol import BenchUnavailable
from kaic.bench.runner import BenchEnvironment, BenchOptions, run_bench
from tests.bench.fakes import require_numpy

require_numpy()

from kaic.bench.backend_numpy import NumpyBackend  # noqa: E402  (after the numpy check)


def test_gemm_and_copy_give_positive_figures() -> None:
    backend = NumpyBackend()
    gemm = backend.gemm(0, "fp32", 128, iterations=3, warmup=1)
    assert gemm.unit == "TFLOP/s" and gemm.value > 0 and gemm.iterations == 3
    copy = backend.memory_copy(0, 2**20, iterations=3, warmup=1)
    assert copy.unit == "GB/s" and copy.value > 0
    with pytest.raises(BenchUnavailable):
        backend.gemm(0, "bf16", 16, 1, 0)
    with pytest.raises(BenchUnavailable):
        backend.host_to_device(0, 1, 1, 0)


def test_burn_results_are_consistent() -> None:
    [(device, burn)] = NumpyBackend().burn([0], seconds=0.2, n=64, dtype="fp32").items()
    assert device == 0 and burn.iterations > 1 and burn.mismatches == 0 and burn.tflops > 0


def test_standard_mode_on_cpu_with_a_short_burn() -> None:
    def plan(mode: str, device: str) -> BenchPlan:
        base = plan_for(mode, device)
        return replace(base, gemm_n=64, copy_bytes=2**20, iterations=3, burn_seconds=0.2, burn_n=64)

    env = BenchEnvironment(plan=plan)
    run = run_bench(BenchOptions(mode="standard", device="cpu"), env)
    burn = run.gpus[0].check("burn")
    assert burn is not None and burn.status == "UNKNOWN"
    assert isinstance(burn.value, float) and burn.value > 0
    assert "iterations" in burn.message
