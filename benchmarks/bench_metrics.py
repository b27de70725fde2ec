"""Job metrics: what the sampler costs, and what `GET /v1/metrics/running` costs the center.

Three measurements:

- `sampler`: `--samplers` (4) real samplers (`python -m kaic.gpu.sampler`, the default 5 s
  interval unless `--interval`) each watching a stand-in job (a shell with two `sleep`
  children), for 8 GPUs of the tests' fake NVML (`tests/center/fake_nvml/`, on their
  `PYTHONPATH`) and for a job without GPUs; each sampler's CPU time is read from
  `/proc/PID/stat` after its start-up (`--warmup` s) and again `--seconds` (60) later:
  its cost in % of one core. The scan of `/proc` it makes per sample grows with the node's
  processes: their number is printed.
- `latency`: a center (uvicorn on loopback, in its own process, the simulated executor of
  `tests/center/simulated.py`: jobs without processes) with 2,000 running jobs: user alice's
  array of 1,000 tasks, and 100 users with an array of 10 tasks each; each job's sample
  file (1 GPU, `--history` (200) samples) written by the benchmark, and a writer process
  appending one sample to every file every 5 s meanwhile (as the samplers would).
  `GET /v1/metrics/running` as alice (1,000 jobs in the answer) and as one of the others
  (10), `--requests` (100) each, one after another, interleaved: p50/p99; and the first
  (cold) call of each.
- `pollers`: 100 concurrent `kaic top`-style pollers, one per small user, each asking
  `GET /v1/metrics/running` every 2 s for `--poll-seconds` (30): requests served per
  second, their latency, and the center process's CPU % over the window.

The load (`os.getloadavg()`) is printed before each measurement; figures taken on a busy
machine say so.

Usage:
    python benchmarks/bench_metrics.py [--only sampler,latency,pollers] [--seconds 60]
        [--samplers 4] [--requests 100] [--poll-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLK = os.sysconf("SC_CLK_TCK")
SMALL_USERS = 100


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the sampler's own cost ------------------------------------------------------------


def bench_sampler(args: argparse.Namespace, work: Path) -> None:
    from tests.center.metrics_support import fake_nvml_env, write_trace

    trace = write_trace(work / "trace.json", 8, utilization={i: [50, 90, 10] for i in range(8)})
    processes = sum(1 for n in os.listdir("/proc") if n.isdigit())
    print(f"sampler: {args.samplers} per kind, every {args.interval:g} s, {processes} "
          f"processes on this machine; {load()}")  # fmt: skip
    for kind, gpus in (("8 GPUs (fake NVML)", "0,1,2,3,4,5,6,7"), ("no GPU", "")):
        jobs, samplers = [], []
        env = {**os.environ, **fake_nvml_env(trace)}
        try:
            for i in range(args.samplers):
                job = subprocess.Popen(["sh", "-c", "sleep 100000 & sleep 100000 & wait"])
                jobs.append(job)
                argv = [sys.executable, "-m", "kaic.gpu.sampler", "--watch", str(job.pid),
                        "--dir", str(work / f"{kind[:2]}-{i}"), "--interval",
                        str(args.interval), "--gpus", gpus]  # fmt: skip
                samplers.append(subprocess.Popen(argv, env=env))
            time.sleep(args.warmup)
            start = [cpu_seconds(s.pid) for s in samplers]
            began = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - began
            costs = [
                (cpu_seconds(s.pid) - before) / elapsed * 100
                for s, before in zip(samplers, start, strict=True)
            ]
            startup = statistics.mean(start)
            print(f"  {kind}: {statistics.mean(costs):.3f} % of one core per sampler "
                  f"(max {max(costs):.3f} %), start-up {startup:.2f} CPU s; {load()}")  # fmt: skip
        finally:
            for proc in jobs:
                proc.kill()
                proc.wait()
            for proc in samplers:
                proc.wait(timeout=args.interval + 10)


# -- a center with 2,000 running jobs -----------------------------------------------------


def serve(state_dir: Path, ready: Path) -> None:
    """`--serve`: a center over `state_dir` with the simulated executor, until SIGTERM."""
    from kaic.center import app as app_module
    from kaic.center import server
    from kaic.center.settings import CenterSettings
    from tests.center.simulated import SimulatedExecutor

    app_module.make_executor = lambda s: SimulatedExecutor(kill_grace=s.kill_grace)  # type: ignore[assignment]
    settings = CenterSettings(
        state_dir=state_dir, port=0, gpus=2100, single_account_ok=True, metrics_interval=0
    )
    server.serve(settings, ready_file=ready)


def build(state_dir: Path) -> dict[str, str]:
    """Users and projects; an API token per user."""
    from kaic.center.admin import add_project, add_user
    from kaic.center.store import Store
    from tests.center.jobs_support import mint_token

    users = ["alice"] + [f"u{i:03d}" for i in range(SMALL_USERS)]
    for user in users:
        add_user(state_dir, user, password=None, enable_otp=False, unix_account=None)
    add_project(state_dir, "p", gpu_hours=1e9, members=users)
    store = Store(state_dir)
    try:
        return {user: mint_token(store, user) for user in users}
    finally:
        store.close()


@contextmanager
def center(work: Path) -> Iterator[tuple[str, dict[str, str], int]]:
    state_dir = work / "state"
    tokens = build(state_dir)
    ready = work / "ready.json"
    log = open(work / "center.log", "ab")  # noqa: SIM115 (the child writes it)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(state_dir), str(ready)],
                            stdout=log, stderr=log, env=env)  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the center did not start: see {work}/center.log")
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        yield info["url"], tokens, info["pid"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def submit_all(url: str, tokens: dict[str, str]) -> list[str]:
    """alice's array of 1,000 and each small user's array of 10; their tasks' ids."""
    tasks: list[str] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for user, size in [("alice", 1000)] + [(u, 10) for u in tokens if u != "alice"]:
            body = {"run": "true", "resources": {"gpus": 1}, "array": f"0-{size - 1}"}
            response = client.post(
                "/v1/jobs", json=body, headers={"Authorization": f"Bearer {tokens[user]}"}
            )
            response.raise_for_status()
            tasks += response.json()["array_tasks"]
    return tasks


