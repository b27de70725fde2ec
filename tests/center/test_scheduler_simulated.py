"""The simulated executor (`tests/center/simulated.py`) makes the scheduler decide exactly as the
local executor does, on a shared set of scenarios.

The scale benchmark measures the scheduler with the simulated executor (10,000 GPUs, no
processes); these tests are why its figures speak for the real thing. Each scenario is a
list of operations — submit, let a job end with an exit code, cancel, wait for a state — run
once with real processes (the local executor: each job waits for a release file and exits
with the code in it) and once simulated, with the scheduler ticked by hand. After every
operation both centers must show the same jobs in the same states, with the same reasons,
GPUs, exit codes and event histories (the executor's own ids masked).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from kaic.center.executors.base import Executor
from kaic.center.executors.local import LocalExecutor
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.jobs.service import JobService
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import JobSubmit

from .jobs_support import kill_job_processes, prepare_state, wait_for
from .simulated import SimulatedExecutor

#: a job that runs until told how to end: `$HOME/release/<its id>` holds its exit code
RELEASED = (
    'f="$HOME/release/$KAIC_JOB_ID"\nwhile [ ! -e "$f" ]; do sleep 0.02; done\nexit "$(cat "$f")"\n'
)
#: what differs between the two by nature: the executor's ids, charges of real run times
EXECUTOR_ID = re.compile(r" \((local|simulated) id [^)]*\)")
CHARGE = re.compile(r"charged [0-9.]+ GPU-hours")


@dataclass(frozen=True)
class Submit:
    name: str
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """Let a running job (by name; a task: `name_index`) end with `code`."""

    job: str
    code: int = 0


@dataclass(frozen=True)
class Cancel:
    job: str


@dataclass(frozen=True)
class Until:
    """Tick until the job is in `state` (a time limit running out)."""

    job: str
    state: str


Operation = Submit | End | Cancel | Until

SCENARIOS: dict[str, list[Operation]] = {
    "fifo with exclusive GPUs": [
        Submit("a", {"resources": {"gpus": 1}}),
        Submit("b", {"resources": {"gpus": 1}}),
        Submit("c", {"resources": {"gpus": 1}}),
        Submit("wide", {"resources": {"gpus": 2}}),
        Submit("cpu"),
        End("cpu"),
        End("a", 3),
        End("b"),
        End("c"),
        End("wide"),
    ],
    "arrays with a task limit": [
        Submit("arr", {"array": "0-4%2", "resources": {"gpus": 1}}),
        Submit("after", {"resources": {"gpus": 1}}),
        End("arr_0"),
        End("arr_1", 1),
        End("arr_2"),
        End("arr_3"),
        End("arr_4"),
        End("after"),
    ],
    "dependencies met and never met": [
        Submit("first", {"resources": {"gpus": 2}}),
        Submit("ok", {"depends_on": ["first"]}),
        Submit("bad", {"depends_on": ["first"]}),
        End("first"),
        End("ok", 2),
        Submit("never", {"depends_on": ["ok"]}),
        End("bad"),
    ],
    "cancel pending, running and an array": [
        Submit("hog", {"resources": {"gpus": 2}}),
        Submit("waits", {"resources": {"gpus": 1}}),
        Submit("arr", {"array": "0-3", "resources": {"gpus": 1}}),
        Cancel("waits"),
        Cancel("hog"),
        End("arr_0"),
        Cancel("arr"),
    ],
    "time limits": [
        Submit("short", {"time_limit_seconds": 1, "resources": {"gpus": 1}}),
        Submit("next", {"resources": {"gpus": 2}}),
        Until("short", "TIMEOUT"),
        End("next"),
    ],
}


class Run:
    """A center's store, scheduler (ticked by hand) and job service over one executor."""

    def __init__(self, state_dir: Path, executor: Executor) -> None:
        prepare_state(state_dir)
        self.settings = CenterSettings(
            state_dir=state_dir, gpus=2, gpu_type="H100", kill_grace=0.5, job_poll_interval=0.02
        )
        self.store = Store(state_dir)
        self.executor = executor
        self.scheduler = Scheduler(self.store, self.settings, executor)
        self.service = JobService(self.store, self.settings, self.scheduler)
        alice = self.store.get_user("alice")
        assert alice is not None
        self.user_id = alice.id
        self.ids: dict[str, str] = {}
        self.release_dir = self.settings.state_dir / "storage" / "alice" / "release"
        self.release_dir.mkdir(parents=True)

    def job_id(self, name: str) -> str:
        base, _, task = name.partition("_")
        return f"{self.ids[base]}_{task}" if task else self.ids[base]

    def state(self, name: str) -> str:
        row = self.service.jobs.get(self.job_id(name))
        assert row is not None
        return row.state.value

    def tick_until(self, check: Callable[[], bool], what: str) -> None:
        def ticked() -> bool:
            self.scheduler.tick()
            return check()

        wait_for(ticked, what=what)

    def apply(self, op: Operation) -> None:
        if isinstance(op, Submit):
            values = dict(op.spec)
            if "depends_on" in values:
                values["depends_on"] = [self.job_id(name) for name in values["depends_on"]]
            spec = JobSubmit(name=op.name, run=RELEASED, **values)
            job, _ = self.service.submit(self.user_id, "alice", spec, None)
            self.ids[op.name] = job.id
            self.scheduler.tick()
        elif isinstance(op, End):
            job_id = self.job_id(op.job)
            assert self.state(op.job) == "RUNNING", (op, self.snapshot())
            if isinstance(self.executor, SimulatedExecutor):
                self.executor.finish(job_id, op.code)
            else:
                # atomically: the job may see the file before its code is written in
                staged = self.release_dir / f".{job_id}"
                staged.write_text(f"{op.code}\n")
                staged.rename(self.release_dir / job_id)
            self.tick_until(lambda: self.state(op.job) not in ("RUNNING",), f"{op.job} to end")
        elif isinstance(op, Cancel):
            self.service.cancel(self.job_id(op.job), self.user_id)
            self.tick_until(lambda: self._settled(op.job), f"{op.job} to be cancelled")
        else:
            self.tick_until(lambda: self.state(op.job) == op.state, f"{op.job} in {op.state}")

    def _settled(self, name: str) -> bool:
        job_id = self.job_id(name)
        row = self.service.jobs.get(job_id)
        assert row is not None
        targets = self.service.jobs.tasks(job_id) if row.kind == "array" else [row]
        return all(t.terminal for t in targets)

    def snapshot(self) -> list[tuple[Any, ...]]:
        """Every job and task: state, reason, GPUs, exit code, and its events' states and
        messages (the executor's own ids and the hours charged masked)."""
        rows = self.store.fetchall("SELECT id FROM jobs ORDER BY seq, array_task_id")
        result = []
        for r in rows:
            row = self.service.jobs.get(r["id"])
            assert row is not None
            events = [
                (
                    e.state.value if e.state else None,
                    CHARGE.sub("charged …", EXECUTOR_ID.sub("", e.message)),
                )
                for e in self.service.jobs.events.of(row.id)
            ]
            result.append((row.id, row.state.value, row.reason, row.gpu_ids, row.exit_code, events))
        return result

    def close(self) -> None:
        self.scheduler.shutdown(kill_jobs=True)
        self.store.close()


@contextmanager
def run(state_dir: Path, executor: Executor) -> Iterator[Run]:
    center = Run(state_dir, executor)
    try:
        yield center
    finally:
        center.close()
        kill_job_processes(state_dir)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_simulated_decisions_equal_the_local_executors(tmp_path: Path, scenario: str) -> None:
    operations = SCENARIOS[scenario]
    with (
        run(tmp_path / "local", LocalExecutor(kill_grace=0.5)) as local,
        run(tmp_path / "simulated", SimulatedExecutor(kill_grace=0.5)) as simulated,
    ):
        for step, op in enumerate(operations):
            local.apply(op)
            simulated.apply(op)
            assert simulated.snapshot() == local.snapshot(), f"after step {step}: {op}"
        # Every scenario ends with nothing left to run.
        assert all(row[1] not in ("PENDING", "RUNNING") for row in local.snapshot())
