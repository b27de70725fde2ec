"""The progress bar of a transfer: a rich bar on stderr at a terminal, nothing elsewhere.

A render helper (not a command module): `AppContext.ui()` hands it to the flows as their
`progress`, and they open one per transfer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from kaic.flows.ui import TransferProgress

if TYPE_CHECKING:
    from kaic.staging.plan import SyncPlan


@contextmanager
def transfer_progress(stream: IO[str]) -> Iterator[TransferProgress]:
    """Callbacks drawing a rich bar on `stream` (files done, bytes, speed, time left), or
    none when `stream` is no terminal. `on_status("reconnecting…")` shows what the transfer
    waits for in the bar."""
    if not stream.isatty() or os.environ.get("TERM") == "dumb":
        yield TransferProgress()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(file=stream),
        transient=True,
    )
    state: dict[str, Any] = {"task": None, "files": 0, "total": 0, "status": None}

    def describe() -> str:
        return state["status"] or f"{state['files']}/{state['total']} files"

    def on_plan(plan: SyncPlan) -> None:
        state["total"] = len(plan.transfers)
        state["task"] = bar.add_task(describe(), total=max(plan.bytes_to_transfer, 1))

    def progress(nbytes: int, nfiles: int) -> None:
        if state["task"] is None:
            return
        state["files"] += nfiles
        if nbytes or nfiles:
            state["status"] = None
        bar.update(state["task"], advance=nbytes, description=describe())

    def on_status(status: str | None) -> None:
        state["status"] = status
        if state["task"] is not None:
            bar.update(state["task"], description=describe())

    with bar:
        yield TransferProgress(on_plan=on_plan, progress=progress, on_status=on_status)
