"""The center at national scale: this tree beside a baseline tree (`307b9f9` by default: the
center before this work), each over a store of 100,000 jobs and over an empty one, measured
in the same run.

Reproduce: `.venv/bin/python benchmarks/bench_scale.py --parts plans,api,tick,idle,arrays`
from this checkout (docs/benchmarks.md's figures: 351 s on two cores; `--baseline REF` for
another git ref, `none` for this tree alone; `--rows`, `--rounds`, `--keep DIR` to reuse the
built stores). Run it when the machine is quiet: every figure is printed after the load
average (`os.getloadavg()`) at its start.

How it is fair:

- The baseline's code is `git archive REF` of this repository, run in processes of its own
  (`PYTHONPATH` = that tree); this tree's code the same way. Both use the simulated
  executor of `tests/center/simulated.py` (loaded from this tree: it only implements the
  executor interface, which the two trees share) or the local executor.
- The history is built once (`scale_history.py`: through the store's own insert path in
  bulk transactions; a realistic mix of states, arrays, users and projects; 2,000 running
  jobs filling a partition of 1,250 nodes x 8 GPUs and 1,000 pending). The baseline gets a
  copy of the same database with its own schema: this tree's migration 4 undone (its
  indexes dropped, the two it replaced put back, `user_version` 3), so both read the very
  same rows.
- A and B alternate: each round measures the baseline, then this tree (the centers of one
  tree only run while that tree is measured, so an idle center of one tree never takes CPU
  from the other's measurement). Ratios are printed: history / empty (the targets) and
  this / baseline.

Parts (`--parts`, default `api,tick,idle,arrays`; `plans` prints each job query's
`EXPLAIN QUERY PLAN` in both trees):

- `api`: centers on loopback (uvicorn, HTTP), `--requests` per kind and round:
  `GET /v1/jobs` (default page, filtered by state, a deep cursor), `GET /v1/jobs/{id}` and
  its events (`kaic show`), `GET /v1/partitions`, dry runs, submits; then `kaic jobs` and
  `kaic show` as processes. Targets: p99 <= 100 ms; submit p99 within 1.5x of empty.
- `tick`: the scheduler in a process over the history and over the same active jobs
  without history (1,000 pending, 2,000 running): a pass with nothing changed, and passes
  after 20 jobs ended (arrivals keep 1,000 pending). Target <= 50 ms.
- `idle`: the history center's CPU over `--idle-seconds` with nothing happening; then, on
  the local executor with its one GPU busy, `--arrays` arrays of `--tasks` tasks submitted,
  settled (every pending reason set) and left idle. Target: well under 10 % of a core.
- `arrays`: on that local center, one array of `--big-array` tasks accepted (the POST),
  settled and cancelled (the POST). Target: about a second each.

The baseline's arrays are quadratic (an array of 1,000 tasks took it 69 s of CPU to
settle), so `idle`/`arrays` run both trees at `--arrays`/`--tasks`/`--big-array` (small by
default) and then this tree alone at `--full-arrays`/`--full-tasks`/`--full-big-array`
(20 x 1,000 pending, one of 10,000): those figures have no baseline. The Slurm executor
holding 10,000 pending jobs on the real single-node Slurm is `bench_slurm_scale.py`'s.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: the tree whose kaic this process imports (the parent: this one; a worker: either)
TREE = Path(os.environ.get("KAIC_BENCH_TREE", REPO)).resolve()
sys.path[:0] = [str(TREE), str(REPO / "benchmarks")]

import httpx  # noqa: E402

from kaic.center.jobs.partitions import PartitionConfig  # noqa: E402
from kaic.center.settings import CenterSettings  # noqa: E402
from kaic.center.store import Store  # noqa: E402

PARTITION = "gpu"
NODES, GPUS_PER_NODE = 1250, 8
GPUS = NODES * GPUS_PER_NODE
USER = "user0000"  # the busiest user of the history
THIS = "this"
BASE = "base"

#: This tree's migrations 4 and 5 undone: the baseline's schema (version 3) over the same
#: rows — the indexes dropped, and the submissions as the baseline's models know them (no
#: `kind`, which this tree's store writes and the baseline's models refuse: it would log a
#: warning for every row it reads); the `job_kind` column stays, unread by the baseline.
REWIND = """
UPDATE jobs SET spec = json_remove(spec, '$.kind') WHERE json_extract(spec, '$.kind') = 'batch';
DROP INDEX IF EXISTS jobs_seq;
DROP INDEX IF EXISTS jobs_user_seq;
DROP INDEX IF EXISTS jobs_user_state;
DROP INDEX IF EXISTS jobs_user_ended;
DROP INDEX IF EXISTS jobs_array_state;
DROP INDEX IF EXISTS jobs_queue;
CREATE INDEX IF NOT EXISTS jobs_user ON jobs(user_id, kind, seq);
CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_job_id);
PRAGMA user_version = 3;
"""
BASE_SCHEMA = 3


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def say(text: str) -> None:
    print(text, flush=True)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p50(values: list[float]) -> float:
    return statistics.median(values)


def ms(values: list[float]) -> str:
    return f"p50 {p50(values) * 1000:7.1f} p99 {pct(values, 0.99) * 1000:7.1f}"


def settings_for(state_dir: Path, gpus: int = GPUS, **extra: Any) -> CenterSettings:
    partition = PartitionConfig(PARTITION, gpus=gpus, gpu_type="H100", default=True)
    return CenterSettings(
        state_dir=state_dir, partitions=[partition], single_account_ok=True, **extra
    )


def simulated_executor(**kwargs: Any) -> Any:
    """`tests/center/simulated.py` of this tree, whichever tree's kaic is imported (the
    baseline has no such file; the executor interface it implements is the same)."""
    name = "kaic_bench_simulated"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests/center/simulated.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module.SimulatedExecutor(**kwargs)


@dataclass(frozen=True)
class Tree:
    """A checkout whose kaic runs in processes of its own."""

    key: str  # THIS or BASE
    label: str
    path: Path

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAIC_")}
        env["PYTHONPATH"] = os.pathsep.join([str(self.path), str(REPO / "benchmarks")])
        env["KAIC_BENCH_TREE"] = str(self.path)
        return env

    def worker(self, *args: str) -> str:
        """Run this script as a worker on this tree; its stdout."""
        argv = [sys.executable, __file__, "--worker", *args]
        done = subprocess.run(argv, env=self.env(), check=True, stdout=subprocess.PIPE, text=True)
        return done.stdout


def export_tree(ref: str, target: Path) -> str:
    """`git archive` of `ref` into `target`; its short commit."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    target.mkdir(parents=True)
    archive = subprocess.Popen(["git", "-C", str(REPO), "archive", ref], stdout=subprocess.PIPE)
    subprocess.run(["tar", "-x", "-C", str(target)], stdin=archive.stdout, check=True)
    assert archive.wait() == 0
    return commit


