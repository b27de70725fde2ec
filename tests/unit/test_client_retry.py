"""The retry policy and the request log on their own, without a client: which requests and
failures are retried, how long the waits are, and what a log line hides."""

from __future__ import annotations

import ssl

import httpx
import pytest

from kaic.client.request_log import exchange_line
from kaic.client.retry import backoff_delay, is_idempotent, retry_delay, retryable_failure

URL = "https://center.test/v1/me"


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {}, True),
        ("DELETE", {}, True),
        ("POST", {}, False),
        ("POST", {"idempotency-key": "k-1"}, True),
        ("PATCH", {"Idempotency-Key": "k-1"}, False),
    ],
)
def test_which_requests_may_be_sent_twice(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert is_idempotent(method, headers) is expected


def test_which_transport_failures_are_retried() -> None:
    request = httpx.Request("GET", URL)
    assert retryable_failure(httpx.ConnectError("[Errno 111] Connection refused", request=request))
    assert retryable_failure(httpx.ReadTimeout("timed out", request=request))
    assert not retryable_failure(httpx.ConnectTimeout("timed out", request=request))
    assert not retryable_failure(httpx.UnsupportedProtocol("ftp", request=request))
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    try:
        raise httpx.ConnectError(str(cause), request=request) from cause
    except httpx.ConnectError as exc:
        assert not retryable_failure(exc)


def test_retry_after_is_honoured_capped_or_replaced_by_backoff() -> None:
    assert retry_delay(httpx.Response(429, headers={"Retry-After": "7"}), 0) == 7.0
    assert retry_delay(httpx.Response(429, headers={"Retry-After": "600"}), 0) == 60.0
    assert 1.0 <= retry_delay(httpx.Response(503), 2) <= 2.0  # nominal 0.5 * 2**2


def test_backoff_delay_bounds() -> None:
    for attempt in range(10):
        nominal = min(8.0, 0.5 * 2**attempt)
        for _ in range(20):
            assert nominal / 2 <= backoff_delay(attempt) <= nominal


def test_log_line_hides_token_and_body() -> None:
    request = httpx.Request(
        "POST",
        URL,
        headers={"Authorization": "Bearer opaque-token-of-any-shape", "Idempotency-Key": "k-1"},
        json={"password": "hunter2-pw"},
    )
    response = httpx.Response(201, headers={"X-Request-ID": "rid-7"})
    line = exchange_line(request, response, elapsed_ms=12.4, attempt=1)
    assert line == (
        f"POST {URL} [authorization: Bearer ***] [idempotency-key: k-1] "
        f"[body: {len(request.content)} bytes] -> 201 in 12 ms (request id: rid-7) [retry 1]"
    )


def test_log_line_of_a_request_without_answer() -> None:
    line = exchange_line(
        httpx.Request("GET", URL), None, elapsed_ms=3.0, attempt=0, failure="connection refused"
    )
    assert line == f"GET {URL} -> failed after 3 ms: connection refused"
