"""`kaic login` as a flow, in process: prompts as plain callables, the center a FakeCenter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest

from kaic.config import load_config
from kaic.errors import AuthRequired, UsageError
from kaic.flows.login import LoginRequest, LoginResult, Prompts, login
from kaic.flows.ui import Ui
from tests.inprocess import FakeCenter, error

EXPIRES = (datetime.now(timezone.utc) + timedelta(minutes=15)).isoformat()
GRANT = {
    "access_token": "kaa_" + "a" * 30,
    "refresh_token": "kar_" + "r" * 30,
    "expires_in": 900,
    "expires_at": EXPIRES,
}
ME = {"user": "alice", "unix_account": "alice01"}


@pytest.fixture
def center() -> FakeCenter:
    center = FakeCenter()
    center.on("GET", "/v1/me", json=ME)
    center.on("GET", "/v1/staging", error(404, "not_found", "no staging"))
    return center


def _login(
    center: FakeCenter, prompts: Prompts, **flags: str | bool
) -> tuple[LoginResult, list[str]]:
    said: list[str] = []
    request = LoginRequest(center=center.url, insecure_storage=True, **flags)  # type: ignore[arg-type]
    result = login(
        request,
        prompts,
        Ui(info=said.append, warn=said.append),
        transport=httpx.MockTransport(center.handler),
    )
    return result, said


def test_asks_for_the_one_time_code_when_the_center_wants_one(center: FakeCenter) -> None:
    center.on(
        "POST", "/v1/auth/token",
        error(401, "otp_required", "a one-time code is required"),
        httpx.Response(200, json=GRANT),
    )  # fmt: skip
    asked: list[str] = []

    def password(text: str) -> str:
        asked.append(text)
        return "pw"

    def otp() -> str:
        asked.append("otp")
        return "123456"

    def no_stdin(what: str) -> str:
        raise AssertionError(f"read {what} from stdin")

    result, _ = _login(
        center, Prompts(read_stdin=no_stdin, password=password, otp=otp), username="alice"
    )
    assert asked == [f"Password for alice at {center.url}: ", "otp"]
    grants = center.sent("POST", "/v1/auth/token")
    assert [b'"otp":"123456"' in g.content for g in grants] == [False, True]
    assert result.user == "alice" and result.storage == "file"
    assert result.ssh_identity is None  # the center has no staging
    assert load_config().profiles[result.profile].center == center.url


def test_without_a_terminal_the_hint_names_the_flag(center: FakeCenter) -> None:
    center.on("POST", "/v1/auth/token", error(401, "otp_required", "one-time code required"))
    prompts = Prompts(read_stdin=lambda _what: "pw")
    with pytest.raises(AuthRequired) as info:
        _login(center, prompts, username="alice", password_stdin=True)
    assert info.value.hint == "pass your one-time code with --otp CODE"


def test_no_password_and_no_terminal_is_a_usage_error(center: FakeCenter) -> None:
    with pytest.raises(UsageError, match="no terminal to ask for a password"):
        _login(center, Prompts(read_stdin=lambda _what: "pw"), username="alice")
    with pytest.raises(UsageError, match="no user name given"):
        _login(center, Prompts(read_stdin=lambda _what: "pw"))
    assert center.requests == []


def test_token_login_checks_the_token_first(center: FakeCenter) -> None:
    token = "kaic_" + "z" * 40
    result, said = _login(center, Prompts(read_stdin=lambda _what: token), with_token=True)
    (me,) = center.sent("GET", "/v1/me")
    assert me.headers["Authorization"] == f"Bearer {token}"
    assert result.user == "alice" and said == []
