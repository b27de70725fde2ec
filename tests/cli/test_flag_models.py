"""A request model built from flags that fails validation is a usage error naming the flag
(exit 2), never a pydantic traceback or "internal error" — and nothing is sent."""

from __future__ import annotations

import pytest

from kaic.errors import ExitCode, UsageError
from kaic.flows.inputs import user_input
from tests.inprocess import FakeCenter, RunLine


def _clean(stderr: str) -> None:
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert "ValidationError" not in stderr and "\x1b" not in stderr, stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--partition", "a\x1bb"], "--partition"),
        (["--project", "p\nq"], "--project"),
        (["--project", "x" * 300], "--project"),
    ],
)
def test_remote_bench_flags(
    fake_center: FakeCenter, run_line: RunLine, args: list[str], flag: str
) -> None:
    res = run_line("bench", "--remote", *args, expect=2)
    _clean(res.stderr)
    assert res.stderr.startswith(f"error: {flag}: "), res.explain()
    assert fake_center.requests == []


def test_login_user_name(fake_center: FakeCenter, run_line: RunLine) -> None:
    res = run_line(
        "login", "--center", fake_center.url, "-u", "a\x1bb", "--password-stdin",
        input="pw-secret\n", env={"KAIC_CENTER": None, "KAIC_TOKEN": None}, expect=2,
    )  # fmt: skip
    _clean(res.stderr)
    assert res.stderr.startswith("error: --username: must not contain control characters")
    assert "'a\\x1bb'" in res.stderr  # the value, escaped
    assert fake_center.requests == []


def test_a_refused_password_is_never_quoted(fake_center: FakeCenter, run_line: RunLine) -> None:
    secret = "s3cret-" + "x" * 20_000  # longer than any password the center takes
    res = run_line(
        "login", "--center", fake_center.url, "-u", "alice", "--password-stdin",
        input=secret + "\n", env={"KAIC_CENTER": None, "KAIC_TOKEN": None}, expect=2,
    )  # fmt: skip
    assert res.stderr.startswith("error: the password: "), res.explain()
    assert "s3cret" not in res.stderr
    assert fake_center.requests == []


def test_token_name(fake_center: FakeCenter, run_line: RunLine) -> None:
    res = run_line("token", "create", "bad name!", expect=2)
    _clean(res.stderr)
    assert res.stderr.startswith("error: NAME: string should match pattern"), res.explain()
    assert fake_center.sent("POST", "/v1/tokens") == []


def test_the_mapping_names_nested_fields_and_lists_every_problem() -> None:
    from kaic.models import JobSubmit, Resources

    names = {"partition": "--partition", "resources.gpus": "--gpus"}
    with pytest.raises(UsageError) as info, user_input(names):
        JobSubmit(partition="a\x00b", resources=Resources.model_validate({"gpus": -1}), run="x")
    assert info.value.exit_code == ExitCode.USAGE
    with pytest.raises(UsageError) as both, user_input(names):
        JobSubmit.model_validate({"partition": "\x1b", "resources": {"gpus": -1}, "run": "x"})
    lines = both.value.message.splitlines()
    assert [line.split(":")[0] for line in lines] == ["--partition", "--gpus"]
