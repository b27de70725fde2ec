"""`kaic top`, `kaic stats`, the idle mark of `kaic jobs` and the efficiency line of a
finished GPU job, end to end: the real CLI against a real center on loopback, with real
jobs.

Two ways to a known trace. Most tests write the samples into the jobs' directories as the
job's sampler writes them (`tests/center/metrics_support.py`), with times relative to now —
a center without a sampler (`--metrics-interval 0`) —, so every figure, a 12-minute idle
stretch included, can be written out by hand. One test runs the real sampler with every job
(`--metrics-interval 0.2`) over the fake NVML replaying a trace (constant utilisation, so
the averages do not depend on how many samples it took).
"""

from __future__ import annotations

import os
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaic.flows.metrics import gpu_hours
from tests.center.metrics_support import (
    fake_nvml_env,
    header,
    sample,
    write_metrics,
    write_trace,
)
from tests.e2e.test_login import login
from tests.helpers import RunningCenter, cli_env, poll, run_cli, start_center
from tests.terminal import start_on_terminal

PASSWORD = "correct horse battery staple"
GIB = 2**30
#: the busy job's two GPUs, one sample of 5 s each: utilisation and memory used (GiB)
BUSY_UTIL = ([90.0, 70.0, 50.0, 30.0], [10.0, 0.0, 0.0, 6.0])
BUSY_MEM = [3, 5, 7, 4]


@pytest.fixture
def metrics_center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center with 4 (pretend) GPUs and no sampler (the test writes the samples), alice
    logged in."""
    center = start_center(
        tmp_path / "metrics-center", "--gpus", "4", "--kill-grace", "1", "--metrics-interval", "0"
    )
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("ai-2026-0042", 5000, ["alice"])
        login(center, "alice", PASSWORD)
        yield center
    finally:
        center.stop()


def show(job_id: str) -> dict[str, Any]:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return doc


def running_gpu_job(name: str) -> tuple[str, list[int]]:
    """A running 2-GPU job: its id and the GPUs it was given."""
    job_id = run_cli("submit", "--gpus", "2", "--name", name, "--", "sleep", "120").stdout.strip()
    doc = poll(lambda: (d := show(job_id))["state"] == "RUNNING" and d, what=f"{name} running")
    return job_id, list(doc["gpu_ids"])


def write_busy_trace(center: RunningCenter, job_id: str, gpus: list[int]) -> None:
    """Four 5 s samples ending now: GPU a at 90/70/50/30 %, GPU b at 10/0/0/6 % (idle for
    two samples); memory used 3/5/7/4 GiB on both; the job's processes at 150 % CPU, RSS
    1, 2, 3, 4 GiB."""
    now = time.time()
    lines: list[dict[str, Any] | str] = [header("n1", gpus=gpus)]
    for i, mem in enumerate(BUSY_MEM):
        utils = {gpus[0]: BUSY_UTIL[0][i], gpus[1]: BUSY_UTIL[1][i]}
        lines.append(
            sample(now - 20 + 5 * (i + 1), 5, utils, mem=mem * GIB, cpu=150.0, rss=(i + 1) * GIB)
        )
    write_metrics(center.state_dir / "jobs" / job_id, "n1", lines)


def write_idle_trace(center: RunningCenter, job_id: str, gpus: list[int]) -> None:
    """Twelve one-minute samples ending now, every GPU at 1 %: idle for 12 minutes."""
    now = time.time()
    lines: list[dict[str, Any] | str] = [header("n1", gpus=gpus)]
    lines += [sample(now - 660 + 60 * i, 60, dict.fromkeys(gpus, 1.0)) for i in range(12)]
    write_metrics(center.state_dir / "jobs" / job_id, "n1", lines)


def test_top_stats_idle_mark_and_efficiency_against_the_real_center(
    metrics_center: RunningCenter,
) -> None:
    busy, busy_gpus = running_gpu_job("busy")
    idle, idle_gpus = running_gpu_job("idle")
    write_busy_trace(metrics_center, busy, busy_gpus)
    write_idle_trace(metrics_center, idle, idle_gpus)

    # kaic top --json: one document with both jobs' latest samples
    doc = poll(
        lambda: (
            (d := run_cli("top", "--json").json())
            and len(d["jobs"]) == 2  # type: ignore[index]
            and all(j["latest"] for j in d["jobs"])  # type: ignore[index]
            and d
        ),
        what="both jobs sampled in GET /v1/metrics/running",
    )
    by_id = {j["job_id"]: j for j in doc["jobs"]}
    latest = by_id[busy]["latest"][0]
    assert [g["utilization_pct"] for g in latest["gpus"]] == [30.0, 6.0]
    assert latest["cpu_pct"] == 150.0 and by_id[busy]["idle_since"] is None
    assert by_id[idle]["idle_since"] is not None

    # kaic top, piped: one plain snapshot, a row per GPU
    rows = [line.split() for line in run_cli("top").stdout.splitlines()[1:]]
    assert sorted((r[0], r[4], r[5]) for r in rows if r[0] == busy) == sorted(
        [(busy, str(busy_gpus[0]), "30%"), (busy, str(busy_gpus[1]), "6%")]
    )

    # kaic jobs: the idle job is marked, the busy one not
    listed = {r.split()[0]: r for r in run_cli("jobs").stdout.splitlines()[1:]}
    assert listed[idle].endswith("GPUs idle 12m"), listed[idle]
    assert "idle" not in listed[busy].split()[-1]

    # kaic stats of the running busy job: its GPUs' min/avg/max, memory peak, sparkline
    stats = run_cli("stats", busy).stdout.splitlines()
    assert stats[0].startswith(f"job {busy} · busy · RUNNING · elapsed ")
    first = next(line for line in stats if line.split()[:2] == ["n1", str(busy_gpus[0])])
    assert "30/60/90 %" in first and "7.0/80.0" in first and first.endswith("▇▆▅▃")
    assert stats[-1] == "CPU 150 % avg (of one core) · RSS peak 4.0 GiB"
    metrics = run_cli("stats", busy, "--json").json()
    assert isinstance(metrics, dict) and len(metrics["samples"]) == 4

    # the end: the center computes the efficiency; `kaic wait` says it on stderr
    run_cli("cancel", busy, idle)
    ended = run_cli("wait", busy, expect=125)
    eff = show(busy)["efficiency"]
    assert eff["gpu_util_avg"] == 32.0 and eff["gpu_mem_peak_bytes"] == 7 * GIB
    assert eff["gpu_hours_idle"] == pytest.approx(eff["gpu_hours"] * 0.25, abs=1e-3)
    charged = (
        f"{gpu_hours(eff['gpu_hours'])} GPU-h charged, {gpu_hours(eff['gpu_hours_idle'])} idle"
    )
    line = f"efficiency: GPU util 32 % avg · peak mem 7.0 GiB · {charged}"
    said = ended.stderr.splitlines()
    assert said[said.index(line) + 1].startswith("hint: GPU util 32 % avg: try fewer GPUs")
    assert run_cli("wait", busy, "--json", expect=125).json()[0]["efficiency"] == eff  # type: ignore[index]
    # and `kaic stats` of the finished job still answers, with the efficiency
    assert line in run_cli("stats", busy).stdout.splitlines()
    assert os.path.exists(metrics_center.state_dir / "jobs" / busy / "metrics" / "n1.jsonl")


def test_top_live_view_against_the_real_center(metrics_center: RunningCenter) -> None:
    """The live view on a pseudo-terminal: the busy job's bars, then q, the terminal as it
    was."""
    busy, busy_gpus = running_gpu_job("busy")
    write_busy_trace(metrics_center, busy, busy_gpus)
    live = start_on_terminal("top", "--interval", "0.5", env=cli_env())
    try:
        before = termios.tcgetattr(live.tty)
        live.until(lambda: b"30%" in live.shown and b"busy" in live.shown)
        os.write(live.master, b"q")
        assert live.exit_code() == 0
        assert termios.tcgetattr(live.tty) == before
        text = live.shown.decode(errors="replace")
        assert "███ " in text and "1 running job" in text and "Traceback" not in text
    finally:
        live.close()
    run_cli("cancel", busy)


@pytest.fixture
def sampled_center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center with 4 (pretend) GPUs and a sampler every 0.2 s, alice logged in."""
    center = start_center(
        tmp_path / "sampled-center", "--gpus", "4", "--kill-grace", "1", "--metrics-interval", "0.2"
    )
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("ai-2026-0042", 5000, ["alice"])
        login(center, "alice", PASSWORD)
        yield center
    finally:
        center.stop()


