"""From measurements to PASS/WARN/FAIL: ratios against spec, the node-median rule, exit codes.

ratio = measured / expected, expected = typical efficiency x datasheet peak (``specs``).
A model without a spec row is compared only with its node peers of the same name.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from kaic.bench.protocol import BurnResult, Measurement
from kaic.bench.results import BenchRun, Check, GpuResult, Status, worst
from kaic.bench.specs import THRESHOLDS, GpuSpec, efficiency, pcie_x16_gbs, spec_by_sku
from kaic.gpu.inventory import Inventory


@dataclass(frozen=True)
class Skipped:
    """A benchmark that did not run, and why (MIG on, no backend, dtype unsupported…)."""

    reason: str
    status: Status = "SKIP"


Outcome = Measurement | BurnResult | Skipped

UNITS = {"mem_copy": "GB/s", "h2d": "GB/s", "d2h": "GB/s", "allreduce": "GB/s"}


def sig(value: float, digits: int = 4) -> float:
    """``value`` to ``digits`` significant digits (CPU TFLOP/s are small, H100 GB/s large)."""
    return float(f"{value:.{digits}g}")


def status_for_ratio(ratio: float) -> Status:
    """PASS / WARN / FAIL from THRESHOLDS."""
    if ratio >= THRESHOLDS.pass_ratio:
        return "PASS"
    if ratio >= THRESHOLDS.warn_ratio:
        return "WARN"
    return "FAIL"


def expected_value(
    bench: str, spec: GpuSpec | None, inv: Inventory, burn_dtype: str = "bf16"
) -> float | None:
    """What a healthy GPU of this model typically reaches in ``bench``; None if unknown."""
    if bench in ("h2d", "d2h"):
        # PCIe is PCIe: the link NVML reports gives the expectation even for unknown models
        gen = inv.pcie_gen_max or (spec.pcie_gen if spec else None)
        link = pcie_x16_gbs(gen, inv.pcie_width_max or 16) if gen else None
        eff = efficiency(spec.sku if spec else "", bench)
        return link * eff.value if link and eff else None
    if spec is None:
        return None
    peak: float | None
    eff_bench = bench
    if bench.startswith("gemm_"):
        peak = spec.tflops.get(bench.removeprefix("gemm_"))
    elif bench == "burn":
        peak, eff_bench = spec.tflops.get(burn_dtype), f"gemm_{burn_dtype}"
    elif bench == "mem_copy":
        peak = spec.memory_bandwidth_tbs * 1000
    elif bench == "allreduce":
        # busbw is per direction; the datasheet NVLink figure is both directions
        peak = spec.nvlink_gbs / 2 if spec.nvlink_gbs and spec.nvlink_links else None
    else:
        peak = None
    eff = efficiency(spec.sku, eff_bench)
    return peak * eff.value if peak is not None and eff is not None else None


def _value(outcome: Outcome) -> float | None:
    if isinstance(outcome, Measurement):
        return outcome.value
    if isinstance(outcome, BurnResult):
        return outcome.tflops
    return None


def _group(gpu: GpuResult) -> str:
    """Peers are GPUs of the same SKU, or of the same NVML name for unknown models."""
    return gpu.sku or f"name:{gpu.inventory.name}"


def perf_checks(
    gpus: list[GpuResult],
    outcomes: Mapping[int, Mapping[str, Outcome]],
    burn_dtype: str = "bf16",
) -> None:
    """Append one check per benchmark outcome to each GPU, judged against spec and peers."""
    medians: dict[tuple[str, str], tuple[float, int]] = {}
    groups: dict[tuple[str, str], list[float]] = {}
    for gpu in gpus:
        for bench, outcome in outcomes.get(gpu.index, {}).items():
            value = _value(outcome)
            if value is not None:
                groups.setdefault((_group(gpu), bench), []).append(value)
    for key, values in groups.items():
        medians[key] = (statistics.median(values), len(values))

    for gpu in gpus:
        spec = spec_by_sku(gpu.sku) if gpu.sku else None
        for bench, outcome in outcomes.get(gpu.index, {}).items():
            if isinstance(outcome, Skipped):
                gpu.checks.append(Check(bench, outcome.status, message=outcome.reason))
                continue
            unit = UNITS.get(bench, "TFLOP/s")
            value = _value(outcome)
            assert value is not None
            median, peers = medians[(_group(gpu), bench)]
            expected = expected_value(bench, spec, gpu.inventory, burn_dtype)
            gpu.checks.append(_judge(bench, value, unit, expected, median, peers, outcome))


def _judge(
    bench: str,
    value: float,
    unit: str,
    expected: float | None,
    median: float,
    peers: int,
    outcome: Outcome,
) -> Check:
    notes: list[str] = []
    if expected is not None:
        ratio = value / expected
        status = status_for_ratio(ratio)
        notes.append("vs typical efficiency x datasheet peak")
    elif peers >= 2 and median > 0:
        expected, ratio = median, value / median
        status = status_for_ratio(ratio)
        notes.append(f"no spec for this model: vs median of {peers} node peers")
    else:
        check = Check(bench, "UNKNOWN", sig(value), unit, message="no spec and no peers: measured")
        return _burn_consistency(check, outcome)
    below = 1 - value / median if median > 0 else 0.0
    if peers >= 2 and value < THRESHOLDS.node_median_warn * median:
        notes.append(f"{below:.0%} below the node median {sig(median)} {unit}")
        if status == "PASS":
            status = "WARN"
    check = Check(bench, status, sig(value), unit, sig(expected), round(ratio, 3), "; ".join(notes))
    return _burn_consistency(check, outcome)


def _burn_consistency(check: Check, outcome: Outcome) -> Check:
    """A burn whose results changed between iterations FAILs whatever its speed."""
    if isinstance(outcome, BurnResult):
        detail = f"{outcome.iterations} iterations in {outcome.seconds:.0f} s"
        if outcome.mismatches:
            check.status = "FAIL"
            detail = f"{outcome.mismatches} of {outcome.iterations} results differed; " + detail
        check.message = "; ".join(m for m in (detail, check.message) if m)
    return check


def finish(run: BenchRun) -> BenchRun:
    """Set each GPU's status (its worst check) and the run's (its worst GPU)."""
    for gpu in run.gpus:
        gpu.status = worst([c.status for c in gpu.checks])
    run.status = worst([g.status for g in run.gpus])
    return run


def exit_code(run: BenchRun, strict: bool = False) -> int:
    """CLI.md: 0 all PASS (WARN allowed unless strict), 1 any FAIL (or WARN under strict).

    UNKNOWN does not fail even under --strict: it means "could not look" (an unreadable
    kernel log for a non-root user), which a CI runner cannot fix by retrying.
    """
    statuses = {g.status for g in run.gpus} | {c.status for g in run.gpus for c in g.checks}
    if "FAIL" in statuses or (strict and "WARN" in statuses):
        return 1
    return 0