# -- a center in a process of its own ---------------------------------------------------


def serve(state_dir: Path, ready: Path, executor: str, gpus: int) -> None:
    """`--serve`: run a center over `state_dir` until SIGTERM (the simulated executor, or
    the center's own local one)."""
    from kaic.center import app as app_module
    from kaic.center import server

    if executor == "simulated":
        app_module.make_executor = lambda s: simulated_executor(kill_grace=s.kill_grace)  # type: ignore[assignment]
    server.serve(settings_for(state_dir, gpus=gpus, port=0, kill_grace=1.0), ready_file=ready)


@dataclass
class Center:
    name: str
    tree: Tree
    state_dir: Path
    url: str
    pid: int
    token: str
    client: httpx.Client

    def cpu_seconds(self) -> float:
        """The center process's user + system CPU so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def get(self, path: str, **params: Any) -> httpx.Response:
        response = self.client.get(path, params=params)
        response.raise_for_status()
        return response

    def post(self, path: str, body: Any = None, **params: Any) -> httpx.Response:
        response = self.client.post(path, json=body, params=params)
        response.raise_for_status()
        return response


@contextmanager
def running(
    name: str, tree: Tree, state_dir: Path, executor: str, gpus: int = GPUS
) -> Iterator[Center]:
    """A center process of `tree` over `state_dir`, stopped (SIGTERM, by its PID) at the
    end. The store's API token was minted when it was built (`token` beside it)."""
    token = (state_dir / "token").read_text()
    ready = state_dir / "ready.json"
    ready.unlink(missing_ok=True)
    log = open(state_dir / "center.log", "ab")  # noqa: SIM115 (the child writes it)
    argv = [sys.executable, __file__, "--serve", str(state_dir), str(ready), executor, str(gpus)]
    proc = subprocess.Popen(argv, stdout=log, stderr=log, env=tree.env())
    log.close()
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} center did not start: see {state_dir}/center.log")
            time.sleep(0.1)
        info = json.loads(ready.read_text())
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=info["url"], headers=headers, timeout=600) as client:
            yield Center(name, tree, state_dir, info["url"], info["pid"], token, client)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # A job outlives its center (by design): end the ones this center started. (Imported
        # here: a `--serve` child of the baseline's tree must not load this tree's tests.)
        from tests.center.jobs_support import kill_job_processes

        kill_job_processes(state_dir)


