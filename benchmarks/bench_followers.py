"""1,000 followers of job logs on one center process: lag, the center's CPU, fds and memory.

Two scenarios, each run against two centers side by side — the baseline (`--baseline REV`,
the code before one watcher per log; its `kaic/` is exported with `git archive` and run
from there with the same virtual environment) and this tree — interleaved A, B, A, B:

- `one`: 1,000 followers of one job, which prints `--lines` (400) lines, one every
  `--interval` (0.01) s;
- `spread`: 1,000 followers spread over 100 jobs (10 each), each printing `--spread-lines`
  (100) lines, one every `--spread-interval` (0.05) s: 2,000 lines a second in all (a
  hundred jobs printing every 10 ms would leave the two cores of a laptop to their writers).

Each center is a fresh `python -m kaic.center --local-user` on loopback (the embedded local
center). Each job starts by printing `start` and waits for a go file; the followers run in
separate client processes (`--clients`, raw HTTP/1.1 over asyncio, so that the center's
CPU is measured alone and the clients stay cheap), connect, and say so once every follower
has its `start` line. Then the bench measures, on the center process:

- unfollowed: CPU % over `--idle` seconds with the jobs running and no follower (what the
  center costs anyway: its scheduler);
- idle: the same with every follower connected and no job writing (what waiting costs),
  and the open fds and RSS, against the same center before any follower connected (per
  follower: the difference / followers);
- writing: the go file is created; each job prints its lines `i <time.time()>`; each
  follower checks it gets every line exactly once, in order, and the lag from write to
  receipt; the center's CPU % from go until the last follower's stream ended (the end: the
  job is terminal and its log drained).

The load (`os.getloadavg()`) is printed before each measurement. Lags include the clients'
own scheduling on a shared machine.

Usage:
    python benchmarks/bench_followers.py [--rounds 2] [--followers 1000] [--jobs 100]
        [--baseline REV | --baseline none] [--scenarios one,spread] [--nofile N]

`--nofile N` runs the centers with a soft open-files limit of N (the hard limit unchanged),
e.g. 1024, to see how many followers each one can hold.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
#: seconds all followers have to connect and get their first line; later ones count as failed
CONNECT_TIMEOUT = 60.0
#: the commit before the center followed logs with one watcher per log
DEFAULT_BASELINE = "cc7689e"

WRITER = """\
import os, sys, time
go, lines, interval = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
print("start", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
for i in range(lines):
    print(f"{i} {time.time():.6f}", flush=True)
    time.sleep(interval)
"""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


# -- the center process ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Center:
    pid: int
    url: str
    token: str
    proc: subprocess.Popen[bytes]
    state_dir: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_center(tree: Path, work: Path, nofile: int | None) -> Center:
    state = work / "state"
    ready = work / "ready.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIC_")}
    env.update(PYTHONPATH=str(tree), PYTHONUNBUFFERED="1", KAIC_LOCAL_GPUS="0")

    def limit() -> None:
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))

    profile = os.environ.get("BENCH_PROFILE_CENTER")  # a cProfile output file, for digging
    cmd = [sys.executable, *(["-m", "cProfile", "-o", profile] if profile else [])]
    cmd += ["-m", "kaic.center", "--local-user", getpass.getuser()]
    cmd += ["--host", "127.0.0.1", "--port", "0", "--state-dir", str(state)]
    cmd += ["--ready-file", str(ready)]
    log = open(work / "center.log", "wb")  # noqa: SIM115 (the child keeps it)
    # Run from `work`: `python -m` puts the current directory first on the path.
    proc = subprocess.Popen(
        cmd, env=env, cwd=work, stdout=log, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=limit
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"center exited: {(work / 'center.log').read_text()[-2000:]}")
        if ready.exists():
            try:
                data = json.loads(ready.read_text())
            except ValueError:
                data = None
            if data and data.get("pid") == proc.pid:
                token = json.loads((state / "local-token").read_text())["token"]
                found = subprocess.run(
                    [sys.executable, "-c", "import kaic, sys; print(kaic.__file__)"],
                    env=env,
                    cwd=work,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                if not found.startswith(str(tree)):
                    raise SystemExit(f"the center would import {found}, not from {tree}")
                return Center(proc.pid, data["url"], token, proc, state)
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the center did not start in 60 s")


def api(center: Center, method: str, path: str, body: Any = None) -> Any:
    import httpx

    headers = {"Authorization": f"Bearer {center.token}"}
    response = httpx.request(method, center.url + path, json=body, headers=headers, timeout=60)
    response.raise_for_status()
    return response.json()


def submit_jobs(center: Center, count: int, go: Path, lines: int, interval: float) -> list[str]:
    script = f"python3 -c {shlex_quote(WRITER)} {go} {lines} {interval}"
    ids = []
    for i in range(count):
        job = api(
            center,
            "POST",
            "/v1/jobs",
            {"name": f"writer-{i}", "run": script, "resources": {"gpus": 0}},
        )
        ids.append(job["id"])
    deadline = time.monotonic() + 120
    for job_id in ids:
        while api(center, "GET", f"/v1/jobs/{job_id}")["state"] != "RUNNING":
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} did not start")
            time.sleep(0.05)
    return ids


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


# -- the followers (client processes) -------------------------------------------------------


class Follower(asyncio.Protocol):
    """One `GET …/logs?follow=true`, de-chunked by hand; records each line's lag."""

    def __init__(self, request: bytes, lines: int, lags: list[float]) -> None:
        self.request = request
        self.lines = lines
        self.lags = lags
        self.buf = bytearray()
        self.text = bytearray()
        self.headers_done = False
        self.status = 0
        self.state = "size"  # size line, chunk data, or the CRLF after it
        self.chunk_left = 0
        self.next_line = 0
        self.errors: list[str] = []
        self.started = asyncio.get_running_loop().create_future()
        self.done = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        if not self.headers_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).decode("latin-1")
            self.status = int(head.split()[1])
            del self.buf[: end + 4]
            self.headers_done = True
            if self.status != 200:
                self._fail(f"HTTP {self.status}")
                return
        while True:
            if self.state == "size":
                end = self.buf.find(b"\r\n")
                if end < 0:
                    return
                size = int(bytes(self.buf[:end]).split(b";")[0], 16)
                del self.buf[: end + 2]
                if size == 0:
                    self._finish()
                    return
                self.chunk_left, self.state = size, "data"
            elif self.state == "data":
                take = min(self.chunk_left, len(self.buf))
                if take == 0:
                    return
                self._lines(bytes(self.buf[:take]), now)
                del self.buf[:take]
                self.chunk_left -= take
                if self.chunk_left == 0:
                    self.state = "crlf"
            else:  # the CRLF that ends a chunk
                if len(self.buf) < 2:
                    return
                del self.buf[:2]
                self.state = "size"

    def _lines(self, data: bytes, now: float) -> None:
        self.text += data
        *complete, rest = bytes(self.text).split(b"\n")
        self.text = bytearray(rest)
        for line in complete:
            if line == b"start":
                if not self.started.done():
                    self.started.set_result(None)
                continue
            index, stamp = line.split()
            if int(index) != self.next_line:
                self.errors.append(f"line {int(index)} where {self.next_line} was due")
            self.next_line = int(index) + 1
            self.lags.append(now - float(stamp))

    def _finish(self) -> None:
        if self.next_line != self.lines:
            self.errors.append(f"ended after {self.next_line} of {self.lines} lines")
        if not self.done.done():
            self.done.set_result(None)
        self.transport.close()

    def _fail(self, why: str) -> None:
        self.errors.append(why)
        for future in (self.started, self.done):
            if not future.done():
                future.set_result(None)
        if hasattr(self, "transport"):  # not set when the connection never came up
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self._fail(f"connection lost: {exc or 'closed'}")


