"""Jobs benchmarks on a real center on loopback, measured in one run:

1. `logs -f` lag from write to print: a job prints timestamped lines; a follower records when
   each arrives (targets: p50 <= 0.2 s, p99 <= 1 s);
2. `kaic jobs` wall time against the local center (target <= 0.35 s), beside `kaic --version`;
3. 100 concurrent followers of one job: all get every byte; their lag under that load.

Usage: python benchmarks/bench_jobs.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kaic.auth.credentials import Credentials  # noqa: E402
from kaic.client.api import CenterClient  # noqa: E402
from kaic.client.jobs import JobsAPI  # noqa: E402
from kaic.client.logs import LogCursor, read_log  # noqa: E402
from kaic.models import JobSubmit  # noqa: E402

LINES = 400
WRITER = (
    'python3 -c "import time\n'
    f"for i in range({LINES}):\n"
    "    print(f'{i} {time.time():.6f}', flush=True); time.sleep(0.01)\""
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class LagRecorder:
    def __init__(self) -> None:
        self.buf = b""
        self.lags: list[float] = []
        self.bytes = 0

    def write(self, data: bytes) -> None:
        now = time.time()
        self.bytes += len(data)
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            self.lags.append(now - float(line.split()[1]))


def follow(client: CenterClient, job_id: str) -> LagRecorder:
    rec = LagRecorder()
    read_log(
        client, LogCursor(job_id, "stdout"), rec.write, follow=True, get_job=JobsAPI(client).get
    )
    return rec


def local_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAIC_")}
    env.update(
        KAIC_CONFIG_DIR=str(tmp / "config"), KAIC_STATE_DIR=str(tmp / "state"), PYTHONPATH=str(REPO)
    )
    return env


def kaic_cmd() -> list[str]:
    exe = shutil.which("kaic")
    return [exe] if exe else [sys.executable, "-m", "kaic"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        env = local_env(tmp)
        subprocess.run([*kaic_cmd(), "center", "start"], env=env, check=True, capture_output=True)
        try:
            state = tmp / "state" / "center"
            import json

            url = json.loads((state / "center.json").read_text())["url"]
            token = json.loads((state / "local-token").read_text())["token"]
            creds = Credentials(access_token=token, kind="api")
            client = CenterClient(url, credentials=creds)
            api = JobsAPI(client)

            # 1. lag of one follower
            job = api.submit(JobSubmit(name="lag", run=WRITER))
            rec = follow(client, job.id)
            assert len(rec.lags) == LINES, len(rec.lags)
            print(
                f"logs -f lag, 1 follower ({LINES} lines): p50 {statistics.median(rec.lags):.3f} s"
                f"  p99 {percentile(rec.lags, 0.99):.3f} s  (targets 0.2 / 1.0)"
            )

            # 2. `kaic jobs` wall time (the local center already running), beside --version
            def wall(cmd: list[str], n: int = 15) -> float:
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    subprocess.run(cmd, env=env, check=True, capture_output=True)
                    times.append(time.perf_counter() - t0)
                return statistics.median(times)

            jobs_t = wall([*kaic_cmd(), "jobs", "--all"])
            ver_t = wall([*kaic_cmd(), "--version"])
            print(
                f"kaic jobs --all: median {jobs_t:.3f} s (target 0.35)  "
                f"[kaic --version {ver_t:.3f} s]"
            )

            # 3. 100 concurrent followers of one job
            job = api.submit(JobSubmit(name="fanout", run=WRITER))
            recs: list[LagRecorder] = []
            lock = threading.Lock()

            def one() -> None:
                c = CenterClient(url, credentials=creds)
                r = follow(c, job.id)
                with lock:
                    recs.append(r)
                c.close()

            t0 = time.perf_counter()
            threads = [threading.Thread(target=one) for _ in range(100)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            took = time.perf_counter() - t0
            complete = sum(1 for r in recs if len(r.lags) == LINES)
            lags = [x for r in recs for x in r.lags]
            print(
                f"100 followers: {complete}/100 got all {LINES} lines in {took:.1f} s; "
                f"lag p50 {statistics.median(lags):.3f} s p99 {percentile(lags, 0.99):.3f} s"
            )
            client.close()
        finally:
            subprocess.run([*kaic_cmd(), "center", "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
