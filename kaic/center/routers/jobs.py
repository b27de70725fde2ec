"""`/v1/jobs`: submit, list, show, cancel, events and logs of the caller's jobs.

Other users' jobs do not exist as far as a caller can tell: 404, never 403.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from kaic.center.deps import Principal, require_scope
from kaic.center.errors import ApiError
from kaic.center.jobs.logs import LogHub, log_size, read_log, tail_offset
from kaic.center.jobs.paths import job_paths
from kaic.center.jobs.rows import JobRow
from kaic.center.jobs.service import JobService
from kaic.models import DryRunResult, ErrorResponse, Job, JobEvent, JobList, JobState, JobSubmit
from kaic.models.followup import MAX_RETRIES
from kaic.models.limits import MAX_CURSOR_LENGTH, MAX_LOG_OFFSET, MAX_TAIL_LINES

router = APIRouter(
    prefix="/v1",
    tags=["jobs"],
    responses={
        401: {"model": ErrorResponse},
        403: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
    },
)

LOG_OFFSET_HEADER = "X-Log-Offset"
LOG_ATTEMPT_HEADER = "X-Log-Attempt"
#: the most attempts a job can have (`kaic.models.followup.MAX_RETRIES` requeues + 1)
MAX_ATTEMPT = MAX_RETRIES + 1
#: the most nodes a job may ask for (`Resources.nodes`)
MAX_NODES = 1024


def rank_of(row: JobRow, node: int | None) -> int | None:
    """Which rank's log `node` names: None for the job's own. A job on one node has one
    rank, 0, whose output is the job's own log."""
    nodes = row.spec.resources.nodes
    if node is None or (nodes == 1 and node == 0):
        return None
    if node >= nodes:
        runs = "one node (rank 0)" if nodes == 1 else f"{nodes} nodes (ranks 0-{nodes - 1})"
        raise ApiError(404, "not_found", f"job {row.id} has no rank {node}: it runs on {runs}")
    return node


def get_job_service(request: Request) -> JobService:
    """The app's job service."""
    service: JobService = request.app.state.job_service
    return service


def get_log_hub(request: Request) -> LogHub:
    """The app's followed logs."""
    hub: LogHub = request.app.state.log_hub
    return hub


ServiceDep = Annotated[JobService, Depends(get_job_service)]
Reader = Annotated[Principal, Depends(require_scope("jobs:read"))]
Writer = Annotated[Principal, Depends(require_scope("jobs:write"))]


