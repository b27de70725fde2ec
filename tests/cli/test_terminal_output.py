"""On a terminal `kaic jobs` is a coloured table; NO_COLOR and pipes get plain rows."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli, run_in_pty


def test_jobs_table_is_coloured_on_a_terminal_only(isolated_dirs: Path) -> None:
    job = run_cli("submit", "--wait", "--", "true").stdout.strip()
    code, shown = run_in_pty("jobs", "--all", answers=[])
    assert code == 0, shown
    assert "COMPLETED" in shown and "\x1b[" in shown  # ANSI colour on a terminal
    code, plain = run_in_pty("jobs", "--all", answers=[], env={**os.environ, "NO_COLOR": "1"})
    assert code == 0 and "COMPLETED" in plain and "\x1b[32m" not in plain
    piped = run_cli("jobs", "--all").stdout
    assert "\x1b[" not in piped and piped.splitlines()[1].split()[0] == job
