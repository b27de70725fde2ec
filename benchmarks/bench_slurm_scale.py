"""The Slurm executor holding 10,000 pending jobs on the real single-node Slurm.

Reproduce (as root, with `slurm-wlm slurmrestd munge` installed, as for `tests/slurm/`):
`.venv/bin/python benchmarks/bench_slurm_scale.py` (`--jobs 10000 --idle-seconds 60` by
default; `--clients` concurrent submitters; a few minutes on two cores). Every figure is
printed after the load average (`os.getloadavg()`) at its start: run it on a quiet machine.

What it does:

- starts a real Slurm (`tests/slurm/cluster.py`: its own munged on a private socket, so it
  runs beside the test suite) with `MaxJobCount=30000` (Slurm's default, 10,000, would
  refuse the 10,001st job) and `MinJobAge=300` (ended jobs stay visible for five minutes),
  and a center with the Slurm executor in front of it, in a process of its own whose
  executor logs every poll it makes (wall time, the center thread's CPU, jobs tracked);
- submits one job that holds the node's two GPUs (`sleep`), then `--jobs` jobs of one GPU
  each through the center's API: they all stay pending behind it (Slurm's reason
  `Resources`, then `Priority`). That is a busy cluster's normal state — a queue of GPU
  jobs waiting for GPUs that running jobs hold — and keeps Slurm's scheduler considering
  them, unlike held jobs (`--hold`, skipped by Slurm's scheduler) or `--begin` in the future;
- measures: submit latency and throughput through the center (accepted by the API, and
  handed over to Slurm), then, `--settle-seconds` after every pending reason was recorded
  (Slurm's scheduler still assigns them for a while), over `--idle-seconds` of nothing
  happening the executor's poll (wall and the center's CPU per poll, p50/p99), the center
  process's whole CPU, and `GET /v1/jobs` latency meanwhile; then cancelling every job
  through the API until the center records them all CANCELLED;
- cleans up: the center stopped by PID, `scancel` of the test account's jobs, the cluster
  stopped by PID (`SlurmCluster.stop`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import httpx  # noqa: E402
from bench_scale import count, loadavg, ms, p50, pct, say, wait_until  # noqa: E402

PROJECT = "scale-2026"
USER = "alice"
EXTRA_CONF = "MaxJobCount=30000\nMinJobAge=300\n"


# -- the center, in a process of its own ------------------------------------------------


def serve(state_dir: Path, ready: Path, url: str, conf: str, poll_interval: float) -> None:
    """`--serve`: a center with the Slurm executor, each poll that reached Slurm logged to
    `<state_dir>/polls.jsonl` (wall, this thread's CPU, jobs tracked, Slurm's records and
    the `GET /jobs` call's own wall time)."""
    from kaic.center import server
    from kaic.center.executors.slurm.api import SlurmRestClient
    from kaic.center.executors.slurm.executor import SlurmExecutor
    from kaic.center.executors.slurm.options import SlurmSettings
    from kaic.center.settings import CenterSettings

    log = open(state_dir / "polls.jsonl", "a", buffering=1)  # noqa: SIM115 (lives with us)
    last_call: dict[str, float] = {}
    listing = SlurmRestClient.jobs

    def jobs(self: SlurmRestClient, **kwargs: Any) -> Any:
        start = time.perf_counter()
        records = listing(self, **kwargs)
        count = -1 if records is None else len(records)  # -1: "no change" (304)
        last_call.update(wall=time.perf_counter() - start, records=count)
        return records

    polling = SlurmExecutor.poll

    def poll(self: SlurmExecutor) -> Any:
        last_call.clear()
        start, cpu = time.perf_counter(), time.thread_time()
        ended = polling(self)
        if last_call:  # it asked Slurm (not a call between intervals)
            entry = {
                "at": time.time(),
                "wall": time.perf_counter() - start,
                "cpu": time.thread_time() - cpu,
                "tracked": len(self._jobs),
                "records": last_call["records"],
                "http": last_call["wall"],
                "ended": len(ended),
            }
            log.write(json.dumps(entry) + "\n")
        return ended

    SlurmRestClient.jobs = jobs  # type: ignore[method-assign]
    SlurmExecutor.poll = poll  # type: ignore[method-assign]
    options = SlurmSettings(
        url=url,
        token=os.environ["KAIC_SLURM_JWT"],
        poll_interval=poll_interval,
        slurm_conf=conf,
    )
    settings = CenterSettings(
        state_dir=state_dir,
        port=0,
        executor="slurm",
        executor_settings=options,
        single_account_ok=True,
    )
    server.serve(settings, ready_file=ready)


class Center:
    """The center process (stopped by PID) and an API client as alice."""

    def __init__(self, state_dir: Path, cluster: Any, poll_interval: float) -> None:
        self.state_dir = state_dir
        ready = state_dir / "ready.json"
        env = {**os.environ, "KAIC_SLURM_JWT": cluster.token}
        env["SLURM_CONF"] = cluster.env["SLURM_CONF"]
        argv = [sys.executable, __file__, "--serve", str(state_dir), str(ready), cluster.url]
        argv += [cluster.env["SLURM_CONF"], str(poll_interval)]
        with open(state_dir / "center.log", "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        wait_until(
            lambda: ready.exists() or self.proc.poll() is not None, "the center", timeout=120
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"the center exited: see {state_dir}/center.log")
        info = json.loads(ready.read_text())
        self.pid = int(info["pid"])
        token = (state_dir / "token").read_text()
        self.client = httpx.Client(
            base_url=info["url"], headers={"Authorization": f"Bearer {token}"}, timeout=600
        )

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def post(self, path: str, body: Any = None) -> Any:
        response = self.client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def polls(self, since: float, until: float) -> list[dict[str, float]]:
        lines = (self.state_dir / "polls.jsonl").read_text().splitlines()
        entries = [json.loads(line) for line in lines if line]
        return [e for e in entries if since <= e["at"] <= until]

    def count(self, sql: str) -> int:
        return count(self.state_dir, sql)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def prepare(state_dir: Path) -> None:
    """alice (unix account of the Slurm tests' job user) in a project, and her token."""
    from kaic.center.admin import add_project, add_user
    from kaic.center.store import Store
    from tests.center.jobs_support import mint_token
    from tests.slurm.cluster import JOB_USER

    state_dir.mkdir(parents=True)
    add_user(state_dir, USER, password=None, enable_otp=False, unix_account=JOB_USER)
    add_project(state_dir, PROJECT, gpu_hours=1e7, members=[USER])
    store = Store(state_dir)
    try:
        (state_dir / "token").write_text(mint_token(store, USER))
    finally:
        store.close()


# -- the measurements -----------------------------------------------------------------


def timed(calls: list[Callable[[], Any]], clients: int) -> tuple[list[float], float, list[Any]]:
    """Run `calls` on `clients` threads: each call's seconds, the wall time, the results."""

    def one(call: Callable[[], Any]) -> tuple[float, Any]:
        start = time.perf_counter()
        result = call()
        return time.perf_counter() - start, result

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = list(pool.map(one, calls))
    return [d[0] for d in done], time.perf_counter() - start, [d[1] for d in done]


def squeue_count(cluster: Any, state: str) -> int:
    from tests.slurm.cluster import JOB_USER

    out = cluster.run("squeue", "-h", "-u", JOB_USER, "-t", state, "-o", "%i", timeout=120)
    return len(out.stdout.split())


def measure(
    center: Center, cluster: Any, jobs: int, clients: int, idle: float, settle: float
) -> None:
    hog = center.post("/v1/jobs", {"run": "sleep 3600", "resources": {"gpus": 2}})
    wait_until(
        lambda: center.client.get(f"/v1/jobs/{hog['id']}").json()["state"] == "RUNNING",
        "the job holding the GPUs",
        timeout=120,
    )
    say(f"\nsubmitting {jobs} jobs of 1 GPU, {clients} clients: {loadavg()}")
    spec = {"run": "true", "resources": {"gpus": 1}}
    cpu = center.cpu_seconds()
    first_post = time.time()
    latencies, took, created = timed([lambda: center.post("/v1/jobs", spec)] * jobs, clients)
    say(f"    accepted by the API: {ms(latencies)} ms; {jobs / took:.0f} jobs/s ({took:.1f} s)")
    handed = "SELECT COUNT(*) FROM jobs WHERE external_id IS NOT NULL"
    start = time.perf_counter()
    wait_until(lambda: center.count(handed) >= jobs + 1, "the hand-over", timeout=3600)
    after = took + time.perf_counter() - start
    say(
        f"    handed over to Slurm: all {after:.1f} s after the first POST"
        f" ({jobs / after:.0f} jobs/s); center CPU {center.cpu_seconds() - cpu:.1f} s; {loadavg()}"
    )
    # Hand-overs are budgeted per pass, so the executor goes on polling through a backlog
    # (one pass used to hand the whole backlog over first: minutes without a poll).
    during = center.polls(first_post, time.time())
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(during)]
    say(
        f"    polls that reached Slurm meanwhile: {len(during)}; longest gap between two"
        f" {max(gaps, default=0.0):.1f} s"
    )
    reasons = "SELECT COUNT(*) FROM jobs WHERE state = 'PENDING' AND reason IS NOT NULL"
    wait_until(lambda: center.count(reasons) >= jobs, "Slurm's pending reasons", timeout=600)
    say(f"    Slurm holds {squeue_count(cluster, 'PENDING')} pending, every reason recorded")

    # Slurm's own scheduler goes on assigning pending reasons (Resources, Priority) to the
    # jobs for a while after the last submit: let it settle before "nothing happening".
    time.sleep(settle)
    say(f"\n{idle:g} s with {jobs} pending, {settle:g} s after: {loadavg()}")
    began, cpu = time.time(), center.cpu_seconds()
    gets: list[float] = []
    while time.time() - began < idle:
        start = time.perf_counter()
        center.client.get("/v1/jobs").raise_for_status()
        gets.append(time.perf_counter() - start)
        time.sleep(0.5)
    ended = time.time()
    used = center.cpu_seconds() - cpu
    polls = center.polls(began, ended)
    quiet = sum(1 for p in polls if p["records"] < 0)
    tracked = polls[-1]["tracked"] if polls else 0
    say(
        f"    {len(polls)} polls of {tracked} jobs tracked: {quiet} answered"
        f' "no change" (304), {len(polls) - quiet} listed every job'
    )
    kinds = {
        "all polls": polls,
        "no change": [p for p in polls if p["records"] < 0],
        "every job": [p for p in polls if p["records"] >= 0],
    }
    for kind, chosen in kinds.items():
        for key, label in (("wall", "wall"), ("cpu", "CPU"), ("http", "GET /jobs")):
            values = [p[key] for p in chosen]
            if values:
                low, high = p50(values) * 1000, pct(values, 0.99) * 1000
                say(f"    {kind:9s} {label:9s} p50 {low:7.1f} p99 {high:7.1f} ms")
    say(
        f"    center CPU {100 * used / (ended - began):.1f} % of a core;"
        f" GET /v1/jobs {ms(gets)} ms; {loadavg()}"
    )

    say(f"\ncancelling {jobs} jobs through the API, {clients} clients: {loadavg()}")
    ids = [job["id"] for job in created]
    cpu = center.cpu_seconds()
    latencies, took, _ = timed(
        [lambda job_id=job_id: center.post(f"/v1/jobs/{job_id}/cancel") for job_id in ids],
        clients,
    )
    say(f"    accepted by the API: {ms(latencies)} ms; {jobs / took:.0f} jobs/s ({took:.1f} s)")
    start = time.perf_counter()
    cancelled = "SELECT COUNT(*) FROM jobs WHERE state = 'CANCELLED'"
    wait_until(lambda: center.count(cancelled) >= jobs, "the cancels", timeout=3600)
    after = took + time.perf_counter() - start
    say(
        f"    all CANCELLED in the center {after:.1f} s after the first POST; center CPU"
        f" {center.cpu_seconds() - cpu:.1f} s; Slurm still lists"
        f" {squeue_count(cluster, 'PENDING')} pending; {loadavg()}"
    )
    center.post(f"/v1/jobs/{hog['id']}/cancel")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4, help="concurrent API clients")
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--settle-seconds", type=float, default=120.0, help="before idle")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the executor's")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        state, ready, url, conf, interval = args.serve
        serve(Path(state), Path(ready), url, conf, float(interval))
        return
    from tests.slurm.cluster import JOB_USER, SlurmCluster, missing_binaries

    missing = missing_binaries()
    if missing or os.geteuid() != 0:
        sys.exit(f"needs root and Slurm's binaries (missing: {', '.join(missing) or 'none'})")
    began = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="kaic-slurm-scale-"))
    base.chmod(0o711)  # jobs run as another account and pass through it
    say(f"{os.cpu_count()} CPUs; {loadavg()}; in {base}")
    cluster = SlurmCluster(base / "slurm", extra_conf=EXTRA_CONF)
    center: Center | None = None
    try:
        cluster.start()
        state = base / "center"
        prepare(state)
        center = Center(state, cluster, args.poll_interval)
        measure(center, cluster, args.jobs, args.clients, args.idle_seconds, args.settle_seconds)
    finally:
        if center is not None:
            center.stop()
        cluster.run("scancel", "--user", JOB_USER, timeout=120)
        cluster.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    say(f"\ndone in {time.perf_counter() - began:.0f} s; {loadavg()}")


if __name__ == "__main__":
    main()
