"""A center's job history, built quickly and honestly for `bench_scale.py`.

Every row goes through the store's own write path (`JobStore.insert`, `JobStore.update`,
`JobStore.events.add`, `Store.create_user` / `upsert_project`) in bulk transactions, with the
store's clock moved to each row's time, so the database holds exactly what a center that
ran these jobs would hold: jobs, array parents and their tasks, events, charges.

The mix (seeded, so two builds are the same): users whose activity falls off with rank
(the busiest ~7 % of all jobs), each in one to three projects; 95 % single jobs and 5 %
arrays of 2–100 tasks; submissions spread over `days`; finished jobs mostly COMPLETED, then
FAILED, CANCELLED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL; the newest runnable rows active: the
last `pending` wait, the `running` before them hold GPUs of one partition. Jobs that ended
during the last hour are what `GET /v1/jobs` shows by default.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from kaic.center.jobs.rows import NewJob
from kaic.center.jobs.store import JobStore
from kaic.center.store import Store
from kaic.models import JobState, JobSubmit, Resources

FINISHED_MIX = (
    (JobState.COMPLETED, 80),
    (JobState.FAILED, 10),
    (JobState.CANCELLED, 6),
    (JobState.TIMEOUT, 3),
    (JobState.OUT_OF_MEMORY, 0.6),
    (JobState.NODE_FAIL, 0.4),
)
GPU_MIX = ((0, 10), (1, 40), (2, 15), (4, 20), (8, 15))
#: GPUs of the running jobs, in turn: they fill the partition exactly (2,000 jobs: 10,000 GPUs)
RUNNING_GPUS = (8, 2)
TRANSACTION_ROWS = 5000
T = TypeVar("T")


class Clock:
    """The store's clock, moved by the builder to each row's time."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class History:
    """What was built: counts, the busiest user, the active jobs."""

    rows: int = 0
    jobs: int = 0
    arrays: int = 0
    tasks: int = 0
    events: int = 0
    states: dict[str, int] = field(default_factory=dict)
    users: list[str] = field(default_factory=list)
    busiest: str = ""
    busiest_rows: int = 0
    running: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    #: the partition's GPUs the running jobs hold (`partition_gpus` in all)
    gpus_used: int = 0


@dataclass(frozen=True)
class Plan:
    """One submission: a job, or an array of `tasks` tasks."""

    user: int
    project: int
    gpus: int
    tasks: int  # 0 = a single job
    submitted: datetime


def _weighted(rng: random.Random, mix: tuple[tuple[T, float], ...]) -> T:
    return rng.choices([v for v, _ in mix], [w for _, w in mix])[0]


def _script(rng: random.Random, n: int) -> str:
    steps = rng.randint(2, 6)
    lines = [f"python train.py --config configs/run{n % 97}.yaml --seed {n}"]
    lines += [f"python eval.py --checkpoint ckpt/{n}/step{i * 1000}.pt" for i in range(steps)]
    return "set -e\nmodule load cuda/12.4\n" + "\n".join(lines) + "\n"


def _plans(rng: random.Random, rows: int, users: int, projects_of: list[list[int]],
           start: datetime, end: datetime) -> list[Plan]:  # fmt: skip
    """Submissions until their rows (parents and tasks count) reach `rows`."""
    weights = [1.0 / (rank + 1) ** 0.9 for rank in range(users)]
    plans: list[Plan] = []
    total = 0
    while total < rows:
        user = rng.choices(range(users), weights)[0]
        tasks = 0
        if rng.random() < 0.05:
            tasks = min(int(2 * 50 ** rng.random()) + 1, rows - total - 1)
        if tasks < 2:
            tasks = 0
        plans.append(
            Plan(user, rng.choice(projects_of[user]), _weighted(rng, GPU_MIX), tasks, start)  # type: ignore[arg-type]
        )
        total += 1 + tasks
    span = (end - start).total_seconds()
    times = sorted(rng.random() * span for _ in plans)
    return [
        replace(p, submitted=start + timedelta(seconds=t))
        for p, t in zip(plans, times, strict=True)
    ]


