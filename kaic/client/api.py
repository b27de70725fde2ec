"""`CenterClient`: the typed client of the center API (v1).

What it adds over plain httpx:

- the bearer header from the stored credentials, and **one transparent refresh** when the
  center answers 401 and a refresh token is at hand (the new pair goes to `on_refresh` so the
  caller can persist it before anything else happens);
- **transport security**: TLS verified by default (against a `--ca-bundle` /
  ``KAIC_CA_BUNDLE`` file, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, or certifi's bundle), and
  plain http refused to a center that is not loopback unless the user opted out
  (`kaic.config.check_plain_http`) — checked when the client is built, before any
  connection, so no password or token can leave by another path;
- **retries only where they are safe**: idempotent methods (and POSTs that carry an
  ``Idempotency-Key``) on connection failures (a short budget, see `CONNECT_RETRIES`), 429
  (honouring ``Retry-After``) and 502/503/504, with capped exponential backoff and jitter. A
  plain POST is never resent: a job submitted twice costs GPU hours (sfapi_client's lesson).
  TLS failures are never retried: they fail the same way every time;
- errors as `kaic.errors` types chosen by `error_for_status` (the one status -> exit code
  table), with the center's message, error code and request id;
- a request log for ``KAIC_DEBUG`` with every secret redacted.

httpx is imported here and nowhere on the CLI's start path; the CLI imports this module lazily.
"""

from __future__ import annotations

import contextlib
import email.utils
import http
import os
import random
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from kaic import __version__
from kaic.auth.credentials import Credentials
from kaic.redact import redact
from kaic.config import TransportPolicy, check_plain_http, transport_policy
from kaic.errors import (
    AuthRequired,
    KaicError,
    RateLimited,
    Rejected,
    ServerError,
    TlsError,
    Unreachable,
    UsageError,
    error_for_status,
)
from kaic.models import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenInfo,
    ErrorResponse,
    Health,
    Me,
    ProjectInfo,
    RevokeRequest,
    TokenRequest,
    TokenResponse,
)

M = TypeVar("M", bound=BaseModel)

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
RETRY_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0
IDEMPOTENCY_HEADER = "Idempotency-Key"
REQUEST_ID_HEADER = "X-Request-ID"

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

# Transport failures worth another try for an idempotent request. TLS failures and protocol
# misuse are excluded below: they fail the same way every time.
_RETRYABLE_TRANSPORT = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

#: plain-http centers already warned about in this process (the warning comes once)
_warned_plain_http: set[str] = set()


def backoff_delay(
    attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S
) -> float:
    """Delay before retry number `attempt` (0-based): base doubling, capped, "equal jitter".

    The result lies in [nominal/2, nominal] where nominal = min(cap, base * 2**attempt):
    jitter spreads clients that failed together, the floor keeps the backoff meaningful.
    """
    nominal = min(cap, base * (2**attempt))
    return nominal / 2 + random.uniform(0, nominal / 2)


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


def _is_idempotent(method: str, headers: Mapping[str, str]) -> bool:
    if method in IDEMPOTENT_METHODS:
        return True
    return method == "POST" and any(k.lower() == IDEMPOTENCY_HEADER.lower() for k in headers)


def _transport_reason(exc: httpx.TransportError) -> str:
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


def _plain_http_context() -> ssl.SSLContext:
    """A TLS context that is never used: for a plain-http center (the loopback local center)
    it spares loading the CA bundle, a third of `kaic jobs`' time. https keeps full checks."""
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def tls_context(policy: TransportPolicy) -> ssl.SSLContext:
    """The verifying TLS context for an https center; UsageError for an unusable CA bundle.

    Trusts, in this order: the policy's CA bundle (`--ca-bundle` / ``KAIC_CA_BUNDLE`` / the
    profile; it replaces the default CAs, as curl's ``--cacert`` does), ``SSL_CERT_FILE`` or
    ``SSL_CERT_DIR`` (the OpenSSL convention, honoured here whatever httpx version is
    installed), else certifi's bundle (httpx's default). Host names are always checked.
    """
    cafile: str | None = None
    capath: str | None = None
    if policy.ca_bundle:
        cafile, source = policy.ca_bundle, policy.ca_bundle_from or "--ca-bundle"
    elif os.environ.get("SSL_CERT_FILE"):
        cafile, source = os.environ["SSL_CERT_FILE"], "SSL_CERT_FILE"
    elif os.environ.get("SSL_CERT_DIR"):
        capath, source = os.environ["SSL_CERT_DIR"], "SSL_CERT_DIR"
    else:
        import certifi

        cafile, source = certifi.where(), "certifi"
    where = cafile or capath
    hint = f"point {source} at a readable PEM file of CA certificates, or unset it"
    if source == "--ca-bundle" or source.startswith("profile"):
        hint = "pass a readable PEM file of CA certificates with `kaic login --ca-bundle FILE`"
    if cafile is not None and os.path.isdir(cafile):
        raise UsageError(f"the CA bundle {cafile} (from {source}) is a directory", hint=hint)
    try:
        return ssl.create_default_context(cafile=cafile, capath=capath)
    except ssl.SSLError:  # before OSError, its base class
        raise UsageError(
            f"the CA bundle {where} (from {source}) holds no PEM CA certificate", hint=hint
        ) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read the CA bundle {where} (from {source}): {exc.strerror or exc}",
            hint=hint,
        ) from None


