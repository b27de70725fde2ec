"""Verdict maths: ratios against spec, the node-median rule, unknown models, exit codes."""

from __future__ import annotations

import pytest

from kaic.bench.protocol import Measurement
from kaic.bench.results import BenchRun, GpuResult
from kaic.bench.runner import BenchOptions, run_bench
from kaic.bench.specs import THRESHOLDS, efficiency, match_sku
from kaic.bench.verdict import (
    Skipped,
    exit_code,
    expected_value,
    finish,
    perf_checks,
    status_for_ratio,
)
from kaic.gpu.inventory import Inventory
from tests.bench.fakes import FakeBackend, FakeGpu, FakeNvml, environment, fraction_of_expected


def h100(index: int, name: str = "NVIDIA H100 80GB HBM3") -> GpuResult:
    spec = match_sku(name)
    inv = Inventory(index=index, name=name, pcie_gen_max=5, pcie_width_max=16)
    return GpuResult(inventory=inv, sku=spec.sku if spec else None)


def measured(value: float) -> Measurement:
    return Measurement(value, "TFLOP/s", 0.001, 20)


@pytest.mark.parametrize(
    ("fraction", "status"), [(0.95, "PASS"), (0.90, "PASS"), (0.8, "WARN"), (0.5, "FAIL")]
)
def test_ratio_of_expected_sets_status(fraction: float, status: str) -> None:
    gpu = h100(0)
    expected = 0.80 * 989  # BENCH.md: H100 bf16 ~80 % of the 989 TFLOP/s peak
    assert expected_value("gemm_bf16", match_sku(gpu.inventory.name), gpu.inventory) == (
        pytest.approx(expected)
    )
    perf_checks([gpu], {0: {"gemm_bf16": measured(fraction * expected)}})
    check = gpu.checks[0]
    assert check.status == status
    assert check.ratio == pytest.approx(fraction, abs=1e-3)
    assert check.expected == pytest.approx(expected, rel=1e-3)


def test_thresholds_table() -> None:
    assert (THRESHOLDS.pass_ratio, THRESHOLDS.warn_ratio) == (0.90, 0.75)
    assert status_for_ratio(0.7499) == "FAIL" and status_for_ratio(0.75) == "WARN"
    assert THRESHOLDS.source


def test_efficiencies_per_sku_from_bench_md() -> None:
    assert efficiency("A100-80GB-SXM", "gemm_bf16").value == 0.87  # type: ignore[union-attr]
    assert efficiency("H100-SXM", "gemm_bf16").value == 0.80  # type: ignore[union-attr]
    assert efficiency("H200-SXM", "gemm_bf16").value == 0.80  # type: ignore[union-attr]
    assert efficiency("B200", "gemm_bf16").value == 0.78  # type: ignore[union-attr]
    assert efficiency("H100-SXM", "mem_copy").value == 0.90  # type: ignore[union-attr]


def test_one_gpu_15_percent_below_peers_warns_even_above_spec() -> None:
    gpus = [h100(i) for i in range(8)]
    expected = 0.80 * 989
    outcomes = {i: {"gemm_bf16": measured(1.10 * expected)} for i in range(8)}
    outcomes[5] = {"gemm_bf16": measured(1.10 * expected * 0.85)}  # 0.935 of spec: PASS alone
    perf_checks(gpus, outcomes)
    assert gpus[5].checks[0].status == "WARN"
    assert "below the node median" in gpus[5].checks[0].message
    assert all(g.checks[0].status == "PASS" for g in gpus if g.index != 5)


def test_node_median_does_not_soften_a_fail() -> None:
    gpus = [h100(i) for i in range(3)]
    perf_checks(gpus, {i: {"gemm_bf16": measured(100.0)} for i in range(3)})
    assert {g.checks[0].status for g in gpus} == {"FAIL"}


def test_unknown_model_is_compared_with_its_peers_only() -> None:
    name = "NVIDIA H100 NVL"  # no spec row: must not be judged against H100 SXM peaks
    assert match_sku(name) is None
    gpus = [h100(i, name) for i in range(4)]
    values = [500.0, 500.0, 500.0, 300.0]
    perf_checks(gpus, {i: {"gemm_bf16": measured(v)} for i, v in enumerate(values)})
    assert [g.checks[0].status for g in gpus] == ["PASS", "PASS", "PASS", "FAIL"]
    assert gpus[0].checks[0].expected == 500.0
    assert "node peers" in gpus[0].checks[0].message


def test_unknown_model_alone_is_unknown() -> None:
    gpu = h100(0, "NVIDIA Mystery 9000")
    perf_checks([gpu], {0: {"gemm_bf16": measured(42.0)}})
    assert gpu.checks[0].status == "UNKNOWN" and gpu.checks[0].value == 42.0


def test_skipped_outcome_keeps_its_reason() -> None:
    gpu = h100(0)
    perf_checks([gpu], {0: {"gemm_fp8": Skipped("fp8 unavailable")}})
    assert (gpu.checks[0].status, gpu.checks[0].message) == ("SKIP", "fp8 unavailable")


def _run(gpus: list[GpuResult]) -> BenchRun:
    run = BenchRun("h", "t", None, None, "fake", "cuda", "quick", gpus)
    return finish(run)


def test_exit_codes_and_strict() -> None:
    gpus = [h100(0), h100(1)]
    perf_checks(gpus, {0: {"gemm_bf16": measured(0.95 * 791.2)}, 1: {"gemm_bf16": measured(700)}})
    run = _run(gpus)
    assert [g.status for g in run.gpus] == ["PASS", "WARN"]
    assert run.status == "WARN"
    assert exit_code(run) == 0
    assert exit_code(run, strict=True) == 1


def test_end_to_end_fractions_through_the_runner() -> None:
    gpus = [FakeGpu(index=i) for i in range(4)]
    backend = FakeBackend(gpus, fraction_of_expected({0: 0.95, 1: 0.8, 2: 0.5, 3: 0.95}))
    run = run_bench(BenchOptions(), environment(FakeNvml(gpus), backend))
    assert [g.check("gemm_bf16").status for g in run.gpus] == ["PASS", "WARN", "FAIL", "PASS"]  # type: ignore[union-attr]
    assert [g.status for g in run.gpus] == ["PASS", "WARN", "FAIL", "PASS"]
    assert exit_code(run) == 1
