"""`/v1/auth`: password and OTP grants, rate limiting, refresh rotation, reuse, logout."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from fastapi.testclient import TestClient

from kaic.center.admin import add_user
from kaic.center.app import create_app
from kaic.center.security import totp_code
from kaic.center.settings import CenterSettings
from kaic.models.auth import SCOPES

from .conftest import PASSWORD, Center, FakeClock, assert_error, bearer


def _password(
    center: Center, user: str, password: str, ip: str | None = None, **extra: str
) -> httpx.Response:
    client = center.client_from(ip) if ip else center.client
    return client.post(
        "/v1/auth/token",
        json={"grant_type": "password", "username": user, "password": password, **extra},
    )


def _refresh(center: Center, refresh_token: str) -> httpx.Response:
    return center.client.post(
        "/v1/auth/token", json={"grant_type": "refresh_token", "refresh_token": refresh_token}
    )


def test_password_login_returns_working_tokens(center: Center) -> None:
    tokens = center.login()
    assert tokens["access_token"].startswith("kaa_")
    assert tokens["refresh_token"].startswith("kar_")
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == 900
    me = center.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["user"] == "alice"
    assert body["unix_account"] == "alice01"
    assert body["token_kind"] == "session"
    assert body["scopes"] == list(SCOPES)  # a session holds every scope, secrets:* included
    assert body["projects"] == [{"name": "ai-2026-0042", "role": "member"}]


def test_wrong_password_and_unknown_user_look_the_same(center: Center) -> None:
    wrong = assert_error(_password(center, "alice", "nope"), 401, "invalid_credentials")
    unknown = assert_error(_password(center, "mallory", "nope"), 401, "invalid_credentials")
    del wrong["request_id"], unknown["request_id"]
    assert wrong == unknown


def test_user_without_password_cannot_log_in(center: Center) -> None:
    add_user(center.settings.state_dir, "svc", password=None, enable_otp=False, unix_account=None)
    assert_error(_password(center, "svc", ""), 401, "invalid_credentials")


def test_password_grant_needs_username_and_password(center: Center) -> None:
    response = center.client.post("/v1/auth/token", json={"grant_type": "password"})
    error = assert_error(response, 422, "invalid_request")
    assert "username" in error["message"]


def test_unknown_grant_type_is_a_validation_error(center: Center) -> None:
    response = center.client.post("/v1/auth/token", json={"grant_type": "client_credentials"})
    error = assert_error(response, 422, "invalid_request")
    assert "grant_type" in error["message"]


def _otp_secret(uri: str) -> str:
    return parse_qs(urlparse(uri).query)["secret"][0]


def test_otp_login(center: Center) -> None:
    uri = add_user(
        center.settings.state_dir, "olga", password=PASSWORD, enable_otp=True, unix_account=None
    )
    assert uri is not None
    secret = _otp_secret(uri)
    assert_error(_password(center, "olga", PASSWORD), 401, "otp_required")
    wrong = "000000" if totp_code(secret, center.clock()) != "000000" else "111111"
    # A wrong code says so (the password is checked first, so this tells nothing new).
    error = assert_error(_password(center, "olga", PASSWORD, otp=wrong), 401, "invalid_otp")
    assert "one-time code" in error["message"]
    # The right password is needed too; the OTP alone does not do.
    code = totp_code(secret, center.clock())
    assert_error(_password(center, "olga", "nope", otp=code), 401, "invalid_credentials")
    # One step of clock skew is tolerated, two are not.
    previous = totp_code(secret, center.clock().timestamp() - 30)
    assert _password(center, "olga", PASSWORD, otp=previous).status_code == 200
    assert _password(center, "olga", PASSWORD, otp=code).status_code == 200
    # Each code opens one session (RFC 6238 5.2): a replay, or an older code after a newer
    # one, is refused — and counts as a failed login.
    assert_error(_password(center, "olga", PASSWORD, otp=code), 401, "otp_reused")
    if previous != code:
        assert_error(_password(center, "olga", PASSWORD, otp=previous), 401, "otp_reused")
    center.clock.advance(30)
    assert (
        _password(center, "olga", PASSWORD, otp=totp_code(secret, center.clock())).status_code
        == 200
    )
    stale = totp_code(secret, center.clock().timestamp() - 90)
    if stale not in {totp_code(secret, center.clock().timestamp() + d) for d in (-30, 0, 30)}:
        assert_error(_password(center, "olga", PASSWORD, otp=stale), 401, "invalid_otp")


def test_otp_required_answers_count_as_failed_logins(center: Center) -> None:
    """`otp_required` tells the password was right: probing passwords of an OTP account
    that way is rate limited like wrong passwords are."""
    add_user(
        center.settings.state_dir, "olga", password=PASSWORD, enable_otp=True, unix_account=None
    )
    for attempt in range(5):
        response = _password(center, "olga", PASSWORD, ip=f"10.0.2.{attempt}")
        assert_error(response, 401, "otp_required")
    assert_error(_password(center, "olga", PASSWORD, ip="10.0.3.1"), 429, "rate_limited")


@pytest.mark.parametrize("user", ["alice", "nobody"])
def test_failed_logins_by_username_are_rate_limited(center: Center, user: str) -> None:
    # Each attempt from its own address, so only the username key can trip.
    for attempt in range(5):
        response = _password(center, user, "wrong", ip=f"10.0.0.{attempt}")
        assert_error(response, 401, "invalid_credentials")
    response = _password(center, user, PASSWORD, ip="10.0.1.1")
    assert_error(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "60"
    center.clock.advance(45)
    assert _password(center, user, "wrong", ip="10.0.1.2").headers["Retry-After"] == "15"
    center.clock.advance(15)
    response = _password(center, user, PASSWORD, ip="10.0.1.3")
    if user == "alice":
        assert response.status_code == 200
    else:
        assert_error(response, 401, "invalid_credentials")


@pytest.mark.parametrize("user", ["alice", "nobody"])
def test_failed_logins_by_client_ip_are_rate_limited(center: Center, user: str) -> None:
    limit = center.settings.login_address_max_failures
    # One IP may be a proxy in front of many users: it locks later than a user name does.
    assert limit > center.settings.login_max_failures
    for attempt in range(limit):
        assert_error(
            _password(center, f"ghost{attempt}", "x", ip="10.9.9.9"), 401, "invalid_credentials"
        )
    response = _password(center, user, PASSWORD, ip="10.9.9.9")
    error = assert_error(response, 429, "rate_limited")
    assert "address" in error["message"]
    assert int(response.headers["Retry-After"]) == 60
    # Another address is unaffected.
    other = _password(center, user, PASSWORD, ip="10.9.9.10")
    assert other.status_code == (200 if user == "alice" else 401)
    # The lock is served, then the address starts afresh.
    center.clock.advance(60)
    assert _password(center, user, PASSWORD, ip="10.9.9.9").status_code == other.status_code


def test_a_locked_address_still_admits_a_password_with_a_valid_code(center: Center) -> None:
    uri = add_user(
        center.settings.state_dir, "olga", password=PASSWORD, enable_otp=True, unix_account=None
    )
    assert uri is not None
    secret = _otp_secret(uri)
    for attempt in range(center.settings.login_address_max_failures):
        _password(center, f"ghost{attempt}", "x", ip="10.9.9.9")
    code = totp_code(secret, center.clock())
    wrong = "000000" if code != "000000" else "111111"
    # Every failure from the locked address is the same 429: which factor was wrong, or
    # whether the account exists at all, stays unsaid.
    for user, password, otp in (
        ("olga", PASSWORD, wrong),
        ("olga", "nope", code),
        ("alice", PASSWORD, code),  # no OTP on alice: a code does not make it a second factor
        ("nobody", PASSWORD, code),
        ("olga", PASSWORD, ""),
    ):
        response = _password(center, user, password, ip="10.9.9.9", otp=otp)
        assert_error(response, 429, "rate_limited")
        assert response.headers["Retry-After"] == "60"
    assert _password(center, "olga", PASSWORD, ip="10.9.9.9", otp=code).status_code == 200
    # The address stays locked against passwords alone.
    assert_error(_password(center, "alice", PASSWORD, ip="10.9.9.9"), 429, "rate_limited")


def test_a_locked_address_spends_no_password_hash_without_a_valid_code(
    center: Center, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flood from a locked address must not keep scrypt busy: only a valid one-time code
    # earns the password check.
    from kaic.center.routers import auth as auth_router

    uri = add_user(
        center.settings.state_dir, "olga", password=PASSWORD, enable_otp=True, unix_account=None
    )
    assert uri is not None
    secret = _otp_secret(uri)
    for attempt in range(center.settings.login_address_max_failures):
        _password(center, f"ghost{attempt}", "x", ip="10.9.9.9")
    hashed: list[str] = []
    real_check = auth_router.check_password
    monkeypatch.setattr(
        auth_router, "check_password", lambda pw, h: hashed.append(pw) or real_check(pw, h)
    )
    code = totp_code(secret, center.clock())
    wrong = "000000" if code != "000000" else "111111"
    for user, otp in (("olga", wrong), ("nobody", code), ("alice", code), ("olga", "")):
        assert_error(_password(center, user, "guess", ip="10.9.9.9", otp=otp), 429, "rate_limited")
    assert hashed == []
    assert _password(center, "olga", PASSWORD, ip="10.9.9.9", otp=code).status_code == 200
    assert hashed == [PASSWORD]


def test_an_attempt_that_succeeds_leaves_no_lock(center: Center) -> None:
    """The attempt that reaches a key's limit counts only if it fails."""
    limit = center.settings.login_address_max_failures
    for attempt in range(limit - 1):
        _password(center, f"ghost{attempt}", "x", ip="10.9.9.9")
    assert _password(center, "alice", PASSWORD, ip="10.9.9.9").status_code == 200
    assert _password(center, "bob", PASSWORD, ip="10.9.9.9").status_code == 200
    for attempt in range(4):
        _password(center, "alice", "wrong", ip=f"10.0.0.{attempt}")
    assert _password(center, "alice", PASSWORD, ip="10.0.1.0").status_code == 200
    assert _password(center, "alice", PASSWORD, ip="10.0.1.0").status_code == 200


