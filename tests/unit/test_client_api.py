"""CenterClient: auth refresh, safe retries, error mapping, debug log — no network, no waiting."""

from __future__ import annotations

import json
import socket
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.client.auth import AuthAPI
from kaic.client.errors import parse_retry_after
from kaic.client.health import HealthAPI
from kaic.client.jobs import JobsAPI
from kaic.client.tls import TransportPolicy
from kaic.client.tokens import TokensAPI
from kaic.errors import (
    AuthRequired,
    ExitCode,
    NotFound,
    RateLimited,
    Rejected,
    ServerError,
    TlsError,
    Unreachable,
    UsageError,
    error_for_status,
)
from kaic.flows.account import create_token
from kaic.flows.session import Session

BASE = "https://center.test"
EXPIRES = (datetime.now(timezone.utc) + timedelta(minutes=15)).isoformat()

Handler = Callable[[httpx.Request], httpx.Response]


def err(
    status: int, code: str, message: str, rid: str = "req-123", **headers: str
) -> httpx.Response:
    body = {"error": {"code": code, "message": message, "request_id": rid}}
    return httpx.Response(status, json=body, headers={"X-Request-ID": rid, **headers})


def tokens(access: str, refresh: str) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "access_token": access,
            "refresh_token": refresh,
            "token_type": "bearer",
            "expires_in": 900,
            "expires_at": EXPIRES,
        },
    )


ME = {"user": "alice", "unix_account": "alice", "projects": [], "token_kind": "session"}


