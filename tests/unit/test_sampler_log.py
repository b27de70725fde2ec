"""The sampler's file (`kaic.gpu.sampler.SampleLog`): appended, compacted so a 30-day job
stays under its bound, and read back by the center (`kaic.center.metrics`) to the same
numbers as the raw samples — driven by a fake clock, not 30 days."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.metrics.files import read_job_files
from kaic.center.metrics.summary import add_up
from kaic.gpu.sampler import DEFAULT_LIMIT, SampleLog, merge, visible_gpus

T0 = 1_780_000_000.0
#: the stated bound (docs/metrics.md): at most DEFAULT_LIMIT samples per node file, each
#: under 100 bytes plus 90 per GPU, merged or raw
MAX_LINE = {gpus: 100 + 90 * gpus for gpus in (1, 8)}


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Iterator[int]:
    path = tmp_path / "job" / "metrics"
    path.mkdir(parents=True)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def raw(i: int, utils: list[float], interval: float = 5.0) -> dict[str, object]:
    return {
        "t": T0 + interval * (i + 1),
        "d": interval,
        "s": 0,
        "c": 100.0,
        "r": 2**30 + i % 7,
        "g": [
            [g, u, 2**30 * (1 + i % 3), 80 * 2**30, 300.0, 50, 1980] for g, u in enumerate(utils)
        ],
    }


def header(gpus: int) -> dict[str, object]:
    name = "NVIDIA H100 80GB HBM3"
    return {
        "v": 1,
        "node": "n1",
        "interval": 5.0,
        "gpus": [{"i": i, "uuid": f"GPU-{i}", "name": name} for i in range(gpus)],
        "notes": [],
    }


def test_a_30_day_job_stays_under_the_bound_with_exact_totals(
    tmp_path: Path, metrics_dir: int
) -> None:
    pattern = [0.0, 100.0, 50.0, 3.0]  # two of four samples idle (< 5 %)
    log = SampleLog(metrics_dir, "n1.jsonl", header(1))
    samples = 30 * 86400 // 5
    for i in range(samples):
        log.append(raw(i, [pattern[i % 4]]))
    path = tmp_path / "job" / "metrics" / "n1.jsonl"
    lines = path.read_bytes().splitlines()
    assert len(lines) - 1 <= DEFAULT_LIMIT
    assert path.stat().st_size <= DEFAULT_LIMIT * MAX_LINE[1]
    (node,) = read_job_files(tmp_path / "job")
    # the last 512 samples (at least) stay raw; the rest in buckets of about 43 minutes,
    # but for the one being filled
    assert all(p.span == 0 for p in node.points[-512:])
    merged = [p.span for p in node.points if p.span]
    assert max(merged) <= 3600 and len([s for s in merged if s < 1800]) <= 1
    totals = add_up([node])
    (gpu,) = totals.summary()
    assert gpu.sampled_seconds == samples * 5
    assert gpu.idle_seconds == samples * 5 / 2
    assert gpu.utilization_avg_pct == 38.25
    assert (gpu.utilization_min_pct, gpu.utilization_max_pct) == (0.0, 100.0)
    assert gpu.memory_used_peak_bytes == 3 * 2**30
    assert totals.rss_peak == 2**30 + 6
    efficiency = totals.efficiency(gpu_hours=720.0)
    assert efficiency.gpu_hours_idle == 360.0 and efficiency.gpu_util_avg == 38.25


def test_an_8_gpu_file_at_its_limit_stays_under_the_bound(tmp_path: Path, metrics_dir: int) -> None:
    log = SampleLog(metrics_dir, "n1.jsonl", header(8))
    for i in range(3 * DEFAULT_LIMIT):
        log.append(raw(i, [float(i % 101)] * 8))
    path = tmp_path / "job" / "metrics" / "n1.jsonl"
    samples = path.read_bytes().splitlines()[1:]
    assert len(samples) <= DEFAULT_LIMIT
    assert max(len(line) + 1 for line in samples) <= MAX_LINE[8]
    assert path.stat().st_size <= DEFAULT_LIMIT * MAX_LINE[8]


def test_merge_weights_by_time_and_keeps_peaks_and_idle_time() -> None:
    a = {
        "t": 10.0,
        "d": 10.0,
        "s": 0,
        "c": 100.0,
        "r": 100,
        "g": [[0, 2.0, 10, 80, 100.0, 40, 1000]],
    }
    b = {
        "t": 40.0,
        "d": 30.0,
        "s": 0,
        "c": 0.0,
        "r": 300,
        "g": [[0, 50.0, 30, 80, 200.0, 60, 2000]],
    }
    m = merge(a, b)
    assert (m["t"], m["d"], m["s"], m["c"], m["r"], m["R"]) == (40.0, 40.0, 40.0, 25.0, 250, 300)
    assert m["g"] == [[0, 38.0, 25, 80, 175.0, 55.0, 1750, 2.0, 50.0, 30, 200.0, 60, 10.0]]
    # a GPU that reported nothing in one of them: the other's values
    c = {"t": 50.0, "d": 10.0, "g": [[0, None, None, 80, None, None, None]]}
    assert merge(b, c)["g"][0][:3] == [0, 50.0, 30]


def test_visible_gpus_map_cuda_visible_devices_to_nvml_indices() -> None:
    uuids = ["GPU-aaaa-1", "GPU-bbbb-2", "GPU-cccc-3", None]
    assert visible_gpus("2,3", uuids) == [2, 3]
    assert visible_gpus("GPU-cccc,0", uuids) == [2, 0]
    assert visible_gpus("", uuids) == [] and visible_gpus(None, uuids) == []
    assert visible_gpus("7,MIG-x,NoDevFiles,1,1", uuids) == [1]
