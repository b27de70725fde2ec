"""NVML health checks, one function per row of BENCH.md's inventory-and-health table.

A field NVML cannot report gives SKIP (not supported on this GPU) or UNKNOWN (no
permission, other errors) with the reason — never a crash, and never a PASS it did not
earn. A lost GPU is a FAIL whatever the check.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from kaic.bench.kernel_log import KernelLog, XidEvent, parse_xids, pci_key
from kaic.bench.results import Check, Status
from kaic.bench.sampler import GpuSamples
from kaic.bench.specs import (
    CRITICAL_XIDS,
    THRESHOLDS,
    THROTTLE_FAIL_BITS,
    THROTTLE_WARN_BITS,
    GpuSpec,
)
from kaic.gpu import nvml
from kaic.gpu.inventory import Inventory
from kaic.gpu.nvml import NvmlApi, NvmlUnavailable, call


def _guarded(check_id: str, fn: Callable[[], Check]) -> Check:
    """Run one check; turn an NVML field it cannot read into SKIP/UNKNOWN/FAIL."""
    try:
        return fn()
    except NvmlUnavailable as exc:
        if exc.gpu_lost:
            return Check(check_id, "FAIL", message=exc.reason)
        return Check(check_id, "SKIP" if exc.not_supported else "UNKNOWN", message=exc.reason)


def check_ecc(api: NvmlApi, handle: Any) -> Check:
    """FAIL on any uncorrected volatile ECC error (since the last driver load)."""
    mode = call(api, api.nvmlDeviceGetEccMode, handle)
    if not mode[0]:
        return Check("ecc", "WARN", "disabled", message="ECC is disabled on this GPU")
    unc = call(
        api,
        api.nvmlDeviceGetTotalEccErrors,
        handle,
        nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        nvml.NVML_VOLATILE_ECC,
    )
    corr = nvml.optional(
        api,
        api.nvmlDeviceGetTotalEccErrors,
        handle,
        nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
        nvml.NVML_VOLATILE_ECC,
    )
    detail = f"{unc} uncorrected, {corr if corr is not None else '?'} corrected (volatile)"
    if unc > 0:
        return Check("ecc", "FAIL", unc, "errors", 0, message=detail)
    return Check("ecc", "PASS", 0, "errors", 0, message=detail)


def check_row_remap(api: NvmlApi, handle: Any) -> Check:
    """Ampere+: FAIL on a pending remap, a remap failure, or >= 512 uncorrectable rows."""
    try:
        corr, unc, pending, failure = call(api, api.nvmlDeviceGetRemappedRows, handle)
    except NvmlUnavailable as exc:
        if exc.not_supported:
            return Check("row_remap", "SKIP", message="not supported (pre-Ampere: see pages)")
        raise
    detail = f"{corr} correctable, {unc} uncorrectable rows remapped"
    if pending:
        return Check("row_remap", "FAIL", unc, "rows", message=f"{detail}; remap pending (reset)")
    if failure:
        return Check("row_remap", "FAIL", unc, "rows", message=f"{detail}; a remap failed")
    if unc >= THRESHOLDS.remap_unc_fail:
        return Check("row_remap", "FAIL", unc, "rows", THRESHOLDS.remap_unc_fail, message=detail)
    return Check("row_remap", "PASS", unc, "rows", THRESHOLDS.remap_unc_fail, message=detail)


def check_retired_pages(api: NvmlApi, handle: Any) -> Check:
    """Pre-Ampere: FAIL if a retirement is pending or >= 63 pages are retired."""
    try:
        sbe = call(
            api,
            api.nvmlDeviceGetRetiredPages,
            handle,
            nvml.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
        )
        dbe = call(
            api,
            api.nvmlDeviceGetRetiredPages,
            handle,
            nvml.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        )
        pending = call(api, api.nvmlDeviceGetRetiredPagesPendingStatus, handle)
    except NvmlUnavailable as exc:
        if exc.not_supported:
            return Check("retired_pages", "SKIP", message="not used (row remapping replaces it)")
        raise
    count = len(sbe) + len(dbe)
    limit = THRESHOLDS.retired_pages_fail
    if pending == nvml.NVML_FEATURE_ENABLED:
        return Check("retired_pages", "FAIL", count, "pages", limit, message="retirement pending")
    status: Status = "FAIL" if count >= limit else "PASS"
    return Check("retired_pages", status, count, "pages", limit, message=f"{count} retired")


def check_pcie_width(inv: Inventory) -> Check:
    """FAIL if the link trained narrower than it can (a seating or riser fault)."""
    if inv.pcie_width is None or inv.pcie_width_max is None:
        return Check("pcie_width", "SKIP", message="PCIe link width not reported")
    value, expected = f"x{inv.pcie_width}", f"x{inv.pcie_width_max}"
    if inv.pcie_width < inv.pcie_width_max:
        return Check(
            "pcie_width", "FAIL", value, None, expected, message="link narrower than its maximum"
        )
    return Check("pcie_width", "PASS", value, None, expected)


def nvlink_states(api: NvmlApi, handle: Any) -> tuple[list[int], list[int]]:
    """(links up, links down); links NVML says do not exist are neither."""
    up: list[int] = []
    down: list[int] = []
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = call(api, api.nvmlDeviceGetNvLinkState, handle, link)
        except NvmlUnavailable as exc:
            if exc.gpu_lost or exc.code == nvml.NVML_ERROR_NO_PERMISSION:
                raise
            continue  # not supported / invalid argument: this link does not exist
        (up if state == nvml.NVML_FEATURE_ENABLED else down).append(link)
    return up, down


def check_nvlink(up: list[int], down: list[int], expected: int | None) -> Check:
    """FAIL if fewer links are up than the board must have (``expected``; None = unknown)."""
    value = len(up)
    if expected is None:
        status: Status = "WARN" if down else "PASS"
        msg = f"links down: {down}" if down else "unknown model: links reported only"
        return Check("nvlink", status, value, "links up", message=msg)
    if expected == 0:
        return Check("nvlink", "PASS", value, "links up", 0, message="no NVLink required")
    if not up and not down:
        return Check("nvlink", "UNKNOWN", 0, "links up", expected, message="NVML reports no links")
    if value < expected:
        msg = f"{expected - value} link(s) down" + (f": {down}" if down else "")
        return Check("nvlink", "FAIL", value, "links up", expected, message=msg)
    return Check("nvlink", "PASS", value, "links up", expected)


def check_persistence(inv: Inventory) -> Check:
    """WARN with persistence mode off (each CUDA start re-initialises the GPU)."""
    if inv.persistence is None:
        return Check("persistence", "SKIP", message="persistence mode not reported")
    if not inv.persistence:
        return Check("persistence", "WARN", "off", message="persistence mode off")
    return Check("persistence", "PASS", "on")


def check_processes(api: NvmlApi, handle: Any, own_pid: int | None = None) -> Check:
    """WARN when other processes compute on this GPU (they skew every benchmark)."""
    own = os.getpid() if own_pid is None else own_pid
    procs = call(api, api.nvmlDeviceGetComputeRunningProcesses, handle)
    foreign = sorted({int(p.pid) for p in procs} - {own})
    if foreign:
        return Check(
            "processes", "WARN", len(foreign), "processes", 0, message=f"other pids: {foreign}"
        )
    return Check("processes", "PASS", 0, "processes", 0)


def check_mig(api: NvmlApi, handle: Any) -> Check:
    """Report MIG; with it on, full-GPU benchmarks and comparisons are skipped."""
    current, pending = call(api, api.nvmlDeviceGetMigMode, handle)
    if current != pending:
        return Check("mig", "WARN", "on" if current else "off", message="MIG change pending reset")
    if current:
        return Check(
            "mig", "PASS", "on", message="MIG enabled: full-GPU benchmarks and comparisons skipped"
        )
    return Check("mig", "PASS", "off")


def check_power_cap(api: NvmlApi, handle: Any) -> Check:
    """WARN when the enforced power limit is below the default (someone capped it)."""
    enforced = call(api, api.nvmlDeviceGetEnforcedPowerLimit, handle) / 1000
    default = call(api, api.nvmlDeviceGetPowerManagementDefaultLimit, handle) / 1000
    ratio = round(enforced / default, 3) if default else None
    if enforced < default:
        msg = f"power capped at {enforced:.0f} W (default {default:.0f} W)"
        return Check("power_cap", "WARN", enforced, "W", default, ratio, msg)
    return Check("power_cap", "PASS", enforced, "W", default, ratio)


def check_xid(inv: Inventory, log: KernelLog | None, events: list[XidEvent] | None) -> Check:
    """FAIL on a critical XID for this GPU since boot; UNKNOWN when the log is unreadable."""
    if log is None or events is None:
        return Check(
            "xid",
            "UNKNOWN",
            message="kernel log not readable (journalctl -k, dmesg, /dev/kmsg); "
            "run as root or in the systemd-journal/adm group to check XIDs",
        )
    key = pci_key(inv.pci_bus_id) if inv.pci_bus_id else None
    if key is None:
        return Check("xid", "UNKNOWN", message="PCI bus id unknown: cannot attribute XIDs")
    mine = Counter(e.xid for e in events if e.pci == key)
    critical = {x: n for x, n in mine.items() if x in CRITICAL_XIDS}
    listed = ", ".join(f"{x} x{n}" for x, n in sorted(mine.items()))
    if critical:
        return Check(
            "xid",
            "FAIL",
            sum(critical.values()),
            "events",
            0,
            message=f"Xid {listed} ({log.source})",
        )
    if mine:
        return Check(
            "xid", "PASS", 0, "events", 0, message=f"non-critical Xid {listed} ({log.source})"
        )
    return Check("xid", "PASS", 0, "events", 0, message=f"no Xid since boot ({log.source})")


def static_checks(
    api: NvmlApi,
    handle: Any,
    inv: Inventory,
    spec: GpuSpec | None,
    log: KernelLog | None,
    nvlink_expected: int | None,
    nvlink: tuple[list[int], list[int]] | None,
) -> list[Check]:
    """The checks that need no load: ECC, memory repair, PCIe width, NVLink, modes, power, XID.

    ``nvlink`` is the (up, down) state read beforehand (the runner compares peers with it);
    None means it could not be read.
    """
    events = parse_xids(log.lines) if log is not None else None

    def nvlink_check() -> Check:
        if nvlink is None:
            return Check("nvlink", "UNKNOWN", message="NVLink state not readable")
        return check_nvlink(nvlink[0], nvlink[1], nvlink_expected)

    return [
        _guarded("ecc", lambda: check_ecc(api, handle)),
        _guarded("row_remap", lambda: check_row_remap(api, handle)),
        _guarded("retired_pages", lambda: check_retired_pages(api, handle)),
        check_pcie_width(inv),
        nvlink_check(),
        check_persistence(inv),
        _guarded("processes", lambda: check_processes(api, handle)),
        _guarded("mig", lambda: check_mig(api, handle)),
        _guarded("power_cap", lambda: check_power_cap(api, handle)),
        check_xid(inv, log, events),
    ]


def check_throttle(samples: GpuSamples) -> Check:
    """Clock event reasons seen during the run: HW slowdowns FAIL, SW thermal WARN."""
    if samples.samples == 0 or (samples.throttle_error and not samples.throttle_bits):
        return Check("throttle", "UNKNOWN", message=samples.throttle_error or "not sampled")
    bits = samples.throttle_bits
    value = f"0x{bits:x}"
    failing = [name for bit, name in THROTTLE_FAIL_BITS.items() if bits & bit]
    warning = [name for bit, name in THROTTLE_WARN_BITS.items() if bits & bit]
    where = f"over {samples.samples} samples"
    if failing:
        return Check("throttle", "FAIL", value, message=f"{', '.join(failing)} {where}")
    if warning:
        return Check("throttle", "WARN", value, message=f"{', '.join(warning)} {where}")
    return Check("throttle", "PASS", value, message=f"no HW slowdown {where}")


def check_pcie_gen(inv: Inventory, samples: GpuSamples) -> Check:
    """WARN if the link never reached its maximum generation under load (idle drops it)."""
    seen, top = samples.pcie_gen_max_seen or inv.pcie_gen, inv.pcie_gen_max
    if seen is None or top is None:
        return Check("pcie_gen", "SKIP", message="PCIe generation not reported")
    if not samples.loaded:
        return Check(
            "pcie_gen", "SKIP", f"Gen{seen}", None, f"Gen{top}",
            message="not judged without load (the link downclocks at idle)",
        )  # fmt: skip
    if seen < top:
        return Check(
            "pcie_gen", "WARN", f"Gen{seen}", None, f"Gen{top}", message="below max under load"
        )
    return Check("pcie_gen", "PASS", f"Gen{seen}", None, f"Gen{top}")


def check_pcie_replays(inv: Inventory, samples: GpuSamples) -> Check:
    """WARN when PCIe replays during the run exceed DCGM's per-minute rate for the link."""
    if samples.replays_start is None or samples.replays_end is None:
        return Check("pcie_replays", "SKIP", message="PCIe replay counter not reported")
    delta = max(0, samples.replays_end - samples.replays_start)
    # at least a one-minute window: one replay in a 2 s run is not a rate of 30/min
    minutes = max((samples.ended - samples.started) / 60, 1.0)
    rate = delta / minutes
    gen = inv.pcie_gen_max or 4
    limit = (
        THRESHOLDS.pcie_replays_per_min_gen5 if gen >= 5 else THRESHOLDS.pcie_replays_per_min_gen4
    )
    msg = f"{delta} replays during the run; counter {samples.replays_end} since driver load"
    status: Status = "WARN" if rate > limit else "PASS"
    return Check("pcie_replays", status, round(rate, 2), "per min", limit, message=msg)


def run_checks(inv: Inventory, samples: GpuSamples) -> list[Check]:
    """The checks judged on what NVML showed while the benchmarks ran."""
    return [check_throttle(samples), check_pcie_gen(inv, samples), check_pcie_replays(inv, samples)]