def sample_line(at: float, i: int) -> str:
    u = (i * 37) % 100
    return json.dumps(
        {
            "t": at,
            "d": 5.0,
            "s": 0,
            "c": 99.5,
            "r": 2**31,
            "g": [[0, u, 40 * 2**30, 80 * 2**30, 512.3, 61, 1980]],
        },
        separators=(",", ":"),
    )


def write_files(state_dir: Path, tasks: list[str], history: int) -> None:
    now = time.time()
    header = json.dumps({"v": 1, "node": "gpu-node-001", "interval": 5.0,
                         "gpus": [{"i": 0, "uuid": "GPU-0", "name": "NVIDIA H100 80GB HBM3"}],
                         "notes": []})  # fmt: skip
    for task in tasks:
        directory = state_dir / "jobs" / task / "metrics"
        directory.mkdir(parents=True, exist_ok=True)
        lines = [header] + [sample_line(now - 5 * (history - i), i) for i in range(history)]
        (directory / "gpu-node-001.jsonl").write_text("\n".join(lines) + "\n")


def writer(state_dir: Path, tasks_file: Path, stop: Path) -> None:
    """`--writer`: append one sample to every job's file every 5 s until `stop` exists."""
    tasks = tasks_file.read_text().split()
    i = 0
    while not stop.exists():
        started = time.monotonic()
        for task in tasks:
            path = state_dir / "jobs" / task / "metrics" / "gpu-node-001.jsonl"
            with path.open("a") as f:
                f.write(sample_line(time.time(), i) + "\n")
        i += 1
        time.sleep(max(0.0, 5.0 - (time.monotonic() - started)))


