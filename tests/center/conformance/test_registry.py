"""The executor registry is the one list of executors: settings, `create_app` and
`kaic center serve` read it, every entry has its conformance run, and no executor reaches
into another's modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
import typer

from kaic.center import app as app_module
from kaic.center.executors import registry
from kaic.center.executors.base import Executor
from kaic.center.executors.local import LocalExecutor
from kaic.center.executors.slurm.options import SlurmSettings
from kaic.center.settings import CenterSettings
from kaic.cli.main import app as cli_app
from tests.center.conformance.suite import CONFORMANCE, ExecutorConformance
from tests.helpers import REPO

EXECUTORS = REPO / "kaic" / "center" / "executors"
#: what every executor may import from the executors package besides its own modules (the
#: interface, the job's preparation, how interactive sessions' processes are started and
#: the forwarded connections' byte streams)
SHARED = {
    "kaic.center.executors.base",
    "kaic.center.executors.prepare",
    "kaic.center.executors.interactive",
    "kaic.center.executors.forward_channel",
    "kaic.center.executors.rendezvous",  # every job's KAIC_NNODES, KAIC_MASTER_PORT, …
    "kaic.center.executors.sampler",  # the metrics sampler's start, for every executor
}


def test_every_registered_executor_runs_the_conformance_suite() -> None:
    assert set(CONFORMANCE) == set(registry.names())
    for name, path in CONFORMANCE.items():
        assert (REPO / path).is_file(), path
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        runs = [
            value
            for value in vars(module).values()
            if isinstance(value, type)
            and issubclass(value, ExecutorConformance)
            and value is not ExecutorConformance
        ]
        assert [run.executor for run in runs] == [name], path


def test_serve_offers_every_registered_option() -> None:
    command = typer.main.get_command(cli_app)
    ctx = command.make_context("kaic", ["center", "serve"], resilient_parsing=True)
    center = command.get_command(ctx, "center")  # type: ignore[attr-defined]
    serve = center.get_command(ctx, "serve")
    offered = {opt for param in serve.params for opt in (*param.opts, *param.secondary_opts)}
    for option in registry.serve_options():
        for decl in option.decls:
            assert set(decl.split("/")) <= offered, decl
    executor = next(p for p in serve.params if p.name == "executor")
    assert all(entry.label in (executor.help or "") for entry in registry.ENTRIES)


def test_settings_know_the_executors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown executor 'nope' \(available: local, slurm\)"):
        CenterSettings(state_dir=tmp_path, executor="nope")
    assert CenterSettings(state_dir=tmp_path).executor_settings is None
    slurm = CenterSettings(state_dir=tmp_path, executor="slurm")
    assert slurm.executor_settings == SlurmSettings()
    with pytest.raises(ValueError, match="SlurmSettings"):
        CenterSettings(state_dir=tmp_path, executor="slurm", executor_settings=object())
    with pytest.raises(ValueError, match="Slurm runs jobs as users"):
        CenterSettings(
            state_dir=tmp_path, executor="slurm", run_as_users=True, storage_root="/home/{user}"
        )


def test_create_app_builds_through_the_registry(tmp_path: Path) -> None:
    local = app_module.make_executor(CenterSettings(state_dir=tmp_path, kill_grace=3))
    assert isinstance(local, LocalExecutor) and local.kill_grace == 3
    with pytest.raises(ValueError, match="needs slurmrestd's URL"):
        app_module.make_executor(CenterSettings(state_dir=tmp_path, executor="slurm"))
    options = SlurmSettings(url="http://127.0.0.1:9", token="t", poll_interval=2)
    slurm: Executor = app_module.make_executor(
        CenterSettings(state_dir=tmp_path, executor="slurm", executor_settings=options)
    )
    try:
        assert slurm.name == "slurm" and slurm.owns_queue
    finally:
        slurm.shutdown(kill_jobs=False)


def test_serve_options_are_checked_by_their_executor() -> None:
    values = {"slurmrestd": None, "slurm_poll_interval": 1.0, "slurm_account": True}
    assert registry.settings_from_serve("local", values, {}) is None
    with pytest.raises(registry.OptionError, match="--slurmrestd needs --executor slurm"):
        registry.settings_from_serve("local", {**values, "slurmrestd": "http://x"}, {})
    with pytest.raises(registry.OptionError, match="KAIC_SLURM_JWT") as caught:
        registry.settings_from_serve("slurm", {**values, "slurmrestd": "http://x"}, {})
    assert caught.value.hint and "scontrol token" in caught.value.hint
    made = registry.settings_from_serve(
        "slurm",
        {**values, "slurmrestd": "http://x", "slurm_account": False},
        {"KAIC_SLURM_JWT": " t "},
    )
    assert made == SlurmSettings(url="http://x", token="t", account_from_project=False)


def _executor_modules() -> dict[str, list[Path]]:
    """Each executor's own modules: `executors/<name>.py` or `executors/<name>/`."""
    found: dict[str, list[Path]] = {}
    for name in registry.names():
        package = EXECUTORS / name
        found[name] = (
            sorted(package.rglob("*.py")) if package.is_dir() else [package.with_suffix(".py")]
        )
    return found


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every `import`/`from … import` in `path`, absolute."""
    result: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            result.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            result.extend((alias.name, []) for alias in node.names)
    return result


def test_executors_keep_to_themselves() -> None:
    """An executor imports the shared interface and preparation, its own modules and the
    rest of kaic's public names, never another executor's modules or anyone's private
    helpers (the Slurm executor once imported the local one's `_center_path`)."""
    modules = _executor_modules()
    for name, paths in modules.items():
        own = f"kaic.center.executors.{name}"
        for path in paths:
            for module, names in _imports(path):
                if module.startswith("kaic.center.executors") and not module.startswith(own):
                    assert module in SHARED | {"kaic.center.executors.entry"}, (path, module)
                if module.startswith("kaic.") and not module.startswith(own):
                    private = [n for n in names if n.startswith("_")]
                    assert not private, (path, module, private)
