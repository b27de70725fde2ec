"""The NVML seam: the pynvml calls kaic uses, GPU inventory, and sampling during a run.

``NvmlApi`` lists exactly the pynvml functions kaic calls, so the real ``pynvml`` module
(package ``nvidia-ml-py``, a dependency of kaic, imported only when a bench opens NVML so
the CLI starts fast) and a test double are interchangeable. Errors are pynvml's:
``api.NVMLError`` with an integer ``value``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from kaic.bench.results import Inventory
from kaic.errors import NotFound

# nvml.h return codes kaic distinguishes (stable ABI values).
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15

# nvml.h enum values used as arguments.
NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_MEMORY_ERROR_TYPE_CORRECTED = 0
NVML_MEMORY_ERROR_TYPE_UNCORRECTED = 1
NVML_VOLATILE_ECC = 0
NVML_AGGREGATE_ECC = 1
NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
NVML_FEATURE_ENABLED = 1
NVML_NVLINK_MAX_LINKS = 18

_NOT_AVAILABLE_CODES = {NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_FUNCTION_NOT_FOUND}


class NvmlApi(Protocol):
    """The subset of pynvml kaic calls; the ``pynvml`` module itself satisfies it."""

    NVMLError: type[Exception]

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlSystemGetDriverVersion(self) -> str: ...
    def nvmlSystemGetCudaDriverVersion(self) -> int: ...
    def nvmlDeviceGetCount(self) -> int: ...
    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any: ...
    def nvmlDeviceGetName(self, handle: Any) -> str: ...
    def nvmlDeviceGetUUID(self, handle: Any) -> str: ...
    def nvmlDeviceGetSerial(self, handle: Any) -> str: ...
    def nvmlDeviceGetPciInfo(self, handle: Any) -> Any: ...  # .busId
    def nvmlDeviceGetMemoryInfo(self, handle: Any) -> Any: ...  # .total, .used (bytes)
    def nvmlDeviceGetUtilizationRates(self, handle: Any) -> Any: ...  # .gpu (%)
    def nvmlDeviceGetTemperature(self, handle: Any, sensor: int) -> int: ...
    def nvmlDeviceGetPowerUsage(self, handle: Any) -> int: ...  # mW
    def nvmlDeviceGetEnforcedPowerLimit(self, handle: Any) -> int: ...  # mW
    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: Any) -> int: ...  # mW
    def nvmlDeviceGetClockInfo(self, handle: Any, clock: int) -> int: ...  # MHz
    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle: Any) -> int: ...
    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrPcieLinkWidth(self, handle: Any) -> int: ...
    def nvmlDeviceGetMaxPcieLinkWidth(self, handle: Any) -> int: ...
    def nvmlDeviceGetPcieReplayCounter(self, handle: Any) -> int: ...
    def nvmlDeviceGetEccMode(self, handle: Any) -> tuple[int, int]: ...  # (current, pending)
    def nvmlDeviceGetTotalEccErrors(self, handle: Any, error_type: int, counter: int) -> int: ...
    def nvmlDeviceGetRemappedRows(self, handle: Any) -> tuple[int, int, int, int]: ...
    def nvmlDeviceGetRetiredPages(self, handle: Any, cause: int) -> list[int]: ...
    def nvmlDeviceGetRetiredPagesPendingStatus(self, handle: Any) -> int: ...
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: Any) -> int: ...
    def nvmlDeviceGetNvLinkState(self, handle: Any, link: int) -> int: ...
    def nvmlDeviceGetPersistenceMode(self, handle: Any) -> int: ...
    def nvmlDeviceGetMigMode(self, handle: Any) -> tuple[int, int]: ...  # (current, pending)
    def nvmlDeviceGetComputeRunningProcesses(self, handle: Any) -> list[Any]: ...  # .pid
    def nvmlDeviceGetCudaComputeCapability(self, handle: Any) -> tuple[int, int]: ...


class NvmlUnavailable(Exception):
    """NVML could not report a field: unsupported on this GPU, no permission, GPU lost."""

    def __init__(self, code: int | None, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason

    @property
    def not_supported(self) -> bool:
        return self.code in _NOT_AVAILABLE_CODES

    @property
    def gpu_lost(self) -> bool:
        return self.code == NVML_ERROR_GPU_IS_LOST


def _error_code(exc: BaseException) -> int | None:
    value = getattr(exc, "value", None)
    return value if isinstance(value, int) else None


def call(api: NvmlApi, fn: Callable[..., Any], *args: Any) -> Any:
    """Call one NVML function; NVML errors become ``NvmlUnavailable`` with a readable reason."""
    try:
        return fn(*args)
    except api.NVMLError as exc:
        code = _error_code(exc)
        reason = {
            NVML_ERROR_NOT_SUPPORTED: "not supported on this GPU",
            NVML_ERROR_FUNCTION_NOT_FOUND: "not supported by this driver",
            NVML_ERROR_NO_PERMISSION: "no permission to read it",
            NVML_ERROR_GPU_IS_LOST: "GPU is lost (fell off the bus?)",
        }.get(code or -1, f"NVML error: {exc}")
        raise NvmlUnavailable(code, reason) from exc


def optional(api: NvmlApi, fn: Callable[..., Any], *args: Any) -> Any:
    """Like ``call`` but None where NVML cannot report the field (inventory display)."""
    try:
        return call(api, fn, *args)
    except NvmlUnavailable:
        return None


def text(value: Any) -> str:
    """NVML strings are bytes on old pynvml releases and str on new ones."""
    return value.decode() if isinstance(value, bytes) else str(value)


def open_nvml(api: NvmlApi | None = None) -> NvmlApi:
    """Initialise NVML (the real pynvml unless a test passes a double).

    Raises ``NotFound`` (exit 4, "nothing to validate") when pynvml is missing or there is
    no NVIDIA driver — the only case where the CLI stops before checking anything.
    """
    if api is None:
        try:
            import pynvml  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise NotFound(
                "no GPU to validate: the NVML bindings (nvidia-ml-py, a dependency of kaic) "
                "are not installed",
                hint="reinstall kaic or pip install nvidia-ml-py; or check the CPU with "
                "`kaic bench --device cpu`",
            ) from exc
        api = pynvml
    try:
        api.nvmlInit()
    except api.NVMLError as exc:
        code = _error_code(exc)
        if code in (NVML_ERROR_LIBRARY_NOT_FOUND, NVML_ERROR_DRIVER_NOT_LOADED):
            raise NotFound(
                f"no GPU to validate: the NVIDIA driver is not installed or not loaded ({exc})",
                hint="run on a GPU node, or check the CPU with `kaic bench --device cpu`",
            ) from exc
        raise NotFound(f"no GPU to validate: NVML failed to start ({exc})") from exc
    return api


def close_nvml(api: NvmlApi) -> None:
    """Shut NVML down, ignoring errors (nothing useful can be done with them at exit)."""
    with suppress(api.NVMLError):
        api.nvmlShutdown()


def driver_versions(api: NvmlApi) -> tuple[str | None, str | None]:
    """(driver version, CUDA version the driver supports) as strings, e.g. ("550.54", "12.4")."""
    driver = optional(api, api.nvmlSystemGetDriverVersion)
    cuda = optional(api, api.nvmlSystemGetCudaDriverVersion)
    cuda_text = f"{cuda // 1000}.{(cuda % 1000) // 10}" if isinstance(cuda, int) else None
    return (text(driver) if driver is not None else None), cuda_text


def inventory(api: NvmlApi, index: int, handle: Any) -> Inventory:
    """nvidia-smi-like facts about one GPU; fields NVML cannot report stay None."""
    mem = optional(api, api.nvmlDeviceGetMemoryInfo, handle)
    util = optional(api, api.nvmlDeviceGetUtilizationRates, handle)
    pci = optional(api, api.nvmlDeviceGetPciInfo, handle)
    power = optional(api, api.nvmlDeviceGetPowerUsage, handle)
    limit = optional(api, api.nvmlDeviceGetEnforcedPowerLimit, handle)
    ecc = optional(api, api.nvmlDeviceGetEccMode, handle)
    persistence = optional(api, api.nvmlDeviceGetPersistenceMode, handle)
    mig = optional(api, api.nvmlDeviceGetMigMode, handle)
    cc = optional(api, api.nvmlDeviceGetCudaComputeCapability, handle)
    uuid = optional(api, api.nvmlDeviceGetUUID, handle)
    serial = optional(api, api.nvmlDeviceGetSerial, handle)
    return Inventory(
        index=index,
        name=text(optional(api, api.nvmlDeviceGetName, handle) or "unknown GPU"),
        uuid=text(uuid) if uuid is not None else None,
        serial=text(serial) if serial is not None else None,
        pci_bus_id=text(pci.busId) if pci is not None else None,
        memory_used_mib=mem.used / 2**20 if mem is not None else None,
        memory_total_mib=mem.total / 2**20 if mem is not None else None,
        utilization_pct=util.gpu if util is not None else None,
        temperature_c=optional(api, api.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU),
        power_w=power / 1000 if power is not None else None,
        power_limit_w=limit / 1000 if limit is not None else None,
        sm_clock_mhz=optional(api, api.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_SM),
        mem_clock_mhz=optional(api, api.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_MEM),
        pcie_gen=optional(api, api.nvmlDeviceGetCurrPcieLinkGeneration, handle),
        pcie_gen_max=optional(api, api.nvmlDeviceGetMaxPcieLinkGeneration, handle),
        pcie_width=optional(api, api.nvmlDeviceGetCurrPcieLinkWidth, handle),
        pcie_width_max=optional(api, api.nvmlDeviceGetMaxPcieLinkWidth, handle),
        ecc_enabled=bool(ecc[0]) if ecc is not None else None,
        persistence=bool(persistence) if persistence is not None else None,
        mig_enabled=bool(mig[0]) if mig is not None else None,
        compute_capability=(int(cc[0]), int(cc[1])) if cc is not None else None,
    )


def throttle_reasons(api: NvmlApi, handle: Any) -> int:
    """Current clock event reasons as a bitmask (``nvmlDeviceGetCurrentClocksEventReasons``
    on drivers >= 535, its older name elsewhere)."""
    fn = getattr(api, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if fn is None:
        fn = api.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(call(api, fn, handle))


@dataclass
class GpuSamples:
    """What NVML showed about one GPU while the benchmarks ran."""

    samples: int = 0
    throttle_bits: int = 0  # OR of every sample's reasons
    throttle_error: str | None = None
    pcie_gen_max_seen: int | None = None
    temperature_max_c: int | None = None
    power_max_w: float | None = None
    sm_clock_min_mhz: int | None = None
    replays_start: int | None = None
    replays_end: int | None = None
    started: float = 0.0
    ended: float = 0.0
    loaded: bool = False  # the benchmarks put load on this GPU (PCIe generation is meaningful)


class RunSampler:
    """Samples NVML on a background thread while benchmarks run (every 200 ms by default).

    One sample is also taken synchronously at start and at stop, so even a run shorter
    than the interval is judged on real readings.
    """

    def __init__(
        self,
        api: NvmlApi,
        handles: dict[int, Any],
        interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api = api
        self.handles = handles
        self.interval_s = interval_s
        self.clock = clock
        self.samples: dict[int, GpuSamples] = {i: GpuSamples() for i in handles}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        api = self.api
        with self._lock:
            for index, handle in self.handles.items():
                s = self.samples[index]
                s.samples += 1
                try:
                    s.throttle_bits |= throttle_reasons(api, handle)
                except NvmlUnavailable as exc:
                    s.throttle_error = exc.reason
                gen = optional(api, api.nvmlDeviceGetCurrPcieLinkGeneration, handle)
                if gen is not None:
                    s.pcie_gen_max_seen = max(gen, s.pcie_gen_max_seen or 0)
                temp = optional(api, api.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU)
                if temp is not None:
                    s.temperature_max_c = max(temp, s.temperature_max_c or temp)
                power = optional(api, api.nvmlDeviceGetPowerUsage, handle)
                if power is not None:
                    s.power_max_w = max(power / 1000, s.power_max_w or 0.0)
                clock = optional(api, api.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_SM)
                if clock is not None:
                    s.sm_clock_min_mhz = min(clock, s.sm_clock_min_mhz or clock)

    def _replays(self) -> dict[int, int | None]:
        return {
            i: optional(self.api, self.api.nvmlDeviceGetPcieReplayCounter, h)
            for i, h in self.handles.items()
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        """Take the first sample and the replay counters, then sample in the background."""
        now = self.clock()
        for index, replays in self._replays().items():
            self.samples[index].replays_start = replays
            self.samples[index].started = now
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="kaic-nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and take the last sample and replay counters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        now = self.clock()
        for index, replays in self._replays().items():
            self.samples[index].replays_end = replays
            self.samples[index].ended = now

    def mark_loaded(self, index: int) -> None:
        """Record that benchmarks loaded this GPU (so its PCIe generation is judged)."""
        if index in self.samples:
            self.samples[index].loaded = True


@contextmanager
def sampling(sampler: RunSampler) -> Iterator[RunSampler]:
    """Run the sampler for the duration of a ``with`` block."""
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()


@dataclass
class NodeNvml:
    """The NVML view of the selected GPUs: handles and inventories, by NVML index."""

    api: NvmlApi
    handles: dict[int, Any] = field(default_factory=dict)
    inventories: dict[int, Inventory] = field(default_factory=dict)
    count: int = 0
