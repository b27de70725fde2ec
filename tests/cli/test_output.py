"""The output sink: one JSON document under --json, what --jq picks out of it, `[]` for an
empty list, the human rendering otherwise — chosen in one place for every command."""

from __future__ import annotations

import json

import pytest

from tests.inprocess import FakeCenter, RunLine, job

PROJECT = {
    "name": "ai-2026-0042",
    "gpu_hours_granted": 10,
    "gpu_hours_used": 4,
    "gpu_hours_remaining": 6,
}
PARTITION = {"name": "h100", "gpu_type": "H100", "gpus_total": 8, "gpus_free": 3, "default": True}
ME = {"user": "alice", "unix_account": "alice01", "projects": [{"name": "ai-2026-0042"}]}


@pytest.fixture
def center(fake_center: FakeCenter) -> FakeCenter:
    fake_center.on("GET", "/v1/jobs", json={"jobs": [job("42", "RUNNING"), job("41")]})
    fake_center.on("GET", "/v1/projects", json=[PROJECT])
    fake_center.on("GET", "/v1/partitions", json=[PARTITION])
    fake_center.on("GET", "/v1/me", json=ME)
    fake_center.on("GET", "/v1/tokens", json=[])
    return fake_center


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["jobs"], ["42", "41"]),
        (["usage"], ["ai-2026-0042"]),
        (["resources"], ["h100"]),
        (["token", "list"], []),
    ],
)
def test_json_is_one_document_and_jq_picks_from_it(
    center: FakeCenter, run_line: RunLine, args: list[str], expected: list[str]
) -> None:
    doc = run_line(*args, "--json").json()
    assert isinstance(doc, list) and [item.get("id") or item["name"] for item in doc] == expected
    key = ".id" if args == ["jobs"] else ".name"
    assert run_line(*args, "--jq", f".[] | {key}").stdout.splitlines() == expected
    assert run_line(*args, "--jq", "length").stdout == f"{len(expected)}\n"


def test_an_empty_list_is_an_empty_json_array(center: FakeCenter, run_line: RunLine) -> None:
    center.on("GET", "/v1/jobs", json={"jobs": []})
    center.on("GET", "/v1/projects", json=[])
    for args in (["jobs"], ["usage"], ["token", "list"]):
        res = run_line(*args, "--json")
        assert res.stdout == "[]\n", res.explain()
        human = run_line(*args)
        assert human.stdout == "" and human.stderr  # the human rendering says so on stderr


def test_jq_implies_json_and_prints_strings_raw(center: FakeCenter, run_line: RunLine) -> None:
    assert run_line("whoami", "--jq", ".unix_account").stdout == "alice01\n"
    assert run_line("whoami", "--jq", ".projects").json() == ["ai-2026-0042"]
    assert run_line("whoami", "--jq", ".expires_at").stdout == "null\n"


def test_a_bad_jq_expression_is_a_usage_error_before_any_request(
    center: FakeCenter, run_line: RunLine
) -> None:
    res = run_line("jobs", "--jq", ".[] | .id |", expect=2)
    assert "--jq '.[] | .id |'" in res.stderr and "jq syntax" in res.stderr
    assert center.requests == []


def test_human_rendering_without_json(center: FakeCenter, run_line: RunLine) -> None:
    listed = run_line("jobs").stdout.splitlines()
    headers = ["ID", "NAME", "KIND", "STATE", "GPUS", "PARTITION", "ELAPSED", "REASON"]
    assert listed[0].split() == headers
    assert listed[1].split()[2] == "batch"
    assert [line.split()[0] for line in listed[1:]] == ["42", "41"]
    who = run_line("whoami").stdout
    assert "unix_account  alice01" in who and "{" not in who


def test_quiet_commands_print_nothing_on_stdout_but_their_json(
    center: FakeCenter, run_line: RunLine
) -> None:
    center.on("POST", "/v1/jobs/42/cancel", json=job("42", "CANCELLED"))
    quiet = run_line("cancel", "42")
    assert quiet.stdout == "" and "Cancelling job 42 (CANCELLED)." in quiet.stderr
    as_json = run_line("cancel", "42", "--json")
    assert [j["state"] for j in as_json.json()] == ["CANCELLED"]
    assert "Cancelling" not in as_json.stderr  # the JSON says it: no notice besides
    assert json.loads(run_line("cancel", "42", "--jq", ".[0]").stdout)["id"] == "42"
