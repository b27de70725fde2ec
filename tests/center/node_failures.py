"""A test-only way to lose a node: the local executor, except that the ends of a job's first
attempts that a test marks (`fail_next_ends`) are reported as the loss of the job's node
(NODE_FAIL), the way a batch system reports a node that went down under a job. The job
really ran (its logs are real); only how its end is reported changes, so the attempts after
it run for real too. Not a product feature: it lives with the tests.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import pytest

from kaic.center import app as center_app
from kaic.center.executors.base import Ended, Executor
from kaic.center.executors.local import LocalExecutor
from kaic.center.executors.own_account import own_account_refusal
from kaic.center.settings import CenterSettings

#: the reason a lost node gives (what Slurm says of a node that stopped responding)
LOST_NODE = "node node07 stopped responding"


class NodeFailingExecutor(LocalExecutor):
    """`LocalExecutor` whose marked job ends are reported as NODE_FAIL."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._lock = threading.Lock()
        self._failures: dict[str, int] = {}

    def fail_next_ends(self, job_id: str, count: int = 1) -> None:
        """Report the next `count` ends of `job_id` as the loss of its node."""
        with self._lock:
            self._failures[job_id] = count

    def poll(self) -> list[Ended]:
        ended = []
        for end in super().poll():
            with self._lock:
                left = self._failures.get(end.job_id, 0)
                if left:
                    self._failures[end.job_id] = left - 1
            ended.append(Ended(end.job_id, None, lost=True, reason=LOST_NODE) if left else end)
        return ended


@contextmanager
def node_failing_executor(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[NodeFailingExecutor]]:
    """Centers created inside use a `NodeFailingExecutor` (the list holds each one built)."""
    built: list[NodeFailingExecutor] = []

    def make(settings: CenterSettings) -> Executor:
        executor = NodeFailingExecutor(
            kill_grace=settings.kill_grace,
            run_as_users=settings.run_as_users,
            refusal=partial(own_account_refusal, settings),
        )
        built.append(executor)
        return executor

    with monkeypatch.context() as patch:
        patch.setattr(center_app, "make_executor", make)
        yield built