async def run_followers(url: str, token: str, jobs: list[str], count: int, lines: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    followers: list[Follower] = []
    connecting = asyncio.Semaphore(32)  # the center's listen backlog is 128
    deadline = loop.time() + CONNECT_TIMEOUT

    async def started(follower: Follower) -> None:
        await loop.create_connection(lambda: follower, host, port)
        await follower.started

    async def connect(job_id: str) -> None:
        request = (
            f"GET /v1/jobs/{job_id}/logs?follow=true HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nAccept: */*\r\n\r\n"
        ).encode()
        follower = Follower(request, lines, lags)
        followers.append(follower)
        async with connecting:
            try:
                # A center out of file descriptors accepts no more connections: without a
                # deadline its followers would wait for ever (the baseline under `--nofile`).
                await asyncio.wait_for(started(follower), max(deadline - loop.time(), 0.0))
            except OSError as exc:
                follower._fail(f"connect: {exc}")
            except asyncio.TimeoutError:
                follower._fail(f"not connected with its first line in {CONNECT_TIMEOUT:.0f} s")

    await asyncio.gather(*(connect(jobs[i % len(jobs)]) for i in range(count)))
    ok = sum(1 for f in followers if f.started.done() and not f.errors)
    print(json.dumps({"ready": ok}), flush=True)
    await asyncio.gather(*(f.done for f in followers))
    errors = [e for f in followers for e in f.errors]
    complete = sum(1 for f in followers if not f.errors and f.next_line == lines)
    # Lags in milliseconds keep the report small.
    print(
        json.dumps(
            {
                "complete": complete,
                "errors": errors[:20],
                "error_count": len(errors),
                "lags_ms": [round(x * 1000, 1) for x in lags],
            }
        ),
        flush=True,
    )


def client_main(argv: list[str]) -> None:
    url, token, jobs, count, lines = argv
    asyncio.run(run_followers(url, token, jobs.split(","), int(count), int(lines)))


# -- one measurement -----------------------------------------------------------------------


@dataclass
class Result:
    label: str
    scenario: str
    followers: int
    ready: int = 0
    complete: int = 0
    errors: list[str] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    unfollowed_cpu: float = 0.0
    idle_cpu: float = 0.0
    write_cpu: float = 0.0
    write_wall: float = 0.0
    fds_before: int = 0
    fds_connected: int = 0
    rss_before: int = 0
    rss_connected: int = 0

    def line(self) -> str:
        n = max(self.ready, 1)
        return (
            f"{self.label:9s} {self.scenario:6s} ready {self.ready}/{self.followers} "
            f"complete {self.complete}/{self.followers}  "
            f"lag p50 {percentile(self.lags, 0.5):.3f} s p99 {percentile(self.lags, 0.99):.3f} s  "
            f"center CPU unfollowed {self.unfollowed_cpu:4.1f} % idle {self.idle_cpu:5.1f} % "
            f"writing {self.write_cpu:5.1f} % "
            f"({self.write_wall:.1f} s)  "
            f"fds {self.fds_before}->{self.fds_connected} "
            f"({(self.fds_connected - self.fds_before) / n:.2f}/follower)  "
            f"RSS {self.rss_before // 1024}->{self.rss_connected // 1024} MiB "
            f"({(self.rss_connected - self.rss_before) / n:.1f} KiB/follower)"
        )


def measure(
    label: str, tree: Path, scenario: str, args: argparse.Namespace, nofile: int | None
) -> Result:
    jobs_count = 1 if scenario == "one" else args.jobs
    result = Result(label, scenario, args.followers)
    with tempfile.TemporaryDirectory(prefix="kaic-followers-") as tmp:
        work = Path(tmp)
        go = work / "go"
        center = start_center(tree, work, nofile)
        clients: list[subprocess.Popen[str]] = []
        try:
            lines, interval = (
                (args.lines, args.interval)
                if scenario == "one"
                else (args.spread_lines, args.spread_interval)
            )
            jobs = submit_jobs(center, jobs_count, go, lines, interval)
            time.sleep(0.5)  # let the start-up settle before the "before" figures
            result.fds_before, result.rss_before = open_fds(center.pid), rss_kib(center.pid)
            # What the center costs with its jobs running and no follower, for comparison.
            c0, t0 = cpu_seconds(center.pid), time.monotonic()
            time.sleep(args.idle)
            result.unfollowed_cpu = 100 * (cpu_seconds(center.pid) - c0) / (time.monotonic() - t0)
            print(f"  [{label} {scenario}] {load()}: connecting {args.followers} followers")
            share = [args.followers // args.clients] * args.clients
            share[0] += args.followers - sum(share)
            for index, n in enumerate(share):
                # Each client gets whole jobs' followers, in the same rotation.
                mine = jobs[index :: args.clients] if len(jobs) >= args.clients else jobs
                cmd = [sys.executable, __file__, "--client", center.url, center.token]
                cmd += [",".join(mine), str(n), str(lines)]
                clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, bufsize=1))
            for client in clients:
                assert client.stdout is not None
                result.ready += json.loads(client.stdout.readline())["ready"]
            result.fds_connected = open_fds(center.pid)
            result.rss_connected = rss_kib(center.pid)
            print(f"  [{label} {scenario}] {load()}: {result.ready} connected; idle {args.idle} s")
            c0, t0 = cpu_seconds(center.pid), time.monotonic()
            time.sleep(args.idle)
            result.idle_cpu = 100 * (cpu_seconds(center.pid) - c0) / (time.monotonic() - t0)
            print(f"  [{label} {scenario}] {load()}: writing")
            c0, t0 = cpu_seconds(center.pid), time.monotonic()
            go.touch()
            for client in clients:
                assert client.stdout is not None
                report = json.loads(client.stdout.readline())
                result.complete += report["complete"]
                result.errors += report["errors"]
                result.lags += [x / 1000 for x in report["lags_ms"]]
                client.wait(60)
            result.write_wall = time.monotonic() - t0
            result.write_cpu = 100 * (cpu_seconds(center.pid) - c0) / result.write_wall
        finally:
            for client in clients:
                if client.poll() is None:
                    client.kill()
            go.touch()
            center.stop()
    return result


