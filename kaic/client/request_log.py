"""The request log of ``KAIC_DEBUG``: one line per HTTP exchange of `CenterClient`, with
every secret hidden.

A user pastes this log into a bug report, so nothing secret may reach it. The bearer token is
masked by position, whatever its shape; bodies are given as sizes only, since they carry
passwords, tokens and job environments (``HF_TOKEN=…``) that no pattern can be trusted to
catch; and the whole line still goes through `kaic.redact.redact` for what the URL may hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaic.client.errors import REQUEST_ID_HEADER
from kaic.client.retry import IDEMPOTENCY_HEADER
from kaic.redact import redact

if TYPE_CHECKING:
    import httpx


def exchange_line(
    request: httpx.Request,
    response: httpx.Response | None,
    *,
    elapsed_ms: float,
    attempt: int,
    failure: str | None = None,
) -> str:
    """The log line, redacted, for `request` and its `response` — or, when there was none,
    the `failure` (why it got no answer). `attempt` > 0 marks a retry."""
    line = f"{request.method} {request.url}"
    auth = request.headers.get("Authorization")
    if auth:
        # Masked here, not left to the pattern-based redact(): any token shape is hidden.
        line += f" [authorization: {auth.split(' ', 1)[0]} ***]"
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key:
        line += f" [idempotency-key: {key}]"
    if request.content:  # sizes only, never bodies (see above)
        line += f" [body: {len(request.content)} bytes]"
    if response is not None:
        rid = response.headers.get(REQUEST_ID_HEADER, "-")
        line += f" -> {response.status_code} in {elapsed_ms:.0f} ms (request id: {rid})"
    else:
        line += f" -> failed after {elapsed_ms:.0f} ms: {failure}"
    if attempt:
        line += f" [retry {attempt}]"
    return redact(line)
