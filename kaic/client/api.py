"""`CenterClient`: the one transport of the center API (v1). No endpoint lives here: each
API area has its module beside this one (`auth`, `tokens`, `jobs`, `staging`, `logs`,
`health`), built on `request`, `stream` and `parse`.

What it adds over plain httpx:

- the bearer header from the stored credentials, and **one transparent refresh** when the
  center answers 401 and a refresh token is at hand (the new pair goes to `on_refresh` so the
  caller can persist it before anything else happens);
- **transport security** (`kaic.client.tls`): TLS verified by default, plain http refused to
  a center that is not loopback unless the user opted out — checked when the client is
  built, before any connection;
- **retries only where they are safe** (`kaic.client.retry`: which requests and failures,
  how long to wait): idempotent methods (and POSTs that carry an ``Idempotency-Key``) on
  connection failures (a short budget, see `CONNECT_RETRIES`), 429 (honouring
  ``Retry-After``) and 502/503/504, with capped exponential backoff and jitter. A plain POST
  is never resent: a job submitted twice costs GPU hours. TLS failures are never retried;
- errors as `kaic.errors` types (`kaic.client.errors`: the center's message, error code and
  request id);
- a request log for ``KAIC_DEBUG`` with every secret redacted (`kaic.client.request_log`).

The request path itself — auth, the one refresh, the loop that asks the retry policy — stays
here, in one piece. httpx is imported here and by the client modules beside this one, never
on the CLI's start path: the CLI imports this module lazily.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel

from kaic import __version__
from kaic.auth.credentials import Credentials
from kaic.client.errors import (
    error_from_response,
    transport_reason,
    unexpected,
    unreachable,
)
from kaic.client.request_log import exchange_line
from kaic.client.retry import (
    RETRY_STATUSES,
    backoff_delay,
    is_idempotent,
    retry_delay,
    retryable_failure,
)
from kaic.client.tls import (
    TransportPolicy,
    check_plain_http,
    describe_transport,
    plain_http_context,
    tls_context,
    transport_policy,
)
from kaic.errors import AuthRequired, RateLimited, Rejected
from kaic.models import TokenRequest, TokenResponse
from kaic.redact import redact

M = TypeVar("M", bound=BaseModel)

#: Retries of an idempotent request after a transport failure (connection refused or reset,
#: a DNS hiccup, no answer in time): two quick ones, 0.75–1.5 s in all, then exit 5 naming the
#: URL and the reason. Why so few: a person at a terminal with a typo'd URL, or a center that
#: is down, should hear it at once; retrying for longer (it was ~6 s) rode out no real
#: restart anyway (those take 10–20 s). The commands that must ride out a restart — `logs -f`,
#: `wait`, `submit --wait/--follow` — do not lean on this: they wrap each request in their own
#: outage budget (`kaic.client.logs.RECONNECT_BUDGET_S`, 5 minutes). A one-shot command in CI
#: exits 5, which a pipeline can retry at its level. A connect *timeout* is not retried at all:
#: the 10 s connect timeout already was the patience. An answer that asks to come back (429,
#: 502/503/504: the center or its proxy is there) keeps `max_retries`.
CONNECT_RETRIES = 2
CONNECT_TIMEOUT_S = 10.0

#: plain-http centers already warned about in this process (the warning comes once)
_warned_plain_http: set[str] = set()


def _stderr_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


def _expired(creds: Credentials) -> bool:
    """Whether `creds`' access token has expired by this machine's clock."""
    return creds.expires_at is not None and creds.expires_at <= datetime.now(timezone.utc)


class SharedRefresh(Protocol):
    """Coordinates refreshes of one stored session between kaic processes."""

    def lock(self) -> contextlib.AbstractContextManager[object]:
        """Held while checking the store and refreshing (e.g. a file lock per profile)."""
        ...

    def reload(self) -> Credentials | None:
        """The credentials as stored now (another process may have refreshed them)."""
        ...


class CenterClient:
    """Client of one center. Use as a context manager, or call `close()`.

    `credentials` supply the bearer token; when a request gets 401 and they hold a refresh
    token, the client refreshes once, calls `on_refresh(new_credentials)` and repeats the
    request. `policy` says which CAs to trust and whether plain http to a non-loopback host
    was opted into (default: from the environment only); a refused center raises UsageError
    here, before any connection, and an opted-in one is announced once through `warn`
    (default: stderr). `transport` (an httpx transport) and `sleep` exist so tests need no
    network and no waiting; `debug_log` receives one redacted line per HTTP exchange.
    """

    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        on_refresh: Callable[[Credentials], None] | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30,
        max_retries: int = 4,
        connect_retries: int = CONNECT_RETRIES,
        sleep: Callable[[float], None] = time.sleep,
        debug_log: Callable[[str], None] | None = None,
        shared_refresh: SharedRefresh | None = None,
        policy: TransportPolicy | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.policy = policy if policy is not None else transport_policy()
        #: plain http to a non-loopback host, allowed by the user's opt-out
        self.insecure_http = check_plain_http(self.base_url, self.policy)
        if self.insecure_http and self.base_url not in _warned_plain_http:
            _warned_plain_http.add(self.base_url)
            (warn or _stderr_warning)(
                f"talking to the center at {self.base_url} over plain http "
                f"({self.policy.insecure_http_from}): passwords and tokens cross the network "
                "unencrypted; switch to https"
            )
        self._shared_refresh = shared_refresh
        self._credentials = credentials
        self._on_refresh = on_refresh
        self._max_retries = max(0, max_retries)
        # `max_retries` caps every kind of retry; transport failures get fewer still.
        self._connect_retries = max(0, min(connect_retries, max_retries))
        self._sleep = sleep
        self._debug_log = debug_log
        self._timeout = timeout
        # Serialises refreshes: with rotating refresh tokens, two concurrent refreshes of the
        # same token look like token theft to the center and revoke the whole session.
        self._refresh_lock = threading.Lock()
        plain = self.base_url.startswith("http://")
        self._http = httpx.Client(
            base_url=self.base_url,
            verify=plain_http_context() if plain else tls_context(self.policy),
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            headers={"User-Agent": f"kaic/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )

    @property
    def transport_summary(self) -> str:
        """How requests travel, for `kaic doctor`: TLS and which CAs, or plain http."""
        return describe_transport(self.base_url, self.policy, self.insecure_http)

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CenterClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def credentials(self) -> Credentials | None:
        """The credentials in use (replaced after a refresh or a password login)."""
        return self._credentials

    @credentials.setter
    def credentials(self, value: Credentials | None) -> None:
        self._credentials = value

    def set_credentials(self, credentials: Credentials | None) -> None:
        """Use `credentials` from now on (same as assigning `client.credentials`)."""
        self._credentials = credentials

    # -- generic requests ----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        body: Callable[[], Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Send a request and return the (read) 2xx response; raise a KaicError otherwise.

        `auth=False` sends no bearer token and never refreshes (health, token grants).
        `body`, instead of `json`, computes the JSON body for each attempt (a request repeated
        after a refresh may have to name the new tokens). Retries follow the idempotency rules
        in the module docstring.
        """
        return self._request(
            method,
            path,
            params=params,
            body=body if body is not None else (lambda: json) if json is not None else None,
            content=content,
            headers=headers,
            auth=auth,
        )

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[httpx.Response]:
        """Like `request`, but the 2xx response body is left unread for `iter_raw()`.

        Auth, the one refresh on 401, retries before the first byte and error mapping are
        the same as for `request`; failures while reading the body are the caller's to handle.
        """
        response = self._request(method, path, params=params, headers=headers, stream=True)
        try:
            yield response
        finally:
            response.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Callable[[], Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
        stream: bool = False,
    ) -> httpx.Response:
        # `body` is a callable so a request repeated after a refresh can see the new tokens.
        method = method.upper()
        token = self._credentials.access_token if auth and self._credentials else None
        send: dict[str, Any] = {
            "params": params,
            "body": body,
            "content": content,
            "headers": headers,
            "stream": stream,
        }
        response = self._send_with_retries(method, path, token=token, **send)
        if response.status_code == 401 and token is not None:
            new_token = self._refresh_after_401(response, token)
            response.close()
            response = self._send_with_retries(method, path, token=new_token, **send)
        if response.is_error:
            try:
                if stream:
                    response.read()
                raise error_from_response(response, self.base_url)
            finally:
                response.close()
        return response

    def _send_with_retries(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None,
        body: Callable[[], Any] | None,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        token: str | None,
        stream: bool,
    ) -> httpx.Response:
        all_headers: dict[str, str] = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        idempotent = is_idempotent(method, all_headers)
        attempt = 0
        while True:
            request = self._http.build_request(
                method,
                path,
                params=params,
                json=body() if body is not None else None,
                content=content,
                headers=all_headers,
            )
            started = time.monotonic()
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                self._log(request, None, started, attempt, failure=transport_reason(exc))
                if idempotent and attempt < self._connect_retries and retryable_failure(exc):
                    self._sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                raise unreachable(exc, self.base_url, self.policy, self._timeout) from None
            self._log(request, response, started, attempt)
            if (
                idempotent
                and response.status_code in RETRY_STATUSES
                and attempt < self._max_retries
            ):
                delay = retry_delay(response, attempt)
                response.close()
                self._sleep(delay)
                attempt += 1
                continue
            return response

    def refresh_after_401(self, response: httpx.Response, used_token: str) -> str:
        """The one refresh after a 401 that did not come through `request` (a WebSocket
        upgrade, `kaic.client.interactive`): the new access token, or AuthRequired."""
        return self._refresh_after_401(response, used_token)

    def _refresh_after_401(self, response: httpx.Response, used_token: str) -> str:
        """Refresh once after a 401 and return the new access token, or raise AuthRequired."""
        creds = self._credentials
        if creds is None or not creds.refresh_token:
            # An API token or KAIC_TOKEN: nothing to renew it with. Say why, in the center's words.
            err = error_from_response(response, self.base_url)
            hint = (
                "create a new API token with `kaic token create` or run `kaic login`"
                if creds is not None and creds.kind == "api"
                else "run `kaic login`"
            )
            raise AuthRequired(err.message, hint=hint, code=err.code)
        shared = self._shared_refresh
        with self._refresh_lock, shared.lock() if shared else contextlib.nullcontext():
            current = self._credentials
            if current is not None and current.access_token != used_token:
                # Another thread refreshed while this request was in flight.
                return current.access_token
            refresh_token = creds.refresh_token
            stored = shared.reload() if shared else None
            if stored is not None and stored.access_token != used_token:
                # Another kaic process refreshed first: refreshing again with the rotated
                # token would look like token theft and end the session. Its access token
                # may itself have expired meanwhile (short-lived tokens, a slow machine):
                # then renew with *its* refresh token, the newest, which this lock makes ours.
                self._credentials = stored
                if not _expired(stored) or not stored.refresh_token:
                    return stored.access_token
                refresh_token = stored.refresh_token
            try:
                granted = self._refresh_grant(refresh_token)
            except RateLimited:
                raise
            except (AuthRequired, Rejected) as exc:
                raise AuthRequired(
                    f"your session has expired and could not be renewed: {exc.message}",
                    hint="run `kaic login`",
                    code=exc.code,
                ) from None
            new = Credentials.from_token_response(granted)
            self._credentials = new
            if self._on_refresh is not None:
                self._on_refresh(new)
            return new.access_token

    # -- debug log -----------------------------------------------------------------------------

    def log_line(self, line: str) -> None:
        """One line of the request log (KAIC_DEBUG), redacted, for an exchange that did not
        go through `request` (a WebSocket upgrade)."""
        if self._debug_log is not None:
            self._debug_log(redact(line))

    def _log(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        attempt: int,
        *,
        failure: str | None = None,
    ) -> None:
        if self._debug_log is not None:
            elapsed_ms = (time.monotonic() - started) * 1000
            self._debug_log(
                exchange_line(
                    request, response, elapsed_ms=elapsed_ms, attempt=attempt, failure=failure
                )
            )

    # -- parsing answers, and the refresh grant ---------------------------------------------

    def parse(self, response: httpx.Response, model: type[M]) -> M:
        """Validate a JSON response body as `model` (a clean error if it does not fit)."""
        try:
            return model.model_validate(response.json())
        except ValueError as exc:  # JSON decode errors and pydantic ValidationError
            raise unexpected(response, exc) from None

    def parse_list(self, response: httpx.Response, model: type[M]) -> list[M]:
        """Validate a JSON array response body as a list of `model`."""
        try:
            doc = response.json()
            if not isinstance(doc, list):
                raise ValueError("expected a JSON array")
            return [model.model_validate(item) for item in doc]
        except ValueError as exc:
            raise unexpected(response, exc) from None

    def _refresh_grant(self, refresh_token: str) -> TokenResponse:
        """The refresh grant behind the transparent refresh: a new access token and a new
        (rotated) refresh token. Never retried (a POST without an Idempotency-Key)."""
        grant = TokenRequest(grant_type="refresh_token", refresh_token=refresh_token, otp=None)
        response = self._request(
            "POST", "/v1/auth/token", body=lambda: grant.model_dump(exclude_none=True), auth=False
        )
        return self.parse(response, TokenResponse)