@router.post(
    "/jobs",
    response_model=Job | DryRunResult,
    status_code=201,
    responses={
        200: {
            "model": Job | DryRunResult,
            "description": "a dry run, or a repeated Idempotency-Key with the same body",
        },
        409: {"model": ErrorResponse, "description": "Idempotency-Key reused for another body"},
    },
)
def submit_job(
    spec: JobSubmit,
    principal: Writer,
    service: ServiceDep,
    response: Response,
    dry_run: bool = False,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Job | DryRunResult:
    """Submit a job (an array: the parent job, with its tasks in `array_tasks`).

    `?dry_run=true` validates against limits and quota and estimates start and charge,
    creating nothing. A repeated `Idempotency-Key` with the same body returns the first
    job (200); with a different body it is refused (409 `idempotency_conflict`).
    """
    if dry_run:
        response.status_code = 200
        return service.dry_run(principal.user_id, principal.user, spec)
    job, created = service.submit(principal.user_id, principal.user, spec, idempotency_key)
    if not created:
        response.status_code = 200
    return job


@router.get("/jobs", response_model=JobList)
def list_jobs(
    principal: Reader,
    service: ServiceDep,
    state: Annotated[list[JobState] | None, Query()] = None,
    all_jobs: Annotated[bool, Query(alias="all")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page"),
    ] = None,
) -> JobList:
    """The caller's jobs, newest first (array tasks only through their array).

    Without `all=true`: active jobs and those that ended in the last hour.
    """
    return service.list(
        principal.user_id, states=state or [], all_jobs=all_jobs, limit=limit, cursor=cursor
    )


@router.get(
    "/jobs/{job_id}/tasks",
    response_model=JobList,
    responses={
        404: {"model": ErrorResponse, "description": "no such job of yours"},
        422: {"model": ErrorResponse, "description": "the job is not an array"},
    },
)
def list_tasks(
    job_id: str,
    principal: Reader,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
    cursor: Annotated[
        str | None,
        Query(max_length=MAX_CURSOR_LENGTH, description="`next_cursor` of the previous page"),
    ] = None,
) -> JobList:
    """An array's tasks, by index, each with its state and exit code."""
    return service.tasks(job_id, principal.user_id, limit=limit, cursor=cursor)


@router.get("/jobs/{job_id}", response_model=Job)
def get_job(job_id: str, principal: Reader, service: ServiceDep) -> Job:
    """One job, array or array task (`12_3`)."""
    job = service.get(job_id, principal.user_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return job


@router.post("/jobs/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: str, principal: Writer, service: ServiceDep) -> Job:
    """Cancel a job (an array: all its tasks). Pending jobs end at once; running ones get
    SIGTERM, then SIGKILL after the grace period. A terminal job is returned unchanged."""
    return service.cancel(job_id, principal.user_id)


@router.get("/jobs/{job_id}/events", response_model=list[JobEvent])
def job_events(job_id: str, principal: Reader, service: ServiceDep) -> list[JobEvent]:
    """The job's timeline, oldest first."""
    row = service.get_row(job_id, principal.user_id)
    return service.jobs.events.of(row.id)


@router.get(
    "/jobs/{job_id}/logs",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
            "description": "raw log bytes; `X-Log-Offset` is the offset the body starts at",
            "headers": {
                LOG_OFFSET_HEADER: {
                    "description": "the byte offset of the log the body starts at",
                    "schema": {"type": "integer", "minimum": 0},
                },
                LOG_ATTEMPT_HEADER: {
                    "description": "the attempt whose log the body is (1-based)",
                    "schema": {"type": "integer", "minimum": 1},
                },
            },
        }
    },
)
async def job_logs(
    job_id: str,
    principal: Reader,
    service: ServiceDep,
    hub: Annotated[LogHub, Depends(get_log_hub)],
    stream: Literal["stdout", "stderr"] = "stdout",
    offset: Annotated[int, Query(ge=0, le=MAX_LOG_OFFSET)] = 0,
    follow: bool = False,
    tail: Annotated[int | None, Query(ge=0, le=MAX_TAIL_LINES)] = None,
    node: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_NODES - 1,
            description="a multi-node job: the rank whose log to read (0 … nodes-1); "
            "without it, the job's own log (what its launcher says)",
        ),
    ] = None,
    attempt: Annotated[int | None, Query(ge=1, le=MAX_ATTEMPT)] = None,
) -> StreamingResponse:
    """A job's log from byte `offset` (or its last `tail` lines), of its current attempt or
    of `attempt` (a requeued job keeps every attempt's log).

    Without `follow`: what exists now. With `follow=true`: streams new bytes as they are
    written and ends only when the job is terminal, or past that attempt, and the log fully
    drained (`X-Log-Attempt` says which attempt the body is). A multi-node job's ranks each
    have their own log (`node`), with its own offsets.
    """

    def opening() -> tuple[JobRow, int, Path, int, int]:
        # The database and the file system block: on a worker thread, not the event loop
        # every follower and session of the center shares.
        row = service.get_task_row(
            job_id, principal.user_id, why="its logs are per task; choose one of"
        )
        number = attempt or row.attempt
        if number > row.attempt:
            raise ApiError(
                404,
                "not_found",
                f"job {row.id} has no attempt {number} (it is on attempt {row.attempt})",
            )
        path = job_paths(service.settings.state_dir, row.id, number).log(stream, rank_of(row, node))
        start = tail_offset(path, tail) if tail is not None else offset
        return row, number, path, start, log_size(path)

    row, number, path, start, size = await run_in_threadpool(opening)
    headers = {
        LOG_OFFSET_HEADER: str(start),
        LOG_ATTEMPT_HEADER: str(number),
        "Cache-Control": "no-store",
    }
    body: AsyncIterator[bytes] | Iterator[bytes]
    if follow and not row.terminal and number == row.attempt:
        # Shared with the log's other followers; ends when the job (or this attempt) does
        # (see LogHub).
        body = hub.follow(row.id, path, start, number)
    else:
        # A terminal job's log is complete: following it is reading it to its end.
        body = read_log(path, start, size)
    return StreamingResponse(body, media_type="application/octet-stream", headers=headers)
