"""`kaic exec`, `shell`, `alloc`, `forward` in process (`run_line`): argument handling, usage
errors before any request, refusals and their exit codes, rendering. The HTTP API is the
`FakeCenter`; the WebSockets go to a tiny server of the protocol on 127.0.0.1
(`tests/unit/interactive_fake.py`) — the real center is tests/e2e/test_interactive*.py's."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import free_port
from tests.inprocess import FakeCenter, RunLine, bind, error, job
from tests.unit.interactive_fake import FakeSessions


@pytest.fixture
def sessions() -> Iterator[FakeSessions]:
    with FakeSessions().running() as server:
        yield server


@pytest.fixture
def kaic(fake_center: FakeCenter, sessions: FakeSessions) -> RunLine:
    """`run_line` with KAIC_CENTER at the protocol server (HTTP still goes to the fake)."""
    run = bind(fake_center)

    def with_center(*args: str, **kwargs: object) -> object:
        env = {"KAIC_CENTER": sessions.url, **kwargs.pop("env", {})}  # type: ignore[dict-item]
        return run(*args, env=env, **kwargs)

    return with_center  # type: ignore[return-value]


def test_exec_needs_a_command(run_line: RunLine, fake_center: FakeCenter) -> None:
    res = run_line("exec", "42", expect=2)
    assert "give the command to run after `--`" in res.stderr
    assert fake_center.requests == []


def test_exec_exit_code_and_separate_streams(kaic: RunLine, sessions: FakeSessions) -> None:
    res = kaic("exec", "42", "--", "sh", "-c", "cat; echo oops >&2; exit 5", input="in\n", expect=5)
    assert res.stdout == "in\n" and "oops" in res.stderr and "oops" not in res.stdout
    assert sessions.starts[0].tty is False and sessions.starts[0].env == {}


def test_exec_t_asks_for_a_tty_with_term(kaic: RunLine, sessions: FakeSessions) -> None:
    res = kaic(
        "exec", "-t", "42", "--", "sh", "-c", "echo $TERM; tty >/dev/null", env={"TERM": "vt220"}
    )
    assert "vt220" in res.stdout
    assert sessions.starts[0].tty and sessions.starts[0].env == {"TERM": "vt220"}


@pytest.mark.parametrize(
    ("state", "job_id", "code", "words"),
    [("PENDING", "42", 6, "job 42 is PENDING"), ("RUNNING", "9", 4, "no job 9")],
)
def test_exec_refusals(
    kaic: RunLine, sessions: FakeSessions, state: str, job_id: str, code: int, words: str
) -> None:
    sessions.jobs["42"] = state
    res = kaic("exec", job_id, "--", "true", expect=code)
    assert words in res.stderr and "Traceback" not in res.stderr


def test_exec_refused_command_is_a_usage_error(kaic: RunLine, sessions: FakeSessions) -> None:
    res = kaic("exec", "42", "--", "", expect=2)
    assert res.stderr.startswith("error: CMD:") and sessions.starts == []


def test_shell_runs_the_login_shell_or_bash_on_a_tty(kaic: RunLine, sessions: FakeSessions) -> None:
    res = kaic("shell", "42", input="echo from-shell; exit 3\n", expect=3)
    assert "from-shell" in res.stdout
    start = sessions.starts[0]
    assert start.tty and start.argv[:2] == ["/bin/sh", "-c"] and "TERM" in start.env


@pytest.mark.parametrize(
    ("ports", "words"),
    [
        (["http"], "'http' is not a port"),
        (["0"], "'0' is not a port"),
        (["8888:70000"], "is not a port"),
        (["8888", "9999:8888"], "local port 8888 is given twice"),
    ],
)
def test_forward_bad_ports_are_usage_errors(
    run_line: RunLine, fake_center: FakeCenter, ports: list[str], words: str
) -> None:
    res = run_line("forward", "42", *ports, expect=2)
    assert words in res.stderr and fake_center.requests == []


def test_forward_needs_a_running_job(run_line: RunLine, fake_center: FakeCenter) -> None:
    fake_center.serve_jobs(state="PENDING", exit_code=None)
    fake_center.jobs["42"] = job("42", "PENDING")
    res = run_line("forward", "42", "8888", expect=6)
    assert "job 42 is PENDING, not RUNNING" in res.stderr
    res = run_line("forward", "7", "8888", expect=4)
    assert "no job 7" in res.stderr


def test_forward_prints_urls_and_stops_when_the_job_ends(
    kaic: RunLine, fake_center: FakeCenter
) -> None:
    # Running at the check, then ended at the first poll.
    fake_center.on(
        "GET",
        "/v1/jobs/42",
        httpx.Response(200, json=job("42", "RUNNING")),
        httpx.Response(200, json=job("42", "COMPLETED", exit_code=0)),
    )

    a, b = free_port(), free_port()
    res = kaic("forward", "42", f"8888:{a}", str(b))
    assert res.stdout.splitlines() == [f"http://127.0.0.1:{a}", f"http://127.0.0.1:{b}"]
    assert "-> port 8888 in job 42" in res.stderr
    assert "job 42 ended COMPLETED; forwarding stopped" in res.stderr


def test_alloc_bad_time_is_a_usage_error(run_line: RunLine, fake_center: FakeCenter) -> None:
    res = run_line("alloc", "--time", "3 fortnights", expect=2)
    assert res.stderr.startswith("error: --time:") and fake_center.requests == []


def test_alloc_submits_an_interactive_job_runs_a_shell_and_releases_it(
    kaic: RunLine, fake_center: FakeCenter, sessions: FakeSessions
) -> None:
    fake_center.serve_jobs(state="RUNNING", exit_code=None)
    fake_center.on("POST", "/v1/jobs", lambda r: _dry_run(r, fake_center))
    cancel = fake_center.on("POST", re.compile(r"/v1/jobs/42/cancel"), json=job("42", "CANCELLED"))
    res = kaic("alloc", "--gpus", "1", "--time", "1h", input="echo inside; exit 3\n", expect=3)
    submitted = [
        json.loads(r.content)
        for r in fake_center.sent("POST", "/v1/jobs")
        if "dry_run" not in str(r.url)
    ]
    assert submitted[0]["kind"] == "interactive" and "run" not in submitted[0]
    assert submitted[0]["resources"]["gpus"] == 1 and submitted[0]["time_limit_seconds"] == 3600
    assert "inside" in res.stdout
    assert "Allocation 42 submitted" in res.stderr and "Allocation 42 released." in res.stderr
    assert len(cancel.calls) == 1 and sessions.starts[0].tty


def test_alloc_keep_does_not_release(
    kaic: RunLine, fake_center: FakeCenter, sessions: FakeSessions
) -> None:
    fake_center.serve_jobs(state="RUNNING", exit_code=None)
    fake_center.on("POST", "/v1/jobs", lambda r: _dry_run(r, fake_center))
    cancel = fake_center.on("POST", re.compile(r"/v1/jobs/42/cancel"), json=job("42", "CANCELLED"))
    res = kaic("alloc", "--keep", "--", "sh", "-c", "exit 0")
    assert cancel.calls == [] and "`kaic cancel 42` releases it" in res.stderr
    assert sessions.starts[0].argv == ["sh", "-c", "exit 0"] and not sessions.starts[0].tty


def test_alloc_refused_by_the_dry_run(kaic: RunLine, fake_center: FakeCenter) -> None:
    fake_center.on(
        "POST", "/v1/jobs", error(422, "invalid", "time_limit_seconds: exceeds the partition's max")
    )
    res = kaic("alloc", "--time", "400d", expect=2)
    assert "--time" in res.stderr


def _dry_run(request: httpx.Request, center: FakeCenter) -> httpx.Response:
    """The dry run answers valid; a submission makes job 42, RUNNING."""
    if request.url.params.get("dry_run") == "true":
        return httpx.Response(200, json={"dry_run": True, "valid": True, "problems": []})
    body = json.loads(request.content)
    center.jobs["42"] = job("42", "RUNNING", kind=body.get("kind", "batch"))
    return httpx.Response(201, json=center.jobs["42"])


def test_jobs_and_show_name_the_kind(run_line: RunLine, fake_center: FakeCenter) -> None:
    fake_center.serve_jobs()
    fake_center.jobs["42"] = job("42", "RUNNING", kind="interactive", name="interactive")
    fake_center.jobs["41"] = job("41", "COMPLETED")
    rows = [line.split() for line in run_line("jobs").stdout.splitlines()]
    assert rows[0][2] == "KIND" and rows[1][:3] == ["42", "interactive", "interactive"]
    assert rows[2][2] == "batch"
    shown = run_line("show", "42").stdout
    assert re.search(r"^kind\s+interactive$", shown, re.M)
    assert run_line("show", "42", "--jq", ".kind").stdout == "interactive\n"


def test_token_create_knows_the_jobs_exec_scope(run_line: RunLine, fake_center: FakeCenter) -> None:
    """The CLI's scope list is the center's (it refused `jobs:exec` as unknown)."""
    from kaic.cli.tokens import VALID_SCOPES
    from kaic.models import SCOPES

    assert VALID_SCOPES == SCOPES
    created = {
        "id": "tok_1",
        "name": "ci",
        "scopes": ["jobs:read", "jobs:exec"],
        "created_at": "2026-03-01T12:00:00Z",
        "expires_at": "2026-04-01T12:00:00Z",
        "token": "kaic_" + "s" * 40,
    }
    route = fake_center.on("POST", "/v1/tokens", json=created, status=201)
    run_line("token", "create", "ci", "--scope", "jobs:read,jobs:exec")
    assert json.loads(route.calls[0].content)["scopes"] == ["jobs:read", "jobs:exec"]
