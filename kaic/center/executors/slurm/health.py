"""Whether slurmrestd answers, and when to try it again: calls back off exponentially (up to
`MAX_BACKOFF` seconds) while it fails, and `health()` says degraded until a call reaches it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kaic.center.executors.base import ExecutorHealth

logger = logging.getLogger("kaic.center.slurm")

#: the longest wait between two tries while slurmrestd fails (seconds)
MAX_BACKOFF = 30.0


class Reachability:
    """Failures since slurmrestd last answered, what went wrong, and the next try."""

    def __init__(self, poll_interval: float, clock: Callable[[], float]) -> None:
        self.poll_interval = poll_interval
        self.clock = clock
        self.failures = 0
        self.detail: str | None = None
        self.since: float | None = None
        self.next_try = 0.0

    def failed(self, exc: Exception) -> float:
        """A call failed: when to try again."""
        now = self.clock()
        self.failures += 1
        if self.since is None:
            self.since = now
        self.detail = f"slurmrestd unavailable: {exc}"
        delay = min(MAX_BACKOFF, self.poll_interval * 2 ** min(self.failures, 10))
        self.next_try = now + delay
        log = logger.warning if self.failures <= 3 or self.failures % 20 == 0 else logger.debug
        log("%s (try %d; next in %.1fs)", self.detail, self.failures, delay)
        return self.next_try

    def succeeded(self) -> None:
        """A call reached slurmrestd (only that says it is reachable)."""
        if self.failures:
            down = self.clock() - (self.since or self.clock())
            logger.warning("slurmrestd reachable again after %.0fs", down)
        self.failures, self.detail, self.since, self.next_try = 0, None, None, 0.0

    def waiting(self) -> bool:
        """Whether it failed and the next try is not due yet."""
        return bool(self.failures) and self.clock() < self.next_try

    def health(self) -> ExecutorHealth:
        if self.failures:
            return ExecutorHealth(ok=False, detail=self.detail)
        return ExecutorHealth()
