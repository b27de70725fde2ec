"""CPU benchmarks with numpy: the same benchmarks as on a GPU, at CPU sizes.

They let the timing and verdict code run on any machine and check CPU nodes. numpy is
imported when this module is (only ``select_backend`` imports it); it is never required.
"""

from __future__ import annotations

import time

import numpy as np

from kaic.bench.protocol import BenchUnavailable, BurnResult, Measurement, median_seconds
from kaic.gpu.inventory import Inventory

_DTYPES = {"fp32": np.float32, "fp64": np.float64}

#: largest relative difference between two runs of the same GEMM still counted as equal;
#: BLAS may split work differently between runs, a broken unit gives far larger errors
MATCH_RTOL = 1e-4


class NumpyBackend:
    """Benchmarks on the CPU (the pseudo-device 0)."""

    device_kind = "cpu"

    def __init__(self) -> None:
        self.name = f"numpy {np.__version__}"
        self._rng = np.random.default_rng(12345)

    def locate(self, gpu: Inventory, nvml_count: int) -> int | None:
        return 0

    def gemm_dtypes(self, device: int, compute_capability: tuple[int, int] | None) -> list[str]:
        return list(_DTYPES)

    def _random(self, n: int, dtype: str) -> np.ndarray:
        if dtype not in _DTYPES:
            raise BenchUnavailable(f"{dtype} GEMM is not available on the CPU")
        # random data, not zeros: zeros take fast paths and score higher than real work
        return self._rng.standard_normal((n, n)).astype(_DTYPES[dtype])

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        a, b = self._random(n, dtype), self._random(n, dtype)
        c = np.empty_like(a)
        seconds = median_seconds(lambda: np.matmul(a, b, out=c), iterations, warmup)
        return Measurement(2 * n**3 / seconds / 1e12, "TFLOP/s", seconds, iterations)

    def memory_copy(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        src = self._rng.standard_normal(nbytes // 8)
        dst = np.empty_like(src)
        seconds = median_seconds(lambda: np.copyto(dst, src), iterations, warmup)
        return Measurement(2 * src.nbytes / seconds / 1e9, "GB/s", seconds, iterations)

    def host_to_device(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        raise BenchUnavailable("no host<->device transfer on the CPU")

    def device_to_host(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        raise BenchUnavailable("no host<->device transfer on the CPU")

    def all_reduce(
        self, devices: list[int], nbytes: int, iterations: int, warmup: int
    ) -> Measurement:
        raise BenchUnavailable("no all-reduce on the CPU")

    def burn(self, devices: list[int], seconds: float, n: int, dtype: str) -> dict[int, BurnResult]:
        a, b = self._random(n, dtype), self._random(n, dtype)
        reference = a @ b
        scale = float(np.abs(reference).max()) or 1.0
        c = np.empty_like(reference)
        iterations = mismatches = 0
        start = time.perf_counter()
        while True:
            np.matmul(a, b, out=c)
            iterations += 1
            if not float(np.abs(c - reference).max()) <= MATCH_RTOL * scale:  # NaN counts too
                mismatches += 1
            if time.perf_counter() - start >= seconds:
                break
        elapsed = time.perf_counter() - start
        tflops = 2 * n**3 * iterations / elapsed / 1e12
        return {d: BurnResult(tflops, iterations, mismatches, elapsed) for d in devices}
