"""The reference center's FastAPI application factory."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kaic import __version__
from kaic.center.errors import (
    REQUEST_ID_HEADER,
    error_response,
    install_error_handlers,
    install_openapi_errors,
    new_request_id,
)
from kaic.center.executors import registry as executor_registry
from kaic.center.executors.base import Executor
from kaic.center.files import HashingSlots
from kaic.center.interactive.registry import SessionLimits, SessionRegistry
from kaic.center.jobs.logs import job_log_hub
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.jobs.service import JobService
from kaic.center.metrics.service import MetricsService
from kaic.center.ratelimit import LoginRateLimiter
from kaic.center.routers import (
    auth,
    health,
    interactive,
    jobs,
    me,
    partitions,
    projects,
    staging,
    tokens,
)
from kaic.center.routers import metrics as metrics_routes
from kaic.center.settings import CenterSettings
from kaic.center.ssh_ca import UserCA
from kaic.center.store import Store
from kaic.models.limits import MAX_REQUEST_BYTES, MAX_SCRIPT_LENGTH

# An incoming request id is echoed only when it is short and plain, so it cannot inject
# anything into headers or logs.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestIdMiddleware:
    """Give every request an id (`request.state.request_id`) and answer it in `X-Request-ID`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER.lower().encode())
        text = incoming.decode("latin-1") if incoming else ""
        request_id = text if _SANE_REQUEST_ID.match(text) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def body_too_large_message(max_bytes: int) -> str:
    """What a 413 says: the limit, and where large data belongs instead."""
    return (
        f"request body too large: at most {max_bytes} bytes; a job's script may have at "
        f"most {MAX_SCRIPT_LENGTH} characters, so keep large data in files on center "
        "storage (`kaic data push`)"
    )


class BodySizeLimitMiddleware:
    """Refuse a request body over `max_bytes` with 413 before it is read whole.

    A `Content-Length` over the limit is answered at once, nothing read. A chunked body has
    no length up front: it is counted as the app reads it, and the read that passes the
    limit raises a 413 `HTTPException`, which FastAPI re-raises from its body parsing and
    the error handlers render (uvicorn discards the rest of the body).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            response = error_response(
                Request(scope), 413, "too_large", body_too_large_message(self.max_bytes)
            )
            await response(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, body_too_large_message(self.max_bytes))
            return message

        await self.app(scope, counted_receive, send)


def make_executor(settings: CenterSettings) -> Executor:
    """The executor `settings.executor` names, as its registry entry builds it."""
    return executor_registry.build(settings)


def create_app(settings: CenterSettings) -> FastAPI:
    """Build a center app over `settings.state_dir`; all state lives on `app.state`."""
    store = Store(settings.state_dir, now=settings.now)
    scheduler = Scheduler(store, settings, make_executor(settings))
    # Interactive sessions end with their job: the ledger tells the registry.
    sessions = SessionRegistry(
        SessionLimits(
            exec_per_job=settings.exec_sessions_per_job,
            exec_per_user=settings.exec_sessions_per_user,
            forward_per_job=settings.forwards_per_job,
            forward_per_user=settings.forwards_per_user,
        )
    )
    scheduler.ledger.on_job_end(sessions.job_ended)
    # Log followers wait on one watcher per log; the ledger tells it when the job ends.
    log_hub = job_log_hub(scheduler.jobs)
    scheduler.ledger.on_job_end(log_hub.job_ended)
    # A GPU job's efficiency is kept with it when it ends (every way, after a restart too).
    metrics = MetricsService(scheduler.jobs, settings.state_dir)
    scheduler.ledger.on_job_end(metrics.job_ended)
    user_ca = UserCA(settings.state_dir)
    sftp_endpoint = None
    if settings.sftp_port is not None:
        # Imported only when on: paramiko is not needed otherwise.
        from kaic.center.sftp import EmbeddedSftp

        sftp_endpoint = EmbeddedSftp(settings, store, user_ca)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Re-attaches (or finalises) jobs an earlier center left running.
        scheduler.start()
        try:
            if sftp_endpoint is not None:
                sftp_endpoint.start()
            yield
        finally:
            sessions.end_all("the center shut down")
            if sftp_endpoint is not None:
                sftp_endpoint.stop()
            # Like a SIGTERM'd center: running jobs keep running for the next one to re-attach.
            scheduler.shutdown(kill_jobs=False)
            store.close()

    app = FastAPI(
        title="kaic center",
        version=__version__,
        description="Reference implementation of the National AI Computing Center API (v1).",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.scheduler = scheduler
    app.state.job_service = JobService(store, settings, scheduler)
    #: the interactive sessions open in jobs (`routers/interactive.py`)
    app.state.sessions = sessions
    app.state.log_hub = log_hub
    #: the samplers' files of jobs (`routers/metrics.py`)
    app.state.metrics = metrics
    app.state.instance_id = secrets.token_hex(8)
    app.state.user_ca = user_ca
    # Checksums hash on worker threads: a few per user, so no one can hold them all.
    app.state.hashing_slots = HashingSlots()
    #: the embedded SFTP endpoint (listening while the app runs), or None
    app.state.sftp_endpoint = sftp_endpoint
    app.state.login_limiter = LoginRateLimiter(
        max_failures=settings.login_max_failures,
        window=settings.login_window,
        lockout=settings.login_lockout,
        now=settings.now,
    )
    install_error_handlers(app)
    install_openapi_errors(app)
    # The last added runs first: every response, a 413 for an oversized body too, gets an id.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_REQUEST_BYTES)
    app.add_middleware(RequestIdMiddleware)
    for module in (
        health,
        auth,
        me,
        tokens,
        projects,
        partitions,
        jobs,
        metrics_routes,
        interactive,
        staging,
    ):
        app.include_router(module.router)
    return app
