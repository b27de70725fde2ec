"""nvidia-smi-like facts about one GPU: ``Inventory``, read through NVML by ``inventory``.

A plain dataclass (stdlib only), so whoever shows or judges the facts (``kaic bench``'s
report and verdicts, the job metrics sampler) needs neither NVML nor pydantic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kaic.gpu.nvml import (
    NVML_CLOCK_MEM,
    NVML_CLOCK_SM,
    NVML_TEMPERATURE_GPU,
    NvmlApi,
    optional,
    text,
)


@dataclass
class Inventory:
    """nvidia-smi-like facts about one GPU (or the CPU pseudo-GPU); None = not reported."""

    index: int
    name: str
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    utilization_pct: int | None = None
    temperature_c: int | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    pcie_gen: int | None = None
    pcie_gen_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    ecc_enabled: bool | None = None
    persistence: bool | None = None
    mig_enabled: bool | None = None
    compute_capability: tuple[int, int] | None = None


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
