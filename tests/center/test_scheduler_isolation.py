"""One job's problem stays that job's: whatever starting, handing over or recording one job
raises, that job ends FAILED with the reason and everyone else's jobs keep running.

A NUL byte in a job's name once made `Popen` raise ValueError at start; the scheduler did
not catch it, so every tick failed and every later job of every user stayed PENDING, across
restarts too.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from kaic.center import app as app_module
from kaic.center.db import DB_NAME
from kaic.center.executors.base import (
    Ended,
    Executor,
    Launched,
    LaunchSpec,
    RunningJob,
)
from kaic.center.executors.local import LocalExecutor
from kaic.center.executors.slurm.api import SubmitRequest
from kaic.center.executors.slurm.executor import SlurmExecutor
from kaic.center.executors.slurm.records import SlurmJob
from kaic.center.executors.slurm.states import parse_job_state
from kaic.center.jobs.rows import NewJob
from kaic.center.jobs.store import JobStore
from kaic.center.store import Store
from kaic.models import JobState, JobSubmit

from .jobs_support import (
    jobs_center,
    kill_job_processes,
    make_settings,
    open_center,
    prepare_state,
    wait_for,
)
from .test_slurm_executor import FakeClient


class RaisingExecutor(Executor):
    """The real local executor, except that `start` (and optionally `poll`'s report of a
    job's end) raises `error` for the jobs named `bad`."""

    name = "local"

    def __init__(self, inner: Executor, error: Exception, bad: str = "poison") -> None:
        self.inner = inner
        self.error = error
        self.bad = bad

    def start(self, spec: LaunchSpec) -> Launched:
        if spec.name == self.bad:
            raise self.error
        return self.inner.start(spec)

    def poll(self) -> list[Ended]:
        return self.inner.poll()

    def cancel(self, job_id: str) -> None:
        self.inner.cancel(job_id)

    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        return self.inner.recover(jobs)

    def shutdown(self, *, kill_jobs: bool) -> None:
        self.inner.shutdown(kill_jobs=kill_jobs)


def _local(settings: Any) -> LocalExecutor:
    return LocalExecutor(kill_grace=settings.kill_grace)


@pytest.mark.parametrize(
    "error",
    [ValueError("embedded null byte"), RuntimeError("executor bug"), KeyError("gpu")],
    ids=["ValueError", "RuntimeError", "KeyError"],
)
def test_a_job_whose_start_raises_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    monkeypatch.setattr(
        app_module, "make_executor", lambda settings: RaisingExecutor(_local(settings), error)
    )
    with jobs_center(tmp_path) as center:
        poison = center.submit("echo never", name="poison")
        bobs = center.submit("echo bob", user="bob")
        later = center.submit("echo later")
        assert center.wait_done(bobs["id"], user="bob")["state"] == "COMPLETED"
        assert center.wait_done(later["id"])["state"] == "COMPLETED"
        failed = center.wait_done(poison["id"])
        assert failed["state"] == "FAILED"
        assert failed["reason"].startswith("failed to start: ")
        assert type(error).__name__ in failed["reason"]
        assert str(error) in failed["reason"]


def _insert_stored_job(state_dir: Path, spec: JobSubmit, name: str) -> str:
    """A job row as an older center, without today's limits, stored it."""
    store = Store(state_dir)
    try:
        jobs = JobStore(store)
        user = store.get_user("alice")
        assert user is not None
        (membership,) = store.user_memberships(user.id)
        with jobs.transaction():
            seq = jobs.next_seq()
            jobs.insert(
                NewJob(
                    id=str(seq),
                    seq=seq,
                    kind="job",
                    user_id=user.id,
                    project_id=membership.project.id,
                    name=name,
                    partition="local",
                    spec=spec,
                    workdir="~",
                    time_limit_seconds=None,
                    gpus=0,
                )
            )
            jobs.events.add(str(seq), "submitted", JobState.PENDING)
        return str(seq)
    finally:
        store.close()


def test_a_stored_job_with_a_nul_byte_fails_alone(tmp_path: Path) -> None:
    """The probe's case, after an upgrade: a job an older center accepted with a NUL byte in
    its name (and env) is in the queue. It fails with the reason; the queue moves on."""
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    spec = JobSubmit.model_construct(
        name="bad\0name", run="echo never", env={"X": "a\0b"}, **_defaults()
    )
    bad_id = _insert_stored_job(state_dir, spec, "bad\0name")
    try:
        with open_center(make_settings(state_dir)) as center:
            good = center.submit("echo good", user="bob")
            assert center.wait_done(good["id"], user="bob")["state"] == "COMPLETED"
            failed = center.wait_done(bad_id)
            assert failed["state"] == "FAILED"
            assert "null" in failed["reason"]
            assert center.get("/v1/jobs").status_code == 200  # the row still reads
    finally:
        kill_job_processes(state_dir)


def _defaults() -> dict[str, Any]:
    from kaic.models import Resources

    return {
        "project": None,
        "partition": None,
        "resources": Resources(),
        "time_limit_seconds": None,
        "image": None,
        "workdir": None,
        "array": None,
        "depends_on": [],
    }


class EndRaisingExecutor(RaisingExecutor):
    """Reports the end of job `bad` with a value recording it cannot take."""

    def poll(self) -> list[Ended]:
        ended = []
        for end in self.inner.poll():
            if end.job_id == self.bad:
                end = Ended(end.job_id, 2**70)  # past SQLite's integers: OverflowError
            ended.append(end)
        return ended


def test_a_job_whose_end_cannot_be_recorded_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executors: list[EndRaisingExecutor] = []

    def make(settings: Any) -> EndRaisingExecutor:
        executors.append(EndRaisingExecutor(_local(settings), RuntimeError(), bad="?"))
        return executors[-1]

    monkeypatch.setattr(app_module, "make_executor", make)
    with jobs_center(tmp_path) as center:
        first = center.submit("echo one")
        executors[0].bad = first["id"]
        second = center.submit("echo two", user="bob")
        failed = center.wait_done(first["id"])
        assert failed["state"] == "FAILED"
        assert "recording how it ended" in failed["reason"]
        assert center.wait_done(second["id"], user="bob")["state"] == "COMPLETED"
        third = center.submit("echo three")
        assert center.wait_done(third["id"])["state"] == "COMPLETED"


class PickyClient(FakeClient):
    """A fake slurmrestd client whose submit raises `error` for the job named `poison`."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def submit(self, user: str, request: SubmitRequest) -> int:
        if request.name == "poison":
            raise self.error
        job_id = super().submit(user, request)
        # Slurm lists what it accepted (else the job counts as lost after a few polls)
        self.records.append(SlurmJob(job_id, parse_job_state("PENDING"), comment=request.comment))
        return job_id


@pytest.mark.parametrize(
    "error", [ValueError("bad"), KeyError("partition")], ids=["ValueError", "KeyError"]
)
def test_a_job_whose_hand_over_raises_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    client = PickyClient(error)
    executor = SlurmExecutor(client, poll_interval=0.05)  # type: ignore[arg-type]
    monkeypatch.setattr(app_module, "make_executor", lambda settings: executor)
    # The center's test users have no unix accounts here: hand their job dirs to nobody.
    monkeypatch.setattr(executor, "_owner", lambda account: None)
    with jobs_center(tmp_path, executor="slurm") as center:
        poison = center.submit("true", name="poison", partition="gpu")
        array = center.submit("true", name="poison", partition="gpu", array="0-2")
        good = center.submit("true", name="fine", partition="gpu", user="bob")
        wait_for(lambda: [r.name for r in client.submitted] == ["fine"], what="bob's submit")
        failed = center.wait_done(poison["id"])
        assert failed["state"] == "FAILED"
        assert failed["reason"].startswith("failed to submit: ")
        assert type(error).__name__ in failed["reason"]
        assert center.wait_done(array["id"])["state"] == "FAILED"
        for task in array["array_tasks"]:
            assert center.job(task)["state"] == "FAILED"
        assert center.job(good["id"], user="bob")["state"] == "PENDING"


class RecoverRaisingExecutor(RaisingExecutor):
    """Reports job `bad` ended, while the center was down, with a value recording it cannot
    take."""

    def recover(self, jobs: Sequence[RunningJob]) -> list[Ended]:
        ended = self.inner.recover(jobs)
        return [Ended(e.job_id, 2**70) if e.job_id == self.bad else e for e in ended]


def test_a_job_that_cannot_be_recovered_does_not_stop_the_center(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restart finds two jobs that ended while the center was down; recording one of them
    raises. That one ends FAILED, the other is recorded, and the center starts."""
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    ids = [_insert_stored_job(state_dir, JobSubmit(run="true"), "old") for _ in range(2)]
    conn = sqlite3.connect(state_dir / DB_NAME)
    with conn:
        # Their processes are gone: the executor reports them lost (or, here, worse).
        conn.execute(
            "UPDATE jobs SET state = 'RUNNING', pid = 999999999, started_at = submitted_at"
        )
    conn.close()
    monkeypatch.setattr(
        app_module,
        "make_executor",
        lambda settings: RecoverRaisingExecutor(_local(settings), RuntimeError(), bad=ids[0]),
    )
    try:
        with open_center(make_settings(state_dir)) as center:
            bad = center.job(ids[0])
            assert bad["state"] == "FAILED"
            assert "recovering it after a restart" in bad["reason"]
            assert center.job(ids[1])["state"] == "NODE_FAIL"
            new = center.submit("echo new")
            assert center.wait_done(new["id"])["state"] == "COMPLETED"
    finally:
        kill_job_processes(state_dir)
