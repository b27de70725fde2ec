"""Command tests in process: the real CLI (Typer's CliRunner) against a `FakeCenter`.

`run_line("jobs", "--json")` runs the command as `kaic jobs --json` would, with every API
client it makes talking to an `httpx.MockTransport` instead of a center (the context's
`transport`): no subprocess, no server, no waiting (the context's `sleep` does not sleep).
By default the command finds its center and token in the environment (``KAIC_CENTER``,
``KAIC_TOKEN``), as CI does; pass `env={"KAIC_CENTER": None, ...}` to go through a profile.
Errors render and exit as `main` renders them. A result with an unexpected exit code fails
the test with stdout, stderr and every request the command made.

Why a mock transport rather than the real center app in process: these tests are about what
a command does with what it is told — rendering, exit codes, which requests its flags become
— and a table of answers says that directly (a hostile job name, a TIMEOUT, a 403) without
running a scheduler or jobs; the real center is the end-to-end tests' (`tests/e2e/`), and
`tests/center/` test it on its own. The answers are built from the real models
(`job()`), and everything above the transport is the real client, flows and CLI.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, cast

import httpx

from tests.helpers import Result

if TYPE_CHECKING:
    from kaic.flows.session import Session

Answer = httpx.Response | Callable[[httpx.Request], httpx.Response]

CENTER_URL = "https://center.test"
#: the API token `run_line` puts in KAIC_TOKEN
TOKEN = "kaic_" + "t" * 40
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


def job(job_id: str = "42", state: str = "PENDING", **fields: Any) -> dict[str, Any]:
    """A job as the center answers it (validated by the real `Job` model)."""
    from kaic.models import Job

    doc: dict[str, Any] = {
        "id": job_id,
        "name": "job",
        "state": state,
        "user": "alice",
        "project": "ai-2026-0042",
        "partition": "default",
        "resources": {"gpus": 0},
        "submitted_at": NOW.isoformat(),
    }
    doc.update(fields)
    return Job.model_validate(doc).model_dump(mode="json")


def error(status: int, code: str, message: str) -> httpx.Response:
    """The center's error shape."""
    body = {"error": {"code": code, "message": message, "request_id": "req-1"}}
    return httpx.Response(status, json=body, headers={"X-Request-ID": "req-1"})


