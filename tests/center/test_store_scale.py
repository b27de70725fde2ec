"""Nothing the API or the scheduler does costs in proportion to finished-job history, and an
array costs linear time in its tasks — counted in SQLite's own work, not timed.

SQLite calls a progress handler every N virtual-machine instructions; the count of calls is
the work a statement did (rows visited, index entries walked), the same on every run and
machine. Each operation is counted over two centers that differ only in how many finished
jobs they hold (10x more in the second): its count must not grow with them. The queries
were fixed by migration 5's indexes and the queries of `kaic/center/jobs/store.py`
(docs/benchmarks.md has their plans); before, listing a user's jobs read all of them, the next
job number read the whole table, and an array's state was re-derived from all its tasks at
each task's change (quadratic: 69 s of CPU to settle 1,000 tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from kaic.center.jobs.cursor import encode_cursor
from kaic.center.jobs.rows import NewJob
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.jobs.service import JobService
from kaic.center.jobs.store import JobStore
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import Job, JobState, JobSubmit, Resources

from .conftest import FakeClock
from .jobs_support import prepare_state
from .simulated import SimulatedExecutor

#: VM instructions per progress-handler call
GRAIN = 100
FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT)


@dataclass
class Center:
    store: Store
    scheduler: Scheduler
    service: JobService
    executor: SimulatedExecutor
    alice: int

    def submit(self, **spec: Any) -> Job:
        return self.service.submit(self.alice, "alice", JobSubmit(run="x", **spec), None)[0]

    def work(self, action: Callable[[], object]) -> int:
        """SQLite's work for `action`, in units of `GRAIN` VM instructions."""
        calls = 0

        def count() -> int:
            nonlocal calls
            calls += 1
            return 0

        # The one connection all of the store's queries go through.
        conn = self.store._conn
        conn.set_progress_handler(count, GRAIN)
        try:
            action()
        finally:
            conn.set_progress_handler(None, GRAIN)
        return calls


def add_history(store: Store, user_id: int, project_id: int, finished: int) -> None:
    """`finished` jobs of the user that ended days ago, through the store's insert path."""
    jobs = JobStore(store)
    spec = JobSubmit(run="true", resources=Resources(gpus=1))
    with store.transaction():
        first = jobs.next_seq()
        rows = [
            NewJob(
                id=str(seq),
                seq=seq,
                kind="job",
                user_id=user_id,
                project_id=project_id,
                name="old",
                partition="local",
                spec=spec,
                workdir="~",
                time_limit_seconds=60,
                gpus=1,
            )
            for seq in range(first, first + finished)
        ]
        ended = store.now() - timedelta(days=3)
        for n, row in enumerate(rows):
            jobs.insert(row)
            jobs.update(row.id, state=FINISHED[n % len(FINISHED)], ended_at=ended, exit_code=0)
            jobs.events.add(row.id, "ended", JobState.COMPLETED)


@contextmanager
def center(state_dir: Path, finished: int, *, active: bool = True) -> Iterator[Center]:
    """A center (scheduler ticked by hand) with `finished` old jobs of alice's and bob's,
    then, if `active`, the same active jobs every time: 2 running, 3 pending, an array of 5
    pending."""
    prepare_state(state_dir, gpu_hours=1e6)
    clock = FakeClock()
    settings = CenterSettings(state_dir=state_dir, gpus=2, now=clock)
    store = Store(state_dir, now=clock)
    executor = SimulatedExecutor()
    scheduler = Scheduler(store, settings, executor)
    service = JobService(store, settings, scheduler)
    try:
        users = {}
        for name in ("alice", "bob"):
            user = store.get_user(name)
            assert user is not None
            project = store.user_memberships(user.id)[0].project
            add_history(store, user.id, project.id, finished)
            users[name] = user.id
        clock.advance(3600 * 24 * 4)
        c = Center(store, scheduler, service, executor, users["alice"])
        if active:
            for _ in range(5):
                c.submit(resources=Resources(gpus=1))
            c.submit(array="0-4", resources=Resources(gpus=1))
            scheduler.tick()
        yield c
    finally:
        store.close()


OPERATIONS: dict[str, Callable[[Center], object]] = {
    "list, default page": lambda c: c.service.list(
        c.alice, states=[], all_jobs=False, limit=50, cursor=None
    ),
    "list, all": lambda c: c.service.list(c.alice, states=[], all_jobs=True, limit=50, cursor=None),
    "list, by state": lambda c: c.service.list(
        c.alice, states=[JobState.FAILED], all_jobs=True, limit=20, cursor=None
    ),
    "list, active by state": lambda c: c.service.list(
        c.alice, states=[JobState.PENDING, JobState.FAILED], all_jobs=False, limit=50, cursor=None
    ),
    "show": lambda c: (c.service.get("1", c.alice), c.service.jobs.events.of("1")),
    "submit": lambda c: c.submit(),
    "partitions": lambda c: c.scheduler.partition_views(),
    "dry run": lambda c: c.service.dry_run(
        c.alice, "alice", JobSubmit(run="x", resources=Resources(gpus=1))
    ),
    "tick": lambda c: c.scheduler.tick(),
}


