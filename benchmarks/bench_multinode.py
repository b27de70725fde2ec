"""Multi-node jobs: how long until the ranks of a 2-node job have met, on a real 2-node Slurm.

Brings up a two-node Slurm on this machine (`tests/slurm/cluster.py`, nodes `n1`, `n2`,
each its own slurmd), a kaic center over it, and runs RUNS jobs of
`tests/slurm/rendezvous.py` on `--nodes 2`: rank 0 listens on KAIC_MASTER_ADDR:PORT, rank 1
connects; each prints when it started and when it met the other. Measured per job:

- submit -> rendezvous: from just before `POST /v1/jobs` to the later of the two ranks'
  "met" time (both connected): what a user waits, including Slurm's scheduling (the test
  cluster schedules every 2 s: `sched_interval=2`);
- rank 0 start -> rendezvous: from rank 0's Python starting to both ranks having met: the
  cost of the launch (srun's second node, the other rank's start) and the rendezvous itself.

Jobs run one after the other (the two nodes hold one 2-node job at a time). The load
(`os.getloadavg()`) is printed before each run: on a busy shared machine, say so with the
figures. Needs root and `slurm-wlm slurmrestd munge` (Debian 12).

Usage: python benchmarks/bench_multinode.py [RUNS]   (default 5)
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kaic.center.store import Store  # noqa: E402
from tests.center.jobs_support import mint_token  # noqa: E402
from tests.helpers import start_center  # noqa: E402
from tests.slurm.cluster import JOB_USER, SlurmCluster  # noqa: E402

RENDEZVOUS = REPO / "tests" / "slurm" / "rendezvous.py"
TIMES = re.compile(rb"rank (\d) started=([\d.]+) met=([\d.]+)")


def load() -> str:
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def one_run(http: httpx.Client) -> tuple[float, float]:
    submitted = time.time()
    job = http.post(
        "/v1/jobs",
        json={"run": f"/usr/bin/python3 {RENDEZVOUS}", "resources": {"nodes": 2}},
    )
    job.raise_for_status()
    job_id = job.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        state = http.get(f"/v1/jobs/{job_id}").json()
        if state["state"] not in ("PENDING", "RUNNING", "COMPLETING"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not end: {state}")
        time.sleep(0.2)
    if state["state"] != "COMPLETED":
        raise RuntimeError(f"job {job_id} ended {state['state']}: {state.get('reason')}")
    times = {}
    for rank in (0, 1):
        out = http.get(f"/v1/jobs/{job_id}/logs", params={"node": rank}).content
        found = TIMES.search(out)
        if found is None:
            raise RuntimeError(f"rank {rank} of job {job_id} printed no times: {out!r}")
        times[rank] = (float(found.group(2)), float(found.group(3)))
    met = max(times[0][1], times[1][1])
    return met - submitted, met - times[0][0]


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    base = Path(tempfile.mkdtemp(prefix="kaic-bench-multinode-"))
    base.chmod(0o711)
    cluster = SlurmCluster(base / "slurm", nodes=2)
    center = None
    try:
        cluster.start()
        state = base / "center"
        center = start_center(
            state,
            "--executor", "slurm",
            "--slurmrestd", cluster.url,
            "--slurm-poll-interval", "0.5",
            env={"KAIC_SLURM_JWT": cluster.token, "SLURM_CONF": cluster.env["SLURM_CONF"]},
        )  # fmt: skip
        center.add_user("alice", "correct horse battery staple", unix_account=JOB_USER)
        center.add_project("bench", 5000, ["alice"])
        store = Store(state)
        try:
            token = mint_token(store, "alice")
        finally:
            store.close()
        headers = {"Authorization": f"Bearer {token}"}
        to_meet: list[float] = []
        from_start: list[float] = []
        with httpx.Client(base_url=center.url, headers=headers, timeout=30) as http:
            for i in range(runs):
                print(f"run {i + 1}/{runs} ({load()})", flush=True)
                total, launch = one_run(http)
                to_meet.append(total)
                from_start.append(launch)
                print(f"  submit -> rendezvous {total:.2f} s; rank 0 start -> rendezvous "
                      f"{launch:.3f} s", flush=True)  # fmt: skip
        for name, values in (
            ("submit -> rendezvous", to_meet),
            ("rank 0 start -> rendezvous", from_start),
        ):
            print(
                f"{name}: median {statistics.median(values):.3f} s, "
                f"min {min(values):.3f} s, max {max(values):.3f} s ({len(values)} runs)"
            )
        print(f"after: {load()}")
    finally:
        if center is not None:
            center.stop(kill_jobs=False)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
