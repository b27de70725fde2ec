"""How a flow talks to the user: plain callables, never Typer or the CLI context.

The CLI hands its own (`AppContext.ui()`: stderr notices, warnings with one "warning:"
prefix, a rich progress bar on a terminal); a test hands `list.append` and a `sleep` that
does not sleep. Stdlib only.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaic.staging.plan import SyncPlan

Log = Callable[[str], None]


def _nothing(_text: str) -> None:
    """A log that drops what it is given."""


@dataclass(frozen=True)
class TransferProgress:
    """The callbacks a transfer reports through (any may be None)."""

    #: the plan, once made (how many files and bytes to send)
    on_plan: Callable[[SyncPlan], None] | None = None
    #: (bytes, files) done since the last call
    progress: Callable[[int, int], None] | None = None
    #: what the transfer waits for ("reconnecting…"), None when it moves again
    on_status: Callable[[str | None], None] | None = None


#: opens a progress display for one transfer and closes it afterwards
ProgressFactory = Callable[[], contextlib.AbstractContextManager[TransferProgress]]


@contextlib.contextmanager
def no_progress() -> Iterator[TransferProgress]:
    """No progress display."""
    yield TransferProgress()


@dataclass(frozen=True)
class Ui:
    """What a flow may say to the user, and how it waits."""

    #: status, notices and hints (stderr: stdout is data)
    info: Log = _nothing
    #: one warning (the receiver adds its "warning:" prefix)
    warn: Log = _nothing
    #: the request log of KAIC_DEBUG, None when it is off
    debug: Log | None = None
    #: a progress display per transfer
    progress: ProgressFactory = no_progress
    sleep: Callable[[float], None] = time.sleep
