"""The NVML seam: the pynvml calls kaic uses, opening NVML, and its errors.

``NvmlApi`` lists exactly the pynvml functions kaic calls, so the real ``pynvml`` module
(package ``nvidia-ml-py``, a dependency of kaic, imported only when NVML is opened, so
the CLI starts fast) and a test double are interchangeable. Errors are pynvml's:
``api.NVMLError`` with an integer ``value``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

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


def throttle_reasons(api: NvmlApi, handle: Any) -> int:
    """Current clock event reasons as a bitmask (``nvmlDeviceGetCurrentClocksEventReasons``
    on drivers >= 535, its older name elsewhere)."""
    fn = getattr(api, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if fn is None:
        fn = api.nvmlDeviceGetCurrentClocksThrottleReasons
    return int(call(api, fn, handle))
