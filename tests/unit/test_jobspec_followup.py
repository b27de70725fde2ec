"""`retry:` and `notify:` in a job file and as `--retry` / `--notify`: both forms give the same
model, and every mistake names the file line or the flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.errors import UsageError
from kaic.jobspec import SubmitOverrides, build_submit, load_job_file
from kaic.models.followup import Notify, RetryPolicy, parse_notify, parse_retry
from kaic.models.jobs import JobSubmit


def from_file(tmp_path: Path, text: str) -> JobSubmit:
    path = tmp_path / "job.yaml"
    path.write_text("run: python train.py\n" + text, encoding="utf-8")
    return build_submit(load_job_file(path), SubmitOverrides())[0]


def from_flags(**flags: object) -> JobSubmit:
    return build_submit(None, SubmitOverrides(command=["true"], **flags))[0]


def problem(call: object) -> str:
    with pytest.raises(UsageError) as info:
        call()  # type: ignore[operator]
    return info.value.message


@pytest.mark.parametrize(
    ("text", "on", "most"),
    [
        ("2", ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"], 2),
        ("NODE_FAIL,PREEMPTED:3", ["NODE_FAIL", "PREEMPTED"], 3),
        ("node_fail", ["NODE_FAIL"], 2),
        ("PREEMPTED:1", ["PREEMPTED"], 1),
    ],
)
def test_retry_flag_forms(text: str, on: list[str], most: int) -> None:
    assert parse_retry(text) == RetryPolicy.model_validate({"on": on, "max": most})
    assert from_flags(retry=text).retry == RetryPolicy.model_validate({"on": on, "max": most})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("FAILED:2", "cannot retry after FAILED"),
        ("TIMEOUT", "cannot retry after TIMEOUT"),
        ("NODE_FAIL:0", "retries must be 1 to 10"),
        ("NODE_FAIL:x", "expected a number of retries"),
        ("99", "retries must be 1 to 10"),
    ],
)
def test_retry_flag_mistakes_name_the_flag(text: str, says: str) -> None:
    message = problem(lambda: from_flags(retry=text))
    assert message.startswith("--retry: ") and says in message


def test_retry_in_a_job_file(tmp_path: Path) -> None:
    job = from_file(tmp_path, "retry: {on: [NODE_FAIL, PREEMPTED], max: 2}\n")
    assert job.retry == RetryPolicy.model_validate({"on": ["NODE_FAIL", "PREEMPTED"], "max": 2})
    assert from_file(tmp_path, "retry: BOOT_FAIL:1\n").retry == RetryPolicy.model_validate(
        {"on": ["BOOT_FAIL"], "max": 1}
    )
    assert from_file(tmp_path, "retry: {}\n").retry == RetryPolicy()


def test_retry_mistakes_in_a_job_file_name_the_line(tmp_path: Path) -> None:
    message = problem(lambda: from_file(tmp_path, "retry:\n  on: [FAILED]\n"))
    assert "job.yaml:3: retry.on[0]:" in message
    message = problem(lambda: from_file(tmp_path, "retry: {max: 2, tries: 3}\n"))
    assert "job.yaml:2: unknown key 'tries' in 'retry'" in message
    message = problem(lambda: from_file(tmp_path, "retry: {max: 20}\n"))
    assert "retry.max" in message and "less than or equal to 10" in message


def test_notify_flag_forms() -> None:
    assert parse_notify("https://hooks.example.org/x") == Notify(
        webhook="https://hooks.example.org/x"
    )
    assert parse_notify("fail:me@lab.example.org") == Notify(
        on=["fail"], email="me@lab.example.org"
    )
    assert from_flags(notify="http://10.0.0.1:9000/h").notify == Notify(
        webhook="http://10.0.0.1:9000/h"
    )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("ftp://files.example.org/x", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("https:///nohost", "names no host"),
        ("not-an-address", "expected an http(s) URL or a mail address"),
        ("me@", "email"),
    ],
)
def test_notify_flag_mistakes_name_the_flag(text: str, says: str) -> None:
    message = problem(lambda: from_flags(notify=text))
    assert message.startswith("--notify: ") and says in message


def test_notify_in_a_job_file(tmp_path: Path) -> None:
    job = from_file(
        tmp_path,
        "notify:\n  on: [end, fail]\n  webhook: https://h.example.org/x\n"
        "  email: me@lab.example.org\n",
    )
    assert job.notify == Notify(
        on=["end", "fail"], webhook="https://h.example.org/x", email="me@lab.example.org"
    )
    message = problem(lambda: from_file(tmp_path, "notify: {on: [start], email: a@b.org}\n"))
    assert "job.yaml:2: notify.on[0]:" in message
    message = problem(lambda: from_file(tmp_path, "notify: {on: [end]}\n"))
    assert "needs a webhook or an email" in message


def test_a_notify_says_when_it_wants_an_end() -> None:
    every, failures = Notify(email="a@b.org"), Notify(on=["fail"], email="a@b.org")
    assert every.wants("COMPLETED") and every.wants("FAILED")
    assert failures.wants("NODE_FAIL") and not failures.wants("COMPLETED")
