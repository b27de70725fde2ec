"""The local terminal of a tty session (`kaic.flows.terminal`) on a real pseudo-terminal:
raw mode, restored on every way out (an exception, SIGTERM, SIGHUP), SIGWINCH noticed, and a
whole tty session whose window is resized while it runs."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from kaic.flows.interactive import Command, Streams, run_command
from kaic.flows.terminal import Terminal, Terminated, settings, window_size
from kaic.flows.ui import Ui
from tests.unit.interactive_fake import FakeSessions
from tests.unit.test_client_interactive import session_of


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = pty.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


def resize(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_raw_inside_restored_after_an_exception(pty_pair: tuple[int, int]) -> None:
    _master, slave = pty_pair
    before = settings(slave)
    with pytest.raises(RuntimeError), Terminal(slave).raw():
        lflag = termios.tcgetattr(slave)[3]
        assert not lflag & termios.ICANON and not lflag & termios.ISIG and not lflag & termios.ECHO
        raise RuntimeError("boom")
    assert settings(slave) == before


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_ending_signals_restore_the_terminal(pty_pair: tuple[int, int], signum: int) -> None:
    _master, slave = pty_pair
    before = settings(slave)
    handler_before = signal.getsignal(signum)
    with pytest.raises(Terminated) as info, Terminal(slave).raw():
        os.kill(os.getpid(), signum)
        time.sleep(5)  # never reached in full: the handler raises at once
    assert info.value.signum == signum
    assert settings(slave) == before
    assert signal.getsignal(signum) == handler_before


def test_sigwinch_is_noticed_and_size_read(pty_pair: tuple[int, int]) -> None:
    _master, slave = pty_pair
    resize(slave, 24, 80)
    noticed: list[int] = []
    terminal = Terminal(slave)
    with terminal.raw(on_resize=lambda: noticed.append(1)):
        resize(slave, 33, 111)
        os.kill(os.getpid(), signal.SIGWINCH)
        deadline = time.monotonic() + 5
        while not noticed and time.monotonic() < deadline:
            time.sleep(0.01)
    assert noticed and terminal.size() == (33, 111) == window_size(slave)


def test_a_tty_session_follows_the_window(pty_pair: tuple[int, int]) -> None:
    """The whole path: raw mode on the local pty, the size sent at start, SIGWINCH -> a
    resize message, keys typed reach the remote shell, the terminal restored at the end."""
    master, slave = pty_pair
    resize(slave, 24, 80)
    before = settings(slave)
    out = bytearray()
    with FakeSessions().running() as fake:

        def user() -> None:
            deadline = time.monotonic() + 10
            while b"24 80" not in out and time.monotonic() < deadline:
                time.sleep(0.01)
            resize(slave, 50, 132)
            os.kill(os.getpid(), signal.SIGWINCH)
            while not fake.resizes and time.monotonic() < deadline:
                time.sleep(0.01)
            os.write(master, b"go\r")

        typist = threading.Thread(target=user)
        typist.start()
        stdin = os.fdopen(os.dup(slave), "rb", buffering=0)
        streams = Streams(stdin, out.extend, out.extend, Terminal(slave))
        command = Command(["sh", "-c", "stty size; read x; stty size; exit 4"], tty=True)
        code = run_command(session_of(fake.url), "42", command, streams, Ui())
        typist.join()
        stdin.close()
    assert code == 4
    lines = [line.strip() for line in bytes(out).decode().splitlines() if line.strip()]
    assert lines[0] == "24 80" and lines[-1] == "50 132", lines
    assert fake.resizes == [(50, 132)]
    assert settings(slave) == before
