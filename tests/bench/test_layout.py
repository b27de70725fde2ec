"""The shape of `kaic/bench` and `kaic/gpu`: no import circle (the backends and their
registry had one), data flows bench -> gpu, and NVML stays out of the CLI's start."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.import_graph import cycles, import_graph

BACKENDS = ("kaic.bench.backend_torch", "kaic.bench.backend_cupy", "kaic.bench.backend_numpy")


def test_no_import_circle_in_bench_or_gpu() -> None:
    found = cycles(import_graph())
    assert [c for c in found if any(m.startswith(("kaic.bench", "kaic.gpu")) for m in c)] == []


def test_backends_never_import_their_registry() -> None:
    graph = import_graph()
    for backend in BACKENDS:
        assert "kaic.bench.backends" not in graph[backend], backend
        assert "kaic.bench.protocol" in graph[backend], backend


def test_gpu_imports_nothing_of_bench() -> None:
    """`kaic.gpu` is shared by the bench and the job metrics sampler: it depends on neither."""
    for name, deps in import_graph().items():
        if name.startswith("kaic.gpu"):
            assert all(d.startswith(("kaic.gpu", "kaic.errors")) for d in deps), (name, deps)


def test_gpu_modules_import_no_pynvml_until_nvml_is_opened() -> None:
    code = (
        "import sys, json; import kaic.gpu.inventory, kaic.bench.sampler, kaic.bench.runner; "
        "print(json.dumps([m for m in ('pynvml', 'torch', 'numpy') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
