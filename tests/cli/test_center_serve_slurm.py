"""`kaic center serve --executor slurm`: its usage errors, before anything is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.inprocess import RunLine


def test_slurm_needs_url_and_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_line: RunLine
) -> None:
    monkeypatch.delenv("KAIC_SLURM_JWT", raising=False)
    state = str(tmp_path / "state")
    res = run_line("center", "serve", "--executor", "slurm", "--state-dir", state, expect=2)
    assert "--slurmrestd" in res.stderr
    res = run_line(
        "center", "serve", "--executor", "slurm", "--slurmrestd", "http://127.0.0.1:9",
        "--state-dir", state, expect=2,
    )  # fmt: skip
    assert "KAIC_SLURM_JWT" in res.stderr
    res = run_line("center", "serve", "--slurmrestd", "http://127.0.0.1:9", expect=2)
    assert "--executor slurm" in res.stderr