def export_baseline(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "kaic"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--followers", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100, help="jobs of the spread scenario")
    parser.add_argument("--lines", type=int, default=400)
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--spread-lines", type=int, default=100)
    parser.add_argument("--spread-interval", type=float, default=0.05)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    parser.add_argument("--scenarios", default="one,spread")
    parser.add_argument("--nofile", type=int, default=None)
    args = parser.parse_args()
    if shutil.which("python3") is None:
        raise SystemExit("the jobs need python3 on PATH")
    with tempfile.TemporaryDirectory(prefix="kaic-baseline-") as base:
        trees = [("this tree", REPO)]
        if args.baseline != "none":
            exported = export_baseline(args.baseline, Path(base))
            trees.insert(0, (f"baseline {args.baseline}", exported))
        print(f"{load()}; {os.cpu_count()} CPUs; nofile {args.nofile or 'default'}")
        results: list[Result] = []
        for round_no in range(args.rounds):
            for scenario in args.scenarios.split(","):
                for label, tree in trees:
                    print(f"round {round_no + 1}: {label}, {scenario}")
                    name = "baseline" if label.startswith("baseline") else "new"
                    result = measure(name, tree, scenario, args, args.nofile)
                    print("  " + result.line())
                    for error in result.errors[:3]:
                        print(f"    e.g. {error}")
                    results.append(result)
        print("\nsummary (medians over rounds):")
        for scenario in args.scenarios.split(","):
            for name in ("baseline", "new"):
                mine = [r for r in results if r.scenario == scenario and r.label == name]
                if not mine:
                    continue
                p50 = statistics.median(percentile(r.lags, 0.5) for r in mine)
                p99 = statistics.median(percentile(r.lags, 0.99) for r in mine)
                idle = statistics.median(r.idle_cpu for r in mine)
                unfollowed = statistics.median(r.unfollowed_cpu for r in mine)
                busy = statistics.median(r.write_cpu for r in mine)
                print(
                    f"  {scenario:6s} {name:8s} lag p50 {p50:.3f} s p99 {p99:.3f} s; "
                    f"center CPU unfollowed {unfollowed:.1f} %, idle {idle:.1f} %, "
                    f"writing {busy:.1f} %; "
                    f"complete {[r.complete for r in mine]}"
                )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        client_main(sys.argv[2:])
    else:
        main()
