"""The failed-login limiter and the client address it is keyed by."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from kaic.center.deps import forwarded_client
from kaic.center.ratelimit import Attempt, KeyLimit, LoginRateLimiter, Refusal, address_key
from kaic.center.settings import CenterSettings

from .conftest import FakeClock


def _limiter(clock: Callable[[], datetime] | None = None, **kw: float) -> LoginRateLimiter:
    return LoginRateLimiter(
        max_failures=5,
        window=300,
        lockout=60,
        now=clock or (lambda: datetime.now(timezone.utc)),
        **kw,  # type: ignore[arg-type]
    )


def _all_at_once(count: int, work: Callable[[], None]) -> None:
    barrier = threading.Barrier(count)

    def run() -> None:
        barrier.wait()
        work()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


ALICE = [KeyLimit("user:alice", 5), KeyLimit("addr:10.0.0.1", 25)]


def test_concurrent_guesses_cannot_slip_past_the_limit() -> None:
    """Check and count are one step: of 50 simultaneous wrong guesses, 5 get checked."""
    limiter = _limiter()
    checked: list[bool] = []

    def guess() -> None:
        attempt = limiter.begin(ALICE)
        if isinstance(attempt, Attempt):
            checked.append(True)
            limiter.end(attempt, failed=True)

    _all_at_once(50, guess)
    assert len(checked) == 5
    assert isinstance(limiter.begin(ALICE), Refusal)


def test_concurrent_correct_logins_are_all_admitted() -> None:
    limiter = _limiter()
    admitted: list[bool] = []

    def login() -> None:
        attempt = limiter.begin(ALICE)
        admitted.append(isinstance(attempt, Attempt))
        if isinstance(attempt, Attempt):
            limiter.end(attempt, failed=False)

    _all_at_once(50, login)
    assert admitted == [True] * 50


def test_attempts_sharing_keys_in_both_orders_do_not_deadlock() -> None:
    """Slots are taken on all keys at once: no attempt holds one key while it waits for
    another, whichever order the keys come in."""
    limiter = _limiter()
    one = [KeyLimit("user:a", 1), KeyLimit("addr:x", 1)]
    other = [KeyLimit("addr:x", 1), KeyLimit("user:a", 1)]
    done: list[bool] = []

    def login(limits: list[KeyLimit]) -> None:
        attempt = limiter.begin(limits)
        assert isinstance(attempt, Attempt)
        limiter.end(attempt, failed=False)
        done.append(True)

    threads = [threading.Thread(target=login, args=(one if i % 2 else other,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(done) == 20


def test_an_attempt_that_succeeds_leaves_no_lock() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    for _ in range(4):
        attempt = limiter.begin(ALICE)
        assert isinstance(attempt, Attempt)
        limiter.end(attempt, failed=True)
    fifth = limiter.begin(ALICE)
    assert isinstance(fifth, Attempt)
    limiter.end(fifth, failed=False)
    assert isinstance(limiter.begin(ALICE), Attempt)


def test_lockout_is_served_then_counting_starts_afresh() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    for n in range(5):
        attempt = limiter.begin(ALICE)
        assert isinstance(attempt, Attempt)
        # `end` says which keys the failure locked, once.
        assert limiter.end(attempt, failed=True) == (["user:alice"] if n == 4 else [])
    refused = limiter.begin(ALICE)
    assert refused == Refusal("user:alice", 60)
    clock.advance(59)
    assert limiter.begin(ALICE) == Refusal("user:alice", 1)
    clock.advance(1)
    assert isinstance(limiter.begin(ALICE), Attempt)


def test_a_locked_key_that_passes_locks_still_counts_the_outcome() -> None:
    clock = FakeClock()
    limiter = _limiter(clock)
    address = KeyLimit("addr:x", 2, pass_when_locked=True)
    for user in ("a", "b"):
        attempt = limiter.begin([KeyLimit(f"user:{user}", 5), address])
        assert isinstance(attempt, Attempt) and not attempt.passed_locks
        limiter.end(attempt, failed=True)
    assert limiter.begin([KeyLimit("user:c", 5), KeyLimit("addr:x", 2)]) == Refusal("addr:x", 60)
    passing = limiter.begin([KeyLimit("user:c", 5), address])
    assert isinstance(passing, Attempt) and passing.passed_locks == {"addr:x"}
    clock.advance(30)
    limiter.end(passing, failed=True)
    # A failure while locked keeps the address locked from now on.
    assert limiter.begin([KeyLimit("user:d", 5), KeyLimit("addr:x", 2)]) == Refusal("addr:x", 60)


def test_a_full_key_waits_then_gives_up() -> None:
    """An attempt waits for a slot; one that never frees is refused after `max_wait`."""
    limiter = _limiter(max_wait=0.2)
    holding = limiter.begin([KeyLimit("user:a", 1)])
    assert isinstance(holding, Attempt)
    assert limiter.begin([KeyLimit("user:a", 1)]) == Refusal("user:a", 1)
    limiter.end(holding, failed=False)
    assert isinstance(limiter.begin([KeyLimit("user:a", 1)]), Attempt)


def test_reset_clears_failures_and_lock() -> None:
    limiter = _limiter(FakeClock())
    for _ in range(5):
        attempt = limiter.begin(ALICE)
        assert isinstance(attempt, Attempt)
        limiter.end(attempt, failed=True)
    limiter.reset("user:alice")
    assert isinstance(limiter.begin(ALICE), Attempt)


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "addr:203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "addr:2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "addr:2001:db8:1:2::/64"),
        ("testclient", "addr:testclient"),
    ],
)
def test_address_key(address: str, key: str) -> None:
    assert address_key(address) == key


TRUSTED = [ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8")]


@pytest.mark.parametrize(
    ("peer", "headers", "client"),
    [
        # No proxy of ours: the header is whatever the client wants it to be.
        ("192.0.2.1", ["203.0.113.7"], "192.0.2.1"),
        ("127.0.0.1", [], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        # The right-most entry that is not one of our proxies; the left is the client's say.
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6, 203.0.113.7, 10.1.1.1"], "203.0.113.7"),
        ("127.0.0.1", ["6.6.6.6", "203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["10.2.2.2, 10.1.1.1"], "10.2.2.2"),
        # Ports and brackets as some proxies write them; IPv4-mapped IPv6 unwrapped.
        ("127.0.0.1", ["203.0.113.7:4431"], "203.0.113.7"),
        ("127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        # Garbage ends the walk at the last trusted hop.
        ("127.0.0.1", ["203.0.113.7, unknown"], "127.0.0.1"),
        ("127.0.0.1", ["evil\r\nx, 10.1.1.1"], "10.1.1.1"),
    ],
)
def test_forwarded_client(peer: str, headers: list[str], client: str) -> None:
    assert forwarded_client(peer, headers, TRUSTED) == client


@pytest.mark.parametrize("value", ["10.0.0.1/8", "example.org", "10.0.0.0/33", ""])
def test_bad_trusted_proxy_is_refused(tmp_path: Path, value: str) -> None:
    with pytest.raises(ValueError, match="trusted proxy"):
        CenterSettings(state_dir=tmp_path, trusted_proxies=[value])


def test_trusted_proxies_are_parsed(tmp_path: Path) -> None:
    settings = CenterSettings(
        state_dir=tmp_path, trusted_proxies=["127.0.0.1", "10.0.0.0/8", "::1"]
    )
    assert [str(n) for n in settings.trusted_proxy_networks] == [
        "127.0.0.1/32",
        "10.0.0.0/8",
        "::1/128",
    ]
