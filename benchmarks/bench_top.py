"""What `kaic top` costs on the client: the time to its first frame, and the CPU time of one
refresh (one `GET /v1/metrics/running`, parsed and drawn), for 1 and 50 running jobs of 8
GPUs each.

The CLI runs as a user runs it, `python -m kaic top`, on a pseudo-terminal 200 columns wide
(the live view), against a `FakeCenter` (`tests/inprocess.py`) served on 127.0.0.1
(`tests/fake_http.py`), so the center's own cost is not counted and the answers are the same
in every round. Two runs per round, interleaved (the machine is shared):

- A: start, wait for the first frame, press q — the time to the first frame (wall clock,
  from the spawn: Python start, imports, one request, the first draw), and its CPU time;
- B: start with `--interval 0.5`, let it refresh N more times, press q — its CPU time.

CPU per refresh = (CPU of B - CPU of A) / (refreshes of B - refreshes of A), the CPU times
taken from the child's rusage (user + system). The figures are medians; the load
(`os.getloadavg()`) is printed before each round.

Usage: .venv/bin/python benchmarks/bench_top.py [ROUNDS] [--refreshes N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fake_http import served  # noqa: E402
from tests.helpers import cli_env  # noqa: E402
from tests.inprocess import TOKEN, FakeCenter  # noqa: E402
from tests.metrics_trace import gpu, running_job, serve  # noqa: E402
from tests.terminal import start_on_terminal  # noqa: E402

RUNNING = "/v1/metrics/running"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def center_with(jobs: int) -> FakeCenter:
    center = serve(FakeCenter())
    center.running = [
        running_job(
            str(1000 + j),
            f"train-{j}",
            [gpu(i, float((j * 8 + i) % 100), 40.0, 300.0) for i in range(8)],
        )
        for j in range(jobs)
    ]
    return center


def run(center: FakeCenter, url: str, refreshes: int) -> tuple[float, float, int]:
    """One live run: (seconds to the first frame, CPU seconds, refreshes made)."""
    env = cli_env(KAIC_CENTER=url, KAIC_TOKEN=TOKEN, KAIC_CONFIG_DIR="/nonexistent-kaic-bench")
    before = len(center.sent("GET", RUNNING))
    started = time.perf_counter()
    live = start_on_terminal("top", "--interval", "0.5", env=env, columns=200)
    try:
        live.until(lambda: b"train-0" in live.shown, limit=60)
        first = time.perf_counter() - started
        live.until(lambda: len(center.sent("GET", RUNNING)) - before >= 1 + refreshes, limit=120)
        os.write(live.master, b"q")
        # reap it here, to read its rusage, reading what it still draws meanwhile (a full
        # terminal would block it)
        while True:
            pid, status, usage = os.wait4(live.proc.pid, os.WNOHANG)
            if pid:
                break
            live.pump()
        live.proc.returncode = os.waitstatus_to_exitcode(status)
        assert live.proc.returncode == 0, live.shown[-2000:]
    finally:
        live.close()
    return first, usage.ru_utime + usage.ru_stime, len(center.sent("GET", RUNNING)) - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("--refreshes", type=int, default=10)
    args = parser.parse_args()
    for jobs in (1, 50):
        center = center_with(jobs)
        firsts: list[float] = []
        per_refresh: list[float] = []
        with served(center) as url:
            for round_ in range(args.rounds):
                print(f"{jobs} jobs, round {round_ + 1}: {load()}", flush=True)
                first, cpu_a, made_a = run(center, url, 0)  # A
                _first_b, cpu_b, made_b = run(center, url, args.refreshes)  # B
                firsts.append(first)
                per_refresh.append((cpu_b - cpu_a) / max(1, made_b - made_a))
        print(
            f"{jobs:>2} jobs x 8 GPUs: first frame {statistics.median(firsts) * 1000:.0f} ms "
            f"(median of {len(firsts)}); CPU per refresh "
            f"{statistics.median(per_refresh) * 1000:.1f} ms"
        )
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
