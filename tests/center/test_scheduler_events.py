"""The scheduler runs the queue on events — a submit, a cancel, a job's end, the executor's
report, the next time limit — not by rescanning the queue on a timer.

With 20,000 pending jobs that nothing changed, the center used to burn a whole core: every
0.2 s its pass re-read and re-decided the whole queue. Now only the executor's poll of the
running jobs is periodic; a pass happens when something did. These tests count passes
(`QueuePolicy.step`) against the executor's polls — no timing — and check that the events
still start jobs promptly and that time limits hold with nothing else happening.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kaic.center import app as app_module
from kaic.center.executors.base import Ended
from kaic.center.executors.slurm.executor import SlurmExecutor
from kaic.center.executors.slurm.records import SlurmJob
from kaic.center.executors.slurm.states import parse_job_state
from kaic.center.jobs.queues import handover
from kaic.center.jobs.scheduler import Scheduler

from .jobs_support import JobsCenter, jobs_center, wait_for
from .simulated import SimulatedExecutor
from .test_slurm_executor import FakeClient


class CountingExecutor(SimulatedExecutor):
    """Counts its polls (the scheduler's periodic work)."""

    polls = 0

    def poll(self) -> list[Ended]:
        self.polls += 1
        return super().poll()


@contextmanager
def counting_passes(scheduler: Scheduler) -> Iterator[Callable[[], int]]:
    """The number of queue passes so far, whole (`step`) or over the new jobs alone
    (`arrivals`, which may fall back to a whole one: counted once); read under the
    scheduler's lock, so never in the middle of one."""
    passes = 0
    step, arrivals = scheduler.queue.step, scheduler.queue.arrivals
    inside = False

    def counted(call: Callable[[], float | None]) -> Callable[[], float | None]:
        def pass_() -> float | None:
            nonlocal passes, inside
            outer, inside = inside, True
            passes += not outer
            try:
                return call()
            finally:
                inside = outer

        return pass_

    scheduler.queue.step = counted(step)  # type: ignore[method-assign]
    scheduler.queue.arrivals = counted(arrivals)  # type: ignore[method-assign]

    def count() -> int:
        with scheduler._mutex:
            return passes

    yield count


def quiet_for(polls: Callable[[], int], passes: Callable[[], int], rounds: int = 30) -> None:
    """Let the scheduler poll the executor `rounds` times; no pass may happen meanwhile."""
    before_passes, before_polls = passes(), polls()
    wait_for(lambda: polls() >= before_polls + rounds, what=f"{rounds} polls")
    assert passes() == before_passes, "the queue was re-run with nothing happening"


def settled(center: JobsCenter, job_id: str) -> bool:
    job = center.job(job_id)
    tasks = [center.job(t) for t in job["array_tasks"]] or [job]
    return all(t["reason"] for t in tasks)


@pytest.fixture
def simulated(monkeypatch: pytest.MonkeyPatch) -> CountingExecutor:
    executor = CountingExecutor(kill_grace=0.2)
    monkeypatch.setattr(app_module, "make_executor", lambda settings: executor)
    return executor


def test_pending_jobs_cost_no_passes_until_something_happens(
    tmp_path: Path, simulated: CountingExecutor
) -> None:
    with jobs_center(tmp_path, gpus=1, job_poll_interval=0.01, gpu_hours=1000.0) as center:
        scheduler: Scheduler = center.app.state.scheduler
        with counting_passes(scheduler) as passes:
            hog = center.submit("x", resources={"gpus": 1})
            center.wait_state(hog["id"], "RUNNING")
            queued = center.submit("x", array="0-199", resources={"gpus": 1})
            wait_for(lambda: settled(center, queued["id"]), what="the array to settle")
            quiet_for(lambda: simulated.polls, passes)

            # Each event is one pass (or a few), and does what it must at once.
            before = passes()
            extra = center.submit("x", resources={"gpus": 1})
            wait_for(lambda: center.job(extra["id"])["reason"] == "Priority")
            assert passes() > before
            quiet_for(lambda: simulated.polls, passes)

            before = passes()
            simulated.finish(hog["id"], 0)  # its end frees the GPU: the first task starts
            center.wait_state(f"{queued['id']}_0", "RUNNING")
            assert passes() > before
            quiet_for(lambda: simulated.polls, passes)

            before = passes()
            center.post(f"/v1/jobs/{queued['id']}/cancel")
            center.wait_state(queued["id"], "CANCELLED")
            center.wait_state(extra["id"], "RUNNING")
            assert passes() > before
            quiet_for(lambda: simulated.polls, passes)


def test_a_time_limit_is_enforced_with_nothing_else_happening(tmp_path: Path) -> None:
    # Real processes: the only thing that can end this job is the scheduler's own timer.
    with jobs_center(tmp_path, gpus=1, job_poll_interval=0.05) as center:
        job = center.submit("sleep 600", time_limit_seconds=1, resources={"gpus": 1})
        done = center.wait_state(job["id"], "TIMEOUT")
        assert done["reason"] == "time limit reached"
        after = center.submit("echo next", resources={"gpus": 1})
        assert center.wait_done(after["id"])["state"] == "COMPLETED"


def test_submits_and_ends_start_jobs_promptly(tmp_path: Path) -> None:
    with jobs_center(tmp_path, gpus=1, job_poll_interval=0.05) as center:
        go = 'while [ ! -e "$HOME/go" ]; do sleep 0.02; done\n'
        first = center.submit(go, resources={"gpus": 1})
        center.wait_state(first["id"], "RUNNING")
        second = center.submit("echo second", resources={"gpus": 1})
        wait_for(lambda: center.job(second["id"])["reason"] == "Resources")
        after = center.submit("echo after", depends_on=[second["id"]])
        (center.home() / "go").touch()
        assert center.wait_done(second["id"])["state"] == "COMPLETED"
        assert center.wait_done(after["id"])["state"] == "COMPLETED"


class QuietSlurm(FakeClient):
    """A fake slurmrestd whose jobs all stay pending (Slurm: `Resources`)."""

    def submit(self, user: str, request: Any) -> int:
        job_id = super().submit(user, request)
        self.records.append(
            SlurmJob(job_id, parse_job_state("PENDING"), state_reason="Resources", user=user)
        )
        return job_id


@contextmanager
def fake_slurm_center(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: FakeClient
) -> Iterator[JobsCenter]:
    """A center with the Slurm executor in front of the fake slurmrestd `client`, polling
    every 10 ms, its jobs' accounts not looked up."""
    executor = SlurmExecutor(client, poll_interval=0.01)  # type: ignore[arg-type]
    monkeypatch.setattr(app_module, "make_executor", lambda settings: executor)
    monkeypatch.setattr(executor, "_owner", lambda account: None)
    with jobs_center(tmp_path, executor="slurm", job_poll_interval=0.01) as center:
        yield center


def test_a_batch_system_holding_pending_jobs_costs_polls_not_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = QuietSlurm()
    with fake_slurm_center(tmp_path, monkeypatch, client) as center:
        scheduler: Scheduler = center.app.state.scheduler
        with counting_passes(scheduler) as passes:
            jobs = [center.submit("true", partition="gpu") for _ in range(20)]
            for job in jobs:
                wait_for(lambda job=job: center.job(job["id"])["reason"] == "Resources")
            quiet_for(lambda: client.calls.count("jobs"), passes)
            before = passes()
            # A report of the batch system is an event: one starts running.
            client.records[0] = SlurmJob(
                client.records[0].job_id, parse_job_state("RUNNING"), user="alice"
            )
            center.wait_state(jobs[0]["id"], "RUNNING")
            assert passes() > before
            quiet_for(lambda: client.calls.count("jobs"), passes)


class SlowSlurm(QuietSlurm):
    """A slurmrestd whose listing, once `hold` is set, waits until released (as one of
    10,000 jobs takes seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.listing = threading.Event()
        self.release = threading.Event()
        self.listed = threading.Event()

    def jobs(self, *, changed_since: int | None = None) -> list[SlurmJob] | None:
        if self.hold:
            self.listing.set()
            self.release.wait(30)
            self.listed.set()
        return super().jobs(changed_since=changed_since)


def test_an_api_call_never_waits_behind_a_slow_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = SlowSlurm()
    with fake_slurm_center(tmp_path, monkeypatch, client) as center:
        job = center.submit("true", partition="gpu")
        wait_for(lambda: center.job(job["id"])["reason"] == "Resources")
        client.hold = True
        try:
            wait_for(client.listing.is_set, what="the scheduler's thread inside a listing")
            # The scheduler's lock is free while it waits on Slurm: a cancel goes through.
            assert center.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
            assert not client.listed.is_set(), "the cancel waited for the listing"
        finally:
            client.hold = False
            client.release.set()


class SlowSubmitSlurm(QuietSlurm):
    """A slurmrestd that takes 20 ms per submission (as one loaded by thousands does) and
    holds submissions back while `gate` is clear; it notes each call in order."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.order: list[str] = []

    def submit(self, user: str, request: Any) -> int:
        self.gate.wait(30)
        time.sleep(0.02)
        self.order.append("submit")
        return super().submit(user, request)

    def jobs(self, *, changed_since: int | None = None) -> list[SlurmJob] | None:
        self.order.append("jobs")
        return super().jobs(changed_since=changed_since)


def test_a_backlog_of_hand_overs_leaves_room_for_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs submitted faster than the batch system takes them are handed over a budget's
    worth per pass, with a poll between passes — not all in one pass that starves the
    polls (and with them every recorded state) until the backlog is gone."""
    monkeypatch.setattr(handover, "BUDGET_SECONDS", 0.1)
    client = SlowSubmitSlurm()
    with fake_slurm_center(tmp_path, monkeypatch, client) as center:
        jobs = [center.submit("true", partition="gpu") for _ in range(40)]
        client.gate.set()  # 40 waiting: ~0.8 s of submissions, 0.1 s per pass
        for job in jobs:
            wait_for(lambda job=job: center.job(job["id"])["reason"] == "Resources")
    order = client.order
    first, last = order.index("submit"), len(order) - 1 - order[::-1].index("submit")
    assert order.count("submit") == 40
    assert order[first:last].count("jobs") >= 3, order


def test_a_pass_hands_over_one_job_at_least_whatever_its_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass whose budget is gone before it starts (reading a large backlog took it all,
    on a loaded host) still hands one job over: every pass makes progress."""
    monkeypatch.setattr(handover, "BUDGET_SECONDS", 0.0)
    client = SlowSubmitSlurm()
    client.gate.set()
    with fake_slurm_center(tmp_path, monkeypatch, client) as center:
        jobs = [center.submit("true", partition="gpu") for _ in range(5)]
        for job in jobs:
            wait_for(lambda job=job: center.job(job["id"])["reason"] == "Resources")
    assert client.order.count("submit") == 5