def build(
    state_dir: Path,
    *,
    rows: int = 100_000,
    users: int = 400,
    projects: int = 120,
    days: float = 90.0,
    running: int = 2000,
    pending: int = 1000,
    partition: str = "gpu",
    partition_gpus: int = 10_000,
    seed: int = 15,
    now: datetime | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> History:
    """Build the history into `state_dir` (a fresh one); `now` is the moment it ends at."""
    rng = random.Random(seed)
    end = now or datetime.now(timezone.utc)
    start = end - timedelta(days=days)
    clock = Clock(start - timedelta(days=1))
    store = Store(state_dir, now=clock)
    jobs = JobStore(store)
    history = History()
    try:
        user_rows = []
        with store.transaction():
            for n in range(users):
                name = f"user{n:04d}"
                user_rows.append(store.create_user(name, unix_account=name))
                history.users.append(name)
            projects_of: list[list[int]] = [[] for _ in range(users)]
            for p in range(projects):
                members = [u.id for u in user_rows if rng.random() < 2.0 / projects]
                members = members or [rng.choice(user_rows).id]
                project = store.upsert_project(
                    f"proj-{p:03d}", gpu_hours_granted=1e9, member_ids=members
                )
                for member in members:
                    projects_of[member - user_rows[0].id].append(project.id)
            for u, owned in enumerate(projects_of):
                if not owned:
                    fallback = store.upsert_project(
                        f"proj-{u % projects:03d}", gpu_hours_granted=1e9,
                        member_ids=[user_rows[u].id],
                    )  # fmt: skip
                    owned.append(fallback.id)
        plans = _plans(rng, rows, users, projects_of, start, end - timedelta(minutes=1))
        # The newest runnable rows are active: pending last, running before them.
        runnable = [(i, t) for i, p in enumerate(plans) for t in range(max(1, p.tasks))]
        active: dict[tuple[int, int], JobState] = {}
        for k, key in enumerate(reversed(runnable)):
            if k < pending:
                active[key] = JobState.PENDING
            elif k < pending + running:
                active[key] = JobState.RUNNING
            else:
                break
        gpu_cursor = 0
        running_turn = 0
        seq = jobs.next_seq()
        pending_in_tx = 0
        tx = store.transaction()
        tx.__enter__()
        try:
            for i, plan in enumerate(plans):
                job_id = str(seq)
                user = user_rows[plan.user]
                spec = JobSubmit(
                    name=f"exp-{seq % 997}",
                    project=None,
                    resources=Resources(gpus=plan.gpus),
                    time_limit_seconds=rng.choice((3600, 4 * 3600, 12 * 3600, 24 * 3600)),
                    env={"WANDB_PROJECT": f"p{plan.project}", "OMP_NUM_THREADS": "8"},
                    run=_script(rng, seq),
                    array=f"0-{plan.tasks - 1}" if plan.tasks else None,
                )
                base = NewJob(
                    id=job_id, seq=seq, kind="job", user_id=user.id, project_id=plan.project,
                    name=spec.name or "job", partition=partition, spec=spec,
                    workdir=f"~/runs/{seq}", time_limit_seconds=spec.time_limit_seconds,
                    gpus=plan.gpus,
                )  # fmt: skip
                clock.now = plan.submitted
                members: list[tuple[str, int]] = []
                if plan.tasks:
                    jobs.insert(replace(base, kind="array"))
                    jobs.events.add(
                        job_id, f"submitted array of {plan.tasks} tasks", JobState.PENDING
                    )
                    history.arrays += 1
                    for t in range(plan.tasks):
                        task_id = f"{seq}_{t}"
                        jobs.insert(replace(base, id=task_id, kind="task", array_job_id=job_id,
                                            array_task_id=t))  # fmt: skip
                        jobs.events.add(task_id, "submitted", JobState.PENDING)
                        members.append((task_id, t))
                    history.tasks += plan.tasks
                else:
                    jobs.insert(base)
                    jobs.events.add(job_id, "submitted", JobState.PENDING)
                    members.append((job_id, 0))
                    history.jobs += 1
                if plan.user == 0:
                    history.busiest_rows += 1 + plan.tasks
                final_states: list[JobState] = []
                for member_id, t in members:
                    state = active.get((i, t))
                    if state is None:
                        state = _weighted(rng, FINISHED_MIX)
                    gpus = plan.gpus
                    if state is JobState.RUNNING:
                        gpus = RUNNING_GPUS[running_turn % len(RUNNING_GPUS)]
                        running_turn += 1
                        if gpu_cursor + gpus > partition_gpus:
                            state = JobState.PENDING
                    final_states.append(state)
                    history.states[state.value] = history.states.get(state.value, 0) + 1
                    history.events += _live(jobs, clock, rng, member_id, plan, state, gpus,
                                            gpu_cursor, end)  # fmt: skip
                    if state is JobState.RUNNING:
                        gpu_cursor += gpus
                        history.running.append(member_id)
                    elif state is JobState.PENDING:
                        history.pending.append(member_id)
                if plan.tasks:
                    _settle_parent(jobs, job_id, final_states)
                history.rows += 1 + plan.tasks
                seq += 1
                pending_in_tx += 1 + plan.tasks
                if pending_in_tx >= TRANSACTION_ROWS:
                    tx.__exit__(None, None, None)
                    progress(f"{history.rows} rows")
                    tx = store.transaction()
                    tx.__enter__()
                    pending_in_tx = 0
        except BaseException as exc:
            tx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            tx.__exit__(None, None, None)
        history.events += history.rows  # the "submitted" events
        history.busiest = history.users[0]
        history.gpus_used = gpu_cursor
        store.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        store.close()
    return history


def _live(jobs: JobStore, clock: Clock, rng: random.Random, job_id: str, plan: Plan,
          state: JobState, gpus: int, gpu_cursor: int, end: datetime) -> int:  # fmt: skip
    """Record one runnable row's life up to `state`; returns the events added."""
    submitted = plan.submitted
    if state is JobState.PENDING:
        clock.now = submitted + timedelta(seconds=1)
        reason = "Resources" if gpus else "Priority"
        jobs.update(job_id, reason=reason)
        jobs.events.add(job_id, f"pending: {reason}", JobState.PENDING)
        return 1
    wait = timedelta(seconds=rng.expovariate(1 / 600))
    started = min(submitted + wait, end - timedelta(seconds=1))
    if state is JobState.CANCELLED and rng.random() < 0.5:
        clock.now = started  # cancelled while it waited
        jobs.update(job_id, state=state, reason="cancelled by the user", ended_at=started)
        jobs.events.add(job_id, "ended CANCELLED: cancelled by the user", state)
        return 1
    clock.now = started
    gpu_ids = list(range(gpu_cursor, gpu_cursor + gpus)) if state is JobState.RUNNING else []
    jobs.update(job_id, state=JobState.RUNNING, started_at=started, gpu_ids=gpu_ids,
                external_id=f"sim-{job_id}")  # fmt: skip
    jobs.events.add(job_id, f"started on partition gpu with {gpus} GPUs", JobState.RUNNING)
    if state is JobState.RUNNING:
        # Re-attachable by the simulated executor; a deadline far enough not to pass.
        deadline = (end + timedelta(hours=12)).timestamp()
        jobs.update(job_id, deadline_epoch=deadline)
        return 1
    runtime = timedelta(seconds=min(rng.lognormvariate(7.5, 1.2), 24 * 3600))
    ended = min(started + runtime, end)
    clock.now = ended
    exit_code = {JobState.COMPLETED: 0, JobState.FAILED: 1, JobState.CANCELLED: 143,
                 JobState.TIMEOUT: 143, JobState.OUT_OF_MEMORY: 137}.get(state)  # fmt: skip
    hours = gpus * (ended - started).total_seconds() / 3600
    jobs.update(job_id, state=state, exit_code=exit_code, ended_at=ended, gpu_hours=hours,
                gpu_ids=[])  # fmt: skip
    jobs.charge(plan.project, hours)
    jobs.events.add(job_id, f"ended {state.value}; charged {hours:.4f} GPU-hours", state)
    return 2


def _settle_parent(jobs: JobStore, array_id: str, states: list[JobState]) -> None:
    """An array parent's state as the ledger derives it (enough for listings)."""
    if JobState.RUNNING in states:
        jobs.update(array_id, state=JobState.RUNNING)
    elif JobState.PENDING in states:
        jobs.update(array_id, state=JobState.PENDING, reason="Resources")
    else:
        bad = next((s for s in states if s is not JobState.COMPLETED), None)
        jobs.update(array_id, state=bad or JobState.COMPLETED, ended_at=jobs.now(),
                    exit_code=0 if bad is None else 1)  # fmt: skip


def rows_per_state(state_dir: Path) -> Iterator[tuple[str, int]]:
    """(state, rows) in the built database."""
    store = Store(state_dir)
    try:
        for r in store.fetchall("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"):
            yield r["state"], r["n"]
    finally:
        store.close()
