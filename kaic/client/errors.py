"""What the center's answers and transport failures become: `kaic.errors` types.

The class comes from `error_for_status` (the one status -> exit code table); the message is
the center's own (its error shape: code, message, request id), or a plain sentence naming the
center and the status when something else answered (a proxy's HTML page is never echoed).
Everything quoted is redacted.
"""

from __future__ import annotations

import email.utils
import http
import re
from datetime import datetime, timezone

import httpx
from pydantic import ValidationError

from kaic.client.tls import TransportPolicy, ssl_failure, tls_error
from kaic.errors import KaicError, RateLimited, ServerError, Unreachable, error_for_status
from kaic.models import ErrorResponse
from kaic.redact import redact

REQUEST_ID_HEADER = "X-Request-ID"


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def transport_reason(exc: httpx.TransportError) -> str:
    """A short human reason: "connection refused", "name or service not known", ..."""
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.ReadTimeout):
        return "no answer in time (read timeout)"
    if isinstance(exc, httpx.WriteTimeout):
        return "sending the request timed out"
    if isinstance(exc, httpx.PoolTimeout):
        return "no free connection in time"
    text = str(exc).strip() or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate verification failed"
    return text[:1].lower() + text[1:]


def error_from_response(response: httpx.Response, base_url: str) -> KaicError:
    """The KaicError for a non-2xx response: class from the status table, center's words."""
    status = response.status_code
    request_id = response.headers.get(REQUEST_ID_HEADER)
    code: str | None = None
    message: str | None = None
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        try:
            parsed = ErrorResponse.model_validate(doc)
        except ValidationError:
            detail = doc.get("detail")  # FastAPI's default shape, before custom handlers
            if isinstance(detail, str) and detail:
                message = detail
        else:
            code = parsed.error.code
            message = parsed.error.message
            request_id = parsed.error.request_id or request_id
    if not message:
        # Not the center's error shape: often a proxy's HTML page. Do not echo the body.
        try:
            phrase = response.reason_phrase or http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        message = f"the center at {base_url} answered HTTP {status} {phrase}".rstrip()
        if status in (502, 503, 504):
            message += " (it, or a proxy in front of it, is unavailable)"
    message = redact(message)
    if request_id:
        message = f"{message} (request id: {redact(request_id)})"
    cls = error_for_status(status)
    if issubclass(cls, RateLimited):
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return cls(message, retry_after=retry_after, code=code)
    return cls(message, code=code)


def unreachable(
    exc: httpx.TransportError, base_url: str, policy: TransportPolicy, timeout: float
) -> Unreachable:
    """The error for a request that got no answer: a TLS failure said as such, else what
    went wrong on the way (refused, timed out, ...)."""
    failed_tls = ssl_failure(exc)
    if failed_tls is not None:
        return tls_error(failed_tls, base_url, policy)
    reason = redact(transport_reason(exc))
    if isinstance(exc, httpx.ReadTimeout):
        return Unreachable(f"the center at {base_url} did not answer within {timeout:g} s")
    hint = None
    if base_url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
        # What a TLS port does with a plain-http request.
        hint = f"if the center serves https on that port, use {'https' + base_url[4:]}"
    return Unreachable(f"cannot reach the center at {base_url}: {reason}", hint=hint)


def unexpected(response: httpx.Response, exc: Exception) -> ServerError:
    """A 2xx answer that does not fit the model: the versions of kaic and the center differ."""
    request = response.request
    first_line = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    message = (
        f"unexpected answer from the center to {request.method} {request.url.path}: {first_line}"
    )
    rid = response.headers.get(REQUEST_ID_HEADER)
    if rid:
        message += f" (request id: {rid})"
    return ServerError(message, hint="check that kaic and the center versions match")