def wait_until(check: Callable[[], bool], what: str, timeout: float = 900) -> float:
    """Poll `check` every 10 ms; the seconds it took."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter() - start


def count(state_dir: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    """One number from a center's database, read-only (beside a running center, and
    without migrating the baseline's)."""
    conn = sqlite3.connect(f"file:{state_dir / 'center.db'}?mode=ro", uri=True, timeout=60)
    try:
        return int(conn.execute(sql, params).fetchone()[0] or 0)
    finally:
        conn.close()


# -- building the stores ----------------------------------------------------------------


def build(state_dir: Path, rows: int, **extra: Any) -> None:
    """A store of `rows` jobs of history (this tree's code) with an API token for `USER`."""
    import scale_history

    from tests.center.jobs_support import mint_token

    start = time.perf_counter()
    history = scale_history.build(state_dir, rows=rows, partition=PARTITION, **extra)
    took = time.perf_counter() - start
    store = Store(state_dir)
    try:
        (state_dir / "token").write_text(mint_token(store, USER))
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    states = ", ".join(f"{k} {v}" for k, v in sorted(history.states.items()))
    say(
        f"built {state_dir.name}: {history.rows} rows ({history.jobs} jobs, {history.arrays}"
        f" arrays, {history.tasks} tasks; {states}), {history.events} events, busiest user"
        f" {history.busiest_rows} rows, in {took:.1f} s"
    )


def rewind(state_dir: Path) -> None:
    """The baseline's schema over the rows of `state_dir` (see `REWIND`)."""
    conn = sqlite3.connect(state_dir / "center.db")
    try:
        conn.executescript(REWIND)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == BASE_SCHEMA
    finally:
        conn.close()


