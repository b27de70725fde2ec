"""`kaic shell` and `kaic alloc` end to end through a pseudo-terminal: the real CLI on a pty
(its controlling terminal, as in a real terminal window) against a real center on loopback.

shell: the window size and its changes are seen by `stty size` inside, Ctrl-C goes to the
remote side and does not stop kaic, the exit code is the shell's, and the terminal's
settings (`stty -g`'s content) are the same afterwards — also when the center is stopped in
the middle of the session (exit 5) and when kaic gets SIGTERM.
alloc: pending (its reason shown) -> running -> a shell -> exit releases the job
(CANCELLED, charged); Ctrl-C while pending cancels it; `--keep` keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_interactive import PASSWORD, poll, running_job, state
from tests.e2e.test_login import login
from tests.helpers import RunningCenter, cli_env, run_cli, start_center


class PtyKaic:
    """`python -m kaic ARGS` with a pseudo-terminal as its controlling terminal. The test
    keeps the terminal's other end open, to type, read, resize and read its settings."""

    def __init__(self, *args: str, rows: int = 24, cols: int = 80) -> None:
        self.master, self.slave = os.openpty()
        self.resize(rows, cols, signal_it=False)
        self.before = termios.tcgetattr(self.slave)
        self.shown = b""

        def controlling_terminal() -> None:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kaic", *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=cli_env(TERM="xterm"),
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )

    def resize(self, rows: int, cols: int, *, signal_it: bool = True) -> None:
        # Setting the size on the terminal makes the kernel send SIGWINCH to its
        # foreground process group (kaic), as a terminal window does.
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, pattern: str, timeout: float = 30) -> re.Match[str]:
        """Read until `pattern` (a regex) appears in what the terminal showed."""
        import select

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    self.shown += os.read(self.master, 65536)
                except OSError:
                    break
            if self.proc.poll() is not None and not ready:
                break
        raise AssertionError(f"{pattern!r} not shown; exit {self.proc.poll()}: {self.text!r}")

    @property
    def text(self) -> str:
        return self.shown.decode(errors="replace")

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._drain(0.1)
        if self.proc.poll() is None:
            self.proc.kill()
            raise AssertionError(f"kaic did not exit: {self.text!r}")
        self._drain(0.2)
        return self.proc.returncode

    def _drain(self, wait: float) -> None:
        import select

        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            with contextlib.suppress(OSError):
                self.shown += os.read(self.master, 65536)

    def settings(self) -> list[object]:
        """What `stty -g` prints, as termios reads it."""
        return list(termios.tcgetattr(self.slave))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center with one (pretend) GPU and a short kill grace, alice logged in."""
    running = start_center(tmp_path / "center", "--gpus", "1", "--kill-grace", "1")
    try:
        running.add_user("alice", PASSWORD)
        running.add_project("ai-2026-0042", 5000, ["alice"])
        login(running, "alice", PASSWORD)
        yield running
    finally:
        running.stop()


@pytest.fixture
def terminal() -> Iterator[list[PtyKaic]]:
    started: list[PtyKaic] = []
    yield started
    for one in started:
        one.close()


def test_shell_size_resize_ctrl_c_exit_code_and_terminal_restored(
    center: RunningCenter, terminal: list[PtyKaic]
) -> None:
    job_id = running_job("sleep", "300", gpus=0)
    shell = PtyKaic("shell", job_id, rows=30, cols=100)
    terminal.append(shell)
    shell.type("stty size; echo ready-$((40+2))\r")
    shell.expect(r"30 100\s+ready-42")
    shell.resize(50, 132)
    shell.type("stty size; echo resized-$((40+3))\r")
    shell.expect(r"50 132\s+resized-43")
    # Ctrl-C reaches the remote sleep; kaic and the shell live on.
    shell.type("sleep 61; echo not-interrupted\r")
    poll(lambda: subprocess.run(["pgrep", "-xf", "sleep 61"], capture_output=True).returncode == 0)
    shell.type("\x03")
    shell.type("echo alive-$((40+4))\r")
    shell.expect(r"alive-44")
    assert shell.proc.poll() is None
    assert not re.search(r"^not-interrupted", shell.text, re.M)  # only the typed line shows it
    shell.type("exit 3\r")
    assert shell.wait() == 3
    assert shell.settings() == [*shell.before]


def test_center_stopped_mid_session_exit_5_terminal_restored(
    center: RunningCenter, terminal: list[PtyKaic]
) -> None:
    job_id = running_job("sleep", "300", gpus=0)
    shell = PtyKaic("shell", job_id)
    terminal.append(shell)
    shell.type("echo up-$((1+1))\r")
    shell.expect(r"up-2")
    center.stop()
    assert shell.wait() == 5
    assert "connection to the center" in shell.text
    assert shell.settings() == [*shell.before]


def test_sigterm_to_kaic_restores_the_terminal(
    center: RunningCenter, terminal: list[PtyKaic]
) -> None:
    job_id = running_job("sleep", "300", gpus=0)
    shell = PtyKaic("shell", job_id)
    terminal.append(shell)
    shell.type("echo up-$((2+2))\r")
    shell.expect(r"up-4")
    shell.proc.send_signal(signal.SIGTERM)
    assert shell.wait() == 128 + signal.SIGTERM
    assert shell.settings() == [*shell.before]


# -- alloc -----------------------------------------------------------------------------------


def _events(job_id: str) -> str:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return " | ".join(e["message"] for e in doc["events"])


def _alloc_id(text: str) -> str:
    found = re.search(r"Allocation (\S+) submitted", text)
    assert found, text
    return found.group(1)


def test_alloc_pending_running_shell_exit_releases(
    center: RunningCenter, terminal: list[PtyKaic]
) -> None:
    blocker = running_job("sleep", "300", gpus=1)  # holds the center's only GPU
    alloc = PtyKaic("alloc", "--gpus", "1", "--time", "10m")
    terminal.append(alloc)
    alloc.expect(r"PENDING: \S+")  # the reason, while it waits
    job_id = _alloc_id(alloc.text)
    listed = run_cli("jobs", "--json").json()
    assert isinstance(listed, list)
    assert next(j for j in listed if j["id"] == job_id)["kind"] == "interactive"
    run_cli("cancel", blocker)
    alloc.expect(r"is running", timeout=60)
    alloc.type("echo in-alloc-$((2+3)) $CUDA_VISIBLE_DEVICES\r")
    alloc.expect(r"in-alloc-5 0")
    alloc.type("exit 4\r")
    assert alloc.wait() == 4
    assert f"Allocation {job_id} released." in alloc.text
    assert alloc.settings() == [*alloc.before]
    poll(lambda: state(job_id) == "CANCELLED")
    assert "charged" in _events(job_id)


def test_alloc_ctrl_c_while_pending_cancels(center: RunningCenter, terminal: list[PtyKaic]) -> None:
    blocker = running_job("sleep", "300", gpus=1)
    alloc = PtyKaic("alloc", "--gpus", "1")
    terminal.append(alloc)
    alloc.expect(r"PENDING: \S+")
    job_id = _alloc_id(alloc.text)
    alloc.type("\x03")
    assert alloc.wait() == 130
    assert f"allocation {job_id} cancelled" in alloc.text
    assert state(job_id) == "CANCELLED" and state(blocker) == "RUNNING"


def test_alloc_command_and_keep(center: RunningCenter) -> None:
    res = run_cli("alloc", "--keep", "--time", "5m", "--", "sh", "-c", "echo in-$KAIC_JOB_ID")
    job_id = _alloc_id(res.stderr)
    assert res.stdout == f"in-{job_id}\n"
    assert f"`kaic cancel {job_id}` releases it" in res.stderr
    assert state(job_id) == "RUNNING"
    run_cli("exec", job_id, "--", "true")  # still there to use
    run_cli("cancel", job_id)
    # Without --keep, a command's end releases the allocation too; its exit code is kaic's.
    res = run_cli("alloc", "--", "sh", "-c", "exit 9", expect=9)
    poll(lambda: state(_alloc_id(res.stderr)) == "CANCELLED")
