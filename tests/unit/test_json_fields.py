"""`--json FIELDS` (as gh has it), taken off the command line before Click reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.cli.json_fields import select_fields, split_json_fields
from kaic.errors import UsageError


@pytest.mark.parametrize(
    ("argv", "left", "fields"),
    [
        (["jobs", "--json"], ["jobs", "--json"], None),
        (["jobs", "--json", "id,state"], ["jobs", "--json"], ["id", "state"]),
        (["jobs", "--json=id"], ["jobs", "--json"], ["id"]),
        (["show", "42", "--json", "state"], ["show", "42", "--json"], ["state"]),
        # a job id, a path, a word that is no field: an argument, as before
        (["wait", "--json", "42"], ["wait", "--json", "42"], None),
        (["push", "--json", "data", "out"], ["push", "--json", "data", "out"], None),
        (["data", "ls", "--json", "runs/a"], ["data", "ls", "--json", "runs/a"], None),
        # after `--` everything is the job's own command
        (["submit", "--json", "--", "x", "--json", "id"], ["submit", "--json", "--", "x", "--json", "id"], None),  # noqa: E501
        (["submit", "--", "x", "--json=id"], ["submit", "--", "x", "--json=id"], None),
    ],
)  # fmt: skip
def test_split(argv: list[str], left: list[str], fields: list[str] | None) -> None:
    assert split_json_fields(argv) == (left, fields)


def test_a_file_here_named_like_a_field_stays_an_argument(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "state").write_text("x")
    assert split_json_fields(["data", "push", "--json", "state", "dst"])[1] is None


def test_select() -> None:
    docs = [{"id": "1", "state": "RUNNING", "name": "a"}, {"id": "2", "state": "FAILED"}]
    assert select_fields(docs, ["id", "state"]) == [
        {"id": "1", "state": "RUNNING"},
        {"id": "2", "state": "FAILED"},
    ]
    assert select_fields({"id": "1", "x": 2}, ["x"]) == {"x": 2}
    assert select_fields([], ["id"]) == []
    with pytest.raises(UsageError) as info:
        select_fields(docs, ["id", "bogus"])
    assert "unknown field 'bogus'" in info.value.message
    assert info.value.hint == "fields: id, name, state"
