"""Test doubles: a fake of exactly the pynvml calls kaic uses, and a fake benchmark backend."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

from kaic.bench.backends import plan_for
from kaic.bench.kernel_log import KernelLog
from kaic.bench.protocol import BenchUnavailable, BurnResult, Measurement
from kaic.bench.runner import BenchEnvironment
from kaic.bench.specs import match_sku
from kaic.bench.verdict import expected_value
from kaic.gpu.inventory import Inventory
from kaic.gpu.nvml import (
    NVML_ERROR_GPU_IS_LOST,
    NVML_ERROR_INVALID_ARGUMENT,
    NVML_ERROR_LIBRARY_NOT_FOUND,
    NVML_ERROR_NOT_SUPPORTED,
    open_nvml,
)

_NAMES = {
    NVML_ERROR_INVALID_ARGUMENT: "Invalid Argument",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    """Like pynvml.NVMLError: an integer ``value`` and pynvml's message."""

    def __init__(self, value: int):
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _NAMES.get(self.value, f"NVML error {self.value}")


@dataclass
class FakeGpu:
    """One GPU as NVML would describe it; defaults are a healthy, loaded H100 SXM."""

    index: int = 0
    name: str = "NVIDIA H100 80GB HBM3"
    memory_total: int = 80 * 2**30
    memory_used: int = 2**30
    temperature: int = 45
    power_mw: int = 650_000
    enforced_limit_mw: int = 700_000
    default_limit_mw: int = 700_000
    pcie_gen: int = 5
    pcie_gen_max: int = 5
    pcie_width: int = 16
    pcie_width_max: int = 16
    replays: list[int] = field(default_factory=lambda: [0])  # successive readings
    ecc_mode: tuple[int, int] = (1, 1)
    ecc_uncorrected: int = 0
    ecc_corrected: int = 0
    remapped_rows: tuple[int, int, int, int] = (0, 0, 0, 0)
    throttle: int = 0x4  # SW power cap: normal under load
    nvlinks: int = 18
    nvlinks_down: tuple[int, ...] = ()
    persistence: int = 1
    mig: tuple[int, int] = (0, 0)
    pids: tuple[int, ...] = ()
    cc: tuple[int, int] = (9, 0)
    unsupported: set[str] = field(default_factory=set)  # pynvml function names

    @property
    def bus_id(self) -> str:
        return f"00000000:{0x18 + 0x10 * self.index:02X}:00.0"

    @property
    def uuid(self) -> str:
        return f"GPU-00000000-0000-0000-0000-{self.index:012d}"