@dataclass
class Route:
    method: str
    path: str | re.Pattern[str]
    answers: list[Answer]
    calls: list[httpx.Request] = field(default_factory=list)

    def matches(self, request: httpx.Request) -> bool:
        if request.method != self.method:
            return False
        if isinstance(self.path, re.Pattern):
            return self.path.fullmatch(request.url.path) is not None
        return request.url.path == self.path

    def answer(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        # One answer per call; the last one again once they run out.
        chosen = self.answers[min(len(self.calls), len(self.answers)) - 1]
        return chosen(request) if callable(chosen) else chosen


class FakeCenter:
    """The center API as a table of answers, recording every request (see module doc)."""

    def __init__(self, url: str = CENTER_URL) -> None:
        self.url = url
        self.routes: list[Route] = []
        self.requests: list[httpx.Request] = []
        #: the jobs `serve_jobs` answers with, by id (change them to move a job on)
        self.jobs: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        #: (job id, "stdout" | "stderr") -> the log's bytes so far
        self.logs: dict[tuple[str, str], bytes] = {}
        #: what `serve_metrics` answers: a job's `JobMetrics` document by id, and the
        #: `RunningJobMetrics` entries of `GET /v1/metrics/running` (at `NOW`)
        self.metrics: dict[str, dict[str, Any]] = {}
        self.running: list[dict[str, Any]] = []

    def serve_jobs(self, *, state: str = "COMPLETED", exit_code: int | None = 0) -> None:
        """Answer the jobs API from `self.jobs`: a submitted job gets the next id and
        `state` / `exit_code` at once (tests change `self.jobs[id]` to tell another story)."""

        def submit(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            job_id = str(41 + len(self.jobs) + 1)
            self.jobs[job_id] = job(
                job_id,
                state,
                exit_code=exit_code,
                name=body.get("name") or "job",
                resources=body.get("resources") or {"gpus": 0},
            )
            self.events[job_id] = [{"at": NOW.isoformat(), "state": state, "message": state}]
            return httpx.Response(201, json=self.jobs[job_id])

        def one(request: httpx.Request) -> httpx.Response:
            job_id = request.url.path.split("/")[3]
            if job_id not in self.jobs:
                return error(404, "not_found", f"no job {job_id}")
            if request.url.path.endswith("/events"):
                return httpx.Response(200, json=self.events.get(job_id, []))
            if request.url.path.endswith("/logs"):
                return self._log(job_id, request.url.params)
            return httpx.Response(200, json=self.jobs[job_id])

        def listing(request: httpx.Request) -> httpx.Response:
            jobs = sorted(self.jobs.values(), key=lambda j: int(j["id"]), reverse=True)
            states = request.url.params.get_list("state")
            jobs = [j for j in jobs if not states or j["state"] in states]
            return httpx.Response(200, json={"jobs": jobs, "next_cursor": None})

        self.on("POST", "/v1/jobs", submit)
        self.on("GET", "/v1/jobs", listing)
        self.on("GET", re.compile(r"/v1/jobs/[^/]+(/events|/logs)?"), one)

    def serve_metrics(self) -> None:
        """Answer the metrics API from `self.metrics` and `self.running` (validated by the
        real models, as the center would answer)."""
        from kaic.models.metrics import JobMetrics, RunningMetrics

        def running(_request: httpx.Request) -> httpx.Response:
            doc = RunningMetrics.model_validate({"jobs": self.running, "at": NOW.isoformat()})
            return httpx.Response(200, json=doc.model_dump(mode="json"))

        def one(request: httpx.Request) -> httpx.Response:
            job_id = request.url.path.split("/")[3]
            if job_id not in self.metrics:
                return error(404, "not_found", f"no job {job_id}")
            doc = JobMetrics.model_validate(self.metrics[job_id])
            return httpx.Response(200, json=doc.model_dump(mode="json"))

        self.on("GET", "/v1/metrics/running", running)
        self.on("GET", re.compile(r"/v1/jobs/[^/]+/metrics"), one)

    def _log(self, job_id: str, params: httpx.QueryParams) -> httpx.Response:
        """A log from an offset (or its last `tail` lines), as the center streams it."""
        data = self.logs.get((job_id, params.get("stream", "stdout")), b"")
        start = int(params.get("offset", 0))
        if "tail" in params:
            lines = data.splitlines(keepends=True)
            start = len(data) - len(b"".join(lines[len(lines) - int(params["tail"]) :]))
        body = _Body(data[start:])
        return httpx.Response(200, stream=body, headers={"X-Log-Offset": str(start)})

    def on(
        self,
        method: str,
        path: str | re.Pattern[str],
        *answers: Answer,
        json: Any = None,
        status: int = 200,
    ) -> Route:
        """Answer `method path` (later routes win): the `answers` in turn, or `json`."""
        if not answers:
            answers = (httpx.Response(status, json=json),)
        route = Route(method.upper(), path, list(answers))
        self.routes.insert(0, route)
        return route

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        for route in self.routes:
            if route.matches(request):
                return route.answer(request)
        return error(404, "not_found", f"no route {request.method} {request.url.path}")

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """The requests made to `method path`."""
        return [r for r in self.requests if r.method == method and r.url.path == path]

    def session(self) -> Session:
        """A session of this fake center, for calling a flow directly (an API token)."""
        from kaic.auth.credentials import Credentials
        from kaic.client.api import CenterClient
        from kaic.flows.session import Session

        client = CenterClient(
            self.url,
            credentials=Credentials(access_token=TOKEN, kind="api"),
            transport=httpx.MockTransport(self.handler),
            sleep=lambda _s: None,
        )
        return Session(client, self.url, None, "env", local=False)

    def log(self) -> str:
        lines = []
        for r in self.requests:
            body = f" {r.content.decode(errors='replace')}" if r.content else ""
            lines.append(f"{r.method} {r.url}{body}")
        return "\n".join(lines) or "(no requests)"


class _Body(httpx.SyncByteStream):
    """A streamed body (a body given as bytes would be read at once, as no server does)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


class _Std:
    """`sys.stdout` / `sys.stderr` as they are when written to (the runner swaps them); a
    terminal when `terminal` (rich then draws tables and colours as it would on one)."""

    def __init__(self, name: str, terminal: bool) -> None:
        self._name = name
        self._terminal = terminal

    def isatty(self) -> bool:
        return self._terminal

    def __getattr__(self, attr: str) -> Any:
        return getattr(getattr(sys, self._name), attr)


@dataclass
class LineResult(Result):
    """A `run_cli` result, plus the fake center (its requests) and what was raised."""

    center: FakeCenter = field(default_factory=FakeCenter)
    #: what the command raised (a KaicError, SystemExit), None when it returned
    exception: BaseException | None = None

    def explain(self) -> str:
        return f"{super().explain()}\n--- requests ---\n{self.center.log()}"


def run_line(
    center: FakeCenter,
    *args: str,
    expect: int | None = 0,
    input: str | None = None,
    env: Mapping[str, str | None] | None = None,
    terminal: bool = False,
) -> LineResult:
    """`kaic ARGS` in process against `center`; fails the test on an unexpected exit code.

    `terminal`: stdout and stderr say they are a terminal 400 columns wide (TERM=xterm)."""
    from typer.testing import CliRunner

    from kaic.cli.context import AppContext
    from kaic.cli.main import app, render_error
    from kaic.errors import ExitCode, KaicError

    environment: dict[str, str | None] = {"KAIC_CENTER": center.url, "KAIC_TOKEN": TOKEN}
    if terminal:
        environment.update(TERM="xterm-256color", COLUMNS="400")
    environment.update(env or {})
    context = AppContext(
        stdout=cast(IO[str], _Std("stdout", terminal)),
        stderr=cast(IO[str], _Std("stderr", terminal)),
        sleep=lambda _s: None,
        argv=list(args),
        transport=httpx.MockTransport(center.handler),
    )
    outcome = CliRunner().invoke(app, list(args), input=input, env=environment, obj=context)
    code, stderr = outcome.exit_code, outcome.stderr
    exc = outcome.exception
    if isinstance(exc, KaicError):
        code = int(exc.exit_code)
        rendered = _Capture()
        render_error(exc, cast(IO[str], rendered))
        stderr += rendered.text
    elif isinstance(exc, KeyboardInterrupt):
        code = int(ExitCode.INTERRUPTED)
    result = LineResult(list(args), code, outcome.stdout, stderr, center, exc)
    if exc is not None and not isinstance(exc, (KaicError, KeyboardInterrupt, SystemExit)):
        raise AssertionError(f"raised {type(exc).__name__}: {exc}\n{result.explain()}") from exc
    if expect is not None and code != expect:
        raise AssertionError(f"expected exit {expect}\n{result.explain()}")
    return result


class _Capture:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def isatty(self) -> bool:
        return False


RunLine = Callable[..., LineResult]


def bind(center: FakeCenter) -> RunLine:
    """`run_line` with `center` given."""

    def run(*args: str, **kwargs: Any) -> LineResult:
        return run_line(center, *args, **kwargs)

    return run
