"""Option values taken without pydantic (`kaic.cli.coercion`) are what Typer's own coercion
makes of them, for every parameter of every kaic command; values it cannot vouch for, and
their errors, are Typer's; and a plain `kaic data pull` no longer imports pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param

from kaic.cli import coercion
from kaic.cli.main import build_app
from tests.helpers import cli_env

#: what a command line (or a default) may hand a parameter
VALUES: list[Any] = [
    "0", "1", "5", "16", "17", "-3", "007", "+4", " 5", "5 ", "", "1.5", "-0.25", "2x", "1e3",
    "1_000", "٣", "9" * 20, "nan", "inf", "true", "no", 0, 1, 2, 17, -1, 1.5, True, False,
    ("a", "b"), ["x"], (), b"raw",
]  # fmt: skip


def _params() -> list[Any]:
    found: list[Any] = []

    def walk(command: Any) -> None:
        for param in command.params:
            if getattr(param, "type_descriptor", None) is not None:
                found.append(param)
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(build_app()))
    return found


def _typer(param: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", build_runtime_param(param.type_descriptor)._coerce_value(
            value, param=param, ctx=None
        )
    except (BadParameter, ValueError, TypeError) as exc:
        return "error", str(exc)


def test_every_value_the_shortcut_takes_is_what_typer_makes_of_it() -> None:
    params = _params()
    quick = [p for p in params if isinstance(p.get_runtime_param(), coercion.QuickParam)]
    # the options of kaic's commands that are str, int, float, bool or list[str]: most of them
    assert len(quick) > 150, len(quick)
    taken = 0
    for param in quick:
        descriptor = param.type_descriptor
        for value in VALUES:
            got = coercion.quick(descriptor.annotation, descriptor.parameter_info, value)
            if got is coercion.UNDECIDED:
                continue
            taken += 1
            kind, typer_got = _typer(param, value)
            where = f"{param.name}={value!r}"
            assert kind == "ok", f"{where}: Typer refuses it ({typer_got}), the shortcut took it"
            assert got == typer_got and type(got) is type(typer_got), (where, got, typer_got)
    assert taken > 1000, taken


def test_what_the_shortcut_leaves_gets_typers_answer_and_error() -> None:
    parallel = next(
        p for p in _params() if p.name == "parallel" and p.type_descriptor.parameter_info.max
    )
    runtime = parallel.get_runtime_param()
    assert isinstance(runtime, coercion.QuickParam)
    for value in ("17", "2x", "0", " 3"):
        try:
            got: tuple[str, Any] = ("ok", runtime._coerce_value(value, param=parallel, ctx=None))
        except BadParameter as exc:
            got = ("error", str(exc))
        assert got == _typer(parallel, value), value
    with pytest.raises(BadParameter, match="less than or equal to 16"):
        runtime._coerce_value("17", param=parallel, ctx=None)


def _loads_pydantic(tmp_path: Path, *argv: str) -> tuple[bool, str]:
    code = (
        "import atexit, json, runpy, sys\n"
        "atexit.register(lambda: print(json.dumps('pydantic' in sys.modules)))\n"
        f"sys.argv = ['kaic', *{list(argv)!r}]\n"
        "runpy.run_module('kaic', run_name='__main__')\n"
    )
    env = cli_env()
    env.update(
        KAIC_CONFIG_DIR=str(tmp_path / "config"),
        KAIC_STATE_DIR=str(tmp_path / "state"),
        KAIC_SSH_HOST="127.0.0.1",
        KAIC_SSH_PORT="1",
        KAIC_SSH_USER="nobody",
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_a_data_command_with_plain_values_does_not_import_pydantic(tmp_path: Path) -> None:
    loaded, shown = _loads_pydantic(
        tmp_path, "data", "pull", "a/", str(tmp_path / "x") + "/", "--parallel", "3"
    )
    assert "KAIC_SSH_KEY" in shown, shown  # it got past the options, to the staging host
    assert loaded is False
    # a value out of bounds: Typer's coercion (and pydantic) says why, as before
    loaded, shown = _loads_pydantic(tmp_path, "data", "pull", "a/", "b/", "--parallel", "17")
    assert "Invalid value for '--parallel': Input should be less than or equal to 16" in shown
    assert loaded is True
