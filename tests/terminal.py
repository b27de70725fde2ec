"""Run the real CLI on a pseudo-terminal of a chosen width, optionally pressing Ctrl-C.

`tests.helpers.run_in_pty` answers prompts; this one is for what a terminal *shows*: rich
tables at a known width, and Ctrl-C typed as a user types it (the terminal driver sends
SIGINT to the foreground process group, here the CLI alone).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.helpers import cli_env


@dataclass
class Shown:
    """What a terminal run left behind: the exit code and every byte the terminal got."""

    args: tuple[str, ...]
    code: int
    raw: str  # decoded; the terminal's own CR LF line ends included
    interrupted: bool  # whether Ctrl-C was typed

    @property
    def text(self) -> str:
        """The output with the terminal's CR LF line ends made LF (a lone CR stays)."""
        return self.raw.replace("\r\n", "\n")

    def explain(self) -> str:
        return f"kaic {' '.join(self.args)} exited {self.code} on a terminal:\n{self.raw!r}"


def interruptible() -> None:
    """In a child about to become the CLI: Ctrl-C a SIGINT again, as a shell leaves it. A test
    runner started in the background (`nohup … &`) ignores SIGINT, its children inherit
    that, and a CLI that ignores Ctrl-C fails every test that types it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_on_terminal(
    *args: str,
    env: Mapping[str, str] | None = None,
    columns: int = 400,
    interrupt_when: Callable[[str], bool] | None = None,
    timeout: float = 60,
) -> Shown:
    """`python -m kaic ARGS` on a pseudo-terminal `columns` wide. With `interrupt_when`,
    type Ctrl-C once it returns True for the output so far (it may also look elsewhere,
    e.g. for a file the command's job wrote), then wait for the CLI to exit."""
    pid, fd = pty.fork()
    if pid == 0:  # child: size the terminal before anything asks for its width
        interruptible()
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        os.execve(sys.executable, [sys.executable, "-m", "kaic", *args], cli_env(env))
    shown = b""
    interrupted = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the CLI exited and closed the terminal
                    break
                if not chunk:
                    break
                shown += chunk
            if (
                interrupt_when is not None
                and not interrupted
                and interrupt_when(shown.decode(errors="replace"))
            ):
                os.write(fd, b"\x03")  # Ctrl-C, as typed
                interrupted = True
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return Shown(
        tuple(args), os.waitstatus_to_exitcode(status), shown.decode(errors="replace"), interrupted
    )


@dataclass
class Live:
    """A CLI running on a pseudo-terminal the test holds (`tty`: its side, whose settings
    the test can read before, during and after the run)."""

    proc: subprocess.Popen[bytes]
    master: int
    tty: int
    shown: bytes = b""

    def pump(self, seconds: float = 0.05) -> None:
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            with contextlib.suppress(OSError):  # EIO: the CLI exited
                self.shown += os.read(self.master, 65536)

    def until(self, what: Callable[[], bool], limit: float = 30) -> None:
        """Read what the terminal shows until `what()` (a deadline, no sleeps)."""
        deadline = time.monotonic() + limit
        while not what():
            assert time.monotonic() < deadline, f"gave up waiting; shown: {self.shown!r}"
            self.pump()

    def exit_code(self, limit: float = 30) -> int:
        deadline = time.monotonic() + limit
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"still running; shown: {self.shown!r}"
            self.pump()
        self.pump(0)
        return self.proc.returncode

    def close(self) -> None:
        """Kill the CLI if it still runs (by its PID), and close the terminal."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.tty)


def _child_of_the_terminal() -> None:
    interruptible()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def start_on_terminal(
    *args: str, env: Mapping[str, str] | None = None, rows: int = 40, columns: int = 200
) -> Live:
    """`python -m kaic ARGS` with a new pseudo-terminal as its controlling terminal (Ctrl-C
    typed on it is a SIGINT to the CLI, as in a shell), the test holding both sides; close
    it with `Live.close`."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    environment = cli_env(env, TERM="xterm-256color")
    # the terminal's own size rules (rich reads COLUMNS/LINES first: a test runner sets them)
    for name in ("NO_COLOR", "COLUMNS", "LINES"):
        environment.pop(name, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaic", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment,
        start_new_session=True,
        preexec_fn=_child_of_the_terminal,
    )
    return Live(proc, master, slave)