# A TLS connection cut short (a center restarting mid-handshake): as transient as a reset.
_TRANSIENT_SSL = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError)


def _ssl_failure(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a transport failure (httpx wraps it) when TLS itself failed — a
    certificate not trusted, no TLS on the port — and so will fail again every time."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return None if isinstance(current, _TRANSIENT_SSL) else current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


# OpenSSL's X509_V_ERR_* codes that users meet, as (what failed, how to fix it).
_EXPIRED = (9, 10)  # not yet valid, expired
_UNKNOWN_CA = (2, 18, 19, 20, 21)  # issuer unknown, self-signed, unable to verify
_WRONG_HOST = (62, 64)  # host name, IP address mismatch


def tls_error(exc: ssl.SSLError, base_url: str, policy: TransportPolicy) -> TlsError:
    """A clear error for a TLS failure with the center at `base_url`: what failed and how to
    fix it (for an unknown CA: give its certificate with `--ca-bundle`)."""
    from urllib.parse import urlsplit

    host = urlsplit(base_url).netloc
    against = (
        f" (checked against the CA bundle {policy.ca_bundle} from {policy.ca_bundle_from})"
        if policy.ca_bundle
        else ""
    )
    bundle_hint = (
        "if the center uses a private CA, give its certificate: `kaic login --center "
        f"{base_url} --ca-bundle ca.pem` (stored in the profile), or KAIC_CA_BUNDLE=ca.pem "
        "(SSL_CERT_FILE works too)"
    )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = (exc.verify_message or exc.reason or "verification failed").rstrip(".")
        if code in _EXPIRED:
            what, hint = (
                f"it is outside its validity period ({detail})",
                "the center's operators must renew the certificate; if this machine's clock "
                "is wrong, fix it (NTP)",
            )
        elif code in _WRONG_HOST:
            what, hint = (
                f"it was issued for another host name ({detail})",
                "use the host name the certificate names in the center URL",
            )
        elif code in _UNKNOWN_CA:
            what, hint = f"it is signed by an unknown certificate authority ({detail})", bundle_hint
        else:
            what, hint = f"verification failed ({detail})", bundle_hint
        return TlsError(
            f"the TLS certificate of the center at {host} is not trusted: {what}{against}",
            hint=hint,
        )
    reason = exc.reason or str(exc)
    return TlsError(
        f"TLS with the center at {host} failed: {reason}",
        hint="check that the center serves https on that port (a loopback center may be "
        "plain http://)",
    )


def _stderr_warning(text: str) -> None:
    print(f"warning: {text}", file=sys.stderr)


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
            verify=_plain_http_context() if plain else tls_context(self.policy),
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_S)),
            headers={"User-Agent": f"kaic/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
        )

    @property
    def transport_summary(self) -> str:
        """How requests travel, for `kaic doctor`: TLS and which CAs, or plain http."""
        if self.base_url.startswith("https://"):
            if self.policy.ca_bundle:
                cas = f"the CA bundle {self.policy.ca_bundle} ({self.policy.ca_bundle_from})"
            elif os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR"):
                cas = "SSL_CERT_FILE/SSL_CERT_DIR"
            else:
                cas = "the default CAs"
            return f"TLS, certificate verified against {cas}"
        if self.insecure_http:
            return f"plain http, NOT encrypted ({self.policy.insecure_http_from})"
        return "plain http on loopback"

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
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: bool = True,
    ) -> httpx.Response:
        """Send a request and return the (read) 2xx response; raise a KaicError otherwise.

        `auth=False` sends no bearer token and never refreshes (health, token grants).
        Retries follow the idempotency rules in the module docstring.
        """
        return self._request(
            method,
            path,
            params=params,
            body=(lambda: json) if json is not None else None,
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

    def parse(self, response: httpx.Response, model: type[M]) -> M:
        """Validate a JSON response body as `model` (a clean error if it does not fit)."""
        return self._parse(response, model)

    def parse_list(self, response: httpx.Response, model: type[M]) -> list[M]:
        """Validate a JSON array response body as a list of `model`."""
        return self._parse_list(response, model)

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
                raise self._error_from(response)
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
        idempotent = _is_idempotent(method, all_headers)
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
                self._log(request, None, started, attempt, failure=_transport_reason(exc))
                if idempotent and attempt < self._connect_retries and self._retryable(exc):
                    self._sleep(backoff_delay(attempt))
                    attempt += 1
                    continue
                raise self._unreachable(exc) from None
            self._log(request, response, started, attempt)
            if (
                idempotent
                and response.status_code in RETRY_STATUSES
                and attempt < self._max_retries
            ):
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                delay = (
                    min(retry_after, RETRY_AFTER_CAP_S)
                    if retry_after is not None
                    else backoff_delay(attempt)
                )
                response.close()
                self._sleep(delay)
                attempt += 1
                continue
            return response

    @staticmethod
    def _retryable(exc: httpx.TransportError) -> bool:
        if not isinstance(exc, _RETRYABLE_TRANSPORT) or isinstance(exc, httpx.ConnectTimeout):
            return False
        return _ssl_failure(exc) is None and "CERTIFICATE_VERIFY_FAILED" not in str(exc)

    def _refresh_after_401(self, response: httpx.Response, used_token: str) -> str:
        """Refresh once after a 401 and return the new access token, or raise AuthRequired."""
        creds = self._credentials
        if creds is None or not creds.refresh_token:
            # An API token or KAIC_TOKEN: nothing to renew it with. Say why, in the center's words.
            err = self._error_from(response)
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
            stored = shared.reload() if shared else None
            if stored is not None and stored.access_token != used_token:
                # Another kaic process refreshed first: refreshing again with the rotated
                # token would look like token theft and end the session.
                self._credentials = stored
                return stored.access_token
            try:
                granted = self.refresh(creds.refresh_token)
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

    # -- errors --------------------------------------------------------------------------------

    def _error_from(self, response: httpx.Response) -> KaicError:
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
            message = f"the center at {self.base_url} answered HTTP {status} {phrase}".rstrip()
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

    def _unreachable(self, exc: httpx.TransportError) -> Unreachable:
        failed_tls = _ssl_failure(exc)
        if failed_tls is not None:
            return tls_error(failed_tls, self.base_url, self.policy)
        reason = redact(_transport_reason(exc))
        if isinstance(exc, httpx.ReadTimeout):
            return Unreachable(
                f"the center at {self.base_url} did not answer within {self._timeout:g} s"
            )
        hint = None
        if self.base_url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
            # What a TLS port does with a plain-http request.
            hint = f"if the center serves https on that port, use {'https' + self.base_url[4:]}"
        return Unreachable(f"cannot reach the center at {self.base_url}: {reason}", hint=hint)

    # -- debug log -----------------------------------------------------------------------------

    def _log(
        self,
        request: httpx.Request,
        response: httpx.Response | None,
        started: float,
        attempt: int,
        *,
        failure: str | None = None,
    ) -> None:
        if self._debug_log is None:
            return
        elapsed_ms = (time.monotonic() - started) * 1000
        line = f"{request.method} {request.url}"
        auth = request.headers.get("Authorization")
        if auth:
            # Masked here, not left to the pattern-based redact(): any token shape is hidden.
            line += f" [authorization: {auth.split(' ', 1)[0]} ***]"
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key:
            line += f" [idempotency-key: {key}]"
        if request.content:
            # Sizes only: bodies carry passwords, tokens and job environments (HF_TOKEN=…)
            # that no pattern can be trusted to catch.
            line += f" [body: {len(request.content)} bytes]"
        if response is not None:
            rid = response.headers.get(REQUEST_ID_HEADER, "-")
            line += f" -> {response.status_code} in {elapsed_ms:.0f} ms (request id: {rid})"
        else:
            line += f" -> failed after {elapsed_ms:.0f} ms: {failure}"
        if attempt:
            line += f" [retry {attempt}]"
        self._debug_log(redact(line))

    # -- typed endpoints -----------------------------------------------------------------------

    def _parse(self, response: httpx.Response, model: type[M]) -> M:
        try:
            return model.model_validate(response.json())
        except ValueError as exc:  # JSON decode errors and pydantic ValidationError
            raise self._unexpected(response, exc) from None

    def _parse_list(self, response: httpx.Response, model: type[M]) -> list[M]:
        try:
            doc = response.json()
            if not isinstance(doc, list):
                raise ValueError("expected a JSON array")
            return [model.model_validate(item) for item in doc]
        except ValueError as exc:
            raise self._unexpected(response, exc) from None

    def _unexpected(self, response: httpx.Response, exc: Exception) -> ServerError:
        request = response.request
        first_line = redact(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        message = (
            f"unexpected answer from the center to {request.method} {request.url.path}: "
            f"{first_line}"
        )
        rid = response.headers.get(REQUEST_ID_HEADER)
        if rid:
            message += f" (request id: {rid})"
        return ServerError(message, hint="check that kaic and the center versions match")

    def health(self) -> Health:
        """`GET /v1/health` (no auth)."""
        return self._parse(self._request("GET", "/v1/health", auth=False), Health)

    def login_password(self, username: str, password: str, otp: str | None = None) -> TokenResponse:
        """Password (+ OTP) grant. On success the client uses the new session credentials.

        401 codes: ``invalid_credentials``, ``otp_required`` (ask for a code and try again);
        429 ``rate_limited`` raises RateLimited with `retry_after`. Never retried.
        """
        grant = TokenRequest(grant_type="password", username=username, password=password, otp=otp)
        response = self._request(
            "POST", "/v1/auth/token", body=lambda: grant.model_dump(exclude_none=True), auth=False
        )
        granted = self._parse(response, TokenResponse)
        self._credentials = Credentials.from_token_response(granted)
        return granted

    def refresh(self, refresh_token: str) -> TokenResponse:
        """Refresh grant: a new access token and a new (rotated) refresh token. Never retried."""
        grant = TokenRequest(grant_type="refresh_token", refresh_token=refresh_token, otp=None)
        response = self._request(
            "POST", "/v1/auth/token", body=lambda: grant.model_dump(exclude_none=True), auth=False
        )
        return self._parse(response, TokenResponse)

    def revoke(self, refresh_token: str | None = None) -> None:
        """`POST /v1/auth/revoke`: end the session (the refresh token's family).

        Without an argument, revokes the session of the client's own credentials — also when
        the request needed a transparent refresh first (then the rotated token is sent).
        """
        original = self._credentials.refresh_token if self._credentials else None

        def body() -> dict[str, Any]:
            token = refresh_token
            if token is None or token == original:
                token = self._credentials.refresh_token if self._credentials else refresh_token
            return RevokeRequest(refresh_token=token).model_dump(exclude_none=True)

        self._request("POST", "/v1/auth/revoke", body=body).close()

    def me(self) -> Me:
        """`GET /v1/me`: who the token belongs to."""
        return self._parse(self._request("GET", "/v1/me"), Me)

    def create_token(
        self, name: str, scopes: Iterable[str], expires_in_days: int = 30
    ) -> ApiTokenCreated:
        """`POST /v1/tokens`: a named, scoped, expiring API token (the secret is shown once)."""
        try:
            spec = ApiTokenCreate(name=name, scopes=list(scopes), expires_in_days=expires_in_days)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise UsageError(f"invalid API token request: {problems}") from None
        response = self._request("POST", "/v1/tokens", body=lambda: spec.model_dump(mode="json"))
        return self._parse(response, ApiTokenCreated)

    def list_tokens(self) -> list[ApiTokenInfo]:
        """`GET /v1/tokens`: the user's API tokens (never their secrets)."""
        return self._parse_list(self._request("GET", "/v1/tokens"), ApiTokenInfo)

    def revoke_token(self, token_id: str) -> None:
        """`DELETE /v1/tokens/{id}`."""
        self._request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}").close()

    def projects(self) -> list[ProjectInfo]:
        """`GET /v1/projects`: GPU-hour allocations of the user's projects."""
        return self._parse_list(self._request("GET", "/v1/projects"), ProjectInfo)
