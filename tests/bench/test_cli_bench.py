"""`kaic bench` through Typer: CPU mode for real, GPU scenarios over fakes, errors, --help."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
import typer
from typer.testing import CliRunner

from kaic.bench.runner import BenchEnvironment
from kaic.cli import bench as bench_cli
from kaic.errors import KaicError
from kaic.gpu.nvml import NVML_ERROR_LIBRARY_NOT_FOUND
from tests.bench.fakes import FakeBackend, FakeNvml, environment, h100_node, require_numpy
from tests.helpers import REPO

TOP_LEVEL_KEYS = {
    "schema_version", "host", "timestamp", "driver", "cuda", "backend", "status", "gpus", "error"
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


def test_no_driver_json_still_prints_the_document() -> None:
    # CI parses stdout: "nothing to validate" is a document too (status SKIP, no GPU, why),
    # and the exit code stays 4.
    env = environment(FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND), None)
    out = run_cli(["--json"], env, expect=4)
    doc = json.loads(out.stdout)
    assert set(doc) == TOP_LEVEL_KEYS
    assert doc["status"] == "SKIP" and doc["gpus"] == [] and doc["driver"] is None
    assert doc["error"].startswith("no GPU to validate") and "driver" in doc["error"]
    assert out.stderr.startswith("error: no GPU to validate")


def test_no_such_gpu_index_json_still_prints_the_document() -> None:
    gpus = h100_node(2)
    env = environment(FakeNvml(gpus), FakeBackend(gpus))
    doc = json.loads(run_cli(["--gpu", "5", "--json"], env, expect=4).stdout)
    assert doc["status"] == "SKIP" and "index 5" in doc["error"]


def test_a_run_that_ran_has_error_null() -> None:
    gpus = h100_node(1)
    out = run_cli(["--json"], environment(FakeNvml(gpus), FakeBackend(gpus)))
    assert json.loads(out.stdout)["error"] is None


def test_without_nvml_bindings_exits_4_naming_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` raises ImportError
    out = run_cli([], expect=4)
    assert "nvidia-ml-py" in out.stderr


def test_nvml_bindings_come_with_kaic_and_numpy_with_the_extra() -> None:
    # `pip install kaic` on a GPU node must be enough for `kaic bench`: nvidia-ml-py is a
    # runtime dependency; numpy (CPU mode only) is the cpu-bench extra, and dev keeps it.
    import importlib.util

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [re.split(r"[<>=!~ ;\[]", d, maxsplit=1)[0] for d in project["dependencies"]]
    assert "nvidia-ml-py" in names and "numpy" not in names
    extras = project["optional-dependencies"]
    assert "numpy" in extras["cpu-bench"] and "numpy" in extras["dev"]
    assert importlib.util.find_spec("pynvml") is not None  # installed with kaic


def test_cpu_mode_without_numpy_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", None)  # `import numpy` raises ImportError
    monkeypatch.delitem(sys.modules, "kaic.bench.backend_numpy", raising=False)
    out = run_cli(["--device", "cpu"], expect=4)
    assert "pip install 'kaic[cpu-bench]'" in out.stderr


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