def test_the_real_sampler_through_top_stats_and_the_efficiency_line(
    sampled_center: RunningCenter, tmp_path: Path
) -> None:
    util = {0: [80.0], 1: [20.0], 2: [80.0], 3: [20.0]}  # any two GPUs given: 50 % avg
    trace = write_trace(tmp_path / "trace.json", 4, util, {i: [6 * GIB] for i in range(4)})
    env = [f"--env={k}={v}" for k, v in fake_nvml_env(trace).items()]
    release = tmp_path / "release"
    run = f"while [ ! -e {release} ]; do sleep 0.05; done"
    job_id = run_cli("submit", "--gpus", "2", "--name", "fake-nvml", *env, "--", "bash", "-c", run)
    job_id = job_id.stdout.strip()
    try:
        sampled = poll(
            lambda: (d := run_cli("stats", job_id, "--json").json()) and d["samples"] and d,  # type: ignore[index]
            what="the sampler's first samples",
        )
        assert {g["utilization_pct"] for s in sampled["samples"] for g in s["gpus"]} == {20.0, 80.0}
        top = run_cli("top", "--json").json()
        assert isinstance(top, dict) and [j["job_id"] for j in top["jobs"]] == [job_id]
        latest = top["jobs"][0]["latest"][0]
        assert sorted(g["utilization_pct"] for g in latest["gpus"]) == [20.0, 80.0]
        assert latest["cpu_pct"] is not None and latest["rss_bytes"]
        rows = {r.split()[4]: r.split()[5] for r in run_cli("top").stdout.splitlines()[1:]}
        assert sorted(rows.values()) == ["20%", "80%"]
    finally:
        release.touch()
    ended = run_cli("wait", job_id)
    eff = show(job_id)["efficiency"]
    assert eff["gpu_util_avg"] == 50.0 and eff["gpu_mem_peak_bytes"] == 6 * GIB
    assert eff["gpu_hours_idle"] == 0.0
    line = (
        f"efficiency: GPU util 50 % avg · peak mem 6.0 GiB · {gpu_hours(eff['gpu_hours'])} GPU-h "
        "charged, 0.0 idle"
    )
    assert ended.stderr.splitlines()[-1] == line  # the last word on stderr; no hint at 50 %
    assert f"efficiency    {line.removeprefix('efficiency: ')}" in run_cli("show", job_id).stdout