def copy_store(source: Path, target: Path, tree: Tree) -> Path:
    """A copy of a built store for `tree` (rewound for the baseline)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    if tree.key == BASE:
        rewind(target)
    return target


def cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"jobs:{seq}".encode()).decode().rstrip("=")


def table(title: str, results: dict[str, dict[str, list[float]]], columns: list[str]) -> None:
    """Rows: kinds; columns: p50/p99 (ms) of each; then the ratios of p99s given."""
    say(f"\n{title}")
    say(f"{'':32s} " + " ".join(f"{c:>25s}" for c in columns))
    for kind in next(iter(results.values())):
        cells = [f"{ms(results[c][kind]):>25s}" for c in columns if kind in results[c]]
        say(f"{kind:32s} " + " ".join(cells))


def ratio(a: list[float], b: list[float]) -> str:
    return f"{pct(b, 0.99) / pct(a, 0.99):6.2f}x"


# -- api ---------------------------------------------------------------------------------

SPEC = {"run": "python train.py", "resources": {"gpus": 4}, "time_limit_seconds": 3600}


def api_requests(center: Center) -> dict[str, Callable[[], Any]]:
    # Full pages on both: the empty center's user gets as many jobs as a page shows.
    submitted = center.post("/v1/jobs", {"run": "true", "resources": {"gpus": 1}}).json()
    while len(center.get("/v1/jobs").json()["jobs"]) < 50:
        submitted = center.post("/v1/jobs", {"run": "true", "resources": {"gpus": 1}}).json()
    job_id = submitted["id"]
    oldest = count(
        center.state_dir,
        "SELECT MIN(seq) FROM jobs j JOIN users u ON u.id = j.user_id"
        " WHERE u.name = ? AND j.kind != 'task'",
        (USER,),
    )
    deep = cursor(oldest + 60)
    return {
        "GET /v1/jobs (default page)": lambda: center.get("/v1/jobs"),
        "GET /v1/jobs?all&state=FAILED": lambda: center.get("/v1/jobs", all="true", state="FAILED"),
        "GET /v1/jobs?all&cursor=(deep)": lambda: center.get("/v1/jobs", all="true", cursor=deep),
        "GET /v1/jobs/{id}": lambda: center.get(f"/v1/jobs/{job_id}"),
        "GET /v1/jobs/{id}/events": lambda: center.get(f"/v1/jobs/{job_id}/events"),
        "GET /v1/partitions": lambda: center.get("/v1/partitions"),
        "POST /v1/jobs?dry_run=true": lambda: center.post("/v1/jobs", SPEC, dry_run="true"),
        "POST /v1/jobs (submit)": lambda: center.post("/v1/jobs", SPEC),
    }


def cli_commands(center: Center) -> dict[str, list[str]]:
    job_id = count(
        center.state_dir,
        "SELECT MAX(seq) FROM jobs j JOIN users u ON u.id = j.user_id WHERE u.name = ?",
        (USER,),
    )
    return {"kaic jobs": ["jobs"], "kaic show": ["show", str(job_id)]}


def run_cli(center: Center, args: list[str], tmp: Path) -> float:
    env = center.tree.env()
    env.update(
        KAIC_CENTER=center.url,
        KAIC_TOKEN=center.token,
        KAIC_CONFIG_DIR=str(tmp / "config"),
        KAIC_STATE_DIR=str(tmp / "state"),
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "kaic", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def part_api(
    trees: list[Tree], stores: dict[str, Path], rounds: int, requests: int, tmp: Path
) -> None:
    say(f"\n== api: {requests} of each request per round, both stores, both trees ==")
    results: dict[str, dict[str, list[float]]] = {}
    dirs = {
        (tree.key, store): copy_store(stores[store], tmp / f"api-{tree.key}-{store}", tree)
        for tree in trees
        for store in ("empty", "history")
    }
    for r in range(rounds):
        for tree in trees:
            with (
                running("empty", tree, dirs[tree.key, "empty"], "simulated") as empty,
                running("history", tree, dirs[tree.key, "history"], "simulated") as big,
            ):
                for center in (empty, big):
                    calls = api_requests(center)
                    for call in calls.values():  # warm up
                        call()
                    column = results.setdefault(f"{tree.key} {center.name}", {})
                    say(f"round {r + 1}, {tree.label}, {center.name}: {loadavg()}")
                    for kind, call in calls.items():
                        times = column.setdefault(kind, [])
                        for _ in range(requests):
                            start = time.perf_counter()
                            call()
                            times.append(time.perf_counter() - start)
                    for kind, args in cli_commands(center).items():
                        times = column.setdefault(kind, [])
                        for _ in range(max(2, requests // 10)):
                            times.append(run_cli(center, args, tmp))
    say(f"after: {loadavg()}")
    columns = [f"{t.key} {s}" for t in trees for s in ("empty", "history")]
    table("latency, ms (p50 p99)", results, columns)
    say(
        f"\np99 ratios {'':21s} "
        + " ".join(f"{h:>14s}" for h in [f"{t.key} hist/empty" for t in trees] + ["this/base hist"])
    )
    for kind in results[columns[0]]:
        cells = [
            ratio(results[f"{t.key} empty"][kind], results[f"{t.key} history"][kind]) for t in trees
        ]
        if len(trees) == 2:
            cells.append(ratio(results["base history"][kind], results["this history"][kind]))
        say(f"{kind:32s} " + " ".join(f"{c:>14s}" for c in cells))


# -- tick --------------------------------------------------------------------------------

PENDING_ROWS = "SELECT COUNT(*) FROM jobs WHERE state = 'PENDING' AND kind != 'array'"
RUNNING_ROWS = "SELECT COUNT(*) FROM jobs WHERE state = 'RUNNING' AND kind != 'array'"


def worker_tick(state_dir: Path, seed: int, passes: int) -> dict[str, list[float]]:
    """In a worker: the scheduler over `state_dir`; the seconds of each measured pass."""
    from kaic.center.jobs.scheduler import Scheduler
    from kaic.center.jobs.service import JobService
    from kaic.models import JobSubmit, Resources

    rng = random.Random(seed)
    store = Store(state_dir)
    executor = simulated_executor()
    settings = settings_for(state_dir)
    scheduler = Scheduler(store, settings, executor)
    scheduler._recover()  # re-attach the running jobs, as `start` does
    scheduler.tick()
    service = JobService(store, settings, scheduler)
    users = [(u.id, u.name) for u in (store.get_user(f"user{n:04d}") for n in range(50)) if u]
    steady: list[float] = []
    churn: list[float] = []
    cpu: list[float] = []
    for _ in range(passes):
        start = time.perf_counter()
        scheduler.tick()
        steady.append(time.perf_counter() - start)
    for _ in range(passes):
        for job_id in rng.sample(executor.running(), 20):
            executor.finish(job_id, 0)
        pending = count(state_dir, PENDING_ROWS)
        for _ in range(max(0, 1000 - pending)):
            user_id, user = rng.choice(users)
            gpus = rng.choice((1, 1, 2, 4, 8))
            spec = JobSubmit(run="python train.py", resources=Resources(gpus=gpus))
            service.submit(user_id, user, spec, None)
        start, cpu_start = time.perf_counter(), time.process_time()
        scheduler.tick()
        churn.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    left = f"{count(state_dir, PENDING_ROWS)} pending, {count(state_dir, RUNNING_ROWS)} running"
    scheduler.shutdown()
    store.close()
    return {
        "nothing changed": steady,
        "20 ended, arrivals": churn,
        "20 ended, CPU": cpu,
        "left": left,
    }  # type: ignore[dict-item]


def part_tick(
    trees: list[Tree], stores: dict[str, Path], rounds: int, passes: int, tmp: Path
) -> None:
    say(f"\n== tick: 1,000 pending, 2,000 running, {NODES} nodes x {GPUS_PER_NODE} GPUs ==")
    results: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        for store in ("fresh", "history"):
            for tree in trees:
                state = copy_store(stores[store], tmp / "tick", tree)
                say(f"round {r + 1}, {tree.label}, {store}: {loadavg()}")
                out = json.loads(tree.worker("tick", str(state), str(r), str(passes)))
                say(f"    then {out.pop('left')}")
                column = results.setdefault(f"{tree.key} {store}", {})
                for kind, values in out.items():
                    column.setdefault(kind, []).extend(values)
    say(f"after: {loadavg()}")
    columns = [f"{t.key} {s}" for t in trees for s in ("fresh", "history")]
    table(
        "scheduler pass, ms (p50 p99); fresh = the same active jobs, no history", results, columns
    )
    if len(trees) == 2:
        this, base = results["this history"], results["base history"]
        ratios = [f"{kind} {p50(this[kind]) / p50(base[kind]):.3f}x" for kind in this]
        say("this / base p50, history: " + ", ".join(ratios))


# -- idle and arrays -----------------------------------------------------------------------


def idle_cpu(center: Center, seconds: float) -> float:
    """Percent of one core the center used over `seconds` of nothing happening."""
    before, start = center.cpu_seconds(), time.perf_counter()
    time.sleep(seconds)
    return 100 * (center.cpu_seconds() - before) / (time.perf_counter() - start)


def settled(state_dir: Path) -> bool:
    """No pending row without its reason."""
    sql = "SELECT COUNT(*) FROM jobs WHERE state = 'PENDING' AND reason IS NULL"
    return count(state_dir, sql) == 0


def idle_history(tree: Tree, source: Path, seconds: float, tmp: Path) -> None:
    state = copy_store(source, tmp / f"idle-{tree.key}", tree)
    with running("history", tree, state, "simulated") as big:
        wait_until(lambda: settled(state), "the queue to settle")
        say(f"{tree.label}, history (2,000 running, 1,000 pending): {loadavg()}")
        say(f"    idle: {idle_cpu(big, seconds):.1f} % of a core over {seconds:g} s")


def local(
    tree: Tree, source: Path, tmp: Path, seconds: float, arrays: int, tasks: int, big_array: int
) -> None:
    """The local executor, its one GPU busy: arrays pending, idle, then one big array."""
    state = copy_store(source, tmp / f"local-{tree.key}", tree)
    say(f"{tree.label}, local executor, {arrays} x {tasks} tasks then {big_array}: {loadavg()}")
    with running("local", tree, state, "local", gpus=1) as center:
        hog = center.post("/v1/jobs", {"run": "sleep 3600", "resources": {"gpus": 1}}).json()
        wait_until(lambda: center.get(f"/v1/jobs/{hog['id']}").json()["state"] == "RUNNING", "hog")
        accepted = []
        cpu_start = center.cpu_seconds()
        start = time.perf_counter()
        for _ in range(arrays):
            spec = {"run": "true", "array": f"0-{tasks - 1}", "resources": {"gpus": 1}}
            t = time.perf_counter()
            center.post("/v1/jobs", spec)
            accepted.append(time.perf_counter() - t)
        took = wait_until(lambda: settled(state), "the arrays to settle")
        say(
            f"    {arrays} arrays of {tasks}: accepted {ms(accepted)} ms; all settled"
            f" {time.perf_counter() - start:.2f} s after the first POST ({took:.2f} s after"
            f" the last); center CPU {center.cpu_seconds() - cpu_start:.2f} s"
        )
        say(
            f"    {arrays * tasks} pending, idle: {idle_cpu(center, seconds):.1f} % of a core"
            f" over {seconds:g} s ({loadavg()})"
        )
        times = []
        for _ in range(20):
            t = time.perf_counter()
            center.get("/v1/jobs")
            times.append(time.perf_counter() - t)
        say(f"    GET /v1/jobs with them pending: {ms(times)} ms")
        if not big_array:
            return
        spec = {"run": "true", "array": f"0-{big_array - 1}", "resources": {"gpus": 1}}
        cpu_start = center.cpu_seconds()
        start = time.perf_counter()
        array = center.post("/v1/jobs", spec).json()
        accept = time.perf_counter() - start
        settle = wait_until(lambda: settled(state), "the array to settle")
        settle_cpu = center.cpu_seconds() - cpu_start
        start = time.perf_counter()
        cancelled = center.post(f"/v1/jobs/{array['id']}/cancel").json()
        cancel = time.perf_counter() - start
        assert cancelled["state"] == "CANCELLED", cancelled
        left = count(
            state,
            "SELECT COUNT(*) FROM jobs WHERE array_job_id = ? AND state != 'CANCELLED'",
            (array["id"],),
        )
        say(
            f"    array of {big_array}: accepted {accept:.2f} s, settled {settle:.2f} s after"
            f" (center CPU for both {settle_cpu:.2f} s), cancelled {cancel:.2f} s"
            f" ({left} tasks not cancelled)"
        )


# -- plans -------------------------------------------------------------------------------

_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def worker_plans(state_dir: Path) -> None:
    """In a worker: each job statement the API's and the scheduler's work runs on the
    history, with SQLite's plan for it (`EXPLAIN QUERY PLAN`); literals shown as `?`."""
    from kaic.center.jobs.scheduler import Scheduler
    from kaic.center.jobs.service import JobService
    from kaic.models import JobState, JobSubmit, Resources

    store = Store(state_dir)
    executor = simulated_executor()
    scheduler = Scheduler(store, settings_for(state_dir), executor)
    service = JobService(store, settings_for(state_dir), scheduler)
    user = store.get_user(USER)
    assert user is not None
    scheduler._recover()
    scheduler.tick()
    statements: dict[str, tuple[str, str]] = {}
    doing = [""]

    def trace(sql: str) -> None:
        text = " ".join(sql.split())
        if text.split(" ", 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "INSERT"):
            statements.setdefault(_LITERAL.sub("?", text), (doing[0], text))

    def listing(states: list[Any], all_jobs: bool, at: str | None = None) -> Any:
        return service.list(user.id, states=states, all_jobs=all_jobs, limit=50, cursor=at)

    operations: dict[str, Callable[[], Any]] = {
        "list (default page)": lambda: listing([], False),
        "list (all)": lambda: listing([], True),
        "list (state)": lambda: listing([JobState.FAILED], True),
        "list (deep cursor)": lambda: listing([], True, cursor(100)),
        "show": lambda: service.jobs.events.of("1"),
        "partitions": scheduler.partition_views,
        "dry run": lambda: service.dry_run(
            user.id, USER, JobSubmit(run="x", resources=Resources(gpus=1))
        ),
        "submit": lambda: service.submit(
            user.id, USER, JobSubmit(run="x", array="0-9", resources=Resources(gpus=1)), None
        ),
        "submit, its pass": lambda: (
            service.submit(user.id, USER, JobSubmit(run="x", resources=Resources(gpus=1)), None),
            scheduler._cycle(step=False, arrivals=True),
        ),
        "tick": scheduler.tick,
        "end, tick": lambda: (executor.finish(executor.running()[0], 0), scheduler.tick()),
        "cancel": lambda: service.cancel(
            str(count(state_dir, "SELECT MAX(seq) FROM jobs")), user.id
        ),
    }
    store._conn.set_trace_callback(trace)
    for name, operation in operations.items():
        doing[0] = name
        operation()
    store._conn.set_trace_callback(None)
    for normalized, (name, text) in statements.items():
        if "FROM jobs" not in text and "UPDATE jobs" not in text and "job_events" not in text:
            continue
        plan = [row[3] for row in store.fetchall("EXPLAIN QUERY PLAN " + text)]
        if plan:
            say(f"[{name}] {normalized}")
            for line in plan:
                say(f"    {line}")
    scheduler.shutdown()
    store.close()