def test_no_operation_costs_in_proportion_to_history(tmp_path: Path) -> None:
    with center(tmp_path / "small", 200) as small, center(tmp_path / "large", 2000) as large:
        for name, operation in OPERATIONS.items():
            few = small.work(partial(operation, small))
            many = large.work(partial(operation, large))
            # The same active jobs and page: the same work, give or take a B-tree level.
            assert many <= few * 1.25 + 5, f"{name}: {few} -> {many} with 10x the history"


def test_a_deep_cursor_costs_what_the_first_page_does(tmp_path: Path) -> None:
    with center(tmp_path / "state", 2000) as c:
        first = c.service.list(c.alice, states=[], all_jobs=True, limit=50, cursor=None)
        assert first.next_cursor is not None
        page = c.work(
            lambda: c.service.list(c.alice, states=[], all_jobs=True, limit=50, cursor=None)
        )
        deep = encode_cursor(100)  # the oldest page there is
        deep_page = c.work(
            lambda: c.service.list(c.alice, states=[], all_jobs=True, limit=50, cursor=deep)
        )
        assert deep_page <= page * 1.25 + 5


def array_work(c: Center, tasks: int) -> tuple[int, int, int]:
    """SQLite's work to accept, settle (every task's pending reason) and cancel an array."""
    job: list[str] = []
    accept = c.work(
        lambda: job.append(c.submit(array=f"0-{tasks - 1}", resources=Resources(gpus=1)).id)
    )
    settle = c.work(c.scheduler.tick)
    waiting = c.service.jobs.tasks(job[0])
    assert all(t.state is JobState.PENDING and t.reason for t in waiting)
    assert c.service.get(job[0], c.alice).reason == waiting[0].reason  # type: ignore[union-attr]
    cancel = c.work(lambda: c.service.cancel(job[0], c.alice))
    assert c.service.get(job[0], c.alice).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert all(t.state is JobState.CANCELLED for t in c.service.jobs.tasks(job[0]))
    return accept, settle, cancel


def test_an_array_costs_linear_time_in_its_tasks(tmp_path: Path) -> None:
    with center(tmp_path / "state", 0, active=False) as c:
        # Both GPUs busy: every task waits (the first for Resources, the rest for Priority).
        c.submit(resources=Resources(gpus=2))
        c.scheduler.tick()
        assert len(c.executor.running()) == 1
        small = array_work(c, 100)
        large = array_work(c, 1000)
    for what, few, many in zip(("accept", "settle", "cancel"), small, large, strict=True):
        # Linear: 10x the tasks, ~10x the work (quadratic would be ~100x).
        assert many <= few * 13, f"{what}: {few} -> {many} for 10x the tasks"


def test_an_array_derives_its_state_from_its_tasks(tmp_path: Path) -> None:
    with center(tmp_path / "state", 0, active=False) as c:
        array = c.submit(array="0-3")
        c.scheduler.tick()
        tasks = [f"{array.id}_{i}" for i in range(4)]
        row = c.service.jobs.get(array.id)
        assert row is not None and row.state is JobState.RUNNING and row.started_at is not None
        c.executor.finish(tasks[2], 0)
        c.executor.finish(tasks[0], 0)
        c.scheduler.tick()
        assert c.service.jobs.get(array.id).state is JobState.RUNNING  # type: ignore[union-attr]
        c.executor.finish(tasks[1], 3)
        c.executor.finish(tasks[3], 0)
        c.scheduler.tick()
        done = c.service.jobs.get(array.id)
        assert done is not None
        assert (done.state, done.exit_code) == (JobState.FAILED, 3)
        assert done.reason == f"task {tasks[1]} ended FAILED"
        ends = [c.service.jobs.get(t).ended_at for t in tasks]  # type: ignore[union-attr]
        assert done.ended_at == max(e for e in ends if e is not None)
        assert done.gpu_hours == sum(c.service.jobs.get(t).gpu_hours for t in tasks)  # type: ignore[union-attr]
        events = [e.message for e in c.service.jobs.events.of(array.id)]
        assert events[-1] == f"array FAILED: task {tasks[1]} ended FAILED"
