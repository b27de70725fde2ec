"""Run the real CLI on a pseudo-terminal of a chosen width, optionally pressing Ctrl-C.

`tests.helpers.run_in_pty` answers prompts; this one is for what a terminal *shows*: rich
tables at a known width, and Ctrl-C typed as a user types it (the terminal driver sends
SIGINT to the foreground process group, here the CLI alone).
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
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
