"""Waiting polls with growing intervals and honours its timeout."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from kaic.errors import TlsError, Unreachable
from kaic.flows.wait import (
    OUTAGE_BUDGET_S,
    POLL_CAP_S,
    CenterOutage,
    WaitTimeout,
    wait_for_jobs,
)
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


def test_a_job_named_twice_is_waited_for_once() -> None:
    # `kaic wait 42 42` never returned: the jobs seen were counted, not looked up.
    api = FakeJobs({"42": [JobState.RUNNING, JobState.COMPLETED]})
    sleeps: list[float] = []
    jobs = wait_for_jobs(api, ["42", "42"], sleep=sleeps.append)  # type: ignore[arg-type]
    assert [j.state for j in jobs] == [JobState.COMPLETED, JobState.COMPLETED]
    assert len(sleeps) == 1


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


class FlakyJobs(FakeJobs):
    """The center goes away for `down` calls after the first, then comes back."""

    def __init__(self, states: dict[str, list[JobState]], down: int, error: Exception) -> None:
        super().__init__(states)
        self.down, self.error = down, error

    def get(self, job_id: str) -> Job:
        self.calls += 1
        if 1 < self.calls <= 1 + self.down:
            raise self.error
        self.calls -= 1
        return super().get(job_id)


def _clock() -> tuple[dict[str, float], Callable[[float], None]]:
    clock = {"t": 0.0}

    def sleep(s: float) -> None:
        clock["t"] += s

    return clock, sleep


def test_wait_rides_out_a_center_restart() -> None:
    # Unreachable for ~20 s (a restart): the wait goes on and ends with the job's state.
    api = FlakyJobs(
        {"1": [JobState.RUNNING, JobState.COMPLETED]},
        down=6,
        error=Unreachable("cannot reach the center at https://c: connection refused"),
    )
    clock, sleep = _clock()
    jobs = wait_for_jobs(api, ["1"], sleep=sleep, now=lambda: clock["t"])  # type: ignore[arg-type]
    assert jobs[0].state == JobState.COMPLETED
    assert clock["t"] >= 10


def test_wait_gives_up_after_its_outage_budget() -> None:
    api = FlakyJobs({"1": [JobState.RUNNING]}, down=10_000, error=Unreachable("connection refused"))
    clock, sleep = _clock()
    with pytest.raises(Unreachable):
        wait_for_jobs(api, ["1"], sleep=sleep, now=lambda: clock["t"])  # type: ignore[arg-type]
    assert OUTAGE_BUDGET_S < clock["t"] <= OUTAGE_BUDGET_S + 2 * POLL_CAP_S


def test_wait_does_not_retry_a_tls_failure() -> None:
    api = FlakyJobs({"1": [JobState.RUNNING]}, down=10_000, error=TlsError("not trusted"))
    clock, sleep = _clock()
    with pytest.raises(TlsError):
        wait_for_jobs(api, ["1"], sleep=sleep, now=lambda: clock["t"])  # type: ignore[arg-type]
    assert api.calls == 2


def test_wait_timeout_during_an_outage_before_any_answer_raises_the_outage() -> None:
    api = FlakyJobs({"1": [JobState.RUNNING]}, down=10_000, error=Unreachable("refused"))
    api.calls = 1  # the very first call fails already
    clock, sleep = _clock()
    with pytest.raises(Unreachable):
        wait_for_jobs(api, ["1"], timeout=30, sleep=sleep, now=lambda: clock["t"])  # type: ignore[arg-type]


def test_reachability_is_reported_each_round() -> None:
    api = FlakyJobs(
        {"1": [JobState.RUNNING, JobState.RUNNING, JobState.COMPLETED]},
        down=2,
        error=Unreachable("cannot reach the center"),
    )
    heard: list[bool] = []
    wait_for_jobs(api, ["1"], sleep=lambda _s: None, on_reachability=heard.append)  # type: ignore[arg-type]
    assert heard == [True, False, False, True, True]


def test_an_outage_is_said_once_when_it_starts_and_once_when_it_ends() -> None:
    said: list[str] = []
    outage = CenterOutage(said.append)
    for reachable in (True, False, False, False, True, True, False, True):
        outage(reachable)
    assert said == [
        "center unreachable; retrying for up to 5 min…",
        "center reachable again",
        "center unreachable; retrying for up to 5 min…",
        "center reachable again",
    ]


def test_several_followers_share_one_notice() -> None:
    import threading

    said: list[str] = []
    outage = CenterOutage(said.append)
    threads = [threading.Thread(target=outage, args=(False,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert said == ["center unreachable; retrying for up to 5 min…"]
