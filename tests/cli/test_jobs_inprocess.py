"""`kaic submit`, `logs`, `wait`: what the flags become, what is printed where, and the exit
code — in process, against a `FakeCenter` (the same commands run end to end against a real
center in `tests/e2e/test_jobs.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.inprocess import FakeCenter, RunLine, job

UNREACHABLE = "center unreachable; retrying for up to 5 min…"
BACK = "center reachable again"


def _body(center: FakeCenter) -> dict[str, object]:
    (sent,) = center.sent("POST", "/v1/jobs")
    return json.loads(sent.content)  # type: ignore[no-any-return]


def _down(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def test_submit_prints_the_id_alone(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="PENDING")
    res = run_line("submit", "--", "echo", "hi")
    assert res.stdout == "42\n", res.explain()
    assert _body(fake_center)["run"] == "echo hi"
    (sent,) = fake_center.sent("POST", "/v1/jobs")
    assert sent.headers["Idempotency-Key"]  # a retried submission is never a second job


def test_flags_become_the_job(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="PENDING")
    doc = run_line(
        "submit", "--json", "--name", "train", "--gpus", "2", "--time", "10m",
        "--env", "A=1", "--after", "7", "--idempotency-key", "k-1", "--", "python", "x.py",
    ).json()  # fmt: skip
    body = _body(fake_center)
    assert body["name"] == "train" and body["run"] == "python x.py"
    assert body["resources"] == {"gpus": 2, "nodes": 1} and body["time_limit_seconds"] == 600
    assert body["env"] == {"A": "1"} and body["depends_on"] == ["7"]
    assert fake_center.sent("POST", "/v1/jobs")[0].headers["Idempotency-Key"] == "k-1"
    assert doc["id"] == "42" and doc["name"] == "train"


def test_a_bad_flag_is_a_usage_error_before_any_request(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    res = run_line("submit", "--time", "soon", "--", "true", expect=2)
    assert res.stderr.startswith("error: --time:"), res.explain()
    assert fake_center.requests == []


def test_command_after_double_dash_is_never_read_as_a_job_file(
    fake_center: FakeCenter, run_line: RunLine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_center.serve_jobs(state="PENDING")
    (tmp_path / "run.sh").write_text("not: a job file\n")  # a local file named like the command
    monkeypatch.chdir(tmp_path)
    run_line("submit", "--", "./run.sh", "--fast")
    assert _body(fake_center)["run"] == "./run.sh --fast"


def test_a_job_file_before_double_dash_is_read(
    fake_center: FakeCenter, run_line: RunLine, tmp_path: Path
) -> None:
    fake_center.serve_jobs(state="PENDING")
    jobfile = tmp_path / "job.yaml"
    jobfile.write_text("name: from-file\nrun: echo file\n")
    run_line("submit", str(jobfile), "--", "echo", "flag")
    body = _body(fake_center)
    assert body["name"] == "from-file" and body["run"] == "echo flag"  # the command wins


def test_dry_run_shows_the_verdict_and_exits_6_when_invalid(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    verdict = {"dry_run": True, "valid": False, "problems": ["over quota"]}
    fake_center.on("POST", "/v1/jobs", json={**verdict, "estimated_gpu_hours": 8.0})
    res = run_line("submit", "--dry-run", "--", "true", expect=6)
    assert res.stdout.splitlines()[:2] == ["valid: no", "  problem: over quota"], res.explain()
    assert "estimated charge: 8.00 GPU-hours" in res.stdout
    assert fake_center.requests[-1].url.params["dry_run"] == "true"
    doc = run_line("submit", "--dry-run", "--json", "--", "true", expect=6).json()
    assert doc["valid"] is False and doc["problems"] == ["over quota"]


@pytest.mark.parametrize(
    ("state", "exit_code", "expected"),
    [
        ("COMPLETED", 0, 0),
        ("FAILED", 7, 7),
        ("FAILED", 128 + 10, 138),
        ("TIMEOUT", None, 124),
        ("CANCELLED", None, 125),
        ("NODE_FAIL", None, 126),
    ],
)
def test_wait_exits_with_the_jobs_outcome(
    fake_center: FakeCenter, run_line: RunLine, state: str, exit_code: int | None, expected: int
) -> None:
    fake_center.serve_jobs(state=state, exit_code=exit_code)
    res = run_line("submit", "--wait", "--", "true", expect=expected)
    assert res.stdout == "42\n"  # the id alone on stdout, before the wait
    assert f"job 42 ended {state}" in res.stderr
    doc = run_line("wait", "42", "--json", expect=expected).json()
    assert doc[0]["state"] == state and doc[0]["exit_code"] == exit_code


def test_follow_streams_the_log(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="FAILED", exit_code=3)
    for job_id in ("42", "43"):  # the two jobs submitted below
        fake_center.logs[(job_id, "stdout")] = b"out 1\nout 2\n"
        fake_center.logs[(job_id, "stderr")] = b"oops\n"
    res = run_line("submit", "--follow", "--", "true", expect=3)
    assert res.stdout == "out 1\nout 2\n", res.explain()
    assert "Submitted job 42." in res.stderr and "oops\n" in res.stderr
    # --json: stdout is the document; the job's output goes to stderr
    as_json = run_line("submit", "--follow", "--json", "--", "true", expect=3)
    assert as_json.json()["exit_code"] == 3
    assert "out 1\nout 2\n" in as_json.stderr


def test_logs_tail_and_stream(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="COMPLETED")
    run_line("submit", "--", "true")
    fake_center.logs[("42", "stdout")] = b"".join(f"{i}\n".encode() for i in range(1, 101))
    fake_center.logs[("42", "stderr")] = b"oops\n"
    assert run_line("logs", "42", "--tail", "2", "--stream", "stdout").stdout == "99\n100\n"
    both = run_line("logs", "42")
    assert both.stdout.endswith("100\n") and both.stderr == "oops\n"
    run_line("logs", "42", "--stream", "everything", expect=2)


def test_wait_says_when_the_center_is_unreachable_and_back(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    # Three failed attempts make one failed poll (the client retries a GET twice).
    fake_center.on(
        "GET", "/v1/jobs/42",
        _down, _down, _down, _down, _down, _down,
        httpx.Response(200, json=job("42", "RUNNING")),
        httpx.Response(200, json=job("42", "COMPLETED", exit_code=0)),
    )  # fmt: skip
    res = run_line("wait", "42")
    assert res.stderr.count(UNREACHABLE) == 1 and res.stderr.count(BACK) == 1, res.explain()
    assert res.stderr.index(UNREACHABLE) < res.stderr.index(BACK)
    assert res.stderr.endswith("job 42 ended COMPLETED (exit code 0)\n")


def test_logs_follow_says_when_the_center_is_unreachable_and_back(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    fake_center.serve_jobs(state="COMPLETED")
    run_line("submit", "--", "true")
    fake_center.logs[("42", "stdout")] = b"done\n"
    fake_center.on(
        "GET", "/v1/jobs/42/logs",
        _down, _down, _down,
        lambda request: fake_center._log("42", request.url.params),
    )  # fmt: skip
    res = run_line("logs", "-f", "42", "--stream", "stdout")
    assert res.stdout == "done\n", res.explain()
    assert res.stderr.count(UNREACHABLE) == 1 and res.stderr.count(BACK) == 1, res.explain()


def test_no_notice_when_the_center_answers(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="COMPLETED")
    res = run_line("submit", "--follow", "--", "true")
    assert UNREACHABLE not in res.stderr and BACK not in res.stderr
