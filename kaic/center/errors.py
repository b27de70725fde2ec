"""The center's one error shape and the handlers that produce it everywhere.

Every failure, whether raised by a router (`ApiError`), by FastAPI (`HTTPException`,
validation) or by a bug (any exception), leaves the server as
`{"error": {"code", "message", "request_id"}}` with an `X-Request-ID` header.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kaic.models import ErrorBody, ErrorResponse

logger = logging.getLogger("kaic.center")

REQUEST_ID_HEADER = "X-Request-ID"

# Codes for HTTP errors raised by the framework itself (unknown route, wrong method, ...).
_STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "invalid_token",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    429: "rate_limited",
}


class ApiError(Exception):
    """An error a router answers with: `raise ApiError(401, "invalid_token", "...")`."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


def new_request_id() -> str:
    """A fresh random request id."""
    return "req_" + secrets.token_hex(8)


def request_id_of(request: Request) -> str:
    """The id the request-id middleware assigned (a new one if it did not run)."""
    request_id = getattr(request.state, "request_id", None)
    if not isinstance(request_id, str):
        request_id = new_request_id()
        request.state.request_id = request_id
    return request_id


def error_response(
    request: Request,
    status_code: int,
    code: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A JSON response in the one error shape, carrying the request id."""
    request_id = request_id_of(request)
    body = ErrorResponse(error=ErrorBody(code=code, message=message, request_id=request_id))
    all_headers = {**(headers or {}), REQUEST_ID_HEADER: request_id}
    return JSONResponse(body.model_dump(mode="json"), status_code=status_code, headers=all_headers)


def describe_validation_errors(errors: Sequence[Any]) -> str:
    """A one-line message naming each offending field, e.g. `body.name: Field required`."""
    parts: list[str] = []
    for error in errors[:5]:
        loc = [str(part) for part in error.get("loc", ())]
        field = ".".join(loc) if loc else "request"
        parts.append(f"{field}: {error.get('msg', 'invalid value')}")
    if len(errors) > 5:
        parts.append(f"and {len(errors) - 5} more")
    return "invalid request: " + "; ".join(parts)


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(request, exc.status_code, exc.code, exc.message, exc.headers)


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such resource: {request.method} {request.url.path}"
    return error_response(request, exc.status_code, code, message, exc.headers)


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(
        request, 422, "invalid_request", describe_validation_errors(list(exc.errors()))
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Starlette runs this handler outside all middleware, so the request-id header is set
    # here (error_response does) rather than by the middleware.
    request_id = request_id_of(request)
    logger.error(
        "unhandled error in %s %s (request %s)",
        request.method,
        request.url.path,
        request_id,
        exc_info=exc,
    )
    return error_response(
        request, 500, "internal", f"internal server error; quote request id {request_id}"
    )


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the one error shape."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
