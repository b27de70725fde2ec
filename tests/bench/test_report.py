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
    assert "00000000:18:00.0" in text and "Gen5x16" in text
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
