"""`kaic top --once`, `kaic stats`, the efficiency line after a wait and in `kaic show`, and
the idle mark of `kaic jobs`, in process against a `FakeCenter` answering the metrics API
with known numbers (`tests/metrics_trace.py`), so every figure shown is checked exactly.
The live view is `test_top_terminal.py`'s; the real center's answers are the e2e tests'."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.hostile import by_label
from tests.inprocess import FakeCenter, RunLine
from tests.metrics_trace import (
    GOOD,
    GOOD_LINE,
    POOR,
    POOR_LINE,
    gpu,
    gpu_job,
    job_metrics,
    running_job,
    serve,
)

RUNNING_PATH = "/v1/metrics/running"


@pytest.fixture
def center(fake_center: FakeCenter) -> FakeCenter:
    return serve(fake_center)


def three_jobs(center: FakeCenter) -> None:
    center.running = [
        running_job("42", "train-llm", [gpu(0, 87.0, 61.2, 312.4), gpu(1, 2.0, 1.0, 71.0)]),
        running_job("43", "idle-one", [gpu(0, 0.0, 0.5, 60.0)], idle_minutes=15),
        running_job("44", "cpu-only", [], cpu=98.0, rss_gib=1.5),
    ]


# -- kaic top --------------------------------------------------------------------------------


def test_top_piped_is_one_snapshot_of_plain_rows_from_one_request(
    center: FakeCenter, run_line: RunLine
) -> None:
    three_jobs(center)
    res = run_line("top")  # stdout is no terminal: one snapshot, no live view
    lines = res.stdout.splitlines()
    assert lines[0].split() == [
        "JOB", "NAME", "ELAPSED", "NODE", "GPU", "UTIL", "MEM", "GiB", "POWER", "CPU", "RSS", "GiB"
    ]  # fmt: skip
    assert [line.split() for line in lines[1:]] == [
        ["42", "train-llm", "1:02:03", "n1", "0", "87%", "61.2/80.0", "312", "W", "153%", "12.3"],
        ["42", "train-llm", "1:02:03", "n1", "1", "2%", "1.0/80.0", "71", "W"],
        ["43", "idle-one", "1:02:03", "n1", "0", "0%", "0.5/80.0", "60", "W", "153%", "12.3"],
        ["44", "cpu-only", "1:02:03", "n1", "-", "-", "-", "-", "98%", "1.5"],
    ]
    assert "\x1b[" not in res.stdout
    # one request for all three jobs, and no other
    assert [(r.method, r.url.path) for r in center.requests] == [("GET", RUNNING_PATH)]


def test_top_once_json_is_the_running_metrics_document(
    center: FakeCenter, run_line: RunLine
) -> None:
    three_jobs(center)
    doc = run_line("top", "--once", "--json", terminal=True).json()
    assert isinstance(doc, dict)
    assert [j["job_id"] for j in doc["jobs"]] == ["42", "43", "44"]
    assert doc["jobs"][0]["latest"][0]["gpus"][0]["utilization_pct"] == 87.0
    assert doc["jobs"][1]["idle_since"] == "2026-03-01T11:45:00Z"
    picked = run_line("top", "--jq", ".jobs[] | .name").stdout
    assert picked.splitlines() == ["train-llm", "idle-one", "cpu-only"]
    assert len(center.sent("GET", RUNNING_PATH)) == 2  # one per run


def test_top_once_on_a_terminal_draws_bars_and_highlights_idle_gpus(
    center: FakeCenter, run_line: RunLine
) -> None:
    three_jobs(center)
    shown = run_line("top", "--once", terminal=True).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", shown)
    busy = next(line for line in plain.splitlines() if "312 W" in line)
    assert "████████▊   87%" in busy and "idle" not in busy  # 87 % of 10 cells: 8 and 6/8
    idle_rows = [line for line in plain.splitlines() if "idle" in line.split()]
    assert len(idle_rows) == 2  # GPU 1 of job 42 (2 %) and job 43's GPU (0 %)
    assert "\x1b[1;33m" in shown  # bold yellow: the idle rows' style
    assert len(center.sent("GET", RUNNING_PATH)) == 1


def test_no_running_jobs_says_so_and_how_to_submit_one(
    center: FakeCenter, run_line: RunLine
) -> None:
    res = run_line("top")
    assert res.stdout == ""
    assert "No running jobs. Submit one with `kaic submit --gpus 1 -- COMMAND`." in res.stderr
    assert run_line("top", "--json").json()["jobs"] == []


@pytest.mark.parametrize("label", ["csi-clear", "osc-title", "markup-style", "bidi-rlo", "lf"])
@pytest.mark.parametrize("terminal", [False, True])
def test_hostile_job_names_show_as_text_in_top(
    center: FakeCenter, run_line: RunLine, label: str, terminal: bool
) -> None:
    entry = by_label(label)
    center.running = [running_job("42", entry.value, [gpu(0, 50.0, 1.0, 100.0)])]
    shown = run_line("top", "--once", terminal=terminal).stdout
    for fragment in entry.raw:
        assert fragment not in shown
    assert entry.shown in shown


# -- kaic stats ------------------------------------------------------------------------------


def test_stats_of_a_running_job(center: FakeCenter, run_line: RunLine) -> None:
    center.jobs["42"] = gpu_job("42", "RUNNING")
    center.metrics["42"] = job_metrics("42", [0, 25, 50, 75, 100, None, 100])
    res = run_line("stats", "42")
    lines = res.stdout.splitlines()
    assert lines[0].startswith("job 42 · train-llm · RUNNING · elapsed ")
    assert lines[1].split()[:3] == ["NODE", "GPU", "MODEL"]
    assert lines[2].split() == ["n1", "0", "H100", "0/58/100", "%", "16.0/80.0", "300/412", "W",
                                "▁▃▅▆█", "█"]  # fmt: skip
    assert lines[3] == "CPU 100 % avg (of one core) · RSS peak 2.0 GiB"
    assert "efficiency" not in res.stdout  # not finished
    doc = run_line("stats", "42", "--json").json()
    assert isinstance(doc, dict) and len(doc["samples"]) == 7
    # jq prints numbers as jq does: 100.0 is 100
    assert run_line("stats", "42", "--jq", ".summary[] | .utilization_max_pct").stdout == "100\n"


def test_stats_of_a_finished_job_shows_efficiency_notes_and_a_hint(
    center: FakeCenter, run_line: RunLine
) -> None:
    center.jobs["42"] = gpu_job("42", "COMPLETED", exit_code=0, ended_at="2026-03-01T12:00:00Z")
    center.metrics["42"] = job_metrics(
        "42", [40.0] * 60, efficiency=POOR, notes=["no NVML on node n2: CPU and memory only"]
    )
    res = run_line("stats", "42")
    lines = res.stdout.splitlines()
    assert lines[0] == "job 42 · train-llm · COMPLETED · elapsed 1:02:03"
    assert lines[2].split()[-1] == "▄" * 40  # 60 samples in 40 cells, all at 40 %
    assert lines[-1] == POOR_LINE
    assert "note: no NVML on node n2: CPU and memory only" in res.stderr
    hint = "hint: GPU util 42 % avg, GPUs idle 40 % of the time: try fewer GPUs or a faster "
    assert f"{hint}input pipeline (more data-loader workers)\n" in res.stderr


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"state": "PENDING"}, "job 42 is PENDING without starting: nothing was sampled"),
        (
            {"state": "COMPLETED", "ended_at": "2026-03-01T10:57:59Z"},
            "no samples: job 42 ran 2 s, too short to be sampled",
        ),
        ({"state": "CANCELLED", "started_at": None}, "job 42 ended CANCELLED without starting"),
    ],
)
def test_stats_of_a_job_without_samples_says_why(
    center: FakeCenter, run_line: RunLine, fields: dict[str, object], why: str
) -> None:
    state = str(fields.pop("state"))
    center.jobs["42"] = gpu_job("42", state, **fields)
    center.metrics["42"] = {"job_id": "42"}
    res = run_line("stats", "42")
    assert why in res.stderr
    assert len(res.stdout.splitlines()) == 1  # the job's line, no table


def test_stats_of_an_unknown_job_is_not_found(center: FakeCenter, run_line: RunLine) -> None:
    res = run_line("stats", "999", expect=4)
    assert "no job 999" in res.stderr


# -- the efficiency line -----------------------------------------------------------------------


def test_wait_says_the_efficiency_line_on_stderr_and_json_carries_it(
    center: FakeCenter, run_line: RunLine
) -> None:
    center.jobs["42"] = gpu_job("42", "COMPLETED", exit_code=0, efficiency=GOOD)
    res = run_line("wait", "42")
    assert res.stdout == ""
    assert res.stderr.splitlines() == ["job 42 ended COMPLETED (exit code 0)", GOOD_LINE]
    doc = run_line("wait", "42", "--json").json()
    assert isinstance(doc, list) and doc[0]["efficiency"] == GOOD


def test_submit_wait_says_a_poor_efficiency_with_its_hint(
    center: FakeCenter, run_line: RunLine
) -> None:
    def ended(request: httpx.Request) -> httpx.Response:  # each job as the wait finds it
        job_id = request.url.path.split("/")[3]
        return httpx.Response(200, json=gpu_job(job_id, "COMPLETED", exit_code=0, efficiency=POOR))

    center.on("GET", re.compile(r"/v1/jobs/\d+"), ended)
    res = run_line("submit", "--gpus", "2", "--wait", "--", "python", "train.py")
    assert res.stdout == "42\n"  # CLI.md: the id alone on stdout
    said = res.stderr.splitlines()
    hint = said[said.index(POOR_LINE) + 1]
    assert hint.startswith("hint: GPU util 42 % avg, GPUs idle 40 %")
    assert hint.endswith("; `kaic stats 42` shows when")
    doc = run_line("submit", "--gpus", "2", "--wait", "--json", "--", "true").json()
    assert isinstance(doc, dict) and doc["efficiency"] == POOR


def test_show_has_the_efficiency_line(center: FakeCenter, run_line: RunLine) -> None:
    center.jobs["42"] = gpu_job("42", "COMPLETED", exit_code=0, efficiency=GOOD)
    res = run_line("show", "42")
    assert f"efficiency    {GOOD_LINE.removeprefix('efficiency: ')}" in res.stdout.splitlines()
    assert "hint:" not in res.stderr
    center.jobs["43"] = gpu_job("43", "COMPLETED", exit_code=0)  # no efficiency (yet)
    assert "efficiency    -" in run_line("show", "43").stdout.splitlines()


def test_a_job_without_efficiency_gets_no_line(center: FakeCenter, run_line: RunLine) -> None:
    center.jobs["42"] = gpu_job("42", "COMPLETED", exit_code=0, resources={"gpus": 0})
    assert run_line("wait", "42").stderr.splitlines() == ["job 42 ended COMPLETED (exit code 0)"]


# -- the idle mark of kaic jobs --------------------------------------------------------------


def test_jobs_marks_running_gpu_jobs_idle_for_ten_minutes(
    center: FakeCenter, run_line: RunLine
) -> None:
    center.jobs = {
        "41": gpu_job("41", "COMPLETED", exit_code=0),
        "42": gpu_job("42", "RUNNING"),
        "43": gpu_job("43", "RUNNING"),
        "44": gpu_job("44", "RUNNING"),
    }
    center.running = [
        running_job("42", "train-llm", [gpu(0, 1.0, 1.0, 60.0)], idle_minutes=15.5),
        running_job("43", "train-llm", [gpu(0, 1.0, 1.0, 60.0)], idle_minutes=9.9),
        running_job("44", "train-llm", [gpu(0, 90.0, 1.0, 60.0)]),
    ]
    rows = {line.split()[0]: line for line in run_line("jobs").stdout.splitlines()[1:]}
    assert rows["42"].endswith("GPUs idle 15m")
    assert "idle" not in rows["43"] and "idle" not in rows["44"] and "idle" not in rows["41"]
    assert len(center.sent("GET", RUNNING_PATH)) == 1
    # the JSON stays an array of Job, and costs the center no metrics request
    assert [j["id"] for j in run_line("jobs", "--json").json()] == ["44", "43", "42", "41"]
    assert len(center.sent("GET", RUNNING_PATH)) == 1


def test_jobs_asks_for_metrics_only_with_running_gpu_jobs(
    center: FakeCenter, run_line: RunLine
) -> None:
    center.jobs = {
        "41": gpu_job("41", "COMPLETED", exit_code=0),
        "42": gpu_job("42", "RUNNING", resources={"gpus": 0}),
        "43": gpu_job("43", "PENDING"),
    }
    run_line("jobs")
    assert center.sent("GET", RUNNING_PATH) == []


def test_an_older_center_without_the_route_shows_no_mark(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    fake_center.serve_jobs()  # no metrics API: the route answers 404
    fake_center.jobs = {"42": gpu_job("42", "RUNNING")}
    res = run_line("jobs")
    assert res.stdout.splitlines()[1].split()[0] == "42" and "idle" not in res.stdout
    assert len(fake_center.sent("GET", RUNNING_PATH)) == 1 and res.stderr == ""


def test_top_on_an_older_center_says_it_serves_no_metrics(
    fake_center: FakeCenter, run_line: RunLine
) -> None:
    fake_center.serve_jobs()  # no metrics API: the route answers 404
    res = run_line("top", expect=4)
    assert "error: the center at https://center.test does not serve job metrics" in res.stderr
    assert "hint: `kaic jobs` and `kaic show JOB` still work" in res.stderr
