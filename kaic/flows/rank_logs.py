"""Which logs `kaic logs` reads for a job, and how a multi-node job's ranks are merged.

A job on one node has one log per stream. A multi-node job has, per stream, its own log
(what its launcher says: srun's errors, which rank failed) and one per rank (`node` on the
API); each is read from its own offset, so following stays lossless and resumable per rank.
Merged, each line of a rank is shown whole, started with `[rank N] ` when prefixing (the
default on a terminal): lines of different ranks never cut into each other.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from kaic.errors import UsageError

if TYPE_CHECKING:
    from kaic.client.logs import LogCursor

#: what one source writes to: raw bytes
Write = Callable[[bytes], None]
#: a partial line longer than this is shown without waiting for its end (a progress bar
#: that never ends its line must not be held back, nor held in memory, until the job ends)
MAX_PENDING = 64 * 1024
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)")


class LineWriter:
    """Hands `write` whole lines (ended by `\\n`, `\\r\\n` or `\\r`), each started with
    `prefix`; a partial line waits for its end, for `MAX_PENDING` bytes, or for `flush`."""

    def __init__(self, write: Write, prefix: bytes = b"") -> None:
        self.write = write
        self.prefix = prefix
        self._pending = b""
        #: whether the next byte written starts a line (and so gets the prefix)
        self._at_line_start = True

    def __call__(self, data: bytes) -> None:
        self._pending += data
        cut = max(self._pending.rfind(b"\n"), self._pending.rfind(b"\r"))
        if cut < 0:
            if len(self._pending) >= MAX_PENDING:
                self.flush()
            return
        whole, self._pending = self._pending[: cut + 1], self._pending[cut + 1 :]
        lines = _LINE.findall(whole)
        first = self.prefix if self._at_line_start else b""
        self.write(first + self.prefix.join(lines) if self.prefix else whole)
        self._at_line_start = True

    def flush(self) -> None:
        """Hand on what is left of a partial line (at the end, or when it grew too long)."""
        if self._pending:
            self.write((self.prefix if self._at_line_start else b"") + self._pending)
            self._pending = b""
            self._at_line_start = False


def log_sources(
    job_id: str,
    nodes: int,
    writers: dict[str, Write],
    *,
    node: int | None,
    prefix: bool,
    attempt: int | None = None,
) -> tuple[list[tuple[LogCursor, Write]], Callable[[], None]]:
    """The logs to read for a job on `nodes` nodes, each with where it goes, and what to call
    once reading ends (the last partial lines).

    `node`: one rank only (a UsageError when the job has no such rank). Otherwise a
    multi-node job's own log and every rank's, merged line by line (`prefix`: each rank's
    line started with `[rank N] `); a single-node job's logs as they are. `attempt`: that
    attempt's logs only (default: the current attempt, followed into later ones)."""
    from kaic.client.logs import LogCursor

    if node is not None and node >= nodes:
        valid = "rank 0" if nodes == 1 else f"ranks 0-{nodes - 1}"
        raise UsageError(
            f"job {job_id} has no rank {node}: it runs on {nodes} node(s)",
            hint=f"--node takes {valid}",
        )

    def cursor(stream: str, rank: int | None = None) -> LogCursor:
        return LogCursor(job_id, stream, node=rank, attempt=attempt, next_attempts=attempt is None)

    if nodes == 1:
        return [(cursor(s), w) for s, w in writers.items()], lambda: None
    sources: list[tuple[LogCursor, Write]] = []
    line_writers: list[LineWriter] = []
    ranks: list[int | None] = [node] if node is not None else [None, *range(nodes)]
    for stream, write in writers.items():
        for rank in ranks:
            tag = f"[rank {rank}] ".encode() if prefix and rank is not None else b""
            lines = LineWriter(write, tag)
            line_writers.append(lines)
            sources.append((cursor(stream, rank), lines))

    def finish() -> None:
        for lines in line_writers:
            lines.flush()

    return sources, finish
