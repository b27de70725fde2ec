"""In-memory limiter for failed logins, keyed separately by account and by client address.

Exact under concurrency without counting anything but failures: an attempt reserves a
slot on each of its keys before the (slow) password check and ends with its outcome. A key
admits attempts while its recent failures plus the attempts in flight stay below its limit;
one more waits until an attempt in flight ends. So concurrent wrong guesses are never
checked more often than the limit allows, while a correct login never counts as a failure
— not even while it is being checked — and concurrent correct logins are never refused
(they queue for a moment instead). Reaching the limit locks the key for `lockout` s.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

# Past this many tracked keys, stale ones are dropped so a flood of made-up usernames
# cannot grow memory without bound.
_PRUNE_ABOVE = 10_000
#: seconds an attempt waits for a slot before it is refused; a slot frees as soon as an
#: attempt in flight ends (one password hash), so this bounds only pathological stalls
DEFAULT_MAX_WAIT = 30.0


def address_key(address: str) -> str:
    """The limiter key of a client address: the address itself, or for IPv6 its /64 (one
    site or host holds a whole /64, so single addresses would be free to rotate)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return "addr:" + address
    if ip.version == 6:
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


@dataclass
class _KeyState:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    #: attempts admitted and not yet ended
    in_flight: int = 0


@dataclass(frozen=True)
class KeyLimit:
    """One key an attempt is counted under, with its own failure limit."""

    key: str
    max_failures: int
    #: let the attempt through while this key is locked (its outcome still counts); the
    #: caller then decides what such an attempt must prove (`Attempt.passed_locks`)
    pass_when_locked: bool = False


@dataclass(frozen=True)
class Refusal:
    """An attempt refused without being checked: `key` is locked (or stayed full)."""

    key: str
    retry_after: int


@dataclass
class Attempt:
    """An admitted attempt holding a slot on each of its keys until `LoginRateLimiter.end`."""

    limits: tuple[KeyLimit, ...]
    #: keys that were locked but let this attempt through (`KeyLimit.pass_when_locked`)
    passed_locks: frozenset[str]
    ended: bool = False


class LoginRateLimiter:
    """After `max_failures` failures of a key within `window` s, it is locked `lockout` s."""

    def __init__(
        self,
        *,
        max_failures: int,
        window: float,
        lockout: float,
        now: Callable[[], datetime],
        max_wait: float = DEFAULT_MAX_WAIT,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.max_wait = max_wait
        self._now = now
        self._keys: dict[str, _KeyState] = {}
        self._changed = threading.Condition(threading.Lock())

    def _time(self) -> float:
        return self._now().timestamp()

    def begin(self, limits: Sequence[KeyLimit]) -> Attempt | Refusal:
        """Admit an attempt under all of `limits` at once, or refuse it.

        Refused at once when a key is locked (unless it passes locks); waits while a key is
        full of failures and attempts in flight. Slots are taken on every key together or
        not at all, so two attempts can never each hold one key and wait for the other.
        """
        deadline = time.monotonic() + self.max_wait
        with self._changed:
            while True:
                now = self._time()
                if len(self._keys) > _PRUNE_ABOVE:
                    self._prune(now)
                passed: set[str] = set()
                full: KeyLimit | None = None
                for limit in limits:
                    state = self._current(limit.key, now)
                    if state.locked_until > now:
                        if not limit.pass_when_locked:
                            return Refusal(limit.key, max(1, math.ceil(state.locked_until - now)))
                        passed.add(limit.key)
                    elif full is None and (
                        len(state.failures) + state.in_flight >= limit.max_failures
                    ):
                        full = limit
                if full is None:
                    for limit in limits:
                        self._keys[limit.key].in_flight += 1
                    return Attempt(tuple(limits), frozenset(passed))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Refusal(full.key, 1)
                self._changed.wait(remaining)

    def end(self, attempt: Attempt, *, failed: bool) -> list[str]:
        """Release the attempt's slots; a failure counts on every key (and may lock it).

        Returns the keys this failure locked (that were not locked before)."""
        locked: list[str] = []
        with self._changed:
            if attempt.ended:
                return locked
            attempt.ended = True
            now = self._time()
            for limit in attempt.limits:
                state = self._current(limit.key, now)
                state.in_flight = max(0, state.in_flight - 1)
                if failed:
                    state.failures.append(now)
                    if len(state.failures) >= limit.max_failures:
                        if state.locked_until <= now:
                            locked.append(limit.key)
                        state.locked_until = max(state.locked_until, now + self.lockout)
            self._changed.notify_all()
        return locked

    def reset(self, key: str) -> None:
        """Forget a key's failures and lift its lock (after a successful login)."""
        with self._changed:
            state = self._keys.get(key)
            if state is not None:
                state.failures.clear()
                state.locked_until = 0.0
                self._changed.notify_all()

    def _current(self, key: str, now: float) -> _KeyState:
        """The state of `key` at `now`, window applied (the caller holds the lock)."""
        state = self._keys.get(key)
        if state is None:
            state = self._keys[key] = _KeyState()
        if state.locked_until and state.locked_until <= now:
            # A served lockout starts a fresh count.
            state.failures.clear()
            state.locked_until = 0.0
        while state.failures and state.failures[0] <= now - self.window:
            state.failures.popleft()
        return state

    def _prune(self, now: float) -> None:
        stale = [
            key
            for key, state in self._keys.items()
            if not state.in_flight
            and state.locked_until <= now
            and (not state.failures or state.failures[-1] <= now - self.window)
        ]
        for key in stale:
            del self._keys[key]
