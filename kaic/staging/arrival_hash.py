"""A pull's segments hashed from the bytes as they arrive, not read back from the part file.

Verifying a pulled file costs this side a sha256 of every segment (`stripes`). Read back
from the part file, each byte is copied once more (from the page cache) and the last
segment is hashed only after the last byte is in. Here the streams hand each piece they
wrote (`Striped.on_arrival`) to one thread that hashes it: a segment whose pieces come in
order (one stream, as a pull from a near host runs) is hashed as it arrives. A segment
whose pieces come out of order (several streams share it) or that started before this
attempt (a resumed part file) is left to `stripes.hash_local`, which reads it back once it
is all there — and so, from then on, is every segment not yet hashed: the same digests
either way.
"""

from __future__ import annotations

import bisect
import hashlib
import queue
import threading

from kaic.staging.stripes import Segment, Striped, hash_local

#: pieces waiting to be hashed, at most (a stream that outruns the hashing waits)
QUEUED = 32


class _Running:
    """One segment being hashed in order: where its next piece must start."""

    __slots__ = ("broken", "digest", "next", "segment")

    def __init__(self, segment: Segment):
        self.segment = segment
        self.next = segment.start
        self.digest = hashlib.sha256()
        self.broken = False


class ArrivalHashes:
    """The hashing of `striped`'s segments as their pieces arrive (see the module doc):
    `arrived` from the streams, `run` in a thread of its own."""

    def __init__(self, striped: Striped):
        self._striped = striped
        self._running = [_Running(s) for s in striped.segments if not s.kept and s.end > s.start]
        self._starts = [r.segment.start for r in self._running]
        self._lock = threading.Lock()
        #: segments not yet either wholly queued or given up (out of order)
        self._unsettled = len(self._running)
        self._queue: queue.Queue[tuple[_Running, memoryview, bool] | None] = queue.Queue(QUEUED)
        #: `run` takes nothing more (it ended): pieces are not handed over any more (a
        #: segment sent again after a mismatch is checked by reading it back)
        self._closed = False
        if not self._running:
            self._queue.put(None)

    def arrived(self, pos: int, data: memoryview) -> None:
        """A stream wrote `data` at `pos` of the part file."""
        with self._lock:
            i = bisect.bisect_right(self._starts, pos) - 1
            if self._closed or self._unsettled == 0 or i < 0:
                return
            running = self._running[i]
            if running.broken or running.next == running.segment.end:
                return
            if pos != running.next:
                # Out of order (streams share the segments) or begun before this attempt:
                # from here every segment not yet hashed is read back from the part file as
                # it completes (`hash_local`), as hashing did before pieces were handed over.
                running.broken = True
                self._end_queue()
                return
            running.next += len(data)
            last = running.next >= running.segment.end
            # (while the lock is held: a full queue holds the other streams here too, and
            # the pieces of a segment stay in order)
            self._put((running, data, last))
            if last:
                self._settled()

    def _settled(self) -> None:
        self._unsettled -= 1
        if self._unsettled == 0:
            self._end_queue()

    def _end_queue(self) -> None:
        """Nothing more is queued: `run` hashes what is, then reads back the rest."""
        self._unsettled = 0
        self._put(None)

    def _put(self, item: tuple[_Running, memoryview, bool] | None) -> None:
        """Queue `item`, waiting for room; dropped (and nothing queued any more) once the
        file failed or the sync is aborted: `run` has stopped taking."""
        striped = self._striped
        while True:
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if self._closed or striped.abort.is_set() or striped.state == "failed":
                    self._unsettled = 0
                    return

    def run(self, part: str) -> None:
        """Hash what arrives until every segment is hashed or given up; then the ones given
        up, from the part file (`hash_local`)."""
        try:
            if not self._take():
                return
        finally:
            self._closed = True  # (no lock: a stream may hold it, waiting for room)
        hash_local(self._striped, part, at_once=False)

    def _take(self) -> bool:
        """Hash the pieces queued until the end; False when the file failed."""
        striped = self._striped
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if striped.abort.is_set() or striped.state == "failed":
                    return False
                # Every segment is on disk and nothing is queued: a piece nobody handed over
                # (none should be) leaves its segment to `hash_local`, not waiting for ever.
                if all(r.segment.sent for r in self._running) and self._queue.empty():
                    return True
                continue
            if item is None:
                return True
            running, data, last = item
            running.digest.update(data)
            if last and not running.broken:
                with striped.cond:
                    running.segment.local = running.digest.hexdigest()
                    striped.cond.notify_all()