class FakeNvml:
    """The pynvml module surface kaic uses, over a list of ``FakeGpu``s."""

    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None):
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = False
        self._replay_reads: dict[int, int] = {}

    def _gpu(self, handle: FakeGpu, fn: str) -> FakeGpu:
        if fn in handle.unsupported:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return handle

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return self._gpu(h, "nvmlDeviceGetName").name

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return self._gpu(h, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetSerial(self, h: FakeGpu) -> str:
        return f"1654{self._gpu(h, 'nvmlDeviceGetSerial').index:08d}"

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(busId=self._gpu(h, "nvmlDeviceGetPciInfo").bus_id)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        g = self._gpu(h, "nvmlDeviceGetMemoryInfo")
        return SimpleNamespace(total=g.memory_total, used=g.memory_used)

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return self._gpu(h, "nvmlDeviceGetTemperature").temperature

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerUsage").power_mw

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetEnforcedPowerLimit").enforced_limit_mw

    def nvmlDeviceGetPowerManagementDefaultLimit(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetPowerManagementDefaultLimit").default_limit_mw

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, clock: int) -> int:
        return 1980 if clock == 1 else 2619

    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkGeneration").pcie_gen

    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkGeneration").pcie_gen_max

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrPcieLinkWidth").pcie_width

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetMaxPcieLinkWidth").pcie_width_max

    def nvmlDeviceGetPcieReplayCounter(self, h: FakeGpu) -> int:
        g = self._gpu(h, "nvmlDeviceGetPcieReplayCounter")
        n = self._replay_reads.get(g.index, 0)
        self._replay_reads[g.index] = n + 1
        return g.replays[min(n, len(g.replays) - 1)]

    def nvmlDeviceGetEccMode(self, h: FakeGpu) -> tuple[int, int]:
        return self._gpu(h, "nvmlDeviceGetEccMode").ecc_mode

    def nvmlDeviceGetTotalEccErrors(self, h: FakeGpu, error_type: int, counter: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetTotalEccErrors")
        return g.ecc_uncorrected if error_type == 1 else g.ecc_corrected

    def nvmlDeviceGetRemappedRows(self, h: FakeGpu) -> tuple[int, int, int, int]:
        return self._gpu(h, "nvmlDeviceGetRemappedRows").remapped_rows

    def nvmlDeviceGetRetiredPages(self, h: FakeGpu, cause: int) -> list[int]:
        # Hopper uses row remapping; NVML says page retirement is not supported
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: FakeGpu) -> int:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetCurrentClocksThrottleReasons").throttle

    def nvmlDeviceGetNvLinkState(self, h: FakeGpu, link: int) -> int:
        g = self._gpu(h, "nvmlDeviceGetNvLinkState")
        if link >= g.nvlinks:
            raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
        return 0 if link in g.nvlinks_down else 1

    def nvmlDeviceGetPersistenceMode(self, h: FakeGpu) -> int:
        return self._gpu(h, "nvmlDeviceGetPersistenceMode").persistence

    def nvmlDeviceGetMigMode(self, h: FakeGpu) -> tuple[int, int]:
        return self._gpu(h, "nvmlDeviceGetMigMode").mig

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[Any]:
        g = self._gpu(h, "nvmlDeviceGetComputeRunningProcesses")
        return [SimpleNamespace(pid=p, usedGpuMemory=2**30) for p in g.pids]

    def nvmlDeviceGetCudaComputeCapability(self, h: FakeGpu) -> tuple[int, int]:
        return self._gpu(h, "nvmlDeviceGetCudaComputeCapability").cc


#: figure(device, bench, expected) -> measured value; expected is None for unknown models
Figure = Callable[[int, str, "float | None"], float]


def fraction_of_expected(
    fractions: dict[int, float] | None = None, default: float = 0.95
) -> Figure:
    """Each device measures ``fraction x expected`` (fractions by device, else ``default``)."""
    table = fractions or {}

    def figure(device: int, bench: str, expected: float | None) -> float:
        return table.get(device, default) * (expected if expected is not None else 100.0)

    return figure


class FakeBackend:
    """A benchmark backend returning chosen figures, and recording what it was asked."""

    device_kind = "cuda"

    def __init__(
        self,
        gpus: list[FakeGpu],
        figure: Figure | None = None,
        burn_mismatches: dict[int, int] | None = None,
    ):
        self.name = "fake 1.0"
        self.gpus = gpus
        self.figure = figure or fraction_of_expected()
        self.burn_mismatches = burn_mismatches or {}
        self.calls: list[tuple[str, Any]] = []

    def _value(self, device: int, bench: str) -> float:
        g = self.gpus[device]
        inv = Inventory(index=device, name=g.name, pcie_gen_max=g.pcie_gen_max, pcie_width_max=16)
        return self.figure(device, bench, expected_value(bench, match_sku(g.name), inv))

    def locate(self, gpu: Inventory, nvml_count: int) -> int | None:
        return gpu.index

    def gemm_dtypes(self, device: int, compute_capability: tuple[int, int] | None) -> list[str]:
        dtypes = ["bf16", "fp16", "tf32", "fp32"]
        return [*dtypes, "fp8"] if (compute_capability or (0, 0)) >= (8, 9) else dtypes

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        self.calls.append(("gemm", (device, dtype)))
        return Measurement(self._value(device, f"gemm_{dtype}"), "TFLOP/s", 0.001, iterations)

    def memory_copy(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        self.calls.append(("mem_copy", device))
        return Measurement(self._value(device, "mem_copy"), "GB/s", 0.001, iterations)

    def host_to_device(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        self.calls.append(("h2d", device))
        return Measurement(self._value(device, "h2d"), "GB/s", 0.02, iterations)

    def device_to_host(self, device: int, nbytes: int, iterations: int, warmup: int) -> Measurement:
        self.calls.append(("d2h", device))
        return Measurement(self._value(device, "d2h"), "GB/s", 0.02, iterations)

    def all_reduce(
        self, devices: list[int], nbytes: int, iterations: int, warmup: int
    ) -> Measurement:
        self.calls.append(("allreduce", tuple(devices)))
        return Measurement(self._value(devices[0], "allreduce"), "GB/s", 0.005, iterations)

    def burn(self, devices: list[int], seconds: float, n: int, dtype: str) -> dict[int, BurnResult]:
        self.calls.append(("burn", tuple(devices)))
        return {
            d: BurnResult(self._value(d, "burn"), 1000, self.burn_mismatches.get(d, 0), seconds)
            for d in devices
        }


class UnavailableBackend(FakeBackend):
    """A backend whose fp8 GEMM is missing, to check SKIP handling."""

    def gemm(self, device: int, dtype: str, n: int, iterations: int, warmup: int) -> Measurement:
        if dtype == "fp8":
            raise BenchUnavailable("fp8 matmul unavailable in this torch")
        return super().gemm(device, dtype, n, iterations, warmup)


HEALTHY_LOG = KernelLog(
    lines=[
        "[    5.1] nvidia: loading out-of-tree module taints kernel.",
        "[ 9000.2] NVRM: Xid (PCI:0000:28:00): 13, pid=4242, Graphics Exception",
    ],
    source="dmesg",
)


def h100_node(n: int = 8, **overrides: Any) -> list[FakeGpu]:
    """``n`` healthy H100 SXM GPUs."""
    return [FakeGpu(index=i, **overrides) for i in range(n)]


def environment(
    nvml: FakeNvml,
    backend: FakeBackend | None = None,
    log: KernelLog | None = HEALTHY_LOG,
    mode_plan: Callable[[str, str], Any] = plan_for,
) -> BenchEnvironment:
    """A BenchEnvironment over fakes: no driver, GPU, kernel log or clock of this machine."""
    return BenchEnvironment(
        open_nvml=lambda: open_nvml(nvml),  # type: ignore[arg-type]
        select_backend=lambda device: (
            (backend, backend.name)
            if backend is not None
            else (None, "GPU benchmarks need torch (pip install torch) or cupy")
        ),
        read_kernel_log=lambda: log,
        plan=mode_plan,
        sample_interval_s=0.01,
        now=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        hostname=lambda: "gpu-node-01",
    )


def require_numpy() -> None:
    """Skip without numpy locally; in CI (``CI=true``) numpy comes with the dev extra, so fail."""
    import importlib.util

    if importlib.util.find_spec("numpy") is None:
        from tests.helpers import unavailable

        unavailable("numpy is missing: `pip install -e .[dev]` installs it for CPU mode tests")
