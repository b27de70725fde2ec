"""Automatic requeue (`retry:`): a job whose node is lost runs again as the same id with the
next attempt; each attempt's log stays readable, a follower goes from one attempt's log into
the next without losing or repeating a byte, a waiter sees only the last attempt's end, and
every attempt is charged. A job's own failure is never retried, and `max` is honoured.

The node failure comes from `tests/center/node_failures.py` (the local executor with the end
of a marked attempt reported as NODE_FAIL): the attempts run for real.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from kaic.auth.credentials import Credentials
from kaic.client.api import CenterClient
from kaic.client.jobs import JobsAPI
from kaic.client.logs import follow_both
from kaic.flows.wait import wait_for_jobs
from kaic.models import JobState, outcome_exit_code

from .jobs_support import JobsCenter, jobs_center, wait_for
from .node_failures import LOST_NODE, NodeFailingExecutor, node_failing_executor
from .test_logs_follow import serve

#: each run counts itself in `$HOME/runs`, says so on both streams, and waits for `go<n>`
ATTEMPTS = """\
n=$(( $(cat "$HOME/runs" 2>/dev/null || echo 0) + 1 )); echo "$n" > "$HOME/runs"
echo "out $n"; echo "err $n" >&2
while [ ! -e "$HOME/go$n" ]; do sleep 0.02; done
sleep 1  # long enough to be charged a visible 0.0003 GPU-hours, however fast the machine
echo "done $n"
exit "$(cat "$HOME/go$n")"
"""


def go(center: JobsCenter, run: int, code: int = 0) -> None:
    """Let run `run` of the job end with `code`."""
    (center.home() / f"go{run}").write_text(str(code))


def logs(center: JobsCenter, job_id: str, **params: Any) -> str:
    response = center.logs(job_id, **params)
    assert response.status_code == 200, response.text
    return response.text


def charges(events: list[dict[str, Any]]) -> list[float]:
    found = (re.search(r"charged ([0-9.]+) GPU-hours", e["message"]) for e in events)
    return [float(m.group(1)) for m in found if m]


@pytest.fixture
def executors(monkeypatch: pytest.MonkeyPatch) -> Any:
    with node_failing_executor(monkeypatch) as built:
        yield built


def test_a_lost_node_requeues_the_job_as_the_same_id(
    tmp_path: Path, executors: list[NodeFailingExecutor]
) -> None:
    with jobs_center(tmp_path, gpus=1) as center, serve(center.app) as url:
        executor = executors[0]
        retry = {"on": ["NODE_FAIL"], "max": 2}
        job = center.submit(ATTEMPTS, retry=retry, resources={"gpus": 1})
        job_id = job["id"]
        assert job["attempt"] == 1
        executor.fail_next_ends(job_id, 1)
        center.wait_state(job_id, "RUNNING")

        # A follower (the real client) from the start, across the requeue.
        streams: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        credentials = Credentials(access_token=center.tokens["alice"], kind="api")
        with CenterClient(url, credentials=credentials) as client:
            api = JobsAPI(client)
            follower = threading.Thread(
                target=follow_both,
                args=(client, job_id, {n: s.extend for n, s in streams.items()}),
                kwargs={"follow": True, "get_job": api.get},
                daemon=True,
            )
            follower.start()
            wait_for(lambda: b"out 1" in streams["stdout"], what="attempt 1's output")
            go(center, 1)  # attempt 1 ends; its node is reported lost
            second = center.wait_state(job_id, "RUNNING")
            wait_for(lambda: center.job(job_id)["attempt"] == 2, what="attempt 2")
            assert second["id"] == job_id
            wait_for(lambda: b"out 2" in streams["stdout"], what="attempt 2's output")
            go(center, 2, 0)
            final = wait_for_jobs(api, [job_id], sleep=lambda _: None)[0]
            follower.join(timeout=20)
            assert not follower.is_alive()

        assert final.state is JobState.COMPLETED and final.attempt == 2
        assert outcome_exit_code(final.state, final.exit_code) == 0
        # Every byte of both attempts, once, in order.
        assert bytes(streams["stdout"]) == b"out 1\ndone 1\nout 2\ndone 2\n"
        assert bytes(streams["stderr"]) == b"err 1\nerr 2\n"
        # Each attempt's log stays readable; the default is the current attempt.
        assert logs(center, job_id, attempt=1) == "out 1\ndone 1\n"
        assert logs(center, job_id, attempt=2) == "out 2\ndone 2\n"
        assert logs(center, job_id) == "out 2\ndone 2\n"
        assert logs(center, job_id, attempt=1, stream="stderr") == "err 1\n"
        assert center.logs(job_id, attempt=3).status_code == 404

        messages = [e["message"] for e in center.events(job_id)]
        assert f"attempt 1 ended NODE_FAIL: {LOST_NODE}" in "\n".join(messages)
        assert f"attempt 2 of 3 after NODE_FAIL ({LOST_NODE}): requeued" in messages
        assert messages[-1].startswith("ended COMPLETED (exit code 0)")

        # GPU-hours: each attempt charged, the job's total is their sum, and so is the use.
        charged = charges(center.events(job_id))
        assert len(charged) == 2 and all(c > 0 for c in charged)
        assert final.model_dump()["attempt"] == 2
        used = center.get("/v1/projects").json()[0]["gpu_hours_used"]
        row = center.app.state.scheduler.jobs.get(job_id)
        assert row.gpu_hours == pytest.approx(sum(charged), abs=1e-3)
        assert used == pytest.approx(row.gpu_hours, abs=1e-6)


def test_a_job_failing_by_its_own_exit_code_is_not_retried(
    tmp_path: Path, executors: list[NodeFailingExecutor]
) -> None:
    with jobs_center(tmp_path) as center:
        job = center.submit(ATTEMPTS, retry={"on": ["NODE_FAIL", "PREEMPTED", "BOOT_FAIL"]})
        center.wait_state(job["id"], "RUNNING")
        go(center, 1, 3)
        done = center.wait_done(job["id"])
        assert (done["state"], done["exit_code"], done["attempt"]) == ("FAILED", 3, 1)
        assert not any("attempt" in e["message"] for e in center.events(job["id"]))


def test_max_is_honoured(tmp_path: Path, executors: list[NodeFailingExecutor]) -> None:
    with jobs_center(tmp_path) as center:
        job = center.submit(ATTEMPTS, retry={"on": ["NODE_FAIL"], "max": 1})
        executors[0].fail_next_ends(job["id"], 5)

        def on_attempt(n: int) -> bool:
            return bool(center.job(job["id"])["attempt"] == n)

        for run in (1, 2):
            wait_for(lambda n=run: on_attempt(n), what=f"attempt {run}")  # type: ignore[misc]
            center.wait_state(job["id"], "RUNNING")
            go(center, run)
        done = center.wait_done(job["id"])
        assert (done["state"], done["attempt"], done["reason"]) == ("NODE_FAIL", 2, LOST_NODE)
        assert (center.home() / "runs").read_text().strip() == "2"


def test_a_state_not_listed_is_not_retried(
    tmp_path: Path, executors: list[NodeFailingExecutor]
) -> None:
    with jobs_center(tmp_path) as center:
        job = center.submit(ATTEMPTS, retry={"on": ["PREEMPTED"], "max": 2})
        executors[0].fail_next_ends(job["id"], 1)
        center.wait_state(job["id"], "RUNNING")
        go(center, 1)
        done = center.wait_done(job["id"])
        assert (done["state"], done["attempt"]) == ("NODE_FAIL", 1)


def test_without_retry_a_lost_node_ends_the_job(
    tmp_path: Path, executors: list[NodeFailingExecutor]
) -> None:
    with jobs_center(tmp_path) as center:
        job = center.submit(ATTEMPTS)
        executors[0].fail_next_ends(job["id"], 1)
        center.wait_state(job["id"], "RUNNING")
        go(center, 1)
        assert center.wait_done(job["id"])["state"] == "NODE_FAIL"
