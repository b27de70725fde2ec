"""Login throttling through a real center on loopback: per account, per address, proxies.

The center is a real `kaic center serve` process, so the worker threads, the production
password hash and the TCP peer address are the real ones (the peer is 127.0.0.1).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from kaic.center import security
from kaic.center.security import totp_code
from tests.helpers import RunningCenter, start_center

PASSWORD = "correct horse battery staple"
#: the center's defaults: 5 failures lock an account, 5 x 5 an address
ACCOUNT_LIMIT = 5
ADDRESS_LIMIT = 25


def _login(
    center: RunningCenter,
    user: str,
    password: str,
    *,
    otp: str | None = None,
    forwarded_for: str | None = None,
) -> httpx.Response:
    body = {"grant_type": "password", "username": user, "password": password}
    if otp is not None:
        body["otp"] = otp
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    with httpx.Client(base_url=center.url, timeout=60) as http:
        return http.post("/v1/auth/token", json=body, headers=headers)


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _guess_random_users(center: RunningCenter, count: int, forwarded_for: str | None = None):
    for _ in range(count):
        response = _login(
            center, "ghost-" + secrets.token_hex(4), "guess", forwarded_for=forwarded_for
        )
        assert response.status_code == 401, response.text


def _otp_now(uri: str) -> str:
    secret = parse_qs(urlparse(uri).query)["secret"][0]
    return totp_code(secret, time.time())


def _wait_for_log(center: RunningCenter, text: str, deadline_s: float = 10.0) -> str:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        log = center.log.read_text(errors="replace")
        if text in log:
            return log
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the center's log:\n{center.log.read_text()}")


def _start(tmp_path: Path, *extra: str) -> RunningCenter:
    center = start_center(tmp_path / "state", *extra)
    center.add_user("alice", PASSWORD)
    center.add_user("bob", PASSWORD)
    return center


@pytest.fixture
def center(tmp_path: Path) -> Iterator[RunningCenter]:
    running = _start(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center told that its TCP peer 127.0.0.1 is a trusted reverse proxy."""
    running = _start(tmp_path, "--trusted-proxy", "127.0.0.1/32")
    try:
        yield running
    finally:
        running.stop()


def test_concurrent_correct_logins_are_never_throttled(
    center: RunningCenter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 CI jobs logging in as one account at once: every one gets in (none counts as a
    failure while its password is being checked)."""
    # The production hash cost, so that the logins really overlap in the center.
    monkeypatch.setattr(security, "SCRYPT_N", 2**14)
    center.add_user("ci", PASSWORD)
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def login() -> None:
        with httpx.Client(base_url=center.url, timeout=120) as http:
            barrier.wait()
            response = http.post(
                "/v1/auth/token",
                json={"grant_type": "password", "username": "ci", "password": PASSWORD},
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=login) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200] * 50


def test_bad_guesses_at_one_account_lock_that_account_only(center: RunningCenter) -> None:
    for _ in range(ACCOUNT_LIMIT):
        assert _code(_login(center, "alice", "wrong")) == "invalid_credentials"
    locked = _login(center, "alice", PASSWORD)
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 0
    assert _login(center, "bob", PASSWORD).status_code == 200
    log = _wait_for_log(center, "too many failed logins for user alice (last from 127.0.0.1)")
    assert log.count("too many failed logins") == 1


def test_a_lock_set_by_a_successful_attempt_is_lifted(center: RunningCenter) -> None:
    """The attempt that reaches the address limit succeeds: it must leave no lock behind."""
    _guess_random_users(center, ADDRESS_LIMIT - 1)
    assert _login(center, "alice", PASSWORD).status_code == 200
    assert _login(center, "bob", PASSWORD).status_code == 200
    assert _login(center, "alice", PASSWORD).status_code == 200


def test_guessing_usernames_from_one_address_leaves_password_and_otp_logins_working(
    center: RunningCenter,
) -> None:
    """Spraying guesses from one address (everyone behind a NAT or an untrusted proxy shares
    it) locks that address against password-only attempts — which is what spraying is —
    but a correct password with a valid one-time code still gets in; a wrong one gets
    the same 429 as a wrong password, so the lock leaks nothing."""
    uri = center.add_user("olga", PASSWORD, otp=True)
    assert uri is not None
    _guess_random_users(center, ADDRESS_LIMIT)

    refused = _login(center, "alice", PASSWORD)
    assert refused.status_code == 429, refused.text
    assert "address" in refused.json()["error"]["message"]
    assert _login(center, "olga", "wrong", otp="000000").status_code == 429
    wrong_code = "000000" if _otp_now(uri) != "000000" else "111111"
    assert _login(center, "olga", PASSWORD, otp=wrong_code).status_code == 429
    assert _login(center, "olga", PASSWORD, otp=_otp_now(uri)).status_code == 200


def test_forwarded_for_is_ignored_from_an_untrusted_peer(center: RunningCenter) -> None:
    for attempt in range(ADDRESS_LIMIT):
        response = _login(center, f"ghost{attempt}", "guess", forwarded_for=f"10.7.0.{attempt}")
        assert response.status_code == 401
    # Every guess counted against the real peer, whatever the header claimed.
    assert _login(center, "bob", PASSWORD, forwarded_for="10.8.0.1").status_code == 429
    log = _wait_for_log(center, "from 127.0.0.1")
    assert "10.7.0." not in log


def test_forwarded_for_is_honoured_from_a_trusted_proxy(behind_proxy: RunningCenter) -> None:
    center = behind_proxy
    # The proxy appends the address it saw; what the client itself sent stands to the left
    # and is not believed.
    for attempt in range(ADDRESS_LIMIT):
        spoofed = f"10.7.0.{attempt}, 203.0.113.7"
        response = _login(center, f"ghost{attempt}", "guess", forwarded_for=spoofed)
        assert response.status_code == 401
    assert _login(center, "bob", PASSWORD, forwarded_for="203.0.113.7").status_code == 429
    # Users behind the same proxy, arriving from their own addresses, are not affected.
    assert _login(center, "bob", PASSWORD, forwarded_for="198.51.100.9").status_code == 200
    assert _login(center, "alice", PASSWORD).status_code == 200
    log = _wait_for_log(center, "too many failed logins from 203.0.113.7")
    assert "10.7.0." not in log
    _wait_for_log(center, "user bob logged in from 198.51.100.9")
