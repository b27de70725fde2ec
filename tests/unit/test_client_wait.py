"""Waiting polls with growing intervals and honours its timeout."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from kaic.client.wait import POLL_CAP_S, WaitTimeout, wait_for_jobs
from kaic.models import Job, JobState, Resources


class FakeJobs:
    def __init__(self, states: dict[str, list[JobState]]) -> None:
        self.states = {k: iter(v) for k, v in states.items()}
        self.last: dict[str, JobState] = {}
        self.calls = 0

    def get(self, job_id: str) -> Job:
        self.calls += 1
        self.last[job_id] = next(self.states[job_id], self.last.get(job_id, JobState.PENDING))
        return Job(
            id=job_id,
            name="j",
            state=self.last[job_id],
            user="u",
            project="p",
            partition="local",
            resources=Resources(),
            submitted_at=datetime.now(timezone.utc),
        )


def test_backoff_grows_to_cap_and_returns_in_order() -> None:
    running = [JobState.PENDING] + [JobState.RUNNING] * 12
    api = FakeJobs({"1": [*running, JobState.COMPLETED], "2": [JobState.TIMEOUT]})
    sleeps: list[float] = []
    jobs = wait_for_jobs(api, ["1", "2"], sleep=sleeps.append)  # type: ignore[arg-type]
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.TIMEOUT]
    assert sleeps[0] == 0.5 and max(sleeps) == POLL_CAP_S
    assert all(b >= a for a, b in itertools.pairwise(sleeps))
    assert api.calls == 13 + 1 + 1  # a terminal job is not asked again


def test_timeout_raises_with_latest_states() -> None:
    api = FakeJobs({"1": [JobState.RUNNING]})
    clock = {"t": 0.0}

    def sleep(s: float) -> None:
        clock["t"] += s

    with pytest.raises(WaitTimeout) as info:
        wait_for_jobs(api, ["1"], timeout=10, sleep=sleep, now=lambda: clock["t"])  # type: ignore[arg-type]
    assert info.value.jobs[0].state == JobState.RUNNING
    assert "1 (RUNNING)" in info.value.message
    assert clock["t"] == pytest.approx(10)
