"""The JSON document and the human rendering."""

from __future__ import annotations

import io
import json

import pytest
from pydantic import ValidationError

from kaic.bench.report import render_human, report_model, to_json
from kaic.bench.runner import BenchOptions, run_bench
from tests.bench.fakes import FakeBackend, FakeNvml, environment, h100_node


def test_json_round_trips_through_the_model() -> None:
    gpus = h100_node(2)
    gpus[1].mig = (1, 1)
    doc = to_json(run_bench(BenchOptions(), environment(FakeNvml(gpus), FakeBackend(gpus))))
    text = json.dumps(doc)
    again = report_model().model_validate_json(text)
    assert again.model_dump(mode="json") == doc
    assert doc["timestamp"] == "2026-01-02T03:04:05Z" and doc["host"] == "gpu-node-01"


def test_model_rejects_unknown_fields() -> None:
    with pytest.raises(ValidationError):
        report_model().model_validate(
            {
                "schema_version": 1, "host": "h", "timestamp": "t", "driver": None,
                "cuda": None, "backend": "b", "status": "PASS", "gpus": [], "extra": 1,
            }
        )  # fmt: skip


def test_human_rendering_plain_when_piped() -> None:
    gpus = h100_node(2)
    gpus[0].ecc_uncorrected = 3
    run = run_bench(BenchOptions(), environment(FakeNvml(gpus), FakeBackend(gpus)))
    out = io.StringIO()
    render_human(run, out, color=False)
    text = out.getvalue()
    assert "\x1b[" not in text  # no colour codes when piped
    assert "18:00.0" in text and "Gen5x16" in text
    lines = text.splitlines()
    ecc = next(line for line in lines if line.split()[1:2] == ["ecc"])
    assert ecc.startswith("FAIL")
    assert any(line.startswith("PASS") and "gemm_bf16" in line for line in lines)
    assert lines[-1] == "overall: FAIL"


def test_human_rendering_colour_on_a_terminal() -> None:
    gpus = h100_node(1)
    run = run_bench(BenchOptions(), environment(FakeNvml(gpus), FakeBackend(gpus)))
    out = io.StringIO()
    render_human(run, out, color=True, width=200)
    assert "\x1b[" in out.getvalue()


@pytest.mark.parametrize("color", [True, False])
def test_human_rendering_shows_outside_strings_as_text(color: bool) -> None:
    # GPU names come from NVML, the host name from the OS: neither is rich markup, and no
    # control sequence in them reaches the terminal.
    from tests.hostile import assert_shown_safely, by_label

    name, host = by_label("markup-close"), by_label("osc8-link")
    gpus = h100_node(1, name=name.value + by_label("csi-clear").value)
    env = environment(FakeNvml(gpus), FakeBackend(gpus))
    env.hostname = lambda: host.value
    out = io.StringIO()
    render_human(run_bench(BenchOptions(), env), out, color=color, width=400)
    for entry in (name, host, by_label("csi-clear")):
        assert_shown_safely(out.getvalue(), entry)


@pytest.mark.parametrize("color", [True, False])
def test_the_inventory_of_an_8_gpu_node_fits_100_columns(color: bool) -> None:
    """An 8-GPU H100 node in 100 columns, each GPU on one line, nothing cut: the SKU goes in
    each GPU's heading, a PCIe link below its maximum is marked."""
    import re

    gpus = h100_node(8)
    gpus[3].pcie_gen = 4  # a link trained below its maximum
    run = run_bench(BenchOptions(), environment(FakeNvml(gpus), FakeBackend(gpus)))
    out = io.StringIO()
    render_human(run, out, color=color, width=100)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in out.getvalue().splitlines()]
    assert max(map(len, lines)) <= 100
    rows = [line for line in lines if re.match(r"^\d  NVIDIA H100 80GB HBM3  ", line)]
    assert len(rows) == 8, lines
    assert "…" not in "\n".join(lines)
    assert "Gen4x16 ↓" in rows[3] and rows[0].split()[-2:] == ["Gen5x16", "ecc,pm"]
    assert any(line.startswith("GPU 0  NVIDIA H100 80GB HBM3 (H100-SXM)") for line in lines)
