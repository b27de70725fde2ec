"""The spec table and the NVML-name matcher."""

from __future__ import annotations

import pytest

from kaic.bench.specs import DEFAULT_EFFICIENCY, SKU_EFFICIENCY, SPECS, match_sku, pcie_x16_gbs


@pytest.mark.parametrize(
    ("nvml_name", "sku"),
    [
        ("NVIDIA H100 80GB HBM3", "H100-SXM"),
        ("NVIDIA H200", "H200-SXM"),
        ("NVIDIA A100-SXM4-80GB", "A100-80GB-SXM"),
        ("NVIDIA H100 PCIe", "H100-PCIe"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA B200", "B200"),
        ("  nvidia  h100 80gb hbm3 ", "H100-SXM"),
        ("NVIDIA H100 NVL", None),
        ("NVIDIA H200 NVL", None),
        ("NVIDIA A100-SXM4-40GB", None),
        ("NVIDIA A100 80GB PCIe", None),
        ("Tesla V100-SXM2-32GB", None),
    ],
)
def test_match_sku(nvml_name: str, sku: str | None) -> None:
    spec = match_sku(nvml_name)
    assert (spec.sku if spec else None) == sku


def test_every_row_cites_a_source_and_has_bench_md_peaks() -> None:
    assert {s.sku for s in SPECS} == {
        "A100-80GB-SXM", "H100-SXM", "H100-PCIe", "H200-SXM", "B200", "L40S"
    }  # fmt: skip
    for spec in SPECS:
        assert "http" in spec.source
        assert spec.tflops["bf16"] == spec.tflops["fp16"]
    h200 = match_sku("NVIDIA H200")
    assert h200 is not None and h200.memory_bandwidth_tbs == 4.8 and h200.tflops["fp8"] == 1979


def test_every_efficiency_states_its_source() -> None:
    for eff in [
        *DEFAULT_EFFICIENCY.values(),
        *(e for t in SKU_EFFICIENCY.values() for e in t.values()),
    ]:
        assert 0.5 < eff.value <= 1.0 and eff.source


def test_pcie_bandwidth() -> None:
    assert pcie_x16_gbs(5) == pytest.approx(63.0, rel=0.01)
    assert pcie_x16_gbs(4, 8) == pytest.approx(15.75, rel=0.01)
    assert pcie_x16_gbs(2) is None
