"""Ctrl-C in the long-running commands, typed on a real pseudo-terminal: "interrupted" (with
how to continue where there is a way), exit 130, no traceback, the terminal left clean."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from kaic.errors import Interrupted
from tests.e2e.test_login import login
from tests.helpers import RunningCenter, run_cli
from tests.inprocess import FakeCenter, RunLine, job
from tests.terminal import Shown, run_on_terminal

NOTICE = "the local center at"  # "kaic: using (or started) the local center at URL"
MARK = "job-output-begins"
JOB = ["sh", "-c", f"echo {MARK}; sleep 60"]


def assert_interrupted(shown: Shown, hint: str | None = None) -> None:
    assert shown.interrupted and shown.code == 130, shown.explain()
    assert "interrupted" in shown.text and "Traceback" not in shown.text, shown.explain()
    assert "Exception" not in shown.text and "Aborted" not in shown.text, shown.explain()
    if hint is not None:
        assert f"interrupted — the job is not affected; {hint}" in shown.text, shown.explain()


def test_logs_follow(isolated_dirs: Path) -> None:
    job = run_cli("submit", "--", *JOB).stdout.strip()
    shown = run_on_terminal("logs", "-f", job, interrupt_when=lambda out: MARK in out)
    assert_interrupted(shown, f"`kaic logs -f {job}` follows it again")


def test_submit_follow(isolated_dirs: Path) -> None:
    shown = run_on_terminal(
        "submit", "--follow", "--", *JOB, interrupt_when=lambda out: MARK in out
    )
    found = re.search(r"Submitted job (\S+)\.", shown.text)
    assert found, shown.explain()
    assert_interrupted(shown, f"`kaic logs -f {found.group(1)}` follows it again")


def test_submit_wait(isolated_dirs: Path) -> None:
    # The id alone on stdout comes right before the wait.
    shown = run_on_terminal(
        "submit", "--wait", "--", "sleep", "60",
        interrupt_when=lambda out: re.search(r"^\d+\r?$", out, re.MULTILINE) is not None,
    )  # fmt: skip
    assert_interrupted(shown)


def test_wait(isolated_dirs: Path) -> None:
    job = run_cli("submit", "--", "sleep", "60").stdout.strip()
    shown = run_on_terminal("wait", job, interrupt_when=lambda out: NOTICE in out)
    assert_interrupted(shown)


def test_data_push_stops_its_progress_bar(isolated_dirs: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(2 << 30)  # sparse: sent for seconds, interrupted long before the end
    shown = run_on_terminal(
        "data", "push", str(big), "big.bin", interrupt_when=lambda out: "0/1 files" in out
    )
    assert_interrupted(shown)
    # The rich display hid the cursor while it drew; it must give it back.
    assert shown.raw.rfind("\x1b[?25h") > shown.raw.rfind("\x1b[?25l") >= 0, shown.explain()


def test_keyring_that_hangs(alice: tuple[RunningCenter, str, str], tmp_path: Path) -> None:
    center, user, password = alice
    login(center, user, password)  # credentials in the (fake, working) keyring
    entered = tmp_path / "keyring-entered"
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "tests.fakes.keyrings.HangingKeyring",
        "KAIC_KEYRING_TIMEOUT": "60",
        "KAIC_TEST_KEYRING_ENTERED": str(entered),
    }
    shown = run_on_terminal("whoami", env=env, interrupt_when=lambda _out: entered.exists())
    assert_interrupted(shown)


@pytest.mark.parametrize(
    ("args", "prompt"),
    [(["-u", "alice"], "Password for alice"), ([], "User name:")],
)
def test_login_prompts(isolated_dirs: Path, args: list[str], prompt: str) -> None:
    # getpass, and Typer's prompt (whose own Ctrl-C handling says "Aborted." and exits 1)
    shown = run_on_terminal(
        "login", "--center", "http://127.0.0.1:9", *args, interrupt_when=lambda out: prompt in out
    )
    assert_interrupted(shown)
    assert shown.text.endswith("\ninterrupted\n"), shown.explain()  # on a line of its own


# -- the hints, deterministically (in-process, the wait itself interrupted) -----------------


def _interrupted(*_a: object, **_k: object) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["wait", "42"], "the job is not affected; `kaic wait 42` waits for it again"),
        (["wait", "42", "43"], "the jobs are not affected; `kaic wait 42 43` waits for them again"),
    ],
)
def test_wait_says_how_to_continue(
    monkeypatch: pytest.MonkeyPatch, run_line: RunLine, args: list[str], hint: str
) -> None:
    import kaic.flows.wait

    monkeypatch.setattr(kaic.flows.wait, "wait_for_jobs", _interrupted)
    result = run_line(*args, expect=130)
    assert isinstance(result.exception, Interrupted), result.explain()
    assert result.exception.exit_code == 130 and result.exception.hint == hint


def test_submit_wait_says_how_to_continue(
    monkeypatch: pytest.MonkeyPatch, fake_center: FakeCenter, run_line: RunLine
) -> None:
    import kaic.flows.wait

    fake_center.on("POST", "/v1/jobs", json=job("7"), status=201)
    monkeypatch.setattr(kaic.flows.wait, "wait_for_jobs", _interrupted)
    result = run_line("submit", "--wait", "--", "true", expect=130)  # never a bare Ctrl-C
    assert isinstance(result.exception, Interrupted), result.explain()
    assert result.exception.hint == "the job is not affected; `kaic wait 7` waits for it again"
