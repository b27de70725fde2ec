"""Reading job logs: byte ranges, `tail` offsets, and following a growing file.

Logs are the raw files the executor writes (`state_dir/jobs/<id>/stdout|stderr`); a
reader names a byte offset and gets everything from there, so a client that reconnects
with its offset loses and repeats nothing.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 64 * 1024
#: seconds between looks at a log that has no new bytes (asyncio.sleep: no thread held)
FOLLOW_POLL = 0.05


def log_size(path: Path) -> int:
    """The current size of a log (0 if it does not exist yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last `lines` lines of the log start.

    A final newline ends the last line rather than starting an empty one.
    """
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        return 0
    with handle:
        size = handle.seek(0, 2)
        if lines <= 0 or size == 0:
            return size
        handle.seek(size - 1)
        position = size - 1 if handle.read(1) == b"\n" else size
        seen = 0
        while position > 0:
            start = max(0, position - CHUNK)
            handle.seek(start)
            block = handle.read(position - start)
            index = len(block)
            while True:
                index = block.rfind(b"\n", 0, index)
                if index < 0:
                    break
                seen += 1
                if seen == lines:
                    return start + index + 1
            position = start
        return 0


async def read_log(path: Path, offset: int, end: int) -> AsyncIterator[bytes]:
    """The bytes of the log from `offset` up to `end` (what existed when asked)."""
    if offset >= end:
        return
    with open(path, "rb") as handle:
        handle.seek(offset)
        remaining = end - offset
        while remaining > 0:
            data = handle.read(min(CHUNK, remaining))
            if not data:
                return
            remaining -= len(data)
            yield data
            await asyncio.sleep(0)


async def follow_log(
    path: Path,
    offset: int,
    is_terminal: Callable[[], bool],
    *,
    poll: float = FOLLOW_POLL,
) -> AsyncIterator[bytes]:
    """The log from `offset` as it grows; ends once the job is terminal and the file drained.

    Having seen the terminal state it reads to the end once more, so the last bytes a job
    wrote are never dropped. The file may not exist yet (a pending job), and `offset` may
    lie beyond its end: both simply wait for data.
    """
    handle: BinaryIO | None = None
    position = offset
    finishing = False
    try:
        while True:
            if handle is None:
                try:
                    handle = open(path, "rb")  # noqa: SIM115 (closed in `finally`)
                except FileNotFoundError:
                    handle = None
            data = b""
            # Only seek within the file: past its end there is nothing yet, and an offset
            # past the filesystem's largest file would make seek fail (EINVAL).
            if handle is not None and position < os.fstat(handle.fileno()).st_size:
                handle.seek(position)
                data = handle.read(CHUNK)
            if data:
                position += len(data)
                yield data
                continue
            if finishing:
                return
            # A database read: off the event loop, so a slow transaction stalls no one else.
            if await asyncio.to_thread(is_terminal):
                finishing = True
                continue
            await asyncio.sleep(poll)
    finally:
        if handle is not None:
            handle.close()
