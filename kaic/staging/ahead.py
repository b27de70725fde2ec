"""SFTP pipes opened ahead of need, while the sync still waits on something else.

A channel costs a round trip to open and its SFTP session one more to start (30 ms each at
30 ms RTT). The workers used to open their pipes only once the plan was made: round trips
one after the other on every sync's critical path, between the plan and the first byte.
`PipesAhead` opens each connection's pipes as soon as it is logged in — the first
connection's while the sync is planned on its main channel, the others' right after their
login — and `workers.WorkerPipe` takes one when its worker starts. A batch of a push opens
the channel of its hashing exec while it sends (`remote_fs.RemoteSide.exec_ahead`): one
round trip less between the last byte and the renames.

A pipe that could not be opened ahead (the host refused the channel, the connection went)
is simply not there: the worker opens its own, as it did before, and meets the same error
with the same handling. A sync that finds nothing to send has opened its pipes for
nothing: a few milliseconds of the host's time, closed at the end, and no wait.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from kaic.staging.connect import SftpConnection
from kaic.staging.pipeline import SftpPipe

T = TypeVar("T")

#: seconds `close` waits for a pipe still being opened (a round trip, or a dead connection)
CLOSE_WAIT_S = 5.0


class Opening(Generic[T]):
    """Something being opened by a thread of its own (`open_it()`); `wait()` gives it, or
    None where opening it failed (the caller then opens its own, and meets the error)."""

    def __init__(self, open_it: Callable[[], T]):
        self.value: T | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(
            target=self._open, args=(open_it,), name="kaic-open-ahead", daemon=True
        )
        self._thread.start()

    def _open(self, open_it: Callable[[], T]) -> None:
        try:
            self.value = open_it()
        except Exception:
            self.value = None
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> T | None:
        self.done.wait(timeout)
        return self.value


class PipesAhead:
    """Up to `per_connection` pipes per connection, opened as soon as it is logged in."""

    def __init__(self, per_connection: int, window: int | None, enabled: bool = True):
        self.per_connection = max(0, per_connection) if enabled else 0
        self.window = window
        self._lock = threading.Lock()
        self._opening: dict[int, list[Opening[SftpPipe]]] = {}
        self._closed = False

    def start(self, conn: SftpConnection) -> None:
        """Start opening `conn`'s pipes (returns at once)."""
        with self._lock:
            if self._closed or id(conn) in self._opening:
                return
            self._opening[id(conn)] = [
                Opening(partial(SftpPipe, conn.transport, window=self.window))
                for _ in range(self.per_connection)
            ]

    def take(self, conn: SftpConnection) -> SftpPipe | None:
        """A pipe opened ahead on `conn` (waiting for it while it is on its way); None when
        none is left or it could not be opened."""
        with self._lock:
            waiting = self._opening.get(id(conn))
            opening = waiting.pop(0) if waiting else None
        return opening.wait() if opening is not None else None

    def close(self) -> None:
        """Close the pipes nobody took (waiting a moment for those still on their way)."""
        with self._lock:
            self._closed = True
            left = [o for waiting in self._opening.values() for o in waiting]
            self._opening.clear()
        for opening in left:
            pipe = opening.wait(CLOSE_WAIT_S)
            if pipe is not None:
                with contextlib.suppress(Exception):
                    pipe.close()
