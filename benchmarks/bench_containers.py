"""Container start overhead: submit-to-first-line of the same job with and without an image
on the local center (the bubblewrap runtime over a busybox root filesystem).

A center runs in process (`tests.center.jobs_support.jobs_center`: the real app, scheduler
and local executor, a 50 ms poll interval, as the tests use). Each pair submits `echo first`
without an image and then with `image: busybox`, interleaved A, B, A, B…; a job's time is
from just before its `POST /v1/jobs` until its stdout file holds its first line (polled every
millisecond on the file itself, so the client's log streaming is not measured). The load
(`os.getloadavg()`) is printed before each pair: figures taken on a busy machine say so.

Needs `bwrap` and `busybox-static` (`apt-get install bubblewrap busybox-static`).

Usage:
    .venv/bin/python benchmarks/bench_containers.py [--pairs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.center.containers_support import make_rootfs, require_bwrap  # noqa: E402
from tests.center.jobs_support import JobsCenter, jobs_center  # noqa: E402


def first_line_after(center: JobsCenter, **spec: object) -> float:
    """Seconds from submit until the job's stdout has its first line."""
    start = time.perf_counter()
    job = center.submit("echo first", **spec)  # type: ignore[arg-type]
    stdout = center.state_dir / "jobs" / job["id"] / "stdout"
    deadline = start + 30
    while time.perf_counter() < deadline:
        try:
            if stdout.read_bytes().endswith(b"\n"):
                elapsed = time.perf_counter() - start
                center.wait_done(job["id"])
                return elapsed
        except FileNotFoundError:
            pass
        time.sleep(0.001)
    raise RuntimeError(f"job {job['id']} printed nothing in 30 s")


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    args = parser.parse_args()
    require_bwrap()
    with tempfile.TemporaryDirectory(prefix="kaic-bench-containers-") as tmp:
        base = Path(tmp)
        rootfs = make_rootfs(base / "busybox")
        catalogue = base / "images.yaml"
        catalogue.write_text(f"- {{name: busybox, rootfs: {rootfs}}}\n")
        plain: list[float] = []
        boxed: list[float] = []
        with jobs_center(base / "center", images=catalogue) as center:
            first_line_after(center)  # warm up: the first job creates the storage home
            first_line_after(center, image="busybox")
            for i in range(args.pairs):
                load = os.getloadavg()
                plain.append(first_line_after(center))
                boxed.append(first_line_after(center, image="busybox"))
                print(
                    f"pair {i + 1:2d}: load {load[0]:.2f}  without {plain[-1] * 1000:6.1f} ms"
                    f"  with image {boxed[-1] * 1000:6.1f} ms",
                    flush=True,
                )
        diffs = [b - p for p, b in zip(plain, boxed, strict=True)]
        print(f"without an image: {quantiles(plain)}")
        print(f"with an image:    {quantiles(boxed)}")
        print(f"overhead (pairs): {quantiles(diffs)}")
        print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
