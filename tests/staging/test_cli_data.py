"""`kaic data` through the CLI, with the SSH target from KAIC_SSH_* (no center)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import run_cli

Remote = tuple[str, Path]


def run(*args: str, code: int = 0) -> str:
    """The real CLI in a subprocess (exit codes come from kaic's error table)."""
    return run_cli(*args, expect=code).stdout


def test_push_ls_pull_rm(ssh_vars: None, remote_dir: Remote, tmp_path: Path) -> None:
    name, view = remote_dir
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.bin").write_bytes(os.urandom(5000))
    (src / "skip.tmp").write_text("x")

    summary = json.loads(run("data", "push", str(src), name, "--exclude", "*.tmp", "--json"))
    assert summary == {
        "files_transferred": 2,
        "files_skipped": 0,
        "files_deleted": 0,
        "bytes_transferred": 5001,
        "seconds": summary["seconds"],
        "verified": True,
    }
    again = json.loads(run("data", "push", str(src), name, "--exclude", "*.tmp", "--json"))
    assert again["files_transferred"] == 0 and again["files_skipped"] == 2

    listing = json.loads(run("data", "ls", name, "--json"))
    assert [(e["name"], e["type"]) for e in listing] == [("a.txt", "file"), ("sub", "dir")]
    assert run("data", "ls", name).split() == ["a.txt", "sub/"]

    (src / "a.txt").unlink()
    dry = run("data", "push", str(src), name, "--exclude", "*.tmp", "--delete", "--dry-run")
    assert f"delete {name}/a.txt" in dry and (view / "a.txt").exists()

    out = tmp_path / "out"
    pulled = json.loads(run("data", "pull", f"{name}/sub", str(out), "--json", "--no-verify"))
    assert pulled["files_transferred"] == 1 and pulled["verified"] is False
    assert (out / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()

    run("data", "rm", f"{name}/sub", code=2)  # a directory needs -r
    run("data", "rm", "-r", f"{name}/sub")
    assert not (view / "sub").exists()
    run("data", "rm", "-r", "~", code=2)
    run("data", "ls", f"{name}/nope", code=4)
    run("data", "pull", f"{name}/nope", str(out), code=4)


def test_unreachable_exit_code(ssh_vars: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.helpers import free_port

    monkeypatch.setenv("KAIC_SSH_PORT", str(free_port()))
    run("data", "ls", code=5)


@pytest.mark.parametrize("command", ["push", "pull", "ls", "rm"])
def test_help_has_examples(command: str) -> None:
    assert "Example" in run("data", command, "--help")