def running_call(client: httpx.Client, token: str) -> tuple[float, int]:
    start = time.perf_counter()
    response = client.get("/v1/metrics/running", headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return time.perf_counter() - start, len(response.json()["jobs"])


def bench_center(args: argparse.Namespace, work: Path) -> None:
    with center(work) as (url, tokens, pid):
        tasks = submit_all(url, tokens)
        state_dir = work / "state"
        with httpx.Client(base_url=url, timeout=120) as client:
            deadline = time.monotonic() + 300
            while running_call(client, tokens["alice"])[1] < 1000:
                if time.monotonic() > deadline:
                    raise RuntimeError("the jobs did not all start")
                time.sleep(0.5)
        # the files appear now: the next look (after 1 s) reads each whole (the cold call)
        write_files(state_dir, tasks, args.history)
        tasks_file, stop = work / "tasks", work / "stop"
        tasks_file.write_text("\n".join(tasks))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        feeder = subprocess.Popen(
            [sys.executable, __file__, "--writer", str(state_dir), str(tasks_file), str(stop)],
            env=env,
        )
        try:
            time.sleep(1.1)
            if "latency" in args.only:
                latency(args, url, tokens)
            if "pollers" in args.only:
                pollers(args, url, tokens, pid)
        finally:
            stop.touch()
            feeder.wait(30)


def latency(args: argparse.Namespace, url: str, tokens: dict[str, str]) -> None:
    print(f"latency: GET /v1/metrics/running, 2,000 running jobs, {load()}")
    small = tokens["u000"]
    with httpx.Client(base_url=url, timeout=120) as client:
        cold_big, n_big = running_call(client, tokens["alice"])
        cold_small, n_small = running_call(client, small)
        print(f"  cold (every file read whole): {n_big} jobs {cold_big * 1000:.1f} ms, "
              f"{n_small} jobs {cold_small * 1000:.1f} ms")  # fmt: skip
        big: list[float] = []
        little: list[float] = []
        for _ in range(args.requests):
            big.append(running_call(client, tokens["alice"])[0])
            little.append(running_call(client, small)[0])
            time.sleep(0.05)
    for label, values in (("1,000 jobs", big), ("10 jobs", little)):
        print(f"  {label}: p50 {pct(values, 0.5) * 1000:.1f} ms, p99 "
              f"{pct(values, 0.99) * 1000:.1f} ms ({len(values)} calls); {load()}")  # fmt: skip


def pollers(args: argparse.Namespace, url: str, tokens: dict[str, str], pid: int) -> None:
    users = [u for u in tokens if u != "alice"][:SMALL_USERS]
    print(f"pollers: {len(users)} users polling every 2 s for {args.poll_seconds:g} s; {load()}")
    times: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    end = time.monotonic() + args.poll_seconds

    def poll(user: str, offset: float) -> None:
        time.sleep(offset)
        with httpx.Client(base_url=url, timeout=60) as client:
            while time.monotonic() < end:
                start = time.monotonic()
                try:
                    took, _ = running_call(client, tokens[user])
                    with lock:
                        times.append(took)
                except httpx.HTTPError as exc:
                    errors.append(str(exc))
                time.sleep(max(0.0, 2.0 - (time.monotonic() - start)))

    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    threads = [
        threading.Thread(target=poll, args=(u, 2.0 * i / len(users))) for i, u in enumerate(users)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    cpu = (cpu_seconds(pid) - cpu0) / elapsed * 100
    print(f"  {len(times) / elapsed:.1f} requests/s served (asked: {len(users) / 2:.0f}/s), "
          f"p50 {pct(times, 0.5) * 1000:.1f} ms, p99 {pct(times, 0.99) * 1000:.1f} ms, "
          f"{len(errors)} errors; center CPU {cpu:.1f} % of one core; {load()}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="sampler,latency,pollers")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--samplers", type=int, default=4)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--history", type=int, default=200)
    parser.add_argument("--poll-seconds", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaic-bench-metrics-") as tmp:
        work = Path(tmp)
        if "sampler" in args.only:
            bench_sampler(args, work)
        if "latency" in args.only or "pollers" in args.only:
            bench_center(args, work)


if __name__ == "__main__":
    main()
