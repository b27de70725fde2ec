"""The CLI's start path must not import heavy libraries (globus-cli's lazy-import test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from kaic.cli.main import COMMANDS, build_app, command_named
from tests.helpers import REPO, cli_env

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

HEAVY = [
    "httpx",
    "paramiko",
    "fastapi",
    "uvicorn",
    "keyring",
    "pydantic",
    "rich.table",
    "rich.console",
    "yaml",
    "pynvml",
    "torch",
    "numpy",
    "sqlite3",
]


def test_cli_import_pulls_in_no_heavy_module() -> None:
    code = (
        "import sys, json; import kaic.cli.main; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env()
    ).stdout
    assert json.loads(out) == []


def test_version_runs_without_heavy_modules() -> None:
    code = (
        "import sys, json\n"
        "sys.argv = ['kaic', '--version']\n"
        "import kaic.cli.main as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([x for x in {HEAVY!r} if x in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env()
    ).stdout.splitlines()
    assert out[0].startswith("kaic ")
    assert json.loads(out[-1]) == []


def _run(code: str) -> list[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=cli_env()
    ).stdout.splitlines()


def test_the_console_script_answers_version_before_importing_typer() -> None:
    # `kaic` runs `kaic.__main__:main`, which must not import the CLI for `--version`.
    with open(REPO / "pyproject.toml", "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert scripts["kaic"] == "kaic.__main__:main"
    out = _run(
        "import sys, json\n"
        "sys.argv = ['kaic', '--version']\n"
        "import kaic.__main__ as m\n"
        "m.main()\n"
        "print(json.dumps([x for x in ('typer', 'kaic.cli.main') if x in sys.modules]))"
    )
    assert out[0].startswith("kaic ")
    assert json.loads(out[-1]) == []


def test_a_command_loads_only_its_own_module() -> None:
    out = _run(
        "import sys, json\n"
        "sys.argv = ['kaic', '--profile', 'x', 'jobs', '--help']\n"
        "import kaic.cli.main as m\n"
        "try:\n    m.main()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps(sorted(x for x in sys.modules if x.startswith('kaic.cli.'))))"
    )
    loaded = set(json.loads(out[-1]))
    assert "kaic.cli.jobs" in loaded
    command_modules = {f"kaic.cli.{command.module}" for command in COMMANDS.values()}
    assert loaded & command_modules == {"kaic.cli.jobs"}


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        ([], None),
        (["--help"], None),
        (["-h", "jobs"], None),
        (["jobs", "--help"], "jobs"),
        (["-p", "ci", "submit", "--", "true"], "submit"),
        (["--profile", "jobs", "show", "1"], "show"),
        (["--profile=ci", "center", "user", "add"], "center"),
        (["jbos"], None),
    ],
)
def test_command_named(argv: list[str], command: str | None) -> None:
    assert command_named(argv) == command


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


def test_the_command_table_matches_the_commands() -> None:
    # `kaic --help` lists COMMANDS without importing a command module: each entry must say
    # what the real command's help says, in the same order.
    full = build_app()
    real: dict[str, str] = {}
    for info in full.registered_commands:
        assert info.name and info.callback
        real[info.name] = _first_paragraph(info.help or info.callback.__doc__)
    for group in full.registered_groups:
        assert group.name and group.typer_instance
        real[group.name] = _first_paragraph(group.help or group.typer_instance.info.help)
    assert {n: c.summary for n, c in COMMANDS.items()} == real
    assert list(COMMANDS) == list(real)


def test_the_listing_is_the_full_apps() -> None:
    runner = CliRunner()
    listed = runner.invoke(build_app(listing=True), ["--help"], terminal_width=200)
    whole = runner.invoke(build_app(), ["--help"], terminal_width=200)
    assert listed.exit_code == whole.exit_code == 0
    assert listed.output == whole.output
    assert "╭" not in listed.output  # plain help: Typer's Rich help costs more than Typer
