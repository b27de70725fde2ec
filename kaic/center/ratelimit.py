"""In-memory limiter for failed logins, keyed separately by username and by client IP."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

# Past this many tracked keys, stale ones are dropped so a flood of made-up usernames
# cannot grow memory without bound.
_PRUNE_ABOVE = 10_000


@dataclass
class _KeyState:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class LoginRateLimiter:
    """After `max_failures` failures within `window` s, a key is refused for `lockout` s."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout: float,
        now: Callable[[], datetime],
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self._now = now
        self._keys: dict[str, _KeyState] = {}
        self._lock = threading.Lock()

    def _time(self) -> float:
        return self._now().timestamp()

    def attempt(self, key: str, *, limit: int | None = None) -> int | None:
        """Atomically refuse a locked key (returns the seconds to wait) or count this attempt
        as a failure until `forgive`/`reset` — so concurrent guesses cannot all slip in
        between a check and the slow password hash. `limit` overrides `max_failures`."""
        now = self._time()
        with self._lock:
            state = self._keys.get(key)
            if state is not None and state.locked_until > now:
                return max(1, math.ceil(state.locked_until - now))
            self._record_locked(key, now, limit)
        return None

    def forgive(self, key: str) -> None:
        """Take back the newest counted attempt of `key` (it succeeded)."""
        with self._lock:
            state = self._keys.get(key)
            if state is not None and state.failures and not state.locked_until:
                state.failures.pop()

    def _record_locked(self, key: str, now: float, limit: int | None) -> None:
        """Count one failure of `key` at `now` (the caller holds the lock)."""
        if len(self._keys) > _PRUNE_ABOVE:
            self._prune(now)
        state = self._keys.setdefault(key, _KeyState())
        if state.locked_until and state.locked_until <= now:
            # A served lockout starts a fresh count.
            state.failures.clear()
            state.locked_until = 0.0
        state.failures.append(now)
        while state.failures and state.failures[0] <= now - self.window:
            state.failures.popleft()
        if len(state.failures) >= (limit or self.max_failures):
            state.locked_until = now + self.lockout

    def reset(self, key: str) -> None:
        """Forget a key's failures (after a successful login)."""
        with self._lock:
            self._keys.pop(key, None)

    def _prune(self, now: float) -> None:
        stale = [
            key
            for key, state in self._keys.items()
            if state.locked_until <= now
            and (not state.failures or state.failures[-1] <= now - self.window)
        ]
        for key in stale:
            del self._keys[key]
