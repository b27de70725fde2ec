"""Every command answers --help with an example; the root lists every group (public API)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from kaic.cli.main import app


def _command_paths() -> list[list[str]]:
    """All leaf command paths, from the Typer app itself (no Click internals)."""
    paths: list[list[str]] = []

    def walk(t: typer.Typer, prefix: list[str]) -> None:
        for cmd in t.registered_commands:
            name = cmd.name or (cmd.callback.__name__ if cmd.callback else "")
            paths.append([*prefix, name.replace("_", "-")])
        for group in t.registered_groups:
            assert group.typer_instance is not None and group.name
            walk(group.typer_instance, [*prefix, group.name])

    walk(app, [])
    return paths


def test_every_command_has_help_with_example() -> None:
    runner = CliRunner()
    paths = _command_paths()
    assert (
        ["login"] in paths and ["center", "user", "add"] in paths and ["token", "create"] in paths
    )
    for path in paths:
        res = runner.invoke(app, [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        assert "Example" in res.output, f"`kaic {' '.join(path)} --help` has no example"


def test_root_help_and_version() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for group in ("login", "whoami", "token", "center", "config"):
        assert group in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("kaic ")


def test_exit_codes_topic_lists_contract() -> None:
    res = CliRunner().invoke(app, ["help", "exit-codes"])
    assert res.exit_code == 0
    for code in ("0", "2", "3", "4", "5", "6", "124", "125", "126"):
        assert f"\n  {code} " in res.output


def _all_commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if hasattr(command, "commands"):  # a group (Typer's own copy of click's)
        for name, sub in command.commands.items():
            yield from _all_commands(sub, (*path, name))


def test_help_never_shows_python_types() -> None:
    """`--gpus N`, `--time DURATION`, `jobfile` — not `<int>`, `<str>`, `<list[str]>`."""
    import re

    from typer.main import get_command

    from kaic.cli.main import build_app

    root = get_command(build_app())
    runner = CliRunner()
    checked = 0
    for path in _all_commands(root):
        res = runner.invoke(build_app(), [*path, "--help"])
        assert res.exit_code == 0, (path, res.output)
        found = re.findall(r"<(?:str|int|float|bool|path|list\[[^>]*\]|[a-z]+ range)>", res.output)
        assert not found, (path, found, res.output)
        checked += 1
    assert checked > 30
    submit = runner.invoke(build_app(), ["submit", "--help"]).output
    assert "--gpus N " in submit and "--time DURATION" in submit and "--env K=V" in submit
