"""`kaic bench` through Typer: CPU mode for real, GPU scenarios over fakes, errors, --help."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from kaic.bench.nvml import NVML_ERROR_LIBRARY_NOT_FOUND
from kaic.bench.runner import BenchEnvironment
from kaic.cli import bench as bench_cli
from kaic.errors import KaicError
from tests.bench.fakes import FakeBackend, FakeNvml, environment, h100_node, require_numpy

TOP_LEVEL_KEYS = {
    "schema_version", "host", "timestamp", "driver", "cuda", "backend", "status", "gpus"
}  # fmt: skip
GPU_KEYS = {"index", "uuid", "pci_bus_id", "name", "sku", "status", "checks"}
CHECK_KEYS = {"id", "status", "value", "unit", "expected", "ratio", "message"}


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def make_app(env: BenchEnvironment | None = None) -> typer.Typer:
    """A tiny root app registering only `bench`, optionally with a fake environment."""
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        if env is not None:
            ctx.meta[bench_cli.ENVIRONMENT_META_KEY] = env

    bench_cli.register(app)
    return app


def run_cli(args: list[str], env: BenchEnvironment | None = None, expect: int = 0) -> CliResult:
    """Invoke like `kaic.cli.main.main` does (KaicError -> `error: ...` + its exit code)."""
    result = CliRunner().invoke(make_app(env), ["bench", *args])
    code, stderr = result.exit_code, result.stderr
    if isinstance(result.exception, KaicError):
        code = int(result.exception.exit_code)
        stderr += f"error: {result.exception.message}\n"
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    if code != expect:
        pytest.fail(f"exit {code} (expected {expect})\nstdout:\n{result.stdout}\nstderr:\n{stderr}")
    return CliResult(code, result.stdout, stderr)


def test_cpu_mode_for_real_json() -> None:
    require_numpy()
    out = run_cli(["--device", "cpu", "--json"])
    doc = json.loads(out.stdout)
    assert set(doc) == TOP_LEVEL_KEYS
    assert doc["schema_version"] == 1 and doc["backend"].startswith("numpy")
    assert doc["driver"] is None and doc["cuda"] is None
    assert doc["timestamp"].endswith("Z")
    [cpu] = doc["gpus"]
    assert set(cpu) == GPU_KEYS and cpu["index"] == 0 and cpu["name"]
    checks = {c["id"]: c for c in cpu["checks"]}
    assert {"gemm_fp32", "gemm_fp64", "mem_copy"} <= set(checks)
    for check in checks.values():
        assert set(check) == CHECK_KEYS
        assert isinstance(check["value"], float) and check["value"] > 0
    assert 1e-4 < checks["gemm_fp32"]["value"] < 100  # TFLOP/s of a CPU
    assert checks["mem_copy"]["unit"] == "GB/s" and 0.1 < checks["mem_copy"]["value"] < 5000
    assert "GEMM fp32" in out.stderr  # progress goes to stderr, never stdout


def test_cpu_mode_human_table() -> None:
    require_numpy()
    out = run_cli(["--device", "cpu"])
    assert "gemm_fp32" in out.stdout and "overall:" in out.stdout


def test_healthy_node_json_over_fakes() -> None:
    gpus = h100_node(8)
    out = run_cli(["--json"], environment(FakeNvml(gpus), FakeBackend(gpus)))
    doc = json.loads(out.stdout)
    assert set(doc) == TOP_LEVEL_KEYS and doc["status"] == "PASS"
    assert [g["index"] for g in doc["gpus"]] == list(range(8))
    assert {g["sku"] for g in doc["gpus"]} == {"H100-SXM"}
    assert doc["gpus"][0]["pci_bus_id"] == "00000000:18:00.0"


def test_ecc_failure_exits_1_and_renders_the_table() -> None:
    gpus = h100_node(4)
    gpus[2].ecc_uncorrected = 1
    out = run_cli([], environment(FakeNvml(gpus), FakeBackend(gpus)), expect=1)
    assert "NVIDIA H100 80GB HBM3" in out.stdout and "FAIL" in out.stdout
    assert "overall: FAIL" in out.stdout


def test_warn_passes_unless_strict() -> None:
    gpus = h100_node(2)
    gpus[0].persistence = 0
    run_cli(["--json"], environment(FakeNvml(gpus), FakeBackend(gpus)), expect=0)
    run_cli(["--json", "--strict"], environment(FakeNvml(gpus), FakeBackend(gpus)), expect=1)


def test_gpu_selection_flag() -> None:
    gpus = h100_node(4)
    out = run_cli(
        ["--gpu", "1", "--gpu", "2", "--json"], environment(FakeNvml(gpus), FakeBackend(gpus))
    )
    assert [g["index"] for g in json.loads(out.stdout)["gpus"]] == [1, 2]


def test_no_driver_exits_4_with_one_line() -> None:
    env = environment(FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND), None)
    out = run_cli([], env, expect=4)
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: no GPU to validate")


def test_no_pynvml_here_exits_4() -> None:
    try:
        import pynvml  # noqa: F401
    except ImportError:
        out = run_cli([], expect=4)
        assert "nvidia-ml-py" in out.stderr
    else:
        pytest.skip("pynvml is installed here")


def test_remote_options_need_remote() -> None:
    run_cli(["--partition", "gpu"], expect=2)


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(make_app(), ["bench", "--help"])
    assert result.exit_code == 0
    assert "kaic bench --gpu 0" in result.stdout and "--device" in result.stdout


def test_cli_module_imports_nothing_heavy() -> None:
    code = (
        "import sys, kaic.cli.bench; "
        "heavy = [m for m in ('pydantic', 'rich', 'numpy', 'torch', 'pynvml', 'kaic.bench.runner')"
        " if m in sys.modules]; print(','.join(heavy))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