def test_forwarded_for_is_believed_only_from_a_trusted_proxy(
    tmp_path: Path, clock: FakeClock
) -> None:
    settings = CenterSettings(
        state_dir=tmp_path / "state", now=clock, trusted_proxies=["10.0.0.0/8"]
    )
    add_user(settings.state_dir, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    app = create_app(settings)
    token = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    with TestClient(app, client=("10.1.2.3", 5000)) as proxy:
        outsider = TestClient(app, client=("192.0.2.1", 5000))

        def guess(client: TestClient, attempt: int, forwarded_for: str) -> None:
            client.post(
                "/v1/auth/token",
                json={"grant_type": "password", "username": f"ghost{attempt}", "password": "x"},
                headers={"X-Forwarded-For": forwarded_for},
            )

        def login(client: TestClient, forwarded_for: str) -> int:
            headers = {"X-Forwarded-For": forwarded_for}
            return client.post("/v1/auth/token", json=token, headers=headers).status_code

        for attempt in range(settings.login_address_max_failures):
            guess(proxy, attempt, "203.0.113.7")
        assert login(proxy, "203.0.113.7") == 429
        assert login(proxy, "198.51.100.1") == 200
        # Made-up entries left of what the proxy appended change nothing.
        assert login(proxy, "198.51.100.1, 203.0.113.7") == 429
        # From a peer that is no proxy of ours the header is ignored.
        for attempt in range(settings.login_address_max_failures):
            guess(outsider, attempt, f"198.51.100.{attempt}")
        assert login(outsider, "198.51.100.200") == 429


def test_failures_outside_the_window_do_not_count(center: Center) -> None:
    for attempt in range(4):
        _password(center, "alice", "wrong", ip=f"10.0.0.{attempt}")
    center.clock.advance(301)
    for attempt in range(4):
        _password(center, "alice", "wrong", ip=f"10.0.2.{attempt}")
    assert _password(center, "alice", PASSWORD, ip="10.0.3.1").status_code == 200


def test_successful_login_resets_the_username_count(center: Center) -> None:
    for attempt in range(4):
        _password(center, "alice", "wrong", ip=f"10.0.0.{attempt}")
    assert _password(center, "alice", PASSWORD, ip="10.0.1.0").status_code == 200
    for attempt in range(4):
        _password(center, "alice", "wrong", ip=f"10.0.2.{attempt}")
    assert _password(center, "alice", PASSWORD, ip="10.0.3.0").status_code == 200


def test_refresh_rotates_tokens(center: Center) -> None:
    first = center.login()
    center.clock.advance(60)
    response = _refresh(center, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert center.client.get("/v1/me", headers=bearer(second["access_token"])).status_code == 200
    # The rotated pair rotates again.
    third = _refresh(center, second["refresh_token"])
    assert third.status_code == 200


def test_refresh_reuse_revokes_the_whole_family(center: Center) -> None:
    first = center.login()
    second = _refresh(center, first["refresh_token"]).json()
    other_session = center.login()

    assert_error(_refresh(center, first["refresh_token"]), 401, "refresh_token_reused")
    # Everything of that login is dead, including the pair the rotation handed out...
    for token in (first["access_token"], second["access_token"]):
        error = assert_error(
            center.client.get("/v1/me", headers=bearer(token)), 401, "invalid_token"
        )
        assert "revoked" in error["message"]
    assert_error(_refresh(center, second["refresh_token"]), 401, "refresh_token_reused")
    # ...while another login of the same user is untouched.
    assert (
        center.client.get("/v1/me", headers=bearer(other_session["access_token"])).status_code
        == 200
    )


def test_unknown_and_expired_refresh_tokens(center: Center) -> None:
    assert_error(_refresh(center, "kar_not-a-token"), 401, "invalid_grant")
    tokens = center.login()
    center.clock.advance(30 * 86400 + 1)
    error = assert_error(_refresh(center, tokens["refresh_token"]), 401, "invalid_grant")
    assert "expired" in error["message"]


def test_access_token_expires(center: Center) -> None:
    tokens = center.login()
    center.clock.advance(899)
    assert center.client.get("/v1/me", headers=bearer(tokens["access_token"])).status_code == 200
    center.clock.advance(1)
    response = center.client.get("/v1/me", headers=bearer(tokens["access_token"]))
    error = assert_error(response, 401, "invalid_token")
    assert "expired" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The refresh token still works after the access token expired.
    assert _refresh(center, tokens["refresh_token"]).status_code == 200


def test_revoke_logs_the_session_out(center: Center) -> None:
    tokens = center.login()
    response = center.client.post(
        "/v1/auth/revoke",
        json={"refresh_token": tokens["refresh_token"]},
        headers=bearer(tokens["access_token"]),
    )
    assert response.status_code == 204
    assert response.content == b""
    assert_error(
        center.client.get("/v1/me", headers=bearer(tokens["access_token"])), 401, "invalid_token"
    )
    assert_error(_refresh(center, tokens["refresh_token"]), 401, "refresh_token_reused")


def test_revoke_ignores_another_users_refresh_token(center: Center) -> None:
    alice = center.login("alice")
    bob = center.login("bob")
    response = center.client.post(
        "/v1/auth/revoke",
        json={"refresh_token": alice["refresh_token"]},
        headers=bearer(bob["access_token"]),
    )
    assert response.status_code == 204
    assert _refresh(center, alice["refresh_token"]).status_code == 200


def test_revoke_with_an_api_token_keeps_the_api_token(center: Center) -> None:
    session = center.login()
    created = center.client.post(
        "/v1/tokens", json={"name": "ci"}, headers=bearer(session["access_token"])
    ).json()
    response = center.client.post("/v1/auth/revoke", headers=bearer(created["token"]))
    assert response.status_code == 204
    assert center.client.get("/v1/me", headers=bearer(created["token"])).status_code == 200
    assert center.client.get("/v1/me", headers=bearer(session["access_token"])).status_code == 200


def test_revoke_needs_a_token(center: Center) -> None:
    response = center.client.post("/v1/auth/revoke", json={})
    assert_error(response, 401, "invalid_token")
    assert response.headers["WWW-Authenticate"] == "Bearer"
