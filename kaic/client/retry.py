"""When `CenterClient` may send a request again, and how long it waits first.

Only what is safe is retried. A request may be sent twice when its method is idempotent or
it is a POST carrying an ``Idempotency-Key`` (the center then answers a repeat with the first
result); a plain POST is never resent: a job submitted twice costs GPU hours (sfapi_client's
lesson). Such a request is retried on an answer that asks to come back — 429 (honouring
``Retry-After``, capped), 502/503/504 — and on a transport failure that another try may cure
(refused, reset, a DNS hiccup, no answer in time). TLS failures and a connect *timeout* are
not: the first fail the same way every time, and the connect timeout already was the patience.
The waits are capped exponential backoff with jitter.

How many tries a request gets is the client's business (`max_retries`, `connect_retries`);
this module says which requests, which failures and how long. Imported only by the client
modules, never on the CLI's start path (httpx).
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import httpx

from kaic.client.errors import parse_retry_after
from kaic.client.tls import ssl_failure

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0
IDEMPOTENCY_HEADER = "Idempotency-Key"

# Transport failures worth another try. TLS failures and protocol misuse are excluded in
# `retryable_failure`: they fail the same way every time.
_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def is_idempotent(method: str, headers: Mapping[str, str]) -> bool:
    """Whether a request may be sent twice: an idempotent method, or a POST whose
    ``Idempotency-Key`` (in `headers`, any case) lets the center recognise the repeat."""
    if method in IDEMPOTENT_METHODS:
        return True
    return method == "POST" and any(k.lower() == IDEMPOTENCY_HEADER.lower() for k in headers)


def retryable_failure(exc: httpx.TransportError) -> bool:
    """Whether a request that got no answer, failing with `exc`, is worth another try."""
    if not isinstance(exc, _RETRYABLE_TRANSPORT) or isinstance(exc, httpx.ConnectTimeout):
        return False
    return ssl_failure(exc) is None and "CERTIFICATE_VERIFY_FAILED" not in str(exc)


def retry_delay(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0-based) after `response` (a status in
    `RETRY_STATUSES`): its ``Retry-After``, capped at `RETRY_AFTER_CAP_S` so a center cannot
    park the client for an hour, else `backoff_delay(attempt)`."""
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if retry_after is not None:
        return min(retry_after, RETRY_AFTER_CAP_S)
    return backoff_delay(attempt)


def backoff_delay(
    attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S
) -> float:
    """Delay before retry number `attempt` (0-based): base doubling, capped, "equal jitter".

    The result lies in [nominal/2, nominal] where nominal = min(cap, base * 2**attempt):
    jitter spreads clients that failed together, the floor keeps the backoff meaningful.
    """
    nominal = min(cap, base * (2**attempt))
    return nominal / 2 + random.uniform(0, nominal / 2)
