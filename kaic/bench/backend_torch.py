"""GPU benchmarks with torch: cuBLAS GEMMs, copies, pinned transfers, NCCL all-reduce.

Timed with CUDA events (``median_seconds`` would time kernel launches, not kernels).
torch is imported when this module is, and only ``select_backend`` imports it.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

# NVML numbers GPUs in PCI order; make CUDA agree before torch initialises it.
os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")

import torch

from kaic.bench.kernel_log import pci_key
from kaic.bench.protocol import (
    BenchUnavailable,
    BurnResult,
    Measurement,
    bus_bandwidth,
)
from kaic.gpu.inventory import Inventory

#: largest relative difference between two runs of the same GEMM still counted as equal
MATCH_RTOL = 1e-2


def _hex(uuid: object) -> str:
    text = str(uuid).lower().removeprefix("gpu-")
    return "".join(ch for ch in text if ch in "0123456789abcdef")


class TorchBackend:
    """Benchmarks on CUDA devices through torch."""

    device_kind = "cuda"

    def __init__(self) -> None:
        if not torch.cuda.is_available():
            raise BenchUnavailable("torch sees no CUDA device")
        self.name = f"torch {torch.__version__} (CUDA {torch.version.cuda})"

    def locate(self, gpu: Inventory, nvml_count: int) -> int | None:
        want_uuid = _hex(gpu.uuid) if gpu.uuid else None
        want_pci = pci_key(gpu.pci_bus_id) if gpu.pci_bus_id else None
        count = torch.cuda.device_count()
        for i in range(count):
            props = torch.cuda.get_device_properties(i)
            uuid = getattr(props, "uuid", None)
            if want_uuid and uuid is not None and _hex(uuid) == want_uuid:
                return i
            bus = getattr(props, "pci_bus_id", None)
            if want_pci and bus is not None:
                key = (getattr(props, "pci_domain_id", 0), bus, getattr(props, "pci_device_id", 0))
                if key == want_pci:
                    return i
        # Old torch exposes neither: with every GPU visible, PCI order matches NVML's.
        if count == nvml_count and "CUDA_VISIBLE_DEVICES" not in os.environ:
            return gpu.index
        return None

    def gemm_dtypes(self, device: int, compute_capability: tuple[int, int] | None) -> list[str]:
        cc = compute_capability or torch.cuda.get_device_capability(device)
        dtypes = ["bf16", "fp16", "tf32", "fp32"] if cc >= (8, 0) else ["fp16", "fp32"]
        if cc >= (8, 9) and hasattr(torch, "float8_e4m3fn"):
            dtypes.append("fp8")
        return dtypes

    @staticmethod
    def _time(device: int, fn: Callable[[], object], iterations: int, warmup: int) -> float:
        """Median seconds of ``fn`` on ``device``, measured with CUDA events."""
        with torch.cuda.device(device):
            for _ in range(warmup):
                fn()
            torch.cuda.synchronize()
            events = []
            for _ in range(iterations):
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                events.append((start, end))
            torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) / 1e3 for s, e in events)

    def _operands(self, device: int, dtype: str, n: int) -> tuple[Any, Any, Callable[[], Any]]:
        """Random operands and the matmul call for one dtype."""
        dev = torch.device("cuda", device)
        if dtype == "fp8":
            a = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn)
            b = torch.randn(n, n, device=dev).to(torch.float8_e4m3fn).t()  # column-major
            one = torch.tensor(1.0, device=dev)

            def fp8() -> Any:
                out = torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
                return out[0] if isinstance(out, tuple) else out  # torch < 2.4 returned a pair

            return a, b, fp8
        tdtype = {
            "bf16": torch.bfloat16,
            "fp16": torch.float16,
            "tf32": torch.float32,
            "fp32": torch.float32,
        }.get(dtype)
        if tdtype is None:
            raise BenchUnavailable(f"{dtype} GEMM is not supported by the torch backend")
        a = torch.randn(n, n, device=dev, dtype=tdtype)
        b = torch.randn(n, n, device=dev, dtype=tdtype)
        c = torch.empty(n, n, device=dev, dtype=tdtype)
        return a, b, lambda: torch.matmul(a, b, out=c)

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        previous = torch.backends.cuda.matmul.allow_tf32
        # tf32 and fp32 differ only in whether cuBLAS may use TF32 tensor cores
        torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        try:
            _, _, fn = self._operands(device, dtype, n)
            seconds = self._time(device, fn, iterations, warmup)
        except BenchUnavailable:
            raise
        except (RuntimeError, AttributeError, TypeError) as exc:
            raise BenchUnavailable(f"{dtype} GEMM failed in torch: {exc}") from exc
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
            torch.cuda.empty_cache()
        return Measurement(2 * n**3 / seconds / 1e12, "TFLOP/s", seconds, iterations)

    def memory_copy(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        def measure() -> float:
            dev = torch.device("cuda", device)
            src = torch.empty(nbytes // 4, dtype=torch.float32, device=dev).normal_()
            dst = torch.empty_like(src)
            return self._time(device, lambda: dst.copy_(src), iterations, warmup)

        seconds = measure()
        torch.cuda.empty_cache()  # the buffers died with measure(); give the memory back
        return Measurement(2 * nbytes / seconds / 1e9, "GB/s", seconds, iterations)

    def _host_copy(
        self, device: int, nbytes: int, iterations: int, warmup: int, to_device: bool
    ) -> Measurement:
        def measure() -> float:
            dev = torch.device("cuda", device)
            # the bytes' values do not change PCIe speed; filling 1 GiB on the host would cost
            host = torch.empty(nbytes // 4, dtype=torch.float32, pin_memory=True).fill_(1.5)
            gpu = torch.empty(nbytes // 4, dtype=torch.float32, device=dev)
            if to_device:
                return self._time(
                    device, lambda: gpu.copy_(host, non_blocking=True), iterations, warmup
                )
            return self._time(
                device, lambda: host.copy_(gpu, non_blocking=True), iterations, warmup
            )

        seconds = measure()
        torch.cuda.empty_cache()
        return Measurement(nbytes / seconds / 1e9, "GB/s", seconds, iterations)

    def host_to_device(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        return self._host_copy(device, nbytes, iterations, warmup, to_device=True)

    def device_to_host(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        return self._host_copy(device, nbytes, iterations, warmup, to_device=False)

    def all_reduce(
        self, devices: list[int], nbytes: int, iterations: int, warmup: int
    ) -> Measurement:
        from torch.cuda import nccl

        tensors = [
            torch.empty(nbytes // 2, dtype=torch.bfloat16, device=torch.device("cuda", d)).normal_()
            for d in devices
        ]
        if not nccl.is_available(tensors):
            raise BenchUnavailable("NCCL is not available to torch here")

        def sync_all() -> None:
            for d in devices:
                torch.cuda.synchronize(d)

        for _ in range(warmup):
            nccl.all_reduce(tensors)
        sync_all()
        times = []
        for _ in range(iterations):
            start = time.perf_counter()
            nccl.all_reduce(tensors)
            sync_all()
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        del tensors
        torch.cuda.empty_cache()
        return Measurement(
            bus_bandwidth(nbytes, seconds, len(devices)), "GB/s", seconds, iterations
        )

    def burn(self, devices: list[int], seconds: float, n: int, dtype: str) -> dict[int, BurnResult]:
        results: dict[int, BurnResult] = {}
        failures: dict[int, BaseException] = {}

        def burn_one(device: int) -> None:
            try:
                results[device] = self._burn_one(device, seconds, n, dtype)
            except BaseException as exc:  # reported per device after the join
                failures[device] = exc

        threads = [threading.Thread(target=burn_one, args=(d,)) for d in devices]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures and not results:
            raise BenchUnavailable(f"burn failed: {next(iter(failures.values()))}")
        return results

    def _burn_one(self, device: int, seconds: float, n: int, dtype: str) -> BurnResult:
        with torch.cuda.device(device):
            _, _, fn = self._operands(device, dtype, n)
            reference = fn().clone()
            scale = float(reference.abs().max().float()) or 1.0
            iterations = mismatches = 0
            start = time.perf_counter()
            while True:
                c = fn()
                iterations += 1
                # torch.equal is cheap and usually decides; tolerance only when it says no
                if not torch.equal(c, reference):
                    diff = float((c.float() - reference.float()).abs().max())
                    if not diff <= MATCH_RTOL * scale:
                        mismatches += 1
                if time.perf_counter() - start >= seconds:
                    break
            torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
        return BurnResult(2 * n**3 * iterations / elapsed / 1e12, iterations, mismatches, elapsed)
