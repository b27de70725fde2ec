"""The metrics flows without the CLI: `kaic top`'s loop (one request per refresh whatever
the number of jobs; a center outage said in the view, its last snapshot kept), the efficiency
text, and the drawing helpers (bars, sparklines)."""

from __future__ import annotations

import httpx
import pytest

from kaic.cli.metrics_view import bar, sparkline
from kaic.flows.metrics import efficiency_hint, efficiency_text, gpu_hours, watch
from kaic.models.metrics import Efficiency, RunningMetrics
from tests.inprocess import NOW, FakeCenter, error
from tests.metrics_trace import gpu, running_job, serve


class Clock:
    """A monotonic clock that moves only when the loop waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("jobs", [0, 1, 25])
def test_top_asks_once_per_refresh_whatever_the_number_of_jobs(jobs: int) -> None:
    center = serve(FakeCenter())
    center.running = [
        running_job(str(100 + i), f"job-{i}", [gpu(0, 50.0, 1.0, 100.0), gpu(1, 1.0, 1.0, 50.0)])
        for i in range(jobs)
    ]
    clock = Clock()
    shown: list[tuple[RunningMetrics | None, str | None]] = []

    def wait_for_quit(seconds: float) -> bool:
        clock.waits.append(seconds)
        clock.now += seconds
        return len(clock.waits) == 5  # q after the fifth frame

    watch(center.session(), lambda d, t: shown.append((d, t)), wait_for_quit, interval=2.0,
          clock=clock)  # fmt: skip
    assert len(shown) == 5 and all(len(d.jobs) == jobs for d, _ in shown if d is not None)
    assert [(r.method, r.url.path) for r in center.requests] == [("GET", "/v1/metrics/running")] * 5
    assert clock.waits == [2.0] * 5  # the interval, less the time a refresh took (none here)


def test_an_unreachable_center_is_said_in_the_view_and_the_last_snapshot_kept() -> None:
    center = FakeCenter()
    latest = running_job("42", "train", [gpu(0, 50.0, 1.0, 100.0)])
    doc = {"jobs": [latest], "at": NOW.isoformat()}
    route = center.on(
        "GET",
        "/v1/metrics/running",
        httpx.Response(200, json=doc),  # an answer first…
        error(503, "unavailable", "center is restarting"),  # …then an outage
    )
    shown: list[tuple[RunningMetrics | None, str | None]] = []
    waits = iter([False, False, True])
    watch(center.session(), lambda d, t: shown.append((d, t)), lambda _s: next(waits),
          interval=1.0)  # fmt: skip
    assert len(shown) == 3  # (the client retried each failing GET itself, as it does)
    assert len(route.calls) == len(center.requests)  # nothing but that one route
    first, second = shown[0], shown[1]
    assert first[1] is None and first[0] is not None and first[0].jobs[0].job_id == "42"
    assert second[0] is first[0]  # kept
    assert second[1] is not None and "retrying every 1 s" in second[1]


def test_efficiency_text_and_hint() -> None:
    eff = Efficiency(gpu_util_avg=87.4, gpu_mem_peak_bytes=None, gpu_hours=0.004)
    assert efficiency_text(eff) == "GPU util 87 % avg · peak mem - GiB · 0.004 GPU-h charged"
    assert efficiency_hint("42", eff) is None
    idle = Efficiency(gpu_util_avg=None, gpu_hours=4.0, gpu_hours_idle=1.2)
    hint = efficiency_hint("42", idle)
    assert hint is not None and hint.startswith("hint: GPUs idle 30 % of the time: ")
    # 25.45 % idle shows as 25 %: not more than a quarter, no hint (the center rounds hours)
    assert efficiency_hint("42", Efficiency(gpu_hours=0.0055, gpu_hours_idle=0.0014)) is None
    low = Efficiency(gpu_util_avg=49.9, gpu_hours=4.0, gpu_hours_idle=0.0)
    assert (efficiency_hint("42", low) or "").startswith("hint: GPU util 50 % avg: ")
    assert [gpu_hours(v) for v in (0, 0.05, 0.4, 16, 123.456)] == [
        "0.0", "0.05", "0.4", "16.0", "123.5"
    ]  # fmt: skip


def test_bars_and_sparklines() -> None:
    assert bar(100) == "█" * 10 and bar(0) == " " * 10 and bar(None) == " " * 10
    assert bar(55) == "█████▌    "
    assert sparkline([0, 100]) == "▁█"
    assert sparkline([0.0] * 40 + [100.0] * 40) == "▁" * 20 + "█" * 20  # 80 values, 40 cells
    assert sparkline([None, 50]) == " ▅" and sparkline([]) == ""


def test_the_live_frame_draws_only_the_rows_that_fit() -> None:
    import io

    from rich.console import Console

    from kaic.cli.metrics_view import top_frame

    jobs = [running_job(str(100 + j), f"job-{j}", [gpu(0, 50.0, 1.0, 100.0)]) for j in range(30)]
    doc = RunningMetrics.model_validate({"jobs": jobs, "at": NOW.isoformat()})
    out = io.StringIO()
    Console(file=out, width=160, height=12).print(top_frame(doc, None, 2.0, 12))
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # title, header, 8 rows, the count of the rest
    assert "job-7" in lines[-2] and lines[-1].startswith("… 22 more rows: a taller window")
    assert lines[0].startswith("kaic top · 30 running jobs · 30 GPUs, 0 idle")
