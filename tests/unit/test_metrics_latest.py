"""The center's memory of running jobs' latest samples (`kaic.center.metrics.latest`): a
first look reads a file from its end back only as far as its GPUs have been idle; later
looks read only what was appended, a line being written included once it is complete."""

from __future__ import annotations

import json
from pathlib import Path

from kaic.center.metrics.latest import LatestSamples
from tests.center.metrics_support import header, sample, write_metrics

T0 = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_first_look_walks_back_through_the_idle_stretch_only(tmp_path: Path) -> None:
    busy = [sample(T0 + 5 * i, 5, {0: 90, 1: 40}) for i in range(1, 2001)]
    idle = [sample(T0 + 5 * i, 5, {0: 1, 1: 0}) for i in range(2001, 2301)]  # > 16 KiB
    path = write_metrics(tmp_path, "n1", [header("n1", [0, 1]), *busy, *idle])
    clock = Clock()
    latest = LatestSamples(clock)
    (node,) = latest.nodes("1", tmp_path)
    assert node.latest is not None and node.latest.at == T0 + 5 * 2300
    assert node.idle_since == T0 + 5 * 2000  # the first idle sample's start
    assert node.header.gpus[0][1] == "NVIDIA H100 80GB HBM3"

    # a sample being written: not seen until its line is complete
    line = json.dumps(sample(T0 + 5 * 2301, 5, {0: 50, 1: 0}))
    with path.open("a") as f:
        f.write(line[:20])
    clock.now += 2
    (node,) = latest.nodes("1", tmp_path)
    assert node.latest is not None and node.latest.at == T0 + 5 * 2300
    with path.open("a") as f:
        f.write(line[20:] + "\n")
    clock.now += 0.5  # within the freshness window: from memory
    assert latest.nodes("1", tmp_path)[0].latest.at == T0 + 5 * 2300  # type: ignore[union-attr]
    clock.now += 1
    (node,) = latest.nodes("1", tmp_path)
    assert node.latest is not None and node.latest.at == T0 + 5 * 2301
    assert node.idle_since is None


def test_a_rewritten_file_is_read_again_and_a_forgotten_job_afresh(tmp_path: Path) -> None:
    write_metrics(tmp_path, "n1", [header("n1", [0]), sample(T0 + 5, 5, {0: 0})])
    clock = Clock()
    latest = LatestSamples(clock)
    assert latest.nodes("1", tmp_path)[0].idle_since == T0
    # the sampler's compaction: a new file (another inode) renamed over the old
    merged = {"t": T0 + 10, "d": 10, "s": 10, "g": [[0, 50, 1, 2, 3, 4, 5, 0, 100, 1, 3, 4, 5]]}
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps(header("n1", [0])) + "\n" + json.dumps(merged) + "\n")
    new.replace(tmp_path / "metrics" / "n1.jsonl")
    clock.now += 2
    (node,) = latest.nodes("1", tmp_path)
    assert node.latest is not None and node.latest.span == 10 and node.idle_since is None
    latest.forget("1")
    assert len(latest) == 0