def part_plans(trees: list[Tree], history: Path, tmp: Path) -> None:
    for tree in trees:
        say(f"\n== plans, {tree.label}: each job statement the API and the scheduler ran ==")
        state = copy_store(history, tmp / "plans", tree)
        say(tree.worker("plans", str(state)).rstrip())


# -- main --------------------------------------------------------------------------------


def worker(args: list[str]) -> None:
    if args[0] == "tick":
        print(json.dumps(worker_tick(Path(args[1]), int(args[2]), int(args[3]))))
    elif args[0] == "plans":
        worker_plans(Path(args[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", default="307b9f9", help="git ref ('none': this tree only)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--requests", type=int, default=20, help="per kind, center and round")
    parser.add_argument("--passes", type=int, default=5, help="scheduler passes per round")
    parser.add_argument("--parts", default="api,tick,idle,arrays")
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--arrays", type=int, default=4, help="arrays pending, both trees")
    parser.add_argument("--tasks", type=int, default=100, help="tasks per array, both trees")
    parser.add_argument("--big-array", type=int, default=300, help="one array, both trees")
    parser.add_argument("--full-arrays", type=int, default=20, help="this tree alone")
    parser.add_argument("--full-tasks", type=int, default=1000, help="this tree alone")
    parser.add_argument("--full-big-array", type=int, default=10_000, help="this tree alone")
    parser.add_argument("--keep", type=Path, help="build into (and keep) this directory")
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        state, ready, executor, gpus = args.serve
        serve(Path(state), Path(ready), executor, int(gpus))
        return
    if args.worker:
        worker(args.worker)
        return
    began = time.perf_counter()
    parts = set(args.parts.split(","))
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="kaic-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        trees = [Tree(THIS, f"this tree ({head}+worktree)", REPO)]
        if args.baseline != "none":
            base_dir = tmp / "baseline-tree"
            shutil.rmtree(base_dir, ignore_errors=True)
            commit = export_tree(args.baseline, base_dir)
            trees.insert(0, Tree(BASE, f"baseline {args.baseline} ({commit})", base_dir))
        say(f"{', '.join(t.label for t in trees)}; {os.cpu_count()} CPUs; {loadavg()}")
        stores = {"history": tmp / "history", "empty": tmp / "empty", "fresh": tmp / "fresh"}
        now = datetime.now(timezone.utc)
        if not stores["history"].exists():
            build(stores["history"], args.rows, now=now)
        if not stores["empty"].exists():
            build(stores["empty"], 0, now=now)
        if "tick" in parts and not stores["fresh"].exists():
            build(stores["fresh"], 3000, now=now - timedelta(minutes=5))
        if "plans" in parts:
            part_plans(trees, stores["history"], tmp)
        if "api" in parts:
            part_api(trees, stores, args.rounds, args.requests, tmp)
        if "tick" in parts:
            part_tick(trees, stores, args.rounds, args.passes, tmp)
        if "idle" in parts or "arrays" in parts:
            say(f"\n== idle and arrays: {args.idle_seconds:g} s idle each ==")
            for tree in trees:
                if "idle" in parts:
                    idle_history(tree, stores["history"], args.idle_seconds, tmp)
                big = args.big_array if "arrays" in parts else 0
                local(tree, stores["empty"], tmp, args.idle_seconds, args.arrays, args.tasks, big)
            say("this tree alone (no baseline: the baseline's arrays are quadratic):")
            big = args.full_big_array if "arrays" in parts else 0
            local(
                trees[-1],
                stores["empty"],
                tmp,
                args.idle_seconds,
                args.full_arrays,
                args.full_tasks,
                big,
            )
        say(f"\ndone in {time.perf_counter() - began:.0f} s; {loadavg()}")
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
