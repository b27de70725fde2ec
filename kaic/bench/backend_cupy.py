"""GPU benchmarks with cupy, the fallback when torch is not installed.

cupy has no bf16 and no fp8 GEMM and no convenient NCCL all-reduce, so those are SKIP
with a hint to install torch; fp16/fp32 GEMMs, copies and pinned transfers run.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import cupy
import cupyx

from kaic.bench.kernel_log import pci_key
from kaic.bench.protocol import BenchUnavailable, BurnResult, Measurement
from kaic.gpu.inventory import Inventory

_DTYPES = {"fp16": cupy.float16, "fp32": cupy.float32}
MATCH_RTOL = 1e-2


class CupyBackend:
    """Benchmarks on CUDA devices through cupy."""

    device_kind = "cuda"

    def __init__(self) -> None:
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise BenchUnavailable(f"cupy sees no CUDA device ({exc})") from exc
        if count == 0:
            raise BenchUnavailable("cupy sees no CUDA device")
        self.name = f"cupy {cupy.__version__}"

    def locate(self, gpu: Inventory, nvml_count: int) -> int | None:
        want = pci_key(gpu.pci_bus_id) if gpu.pci_bus_id else None
        for i in range(cupy.cuda.runtime.getDeviceCount()):
            props = cupy.cuda.runtime.getDeviceProperties(i)
            key = (props.get("pciDomainID", 0), props.get("pciBusID"), props.get("pciDeviceID", 0))
            if want is not None and key == want:
                return i
        return None

    def gemm_dtypes(self, device: int, compute_capability: tuple[int, int] | None) -> list[str]:
        return list(_DTYPES)

    @staticmethod
    def _time(device: int, fn: Callable[[], object], iterations: int, warmup: int) -> float:
        with cupy.cuda.Device(device):
            for _ in range(warmup):
                fn()
            cupy.cuda.Device(device).synchronize()
            events = []
            for _ in range(iterations):
                start, end = cupy.cuda.Event(), cupy.cuda.Event()
                start.record()
                fn()
                end.record()
                events.append((start, end))
            cupy.cuda.Device(device).synchronize()
        return statistics.median(cupy.cuda.get_elapsed_time(s, e) / 1e3 for s, e in events)

    def _operands(self, device: int, dtype: str, n: int) -> tuple[Any, Any, Callable[[], Any]]:
        if dtype not in _DTYPES:
            raise BenchUnavailable(f"{dtype} GEMM needs the torch backend (pip install torch)")
        with cupy.cuda.Device(device):
            a = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(_DTYPES[dtype])
            b = cupy.random.standard_normal((n, n), dtype=cupy.float32).astype(_DTYPES[dtype])
            c = cupy.empty_like(a)
        return a, b, lambda: cupy.matmul(a, b, out=c)

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        _, _, fn = self._operands(device, dtype, n)
        seconds = self._time(device, fn, iterations, warmup)
        return Measurement(2 * n**3 / seconds / 1e12, "TFLOP/s", seconds, iterations)

    def memory_copy(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        with cupy.cuda.Device(device):
            src = cupy.random.standard_normal(nbytes // 4, dtype=cupy.float32)
            dst = cupy.empty_like(src)
        seconds = self._time(device, lambda: cupy.copyto(dst, src), iterations, warmup)
        return Measurement(2 * nbytes / seconds / 1e9, "GB/s", seconds, iterations)

    def _host_copy(
        self, device: int, nbytes: int, iterations: int, warmup: int, to_device: bool
    ) -> Measurement:
        host = cupyx.empty_pinned(nbytes // 4, dtype="float32")
        host.fill(1.5)
        with cupy.cuda.Device(device):
            gpu = cupy.empty(nbytes // 4, dtype=cupy.float32)
            stream = cupy.cuda.get_current_stream()
        if to_device:
            seconds = self._time(device, lambda: gpu.set(host, stream=stream), iterations, warmup)
        else:
            seconds = self._time(
                device, lambda: gpu.get(stream=stream, out=host), iterations, warmup
            )
        return Measurement(nbytes / seconds / 1e9, "GB/s", seconds, iterations)

    def host_to_device(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        return self._host_copy(device, nbytes, iterations, warmup, to_device=True)

    def device_to_host(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        return self._host_copy(device, nbytes, iterations, warmup, to_device=False)

    def all_reduce(
        self, devices: list[int], nbytes: int, iterations: int, warmup: int
    ) -> Measurement:
        raise BenchUnavailable("all-reduce needs the torch backend (pip install torch)")

    def burn(self, devices: list[int], seconds: float, n: int, dtype: str) -> dict[int, BurnResult]:
        dtype = dtype if dtype in _DTYPES else "fp16"
        results: dict[int, BurnResult] = {}

        def burn_one(device: int) -> None:
            _, _, fn = self._operands(device, dtype, n)
            with cupy.cuda.Device(device):
                reference = fn().copy()
                scale = float(cupy.abs(reference).max()) or 1.0
                iterations = mismatches = 0
                start = time.perf_counter()
                while True:
                    c = fn()
                    iterations += 1
                    if not float(cupy.abs(c - reference).max()) <= MATCH_RTOL * scale:
                        mismatches += 1
                    if time.perf_counter() - start >= seconds:
                        break
                elapsed = time.perf_counter() - start
            results[device] = BurnResult(
                2 * n**3 * iterations / elapsed / 1e12, iterations, mismatches, elapsed
            )

        threads = [threading.Thread(target=burn_one, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results
