"""Ctrl-C, the same in every command: "interrupted" (with a hint where there is one), exit
130, no traceback unless KAIC_DEBUG=1.

The pieces:

- `install` (called by `main`) puts a SIGINT handler in place that records the press, quiets
  what would otherwise print tracebacks while the process winds down (exceptions in threads,
  in `__del__` methods — paramiko's SFTP files —, paramiko's transport thread logging through
  the logging module's last-resort handler), makes a second Ctrl-C end the process at once,
  then raises `KeyboardInterrupt` as Python's own handler does — so every `finally`, `with`
  and `except KeyboardInterrupt` below runs as usual (a rich progress bar stops and gives the
  cursor back, connections close).
- Typer turns a `KeyboardInterrupt` from a command into a silent exit 130; `main` asks
  `pressed()` and says "interrupted".
- A flow that knows how to continue wraps its long part in `on_interrupt(…)`
  (`kaic.flows.wait`), which raises `Interrupted` (message and hint, exit 130) instead.

Only stdlib and typer at import time: `main` calls `install` on the CLI's start path.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import Any

import typer

from kaic.cli.context import debug_enabled
from kaic.errors import Interrupted

_pressed = False


def pressed() -> bool:
    """Whether the user pressed Ctrl-C in this process."""
    return _pressed


def _quiet_unraisable(_unraisable: object) -> None:
    """`sys.unraisablehook` after Ctrl-C: an object torn down mid-operation (a paramiko
    SFTPFile flushing into a closed channel) is no news to the user."""


def _quiet_thread_error(_args: object) -> None:
    """`threading.excepthook` after Ctrl-C: a worker thread dying with the main one."""


def _quiet_winding_down() -> None:
    """Silence the three places a library prints a traceback while kaic exits on Ctrl-C."""
    sys.unraisablehook = _quiet_unraisable
    threading.excepthook = _quiet_thread_error
    logging = sys.modules.get("logging")  # loaded only if some library logs (paramiko does)
    if logging is not None:
        logger = logging.getLogger("paramiko")
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    global _pressed
    _pressed = True
    if not debug_enabled():
        _quiet_winding_down()
    # A second Ctrl-C while kaic cleans up ends it at once (as the shell's SIGINT would).
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    raise KeyboardInterrupt


def install() -> None:
    """Handle SIGINT as described above; leave an ignored SIGINT (`nohup`, `&`) ignored."""
    if threading.current_thread() is not threading.main_thread():
        return  # an embedding program's thread: signals belong to its main thread
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def prompt(text: str, **options: Any) -> Any:
    """`typer.prompt`, except that Ctrl-C at the prompt is "interrupted" like everywhere else
    (Click would print "Aborted." and exit 1)."""
    try:
        return typer.prompt(text, **options)
    except typer.Abort:
        if pressed():
            raise Interrupted("interrupted") from None
        raise
