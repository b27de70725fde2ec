"""`/v1/jobs/{id}/exec` and `/v1/jobs/{id}/forward`: interactive sessions in a running job,
as WebSockets (the protocol: docs/interactive.md; the messages: `kaic.models.interactive`).

Only the job's owner, only while the job is RUNNING, only with the `jobs:exec` scope. Every
refusal happens before the upgrade, as an ordinary HTTP answer in the API's error shape: 401,
403, 404 (also for other users' jobs: their jobs do not exist as far as a caller can tell),
409 (the job is not running; the message names its state), 422 (an array rather than one of
its tasks, a bad port), 429 (too many sessions), 501 (the executor offers no sessions).
What the session runs is the executor's (`Executor.exec`, `Executor.connect`), started on
the event loop's thread (see `executors.interactive`); the bytes are moved by
`interactive.bridge`; the registry counts the sessions, cuts them when their job ends and
writes the audit lines.

WebSockets are not part of the OpenAPI document (it has no way to describe them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from dataclasses import dataclass

from fastapi import APIRouter, WebSocket
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from kaic.center.containers.resolve import ImageRejected
from kaic.center.deps import Principal, authenticate, bearer_token, check_scope, forwarded_client
from kaic.center.errors import ApiError, describe_validation_errors, error_response
from kaic.center.executors.base import Executor, ExecutorError, SessionTarget
from kaic.center.interactive import bridge
from kaic.center.interactive.registry import (
    Session,
    SessionKind,
    SessionRefused,
    SessionRegistry,
)
from kaic.center.jobs.launch import launch_spec
from kaic.center.jobs.paths import PathRejected
from kaic.center.jobs.service import JobService
from kaic.center.secrets import SecretUnavailable
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import JobState
from kaic.models.interactive import (
    CLOSE_INVALID_START,
    CLOSE_PROTOCOL_ERROR,
    MAX_PORT,
    MIN_PORT,
    STATUS,
    ExecStart,
    ExecStatus,
)

router = APIRouter(prefix="/v1", tags=["interactive"])

#: seconds the client has to send an exec session's first message
START_SECONDS = 30.0
#: the scope a token needs for sessions
EXEC_SCOPE = "jobs:exec"


@dataclass
class Admitted:
    """A session the checks let through: who, into what, and its place in the registry."""

    principal: Principal
    target: SessionTarget
    session: Session


def _registry(ws: WebSocket) -> SessionRegistry:
    registry: SessionRegistry = ws.app.state.sessions
    return registry


def _executor(ws: WebSocket) -> Executor:
    executor: Executor = ws.app.state.scheduler.executor
    return executor


def _peer(ws: WebSocket, settings: CenterSettings) -> str:
    peer = ws.client.host if ws.client else "unknown"
    return forwarded_client(
        peer, ws.headers.getlist("x-forwarded-for"), settings.trusted_proxy_networks
    )


def _port(text: str | None) -> int:
    """The `port` query parameter; ApiError 422 unless it is a TCP port."""
    if text is None:
        raise ApiError(422, "invalid_request", "invalid request: query.port: Field required")
    if not text.isdigit() or not MIN_PORT <= int(text) <= MAX_PORT:
        raise ApiError(
            422,
            "invalid_request",
            f"invalid request: query.port: must be a TCP port ({MIN_PORT}..{MAX_PORT}), "
            f"got {text[:20]!r}",
        )
    return int(text)


def _admit(ws: WebSocket, job_id: str, kind: SessionKind, detail: str) -> Admitted:
    """Every check of a new session, in order; ApiError for the first that fails. Runs on a
    worker thread (it reads the database)."""
    state = ws.app.state
    store: Store = state.store
    settings: CenterSettings = state.settings
    service: JobService = state.job_service
    token = bearer_token(ws.headers.get("authorization"))
    principal = check_scope(authenticate(store, settings, token), EXEC_SCOPE)
    if kind == "forward":
        detail = str(_port(ws.query_params.get("port")))
    row = service.get_task_row(
        job_id, principal.user_id, why="open the session in one of its tasks:"
    )
    if row.state is not JobState.RUNNING:
        raise ApiError(
            409,
            "job_not_running",
            f"job {row.id} is {row.state.value}: sessions open only while a job is RUNNING",
        )
    refusal = _executor(ws).interactive_refusal()
    if refusal is not None:
        raise ApiError(501, "not_supported", refusal)
    registry = _registry(ws)
    try:
        session = registry.reserve(
            kind, job_id=row.id, user=principal.user, peer=_peer(ws, settings), detail=detail
        )
    except SessionRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    try:
        # A session sees the job's environment, its secrets (as they are now) included.
        spec = launch_spec(
            settings, row, partition=row.partition, gpu_ids=row.gpu_ids, secrets=state.secrets
        )
    except (PathRejected, SecretUnavailable, ImageRejected) as exc:
        registry.release(session)
        raise ApiError(409, "job_not_running", f"job {row.id}: {exc}") from None
    except BaseException:
        registry.release(session)  # never leave a reservation counted
        raise
    return Admitted(principal, SessionTarget(spec, row.external_id or ""), session)


async def _admit_or_refuse(ws: WebSocket, job_id: str, kind: SessionKind) -> Admitted | None:
    """The admitted session, or None after refusing it before the upgrade (an HTTP answer in
    the error shape; where the server cannot answer HTTP to a WebSocket request, the
    WebSocket is accepted and closed with 4000 + the status, the message as the reason)."""
    try:
        return await run_in_threadpool(_admit, ws, job_id, kind, "")
    except ApiError as exc:
        caller = await run_in_threadpool(_caller, ws)  # it reads the database
        SessionRegistry.audit_refused(
            kind, caller, job_id, exc.status_code, f"{exc.code}: {exc.message}"
        )
        response = error_response(ws, exc.status_code, exc.code, exc.message, exc.headers)
        if "websocket.http.response" in ws.scope.get("extensions", {}):
            await ws.send_denial_response(response)
        else:
            await ws.accept()
            await bridge.close(ws, 4000 + exc.status_code, exc.message)
        return None


def _caller(ws: WebSocket) -> str:
    """Who a refused caller is, for the audit line: the user when the token was valid."""
    try:
        state = ws.app.state
        token = bearer_token(ws.headers.get("authorization"))
        return authenticate(state.store, state.settings, token).user
    except ApiError:
        return "(not authenticated)"


#: seconds before its time limit a job counts as ending (the center's record of its start
#: may lag the batch system's by a poll or two)
_LIMIT_SLACK = 10.0


def _job_ending(ws: WebSocket, job_id: str) -> bool:
    """Whether the job has ended, is being cancelled, or has reached its time limit."""
    service: JobService = ws.app.state.job_service
    row = service.jobs.get(job_id)
    if row is None or row.terminal or row.end_cause is not None:
        return True
    if row.time_limit_seconds is None or row.started_at is None:
        return False
    elapsed = (service.jobs.now() - row.started_at).total_seconds()
    return elapsed >= row.time_limit_seconds - _LIMIT_SLACK


def _record_event(ws: WebSocket, job_id: str, message: str) -> None:
    service: JobService = ws.app.state.job_service
    with service.jobs.transaction():
        service.jobs.events.add(job_id, message)


async def _receive_start(ws: WebSocket) -> ExecStart | None:
    """The exec session's first message; None after closing a session that sent none or an
    invalid one (its status says why)."""
    try:
        message = await asyncio.wait_for(bridge.receive(ws), START_SECONDS)
    except asyncio.TimeoutError:
        await bridge.close(ws, CLOSE_PROTOCOL_ERROR, f"no start message in {START_SECONDS:g}s")
        return None
    except bridge.ClientGone:
        return None
    text = message.get("text")
    if text is None:
        await bridge.close(
            ws, CLOSE_PROTOCOL_ERROR, "the first message must be a JSON text message"
        )
        return None
    try:
        return ExecStart.model_validate_json(text)
    except ValidationError as exc:
        problem = describe_validation_errors(list(exc.errors()))
        status = ExecStatus(exit_code=None, reason=problem)
        with contextlib.suppress(bridge.ClientGone):
            await bridge.send(ws, bytes([STATUS]) + status.model_dump_json().encode())
        await bridge.close(ws, CLOSE_INVALID_START, problem)
        return None


def _outcome(status: ExecStatus | None) -> str:
    if status is None:
        return "the client left"
    if status.exit_code is None:
        return status.reason or "no command ran"
    text = f"exit code {status.exit_code}"
    return f"{text} ({status.reason})" if status.reason else text


@router.websocket("/jobs/{job_id}/exec")
async def exec_session(websocket: WebSocket, job_id: str) -> None:
    """Run a command inside a running job (WebSocket; see docs/interactive.md)."""
    admitted = await _admit_or_refuse(websocket, job_id, "exec")
    if admitted is None:
        return
    session = admitted.session
    registry = _registry(websocket)
    user = admitted.principal.user
    try:
        await websocket.accept()
        cut = session.bind()
        start = await _receive_start(websocket)
        if start is None:
            return
        session.detail = start.argv[0]
        try:
            # On the loop's thread: the process dies with the thread that started it.
            process = _executor(websocket).exec(admitted.target, start)
        except ExecutorError as exc:
            registry.audit_ended(session, f"could not start: {exc}")
            failed = ExecStatus(exit_code=None, reason=str(exc))
            with contextlib.suppress(bridge.ClientGone):
                await bridge.send(websocket, bytes([STATUS]) + failed.model_dump_json().encode())
            await bridge.close(websocket, 1000)
            return
        session.pid = process.pid
        registry.audit_opened(session, tty=start.tty)
        tty = ", tty" if start.tty else ""
        await run_in_threadpool(
            _record_event,
            websocket,
            session.job_id,
            f"exec session {session.id} opened by {user}: {session.detail[:64]!r}{tty}",
        )
        try:
            status = await bridge.run_exec(
                websocket,
                process,
                session,
                cut,
                job_ending=functools.partial(_job_ending, websocket, session.job_id),
            )
        finally:
            await asyncio.to_thread(process.close)
        outcome = _outcome(status)
        registry.audit_ended(session, outcome)
        await run_in_threadpool(
            _record_event, websocket, session.job_id, f"exec session {session.id} ended: {outcome}"
        )
    finally:
        registry.release(session)


@router.websocket("/jobs/{job_id}/forward")
async def forward_session(websocket: WebSocket, job_id: str) -> None:
    """Carry one TCP connection to `port` inside a running job (WebSocket; see
    docs/interactive.md)."""
    admitted = await _admit_or_refuse(websocket, job_id, "forward")
    if admitted is None:
        return
    session = admitted.session
    registry = _registry(websocket)
    port = int(session.detail)
    try:
        await websocket.accept()
        cut = session.bind()
        registry.audit_opened(session)
        try:
            # On the loop's thread: a relay process dies with the thread that started it.
            channel = _executor(websocket).connect(admitted.target, port)
        except ConnectionRefusedError:
            registry.audit_ended(session, "connection refused")
            await bridge.refuse_forward(websocket, port, session.job_id)
            return
        except (ExecutorError, OSError) as exc:
            registry.audit_ended(session, f"could not connect: {exc}")
            await bridge.close(websocket, bridge.CLOSE_INTERNAL, f"could not connect: {exc}")
            return
        try:
            session.pid = channel.process.pid if channel.process is not None else None
            if channel.announces:
                connected = await bridge.relay_connected(channel)
                if connected is False:
                    registry.audit_ended(session, "connection refused")
                    await bridge.refuse_forward(websocket, port, session.job_id)
                    return
                if connected is not True:
                    registry.audit_ended(session, f"could not connect: {connected}")
                    await bridge.close(
                        websocket, bridge.CLOSE_INTERNAL, f"could not connect: {connected}"
                    )
                    return
            outcome = await bridge.run_forward(websocket, channel, session, cut)
        finally:
            await asyncio.to_thread(channel.close)
        registry.audit_ended(session, outcome)
    finally:
        registry.release(session)
