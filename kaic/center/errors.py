"""The center's one error shape and the handlers that produce it everywhere.

Every failure, whether raised by a router (`ApiError`), by FastAPI (`HTTPException`,
validation) or by a bug (any exception), leaves the server as
`{"error": {"code", "message", "request_id"}}` with an `X-Request-ID` header.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection

from kaic.models import ErrorBody, ErrorResponse
from kaic.models.limits import MAX_REQUEST_BYTES

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


def request_id_of(request: HTTPConnection) -> str:
    """The id the request-id middleware assigned (a new one if it did not run: a WebSocket
    gets its own here)."""
    request_id = getattr(request.state, "request_id", None)
    if not isinstance(request_id, str):
        request_id = new_request_id()
        request.state.request_id = request_id
    return request_id


def error_response(
    request: HTTPConnection,
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


def _allowed_methods(request: Request) -> list[str]:
    """Every method the API document lists for the request's path (Starlette's own 405
    names only the first route that matched it: `POST` for `GET`+`POST /v1/tokens`)."""
    for template, path_item in request.app.openapi().get("paths", {}).items():
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            return sorted(method.upper() for method in path_item if method in _METHODS)
    return []


async def _http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _STATUS_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else "error")
    message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers or {})
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such resource: {request.method} {request.url.path}"
    if exc.status_code == 405:
        allowed = _allowed_methods(request)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
            message = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
    if exc.status_code == 400 and message == "There was an error parsing the body":
        message = "the request body is not valid JSON in UTF-8"
    return error_response(request, exc.status_code, code, message, headers)


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


_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

# What the error handlers answer, by status, wherever the status can occur (see
# `document_error_responses`).
_COMMON_ERRORS: dict[str, str] = {
    "400": "the request body is not valid JSON in UTF-8",
    "401": "no bearer token, or an unknown, revoked or expired one",
    "413": f"the request body is over {MAX_REQUEST_BYTES} bytes (refused before it is read)",
    "422": "a parameter or the body is invalid; the message names the field and the limit",
}
_PHRASES = {
    status: (HTTPStatus(int(status)).phrase, "Validation Error") for status in _COMMON_ERRORS
}
_REQUEST_ID_DOC = {
    "description": "the request's id (also in an error's body): quote it when reporting",
    "schema": {"type": "string"},
}
_REQUEST_ID_REF = {"$ref": f"#/components/headers/{REQUEST_ID_HEADER}"}
_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}


def document_error_responses(openapi: dict[str, Any]) -> dict[str, Any]:
    """Make an OpenAPI document say every error the server answers, where it can occur.

    FastAPI documents only what routes declare, and a 422 in its own shape. The handlers
    here answer 400 (a body that is not JSON) and 413 (a body over the limit) wherever a
    body is read, 422 wherever a parameter or a body is validated, 401 wherever a token is
    needed, all in the one error shape; and every response carries `X-Request-ID`.
    """
    for operation in _operations(openapi):
        responses: dict[str, Any] = operation.setdefault("responses", {})
        wanted: list[str] = []
        if operation.get("security"):
            wanted.append("401")
        if "requestBody" in operation:
            wanted += ["400", "413", "422"]
        if operation.get("parameters"):
            wanted.append("422")
        for status in wanted:
            responses.setdefault(status, {"description": _COMMON_ERRORS[status]})
        for status, response in responses.items():
            if status[:1] in ("4", "5"):
                response["content"] = _ERROR_CONTENT
                # FastAPI's default is the bare status phrase: say what it means here.
                if response.get("description") in (None, "", *_PHRASES.get(status, ())):
                    response["description"] = _COMMON_ERRORS.get(status, "an error")
            headers = response.setdefault("headers", {})
            headers.setdefault(REQUEST_ID_HEADER, _REQUEST_ID_REF)
            if status == "401":
                headers.setdefault(
                    "WWW-Authenticate",
                    {"description": "the Bearer challenge", "schema": {"type": "string"}},
                )
    components = openapi.setdefault("components", {})
    components.setdefault("headers", {})[REQUEST_ID_HEADER] = _REQUEST_ID_DOC
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 shape
        schemas.pop(unused, None)
    return openapi


def _operations(openapi: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        operation
        for path_item in openapi.get("paths", {}).values()
        for method, operation in path_item.items()
        if method in _METHODS
    ]


def install_openapi_errors(app: FastAPI) -> None:
    """Serve (and generate) the OpenAPI document with `document_error_responses` applied."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_error_responses(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way


def install_error_handlers(app: FastAPI) -> None:
    """Route every kind of failure through the one error shape."""
    app.add_exception_handler(ApiError, _api_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)
