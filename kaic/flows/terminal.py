"""The local terminal of a tty session (`kaic shell`, `kaic exec -t`, `kaic alloc`) and of a
live view (`kaic top`): raw and cbreak modes and their restoration, the window size and its
changes. Stdlib only, no Typer.

In raw mode every key is a byte for the remote side: Ctrl-C and Ctrl-Z reach the job's
shell instead of stopping kaic (the terminal driver no longer turns them into signals). The
terminal is restored on every way out of `Terminal.raw` — a normal end, an exception, a
dropped connection, and SIGTERM or SIGHUP sent to kaic (they are turned into `Terminated`
while the terminal is raw, so the restoring `finally` runs). Only `kill -9` cannot be
caught; `stty sane` (typed blind) or `reset` repairs the terminal then.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import struct
import termios
import threading
import tty
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from kaic.errors import KaicError

#: the size a session gets when the local side is no terminal
DEFAULT_SIZE = (24, 80)
#: the signals that end kaic but must not leave the terminal raw
_ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Terminated(KaicError):
    """kaic was sent SIGTERM or SIGHUP during a session: ended after restoring the terminal;
    the process exits 128 + the signal, as if the signal had killed it."""

    def __init__(self, signum: int) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"kaic received {name}: the session was ended")
        self.signum = signum


class Terminal:
    """The local terminal: `fd` is the one keys come from (stdin)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def of(cls, stream: object) -> Terminal | None:
        """The terminal behind `stream` (sys.stdin), or None when it is no terminal."""
        try:
            fd = stream.fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError, ValueError):
            return None
        return cls(fd) if os.isatty(fd) else None

    def size(self) -> tuple[int, int]:
        """(rows, cols) now; DEFAULT_SIZE when the terminal does not say."""
        try:
            cols, rows = os.get_terminal_size(self.fd)
        except OSError:
            return DEFAULT_SIZE
        return (rows or DEFAULT_SIZE[0], cols or DEFAULT_SIZE[1])

    @contextlib.contextmanager
    def raw(self, on_resize: Callable[[], None] | None = None) -> Iterator[None]:
        """Raw mode inside the block, restored on every way out (see the module docstring).

        `on_resize` is called from the SIGWINCH handler when the window changes size: it
        must only note the change (e.g. write to a pipe), the session sends it. Signal
        handlers belong to the main thread; elsewhere the terminal is still made raw and
        restored, without the handlers."""
        with self._mode(tty.setraw, on_resize):
            yield

    @contextlib.contextmanager
    def keys(self) -> Iterator[Callable[[float], bytes | None]]:
        """Keys one at a time, not echoed, for a live view (`kaic top`): cbreak mode, in
        which Ctrl-C still interrupts kaic and output is still processed (a view drawn by
        rich stays intact), restored on every way out as `raw` is. Yields `read(timeout)`:
        the bytes of the keys pressed within `timeout` seconds, None when none was, b""
        once the terminal is gone."""

        def read(timeout: float) -> bytes | None:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
            if not ready:
                return None
            try:
                return os.read(self.fd, 64)
            except OSError:  # the terminal went away (EIO): as at end of file
                return b""

        with self._mode(tty.setcbreak, None):
            yield read

    @contextlib.contextmanager
    def _mode(
        self, enter: Callable[[int, int], Any], on_resize: Callable[[], None] | None
    ) -> Iterator[None]:
        saved = termios.tcgetattr(self.fd)
        handlers = _install_handlers(on_resize)
        try:
            enter(self.fd, termios.TCSANOW)
            yield
        finally:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, saved)
            for signum, previous in handlers.items():
                signal.signal(signum, previous)


def settings(fd: int) -> list[object]:
    """The terminal's settings (`stty -g`'s content), to compare before and after."""
    return list(termios.tcgetattr(fd))


def window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on `fd`, read with TIOCGWINSZ."""
    import fcntl

    packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    rows, cols, _x, _y = struct.unpack("HHHH", packed)
    return rows, cols


def _install_handlers(
    on_resize: Callable[[], None] | None,
) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def ending(signum: int, _frame: FrameType | None) -> None:
        # Once: a second signal while unwinding ends kaic as the default would.
        for number in _ENDING_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        raise Terminated(signum)

    for signum in _ENDING_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # `nohup` keeps SIGHUP ignored
            previous[signum] = signal.signal(signum, ending)
    if on_resize is not None:

        def resized(_signum: int, _frame: FrameType | None) -> None:
            on_resize()

        previous[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resized)
    return previous


def term_env() -> dict[str, str]:
    """What a tty session takes from the local environment: TERM (so the remote programs
    draw for this terminal)."""
    return {"TERM": os.environ.get("TERM") or "xterm-256color"}