class Recorder:
    """Collects requests and sleeps so tests can assert exactly what was sent and waited."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []
        self.log: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    def client(self, **kw: Any) -> CenterClient:
        kw.setdefault("sleep", self.sleeps.append)
        kw.setdefault("debug_log", self.log.append)
        return CenterClient(BASE, transport=httpx.MockTransport(self), **kw)

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


def session(
    access: str = "kaa_old_access_1", refresh: str | None = "kar_old_refresh_1"
) -> Credentials:
    return Credentials(access_token=access, refresh_token=refresh, kind="session")


# -- transparent refresh ------------------------------------------------------------------------


def test_401_refreshes_once_persists_and_retries() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            assert json.loads(request.content) == {
                "grant_type": "refresh_token",
                "refresh_token": "kar_old_refresh_1",
            }
            assert "Authorization" not in request.headers
            return tokens("kaa_new_access_2", "kar_new_refresh_2")
        if request.headers["Authorization"] == "Bearer kaa_old_access_1":
            return err(401, "invalid_token", "access token expired")
        assert request.headers["Authorization"] == "Bearer kaa_new_access_2"
        return httpx.Response(200, json=ME)

    rec = Recorder(handler)
    persisted: list[Credentials] = []
    with rec.client(credentials=session(), on_refresh=persisted.append) as client:
        me = AuthAPI(client).me()
    assert me.user == "alice"
    assert rec.paths() == ["GET /v1/me", "POST /v1/auth/token", "GET /v1/me"]
    assert len(persisted) == 1
    assert persisted[0].access_token == "kaa_new_access_2"
    assert persisted[0].refresh_token == "kar_new_refresh_2"
    assert persisted[0].expires_at is not None
    assert client.credentials is persisted[0]


class _OtherProcessRefreshed:
    """A SharedRefresh whose store holds what another kaic process refreshed to."""

    def __init__(self, stored: Credentials) -> None:
        self.stored = stored

    def lock(self) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def reload(self) -> Credentials:
        return self.stored


def test_tokens_another_process_refreshed_are_adopted_while_valid() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path != "/v1/auth/token", "must not refresh again: rotated token"
        if request.headers["Authorization"] == "Bearer kaa_old_access_1":
            return err(401, "invalid_token", "access token expired")
        assert request.headers["Authorization"] == "Bearer kaa_theirs_2"
        return httpx.Response(200, json=ME)

    theirs = Credentials(
        access_token="kaa_theirs_2",
        refresh_token="kar_theirs_2",
        expires_at=datetime.now(timezone.utc) + timedelta(minutes=5),
    )
    rec = Recorder(handler)
    with rec.client(credentials=session(), shared_refresh=_OtherProcessRefreshed(theirs)) as c:
        assert AuthAPI(c).me().user == "alice"
    assert rec.paths() == ["GET /v1/me", "GET /v1/me"]


def test_tokens_another_process_refreshed_are_renewed_with_its_refresh_token_if_expired() -> None:
    # Short-lived access tokens on a slow machine: what the other process got has expired by
    # the time this one reads it. Renew with the newest refresh token (the other process's),
    # never with this process's rotated one (that would revoke the whole session).
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            assert json.loads(request.content)["refresh_token"] == "kar_theirs_2"
            return tokens("kaa_mine_3", "kar_mine_3")
        if request.headers["Authorization"] == "Bearer kaa_old_access_1":
            return err(401, "invalid_token", "access token expired")
        assert request.headers["Authorization"] == "Bearer kaa_mine_3"
        return httpx.Response(200, json=ME)

    theirs = Credentials(
        access_token="kaa_theirs_2",
        refresh_token="kar_theirs_2",
        expires_at=datetime.now(timezone.utc) - timedelta(seconds=1),
    )
    persisted: list[Credentials] = []
    rec = Recorder(handler)
    with rec.client(
        credentials=session(),
        on_refresh=persisted.append,
        shared_refresh=_OtherProcessRefreshed(theirs),
    ) as c:
        assert AuthAPI(c).me().user == "alice"
    assert rec.paths() == ["GET /v1/me", "POST /v1/auth/token", "GET /v1/me"]
    assert [p.refresh_token for p in persisted] == ["kar_mine_3"]


def test_refresh_failure_is_auth_required_with_login_hint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            return err(401, "refresh_token_reused", "refresh token was already used")
        return err(401, "invalid_token", "access token expired")

    rec = Recorder(handler)
    persisted: list[Credentials] = []
    with (
        rec.client(credentials=session(), on_refresh=persisted.append) as client,
        pytest.raises(AuthRequired) as info,
    ):
        AuthAPI(client).me()
    assert info.value.exit_code == ExitCode.AUTH
    assert info.value.code == "refresh_token_reused"
    assert "kaic login" in (info.value.hint or "")
    assert "already used" in info.value.message
    assert rec.paths() == ["GET /v1/me", "POST /v1/auth/token"]
    assert persisted == []


def test_second_401_after_refresh_does_not_loop() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            return tokens("kaa_new_access_2", "kar_new_refresh_2")
        return err(401, "invalid_token", "token revoked")

    rec = Recorder(handler)
    with rec.client(credentials=session()) as client, pytest.raises(AuthRequired):
        AuthAPI(client).me()
    assert rec.paths() == ["GET /v1/me", "POST /v1/auth/token", "GET /v1/me"]


@pytest.mark.parametrize(
    "creds",
    [
        Credentials(access_token="kaic_api_token_value", kind="api"),
        Credentials(access_token="kaa_env_token_value", refresh_token=None, kind="session"),
    ],
)
def test_no_refresh_without_refresh_token(creds: Credentials) -> None:
    rec = Recorder(lambda r: err(401, "invalid_token", "API token expired", rid="r-9"))
    with rec.client(credentials=creds) as client, pytest.raises(AuthRequired) as info:
        JobsAPI(client).projects()
    assert rec.paths() == ["GET /v1/projects"]
    assert info.value.message == "API token expired (request id: r-9)"
    assert info.value.code == "invalid_token"
    assert "kaic_api_token_value" not in str(info.value)


def test_revoke_after_refresh_sends_rotated_token() -> None:
    seen: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            return tokens("kaa_new_access_2", "kar_new_refresh_2")
        if request.headers["Authorization"] == "Bearer kaa_old_access_1":
            return err(401, "invalid_token", "access token expired")
        seen.append(json.loads(request.content))
        return httpx.Response(204)

    rec = Recorder(handler)
    with rec.client(credentials=session()) as client:
        AuthAPI(client).revoke()
    assert seen == [{"refresh_token": "kar_new_refresh_2"}]


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_get_retried_on_gateway_errors_with_backoff(status: int) -> None:
    answers = [status, status, status, 200]

    def handler(request: httpx.Request) -> httpx.Response:
        code = answers.pop(0)
        return httpx.Response(200, json=[]) if code == 200 else err(code, "unavailable", "busy")

    rec = Recorder(handler)
    with rec.client() as client:
        assert JobsAPI(client).projects() == []
    assert len(rec.requests) == 4
    assert len(rec.sleeps) == 3
    for attempt, delay in enumerate(rec.sleeps):
        nominal = 0.5 * 2**attempt
        assert nominal / 2 <= delay <= nominal


def test_backoff_is_capped_and_gives_up() -> None:
    rec = Recorder(lambda r: err(503, "unavailable", "maintenance"))
    with rec.client(max_retries=6) as client, pytest.raises(Unreachable) as info:
        AuthAPI(client).me()
    assert len(rec.requests) == 7
    assert len(rec.sleeps) == 6
    assert all(d <= 8.0 for d in rec.sleeps)
    assert all(4.0 <= d <= 8.0 for d in rec.sleeps[-2:])
    assert info.value.exit_code == ExitCode.UNREACHABLE
    assert "maintenance" in info.value.message


def test_get_retried_on_connect_errors() -> None:
    failures = 2

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal failures
        if failures:
            failures -= 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(200, json=ME)

    rec = Recorder(handler)
    with rec.client() as client:
        assert AuthAPI(client).me().user == "alice"
    assert len(rec.requests) == 3
    assert len(rec.sleeps) == 2


def test_get_retried_on_read_timeout_but_plain_post_is_not() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    rec = Recorder(handler)
    with rec.client(max_retries=2, timeout=5) as client:
        with pytest.raises(Unreachable):
            AuthAPI(client).me()
        assert len(rec.requests) == 3
        rec.requests.clear()
        with pytest.raises(Unreachable) as info:
            TokensAPI(client).create("ci", ["jobs:read"], 30)
    assert len(rec.requests) == 1
    assert "did not answer within 5 s" in info.value.message


def test_429_retry_after_is_honoured_and_capped() -> None:
    answers = [
        err(429, "rate_limited", "slow down", **{"Retry-After": "7"}),
        err(429, "rate_limited", "slow down", **{"Retry-After": "600"}),
        httpx.Response(200, json=ME),
    ]
    rec = Recorder(lambda r: answers.pop(0))
    with rec.client() as client:
        AuthAPI(client).me()
    assert rec.sleeps == [7.0, 60.0]


def test_retry_after_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("junk") is None
    assert parse_retry_after(None) is None


def test_plain_post_not_retried_on_503() -> None:
    rec = Recorder(lambda r: err(503, "unavailable", "busy"))
    with rec.client() as client, pytest.raises(Unreachable):
        TokensAPI(client).create("ci", ["jobs:read"], 30)
    assert rec.paths() == ["POST /v1/tokens"]
    assert rec.sleeps == []


def test_plain_post_not_retried_on_connect_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    rec = Recorder(handler)
    with rec.client() as client, pytest.raises(Unreachable):
        AuthAPI(client).login_password("alice", "pw")
    assert len(rec.requests) == 1


def test_token_grant_429_is_rate_limited_not_retried() -> None:
    rec = Recorder(lambda r: err(429, "rate_limited", "too many attempts", **{"Retry-After": "30"}))
    with rec.client() as client, pytest.raises(RateLimited) as info:
        AuthAPI(client).login_password("alice", "pw")
    assert len(rec.requests) == 1
    assert rec.sleeps == []
    assert info.value.retry_after == 30.0
    assert info.value.exit_code == ExitCode.REJECTED
    assert info.value.code == "rate_limited"


def test_post_with_idempotency_key_is_retried() -> None:
    answers = [err(502, "bad_gateway", "upstream"), httpx.Response(201, json={"id": "42"})]
    rec = Recorder(lambda r: answers.pop(0))
    with rec.client() as client:
        response = client.request(
            "POST", "/v1/jobs", json={"name": "x"}, headers={"Idempotency-Key": "k-1"}
        )
    assert response.json() == {"id": "42"}
    assert len(rec.requests) == 2
    assert all(r.headers["Idempotency-Key"] == "k-1" for r in rec.requests)


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exit_code", "cls"),
    [
        (400, 6, Rejected),
        (403, 6, Rejected),
        (404, 4, NotFound),
        (409, 6, Rejected),
        (422, 6, Rejected),
        (418, 6, Rejected),
        (500, 1, ServerError),
        (502, 5, Unreachable),
        (503, 5, Unreachable),
        (504, 5, Unreachable),
        (501, 1, ServerError),
    ],
)
def test_error_mapping_uses_the_table(status: int, exit_code: int, cls: type) -> None:
    rec = Recorder(lambda r: err(status, "some_code", "the center says no", rid="abc123"))
    with rec.client(max_retries=0) as client, pytest.raises(cls) as info:
        client.request("GET", "/v1/whatever")
    assert type(info.value) is error_for_status(status)
    assert info.value.exit_code == exit_code
    assert info.value.code == "some_code"
    assert info.value.message == "the center says no (request id: abc123)"


def test_401_without_credentials_is_auth_required() -> None:
    rec = Recorder(lambda r: err(401, "invalid_credentials", "wrong user name or password"))
    with rec.client() as client, pytest.raises(AuthRequired) as info:
        AuthAPI(client).login_password("alice", "wrong")
    assert info.value.exit_code == 3
    assert info.value.code == "invalid_credentials"
    assert "wrong" not in json.dumps(info.value.message).replace("wrong user", "")


def test_non_json_error_body_gives_clean_error() -> None:
    html = "<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    rec = Recorder(lambda r: httpx.Response(502, text=html, headers={"Content-Type": "text/html"}))
    with rec.client(max_retries=0) as client, pytest.raises(Unreachable) as info:
        AuthAPI(client).me()
    assert "<html" not in info.value.message
    assert "HTTP 502 Bad Gateway" in info.value.message
    assert BASE in info.value.message


def test_fastapi_detail_shape_is_understood() -> None:
    rec = Recorder(lambda r: httpx.Response(404, json={"detail": "Not Found"}))
    with rec.client() as client, pytest.raises(NotFound) as info:
        AuthAPI(client).me()
    assert info.value.message == "Not Found"


def test_unreachable_names_the_url() -> None:
    # A port that was just free: nothing listens, so the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    sleeps: list[float] = []
    with (
        CenterClient(url, max_retries=1, sleep=sleeps.append) as client,
        pytest.raises(Unreachable) as info,
    ):
        HealthAPI(client).check()
    assert info.value.message == f"cannot reach the center at {url}: connection refused"
    assert info.value.exit_code == ExitCode.UNREACHABLE
    assert len(sleeps) == 1


def test_unexpected_response_shape_is_server_error() -> None:
    rec = Recorder(lambda r: httpx.Response(200, json={"nope": 1}, headers={"X-Request-ID": "q"}))
    with rec.client() as client, pytest.raises(ServerError) as info:
        AuthAPI(client).me()
    assert "GET /v1/me" in info.value.message
    assert "(request id: q)" in info.value.message


def test_create_token_validates_before_sending() -> None:
    rec = Recorder(lambda r: httpx.Response(500))
    with rec.client() as client, pytest.raises(UsageError):
        create_token(
            Session(client, BASE, None, "env", local=False), "bad name!", ["jobs:read"], 30
        )
    assert rec.requests == []


# -- typed endpoints with respx -----------------------------------------------------------------


@respx.mock(base_url=BASE, assert_all_called=True)
def test_typed_endpoints(respx_mock: respx.MockRouter) -> None:
    info = {
        "id": "t1",
        "name": "ci",
        "scopes": ["jobs:read"],
        "created_at": EXPIRES,
        "expires_at": EXPIRES,
    }
    health = respx_mock.get("/v1/health").respond(
        json={"version": "0.1.0", "executor": "local", "instance_id": "i"}
    )
    respx_mock.post("/v1/tokens").respond(201, json={**info, "token": "kaic_secret_value_1"})
    respx_mock.get("/v1/tokens").respond(json=[info])
    delete = respx_mock.delete("/v1/tokens/t%2F1").respond(204)
    respx_mock.get("/v1/projects").respond(
        json=[
            {
                "name": "ai-1",
                "gpu_hours_granted": 10,
                "gpu_hours_used": 4,
                "gpu_hours_remaining": 6,
            }
        ]
    )
    with CenterClient(BASE, credentials=session()) as client:
        assert HealthAPI(client).check().health.executor == "local"
        assert "Authorization" not in health.calls.last.request.headers
        assert TokensAPI(client).create("ci", ["jobs:read"], 7).token == "kaic_secret_value_1"
        assert [t.id for t in TokensAPI(client).all()] == ["t1"]
        TokensAPI(client).revoke("t/1")
        assert delete.calls.last.request.headers["Authorization"] == "Bearer kaa_old_access_1"
        assert JobsAPI(client).projects()[0].gpu_hours_remaining == 6


def test_login_password_sets_session_credentials() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            assert json.loads(request.content) == {
                "grant_type": "password",
                "username": "alice",
                "password": "hunter2-pw",
                "otp": "123456",
            }
            return tokens("kaa_fresh_access", "kar_fresh_refresh")
        assert request.headers["Authorization"] == "Bearer kaa_fresh_access"
        return httpx.Response(200, json=ME)

    rec = Recorder(handler)
    with rec.client() as client:
        granted = AuthAPI(client).login_password("alice", "hunter2-pw", otp="123456")
        assert granted.refresh_token == "kar_fresh_refresh"
        assert AuthAPI(client).me().user == "alice"
    assert client.credentials is not None
    assert client.credentials.kind == "session"


# -- debug log ----------------------------------------------------------------------------------


def test_debug_log_redacts_secrets() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/token":
            return tokens("kaa_fresh_access", "kar_fresh_refresh")
        return httpx.Response(200, json=ME, headers={"X-Request-ID": "rid-77"})

    rec = Recorder(handler)
    with rec.client() as client:
        AuthAPI(client).login_password("alice", "hunter2-pw", otp="123456")
        AuthAPI(client).me()
    text = "\n".join(rec.log)
    for secret in ("hunter2-pw", "123456", "kaa_fresh_access", "kar_fresh_refresh"):
        assert secret not in text
    assert len(rec.log) == 2
    assert rec.log[0].startswith(f"POST {BASE}/v1/auth/token")
    assert "[body: " in rec.log[0] and "password" not in rec.log[0]  # sizes, never bodies
    assert f"GET {BASE}/v1/me" in rec.log[1]
    assert "Bearer ***" in rec.log[1]
    assert "-> 200 in" in rec.log[1]
    assert "(request id: rid-77)" in rec.log[1]


# -- retry budget, TLS failures, plain http ------------------------------------------------------


def test_connection_refused_gets_two_quick_retries_then_names_url_and_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    rec = Recorder(handler)
    with rec.client() as client, pytest.raises(Unreachable) as info:
        AuthAPI(client).me()
    # Two retries, about 1.5 s in all at most: a typo'd URL fails fast. (Waiting commands
    # ride out longer outages with their own budget.)
    assert len(rec.requests) == 3
    assert len(rec.sleeps) == 2 and sum(rec.sleeps) <= 1.5
    assert info.value.message == f"cannot reach the center at {BASE}: connection refused"
    assert info.value.exit_code == ExitCode.UNREACHABLE


def test_connect_timeout_is_not_retried() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    rec = Recorder(handler)
    with rec.client() as client, pytest.raises(Unreachable) as info:
        AuthAPI(client).me()
    assert len(rec.requests) == 1 and rec.sleeps == []
    assert "connection timed out" in info.value.message


def _cert_failure(code: int, message: str) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        cause = ssl.SSLCertVerificationError(
            1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}"
        )
        cause.verify_code = code
        cause.verify_message = message
        raise httpx.ConnectError(str(cause), request=request) from cause

    return handler


@pytest.mark.parametrize(
    ("code", "message", "what", "hint"),
    [
        (
            20,
            "unable to get local issuer certificate",
            "unknown certificate authority",
            "--ca-bundle",
        ),
        (
            19,
            "self-signed certificate in certificate chain",
            "unknown certificate authority",
            "KAIC_CA_BUNDLE",
        ),
        (10, "certificate has expired", "outside its validity period", "renew"),
        (
            64,
            "IP address mismatch, certificate is not valid for '10.0.0.1'.",
            "another host name",
            "host name",
        ),
    ],
)
def test_certificate_failure_is_named_and_never_retried(
    code: int, message: str, what: str, hint: str
) -> None:
    rec = Recorder(_cert_failure(code, message))
    with rec.client() as client, pytest.raises(TlsError) as info:
        AuthAPI(client).me()
    assert len(rec.requests) == 1 and rec.sleeps == []  # the same every time: no retry
    err = info.value
    assert err.exit_code == ExitCode.UNREACHABLE
    assert "center.test" in err.message and what in err.message
    assert hint in (err.hint or "")


def test_plain_http_to_non_loopback_is_refused_before_any_request() -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=ME))
    with pytest.raises(UsageError) as info:
        CenterClient("http://center.test", transport=httpx.MockTransport(rec))
    assert rec.requests == []
    assert "--insecure-http" in (info.value.hint or "")


def test_plain_http_opt_out_warns_once_per_center() -> None:
    warned: list[str] = []
    rec = Recorder(lambda r: httpx.Response(200, json=ME))
    policy = TransportPolicy(insecure_http=True, insecure_http_from="KAIC_INSECURE_HTTP=1")
    for _ in range(2):
        with CenterClient(
            "http://warn-once.test",
            transport=httpx.MockTransport(rec),
            policy=policy,
            warn=warned.append,
        ) as client:
            assert AuthAPI(client).me().user == "alice"
    assert len(warned) == 1
    assert "plain http" in warned[0] and "KAIC_INSECURE_HTTP=1" in warned[0]


def test_plain_http_opt_out_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []
    monkeypatch.setenv("KAIC_INSECURE_HTTP", "1")
    with CenterClient("http://env-opt-out.test", warn=warned.append) as client:
        assert client.insecure_http
    assert len(warned) == 1


@pytest.mark.parametrize("bundle", ["missing.pem", "empty.pem", "."])
def test_unusable_ca_bundle_is_a_usage_error(
    bundle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    monkeypatch.setenv("KAIC_CA_BUNDLE", str(tmp_path / bundle))
    with pytest.raises(UsageError) as info:
        CenterClient(BASE)
    assert "KAIC_CA_BUNDLE" in info.value.message
    assert str(tmp_path) in info.value.message


def test_tls_connection_cut_short_is_transient_and_retried() -> None:
    """A center restarting mid-handshake ends the TLS connection early: retried like a reset,
    unlike a certificate failure."""
    answers: list[type[ssl.SSLError] | None] = [ssl.SSLEOFError, ssl.SSLEOFError, None]

    def handler(request: httpx.Request) -> httpx.Response:
        failure = answers.pop(0)
        if failure is None:
            return httpx.Response(200, json=ME)
        cause = failure(8, "EOF occurred in violation of protocol")
        raise httpx.ConnectError(str(cause), request=request) from cause

    rec = Recorder(handler)
    with rec.client() as client:
        assert AuthAPI(client).me().user == "alice"
    assert len(rec.requests) == 3
