"""Job-end notifications, measured on this machine:

1. latency from a job's end to its webhook received: a real center (local executor, the
   default 0.2 s poll interval) runs short jobs one after the other, each writing the time
   just before it exits; a receiver on 127.0.0.1 records when each POST arrives. Printed:
   p50 and max over the jobs. The poll interval bounds when the center learns of an end,
   so most of the latency is that wait.
2. the scheduler's pass with a failing target: the cycle that records N jobs' ends (each
   queueing a notification in its transaction) and runs the queue pass, timed with the
   target (a) a live receiver and (b) a port that accepts and never answers (sends hang
   until their timeout), interleaved a, b, a, b; (c), jobs without `notify`, for reference.
   Equal (a)/(b) figures mean a failing target costs the scheduler nothing.

Every figure is printed after the load average (`os.getloadavg()`) at its start: on a busy
machine (the shared 2-core box) the absolute numbers are inflated; the comparison within
one interleaved run is what counts.

Usage: .venv/bin/python benchmarks/bench_notify.py [--jobs 10] [--ends 300] [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kaic.center.jobs.scheduler import Scheduler  # noqa: E402
from kaic.center.jobs.service import JobService  # noqa: E402
from kaic.center.notify.worker import Notifier  # noqa: E402
from kaic.center.settings import CenterSettings  # noqa: E402
from kaic.center.store import Store  # noqa: E402
from kaic.models import JobSubmit  # noqa: E402
from tests.center.jobs_support import (  # noqa: E402
    jobs_center,
    prepare_state,
    wait_for,
)
from tests.center.receivers import hung_target, webhook_receiver  # noqa: E402
from tests.center.simulated import SimulatedExecutor  # noqa: E402


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (5 min {five:.2f}), {os.cpu_count()} CPUs"


def latency(jobs: int) -> None:
    print(f"1. job end -> webhook received, {jobs} jobs; {load()}")
    script = 'python3 -c "import time; print(repr(time.time()))" > "$HOME/end-$KAIC_JOB_ID"'
    with tempfile.TemporaryDirectory() as tmp, webhook_receiver() as hook:
        arrived: dict[str, float] = {}
        hook_received = hook.received
        with jobs_center(Path(tmp), job_poll_interval=0.2, notify_allow=["127.0.0.1"]) as center:
            lags = []
            for _ in range(jobs):
                seen = len(hook_received)
                job = center.submit(script, notify={"webhook": hook.url})
                wait_for(lambda s=seen: len(hook_received) > s, what="the webhook")  # type: ignore[misc]
                arrived[job["id"]] = time.time()
                ended = float((center.home() / f"end-{job['id']}").read_text())
                lags.append(arrived[job["id"]] - ended)
        print(f"   p50 {statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")


def pass_time(ends: int, target: str | None, tmp: Path) -> float:
    """Seconds of the scheduler cycle that records `ends` jobs' ends and passes the queue."""
    state_dir = tmp / f"state-{time.monotonic_ns()}"
    prepare_state(state_dir)
    settings = CenterSettings(state_dir=state_dir, gpus=0, notify_timeout=30.0)
    store = Store(state_dir)
    executor = SimulatedExecutor()
    scheduler = Scheduler(store, settings, executor)
    notifier = Notifier(scheduler.jobs, settings)
    scheduler.ledger.on_job_end(notifier.job_ended)
    notifier.start()
    try:
        service = JobService(store, settings, scheduler)
        alice = store.get_user("alice")
        assert alice is not None
        extra = {"notify": {"webhook": target}} if target else {}
        for i in range(ends):
            spec = JobSubmit.model_validate({"name": f"j{i}", "run": "true", **extra})
            service.submit(alice.id, "alice", spec, None)
        scheduler.tick()  # starts them all (no GPUs)
        # Earlier ends keep the notifier busy with the target while we measure.
        for job_id in executor.running()[: ends // 2]:
            executor.finish(job_id)
        scheduler.tick()
        for job_id in executor.running():
            executor.finish(job_id)
        started = time.perf_counter()
        scheduler.tick()
        return time.perf_counter() - started
    finally:
        notifier.stop()
        store.close()


def interleaved(ends: int, rounds: int) -> None:
    print(f"2. scheduler cycle recording {ends} ends, {rounds} interleaved rounds; {load()}")
    results: dict[str, list[float]] = {"a live target": [], "b hung target": [], "c no notify": []}
    with (
        tempfile.TemporaryDirectory() as tmp,
        webhook_receiver() as live,
        hung_target() as hung,
    ):
        runs: list[tuple[str, Callable[[], float]]] = [
            ("a live target", lambda: pass_time(ends, live.url, Path(tmp))),
            ("b hung target", lambda: pass_time(ends, hung, Path(tmp))),
            ("c no notify", lambda: pass_time(ends, None, Path(tmp))),
        ]
        for _ in range(rounds):
            for name, run in runs:
                results[name].append(run())
    for name, values in results.items():
        shown = ", ".join(f"{v * 1000:.0f}" for v in values)
        print(f"   {name}: median {statistics.median(values) * 1000:.0f} ms ({shown} ms)")
    print(f"   after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--ends", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    latency(args.jobs)  # its center kills any job process it leaves (`jobs_center`)
    interleaved(args.ends, args.rounds)


if __name__ == "__main__":
    main()
