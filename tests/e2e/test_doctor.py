"""`kaic doctor` reports each check and fails (exit 1) when one fails."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli


def test_doctor_on_local_center(isolated_dirs: Path) -> None:
    checks = run_cli("doctor", "--json").json()
    assert isinstance(checks, list)
    by_name = {c["name"]: c for c in checks}
    assert set(by_name) == {"config", "center", "clock", "auth", "credentials"}
    assert all(c["status"] == "ok" for c in checks), checks


def test_doctor_names_the_failing_check(isolated_dirs: Path) -> None:
    env = {**os.environ, "KAIC_CENTER": "http://127.0.0.1:9"}
    res = run_cli("doctor", env=env, expect=1)
    assert "fail  center" in res.stdout and "kaic login" in res.stdout
