"""`kaic submit --retry/--notify` and `kaic logs --attempt`: what the flags become on the
wire, in process against a `FakeCenter` (the behaviour itself is tested against a real center
in `tests/center/test_requeue.py` and `test_notify.py`)."""

from __future__ import annotations

import json

from tests.inprocess import FakeCenter, RunLine


def test_retry_and_notify_flags_become_the_job(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="PENDING")
    run_line(
        "submit", "--retry", "NODE_FAIL,PREEMPTED:3", "--notify", "fail:me@lab.example.org",
        "--", "true",
    )  # fmt: skip
    (sent,) = fake_center.sent("POST", "/v1/jobs")
    body = json.loads(sent.content)
    assert body["retry"] == {"on": ["NODE_FAIL", "PREEMPTED"], "max": 3}
    assert body["notify"] == {"on": ["fail"], "email": "me@lab.example.org"}


def test_a_bad_retry_is_a_usage_error_naming_the_flag(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    res = run_line("submit", "--retry", "FAILED:2", "--", "true", expect=2)
    assert res.stderr.startswith("error: --retry: cannot retry after FAILED"), res.explain()
    res = run_line("submit", "--notify", "ftp://x.example.org/", "--", "true", expect=2)
    assert "--notify:" in res.stderr and "http:// and https://" in res.stderr, res.explain()
    assert fake_center.requests == []


def test_logs_attempt_asks_for_that_attempt(fake_center: FakeCenter, run_line: RunLine) -> None:
    fake_center.serve_jobs(state="COMPLETED")
    run_line("submit", "--", "true")
    fake_center.logs[("42", "stdout")] = b"first\n"
    res = run_line("logs", "42", "--attempt", "1", "--stream", "stdout")
    assert res.stdout == "first\n", res.explain()
    (sent,) = fake_center.sent("GET", "/v1/jobs/42/logs")
    assert sent.url.params["attempt"] == "1"
    run_line("logs", "42", "--attempt", "0", expect=2)
