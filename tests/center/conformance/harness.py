"""A center over one executor, as the conformance suite drives it (see `suite.py`)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from kaic.center.admin import add_project, add_user
from kaic.center.settings import CenterSettings
from tests.center.interactive_support import ExecResult, live_server, start_exec
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
    #: the time limit of the interactive job whose session must end when it times out
    #: (long enough to open the session once the job runs)
    session_time_limit: int = 5


@dataclass
class Harness:
    """A running center over `settings`, restartable in place, serving WebSockets on `url`;
    `early` holds the ids of the time-limited jobs submitted when it first started, and
    `early_session` the session opened in one of them (checked by the suite's last test)."""

    settings: CenterSettings
    facts: Facts
    center: JobsCenter = field(init=False)
    #: the live center's `ws://` URL (interactive sessions)
    url: str = field(init=False)
    early: dict[str, str] = field(default_factory=dict)
    early_session: EarlySession | None = None
    _stack: ExitStack = field(default_factory=ExitStack)
    _held: str | None = None

    def open(self) -> None:
        self.center = self._stack.enter_context(open_center(self.settings))
        self.url = self._stack.enter_context(live_server(self.center.app))

    def held_job(self) -> str:
        """A running interactive job of alice's for sessions (started the first time)."""
        if self._held is None:
            job = self.center.submit("", kind="interactive", name="held")
            self._held = job["id"]
        self.wait_state(self._held, "RUNNING")
        return self._held

    def restart(self) -> None:
        """Stop the center as a SIGTERM would (jobs keep running), then start another over
        the same state."""
        self._stack.close()
        self._stack = ExitStack()
        self.open()

    def close(self) -> None:
        self._stack.close()

    def token(self, user: str = "alice") -> str:
        return self.center.tokens[user]

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


@dataclass
class EarlySession:
    """An exec session opened in a time-limited interactive job when the harness started,
    read to its end on a thread of its own. The suite restarts the center meanwhile, which
    ends every session (1012, "service restart"): the session is then opened again in the
    restarted center."""

    job_id: str
    result: ExecResult | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None
    restarts: int = 0
    #: the job reached its time limit while the center restarted, before the session could
    #: be opened again (a loaded machine runs the suite slower than the limit)
    ended_before_reopen: bool = False

    def start(self, harness: Harness) -> None:
        def run() -> None:
            try:
                while True:
                    url = harness.url
                    try:
                        with start_exec(
                            url, self.job_id, harness.token(), ["sleep", "1e5"]
                        ) as session:
                            result = session.finish(timeout=3600)
                    except Exception:
                        if self.restarts and self._job_ended(harness):
                            self.ended_before_reopen = True
                            return
                        raise
                    # refused at start by the batch system (the job was completing)?
                    refused = result.status is not None and result.status.get("reason") is None
                    if self.restarts and refused and self._job_ended(harness):
                        self.ended_before_reopen = True
                        return
                    if result.close_code != 1012 or self.restarts > 3:
                        self.result = result
                        return
                    self.restarts += 1
                    deadline = time.monotonic() + harness.facts.deadline
                    while harness.url == url and time.monotonic() < deadline:
                        time.sleep(0.05)
            except BaseException as exc:  # reported by the suite's last test
                self.error = exc

        self.thread = threading.Thread(target=run, name="early-session", daemon=True)
        self.thread.start()

    def _job_ended(self, harness: Harness) -> bool:
        """Whether the job is ending or has ended (waits for its end to be recorded)."""
        try:
            state = harness.center.wait_state(self.job_id, timeout=harness.facts.deadline)
        except AssertionError:
            return False
        return str(state["state"]) == "TIMEOUT"


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
        # An interactive job with a session in it, for the suite's last test: the session
        # must end when the job reaches its time limit.
        held = harness.center.submit(
            "", kind="interactive", time_limit_seconds=facts.session_time_limit
        )
        harness.wait_state(held["id"], "RUNNING")
        harness.early_session = EarlySession(held["id"])
        harness.early_session.start(harness)
        yield harness
    finally:
        with contextlib.suppress(Exception):
            harness.center.app.state.scheduler.shutdown(kill_jobs=True)
        harness.close()
        kill_job_processes(settings.state_dir)
