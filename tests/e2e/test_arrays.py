"""Arrays through the real CLI on the embedded local center: one row with its tasks counted
by state, `--expand` and `kaic show` list every task, `kaic wait` names the tasks that failed."""

from __future__ import annotations

import re
from pathlib import Path

from tests.helpers import run_cli

# tasks 1 and 4 fail with exit 3, the others complete
RUN = "exit $(( KAIC_ARRAY_TASK_ID % 3 == 1 ? 3 : 0 ))"


def test_an_array_in_jobs_show_and_wait(isolated_dirs: Path) -> None:
    array = run_cli("submit", "--array", "0-5", "--name", "sweep", "--", RUN).stdout.strip()
    waited = run_cli("wait", array, expect=3)
    assert (
        f"array {array}: 2 of 6 tasks did not complete: {array}_1 FAILED (exit 3), "
        f"{array}_4 FAILED (exit 3)"
    ) in waited.stderr

    listed = run_cli("jobs", "--all").stdout.splitlines()
    (row,) = [line for line in listed if line.startswith(f"{array} ")]
    assert "sweep" in row
    assert row.rstrip().endswith(f"6 tasks: 4 COMPLETED, 2 FAILED; task {array}_1 ended FAILED")
    assert not any(line.lstrip().startswith(f"{array}_") for line in listed)

    expanded = run_cli("jobs", "--all", "--expand").stdout.splitlines()
    tasks = [line.split() for line in expanded if line.lstrip().startswith(f"{array}_")]
    assert [(t[0], t[3]) for t in tasks] == [
        (f"{array}_{i}", "FAILED" if i % 3 == 1 else "COMPLETED") for i in range(6)
    ]
    doc = run_cli("jobs", "--all", "--expand", "--json").json()
    (mine,) = [j for j in doc if j["id"] == array]  # type: ignore[union-attr,index]
    assert mine["array_counts"] == {"COMPLETED": 4, "FAILED": 2}
    assert [t["exit_code"] for t in mine["tasks"]] == [0, 3, 0, 0, 3, 0]

    shown = run_cli("show", array).stdout
    assert "array_tasks   6 tasks: 4 COMPLETED, 2 FAILED" in shown
    table = shown.split("tasks:\n", 1)[1].splitlines()
    assert table[0].split() == ["TASK", "STATE", "EXIT", "ELAPSED", "REASON"]
    assert table[2].split()[:3] == [f"{array}_1", "FAILED", "3"]
    shown_json = run_cli("show", array, "--json").json()
    assert len(shown_json["tasks"]) == 6  # type: ignore[index,call-overload]


def test_show_reads_like_a_person_wrote_it(isolated_dirs: Path) -> None:
    """A time limit as typed (`90m` is 1h30m), times to the second with how long ago."""
    job = run_cli("submit", "--time", "90m", "--wait", "--", "true").stdout.strip()
    shown = run_cli("show", job).stdout
    assert "time_limit    1h30m\n" in shown
    submitted = next(line for line in shown.splitlines() if line.startswith("submitted_at"))
    pattern = r"submitted_at  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d \((just now|\d+ s ago)\)"
    assert re.fullmatch(pattern, submitted), submitted
    doc = run_cli("show", job, "--json").json()
    assert doc["time_limit_seconds"] == 5400  # type: ignore[index,call-overload]
    assert doc["submitted_at"].endswith(("Z", "+00:00"))  # type: ignore[index,call-overload]


def test_json_fields_and_jq(isolated_dirs: Path) -> None:
    """`--json id,state` picks fields (gh's way), `--jq` is jq itself."""
    job = run_cli("submit", "--wait", "--", "true").stdout.strip()
    picked = run_cli("jobs", "--all", "--json", "id,state").json()
    assert picked == [{"id": job, "state": "COMPLETED"}]
    assert run_cli("show", job, "--json=exit_code").json() == {"exit_code": 0}
    waited = run_cli("wait", "--json", job).json()  # a job id after --json stays the job
    assert waited[0]["id"] == job  # type: ignore[index]
    selected = run_cli("jobs", "--all", "--jq", '.[] | select(.state == "COMPLETED") | .id')
    assert selected.stdout.split() == [job]
    bad = run_cli("jobs", "--json", "id,bogus", expect=2)
    assert "unknown field 'bogus'" in bad.stderr and "hint: fields: " in bad.stderr
