"""On a terminal `kaic jobs` is a coloured table; NO_COLOR and pipes get plain rows."""

from __future__ import annotations

from tests.inprocess import FakeCenter, RunLine


def test_jobs_table_is_coloured_on_a_terminal_only(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    fake_center.serve_jobs(state="COMPLETED")
    job = run_line("submit", "--wait", "--", "true").stdout.strip()
    shown = run_line("jobs", "--all", terminal=True).stdout
    assert "COMPLETED" in shown and "\x1b[" in shown  # ANSI colour on a terminal
    plain = run_line("jobs", "--all", terminal=True, env={"NO_COLOR": "1"}).stdout
    assert "COMPLETED" in plain and "\x1b[32m" not in plain
    piped = run_line("jobs", "--all").stdout
    assert "\x1b[" not in piped and piped.splitlines()[1].split()[0] == job
