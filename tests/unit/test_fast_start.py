"""The CLI's start path must not import heavy libraries (globus-cli's lazy-import test)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import cli_env

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
