"""A center over one executor, as the conformance suite drives it (see `suite.py`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from kaic.center.admin import add_project, add_user
from kaic.center.settings import CenterSettings
from tests.center.jobs_support import PROJECT, JobsCenter, kill_job_processes, open_center

#: the users of a conformance center and their projects
USERS = {"alice": PROJECT, "bob": "bob-lab", "carol": None}


@dataclass(frozen=True)
class Facts:
    """What may differ between executors, stated once per executor (nothing else may)."""

    #: GPUs of the one partition jobs go to (the suite needs exactly 2)
    gpus: int = 2
    #: seconds to wait for a job to end
    deadline: float = 20.0
    #: the time limit the suite's time-limited jobs get (a batch system may count minutes)
    time_limit: int = 1
    #: seconds each array task runs, long enough for the executor to see a task limit hold
    task_seconds: float = 0.3
    #: how the first event of a job seen running begins (the center starting it itself, or
    #: the batch system reporting it)
    running_event: str = "started on partition"
    #: a pending job the executor has not been handed yet ends at the cancel request (the
    #: center's own queue); otherwise it ends when the batch system has removed it
    cancels_pending_at_once: bool = True


@dataclass
class Harness:
    """A running center over `settings`, restartable in place; `early` holds the ids of the
    time-limited jobs submitted when it first started (checked by the suite's last test)."""

    settings: CenterSettings
    facts: Facts
    center: JobsCenter = field(init=False)
    early: dict[str, str] = field(default_factory=dict)
    _stack: ExitStack = field(default_factory=ExitStack)

    def open(self) -> None:
        self.center = self._stack.enter_context(open_center(self.settings))

    def restart(self) -> None:
        """Stop the center as a SIGTERM would (jobs keep running), then start another over
        the same state."""
        self._stack.close()
        self._stack = ExitStack()
        self.open()

    def close(self) -> None:
        self._stack.close()

    def wait_done(self, job_id: str, user: str = "alice") -> dict[str, Any]:
        return self.center.wait_state(job_id, user=user, timeout=self.facts.deadline)

    def wait_state(self, job_id: str, *states: str, user: str = "alice") -> dict[str, Any]:
        return self.center.wait_state(job_id, *states, user=user, timeout=self.facts.deadline)


def add_users(settings: CenterSettings, unix_account: str | None) -> None:
    """alice, bob and carol, all with `unix_account` (shared: the executor runs jobs as it)
    or each their own name's (None); alice and bob in a project each."""
    for name in USERS:
        add_user(
            settings.state_dir,
            name,
            password=None,
            enable_otp=False,
            unix_account=unix_account,
            shared_account=unix_account is not None,
        )
    for name, project in USERS.items():
        if project is not None:
            add_project(settings.state_dir, project, gpu_hours=100.0, members=[name])


#: the time-limited jobs: one ends at SIGTERM, one ignores it (SIGKILL after the grace)
TIME_LIMITED = {
    "polite": "sleep 600",
    "stubborn": "trap '' TERM; while :; do sleep 0.1; done",
}


@contextmanager
def running(settings: CenterSettings, facts: Facts, unix_account: str | None) -> Iterator[Harness]:
    """A harness over a fresh state dir, with users, and the time-limited jobs submitted."""
    add_users(settings, unix_account)
    harness = Harness(settings, facts)
    try:
        harness.open()
        partitions = harness.center.get("/v1/partitions").json()
        default = next(p for p in partitions if p["default"])
        assert default["gpus_total"] == facts.gpus, (default, facts)
        for name, script in TIME_LIMITED.items():
            job = harness.center.submit(script, name=name, time_limit_seconds=facts.time_limit)
            harness.early[name] = job["id"]
        yield harness
    finally:
        with contextlib.suppress(Exception):
            harness.center.app.state.scheduler.shutdown(kill_jobs=True)
        harness.close()
        kill_job_processes(settings.state_dir)
