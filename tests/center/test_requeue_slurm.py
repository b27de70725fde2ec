"""Requeue on Slurm: how Slurm's states reach the requeue, and what kaic does with them.

When Slurm ends a job NODE_FAIL, PREEMPTED or BOOT_FAIL, the executor reports that end with
Slurm's state and times (`Ended.state`); the ledger then requeues the kaic job as the same
kaic id with the next attempt and no external id, so the hand-over queue submits it to Slurm
again: a new Slurm job per attempt, each writing its own log files. Slurm 22.05's slurmrestd
submits every batch job requeueable whatever the center asks, so Slurm requeues a job after a
node failure itself: the executor sees its restart count go up, cancels that run and reports
NODE_FAIL, so that the job's `retry:` decides (the real thing: `tests/slurm/
test_slurm_requeue.py`). A REQUEUED flag alone (no restart seen) only maps to PENDING.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from kaic.center.executors.base import Ended, Launched, RunningJob
from kaic.center.executors.slurm.api import SubmitRequest, build_submit
from kaic.center.executors.slurm.states import map_job_state
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.jobs.service import JobService
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from kaic.models import JobState, JobSubmit

from .jobs_support import prepare_state
from .simulated import SimulatedExecutor
from .test_slurm_executor import make, record, spec


@pytest.mark.parametrize("name", ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"])
@pytest.mark.parametrize("listed", [False, True])
def test_the_states_kaic_requeues_after_are_terminal_in_slurm(name: str, listed: bool) -> None:
    mapped = map_job_state([name] if listed else name)
    assert mapped.state is JobState[name] and mapped.terminal


def test_a_job_slurm_requeued_itself_is_pending_not_a_new_attempt() -> None:
    mapped = map_job_state(["PENDING", "REQUEUED"])
    assert (mapped.state, mapped.reason, mapped.terminal) == (
        JobState.PENDING,
        "requeued by Slurm",
        False,
    )


def test_the_center_asks_slurm_not_to_requeue_by_itself() -> None:
    # (slurmrestd 22.05 does not honour it: see the module's docstring.)
    request = SubmitRequest(
        name="t", script="true\n", workdir="/w", stdout="/o", stderr="/e", environment={}
    )
    assert build_submit(request)["job"]["requeue"] is False


def test_slurm_reports_a_node_failure_with_its_state(tmp_path: Path) -> None:
    executor, client, clock = make(tmp_path)
    launched = executor.start(spec(tmp_path, "1", gpus=1))
    client.records = [record(int(launched.external_id), ["NODE_FAIL"], state_reason="NodeDown")]
    clock.now += 1
    (ended,) = executor.poll()
    assert (ended.job_id, ended.state) == ("1", JobState.NODE_FAIL)


def test_an_end_with_slurms_state_requeues_and_charges_by_slurms_times(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    settings = CenterSettings(state_dir=state_dir, gpus=2, job_poll_interval=0.02)
    store = Store(state_dir)
    try:
        executor = SimulatedExecutor()
        scheduler = Scheduler(store, settings, executor)
        service = JobService(store, settings, scheduler)
        alice = store.get_user("alice")
        assert alice is not None
        retry = {"on": ["NODE_FAIL", "BOOT_FAIL"], "max": 1}
        submitted = JobSubmit.model_validate(
            {"run": "true", "resources": {"gpus": 2}, "retry": retry}
        )
        job, _ = service.submit(alice.id, "alice", submitted, None)
        scheduler.tick()
        assert [s[0] for s in executor.starts] == [job.id]
        started = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
        ends = [
            Ended(job.id, None, state=JobState.NODE_FAIL, reason="NodeDown",
                  started_at=started, ended_at=started + timedelta(minutes=30)),
            Ended(job.id, None, state=JobState.BOOT_FAIL, reason="boot failed",
                  started_at=started, ended_at=started + timedelta(minutes=15)),
        ]  # fmt: skip
        executor.shutdown(kill_jobs=True)  # the simulated run is over; Slurm's end follows
        with service.jobs.transaction():
            scheduler.ledger.record_end(ends[0])
        row = service.jobs.get(job.id)
        assert row is not None
        assert (row.state, row.attempt, row.external_id) == (JobState.PENDING, 2, None)
        assert row.gpu_hours == pytest.approx(1.0)  # 2 GPUs x 30 min, by Slurm's times
        scheduler.tick()  # handed over (here: started) again, as the same id
        assert [s[0] for s in executor.starts] == [job.id, job.id]
        executor.shutdown(kill_jobs=True)
        with service.jobs.transaction():
            scheduler.ledger.record_end(ends[1])  # max 1: this end is final
        row = service.jobs.get(job.id)
        assert row is not None
        assert (row.state, row.attempt, row.reason) == (JobState.BOOT_FAIL, 2, "boot failed")
        assert row.gpu_hours == pytest.approx(1.5)
        project = store.fetchone("SELECT gpu_hours_used FROM projects WHERE name = ?",
                                 ("ai-2026-0042",))  # fmt: skip
        assert project is not None and project["gpu_hours_used"] == pytest.approx(1.5)
    finally:
        store.close()


def test_a_job_slurm_requeues_itself_is_cancelled_there_and_ends_node_fail(
    tmp_path: Path,
) -> None:
    executor, client, clock = make(tmp_path)
    launched = executor.start(spec(tmp_path, "1"))
    slurm_id = int(launched.external_id)
    client.records = [record(slurm_id, "RUNNING")]
    clock.now += 1
    assert executor.poll() == []
    client.records = [record(slurm_id, "PENDING", state_reason="BeginTime", restarts=1)]
    clock.now += 1
    (ended,) = executor.poll()
    assert (ended.job_id, ended.state) == ("1", JobState.NODE_FAIL)
    assert ended.reason is not None and "Slurm requeued it (restart 1" in ended.reason
    assert f"cancel {slurm_id}" in client.calls
    assert executor.tracked() == []


def test_a_job_first_seen_after_a_center_restart_is_not_taken_for_a_new_requeue(
    tmp_path: Path,
) -> None:
    executor, client, clock = make(tmp_path)
    job = spec(tmp_path, "1")
    running = RunningJob(
        job_id="1", launched=Launched(external_id="77"), paths=job.paths, unix_account="alice"
    )
    assert executor.recover([running]) == []
    client.records = [record(77, "RUNNING", restarts=2)]  # requeued before the restart
    clock.now += 1
    assert executor.poll() == []
    assert not any(c.startswith("cancel") for c in client.calls)


def test_a_job_requeued_before_its_first_poll_is_still_a_requeue(tmp_path: Path) -> None:
    """A job this center submitted starts at restart 0: one Slurm ran and requeued between
    two polls (the center never saw it running) is a requeue all the same."""
    executor, client, clock = make(tmp_path)
    slurm_id = int(executor.start(spec(tmp_path, "1")).external_id)
    client.records = [record(slurm_id, "PENDING", state_reason="BeginTime", restarts=1)]
    clock.now += 1
    (ended,) = executor.poll()
    assert (ended.job_id, ended.state) == ("1", JobState.NODE_FAIL)
    assert f"cancel {slurm_id}" in client.calls
