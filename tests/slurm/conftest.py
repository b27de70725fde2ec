"""Fixtures for the Slurm tests: a real single-node Slurm with slurmrestd (session), a real
kaic center in front of it (module), and the executor conformance suite's center over it
(session, see `slurm_harness`).

Needs root (munged and slurmd run as their own users, jobs as a real unix account) and the
Debian packages `slurm-wlm slurmrestd munge`. Without them the tests fail when `CI=true`
and are skipped with the reason otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaic.center.executors.slurm.options import SlurmSettings
from tests.center.conformance.harness import Facts, Harness, running
from tests.center.jobs_support import make_settings
from tests.helpers import RunningCenter, start_center, unavailable
from tests.slurm.cluster import JOB_USER, SlurmCluster, missing_binaries

PROJECT = "ai-2026-0042"
USER = "alice"


def _unavailable(reason: str) -> None:
    unavailable(f"needs a local Slurm: {reason}")


@pytest.fixture(scope="session")
def slurm_base() -> Iterator[Path]:
    """A world-traversable temp dir (jobs run as another user and must reach their files)."""
    base = Path(tempfile.mkdtemp(prefix="kaic-slurm-"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def slurm_cluster(slurm_base: Path) -> Iterator[SlurmCluster]:
    """munged, slurmctld, slurmd and slurmrestd on 127.0.0.1, stopped by PID at the end."""
    missing = missing_binaries()
    if missing:
        _unavailable(
            f"missing {', '.join(missing)} (apt-get install -y slurm-wlm slurmrestd munge)"
        )
    if os.geteuid() != 0:
        _unavailable("must run as root (munged/slurmd users, jobs as a unix account)")
    cluster = SlurmCluster(slurm_base / "slurm")
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        pytest.fail(f"could not start Slurm: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


#: what the conformance suite may expect differently of Slurm: it counts time limits in
#: minutes and checks them about every 30 s, schedules every 2 s (`sched_interval`), and the
#: center polls it every 0.5 s
CONFORMANCE_FACTS = Facts(
    gpus=2,
    deadline=60.0,
    time_limit=60,
    task_seconds=2.0,
    running_event="running on partition",
    cancels_pending_at_once=False,
    session_time_limit=60,
)
CONFORMANCE_MODULE = "test_conformance.py"


@pytest.fixture(scope="session")
def slurm_harness(slurm_cluster: SlurmCluster, slurm_base: Path) -> Iterator[Harness]:
    """The conformance suite's center over Slurm (in process, as root: it hands the job
    directories to `kaicslurm`).

    Session-scoped and started before `slurm_center`, so that its time-limited jobs (a
    minute at least) run out while the other Slurm tests run; the conformance run comes
    last (`pytest_collection_modifyitems`), and checks them at its end."""
    # Directly in the traversable base: jobs (as kaicslurm) pass through the state dir.
    state_dir = Path(tempfile.mkdtemp(prefix="conformance-", dir=slurm_base))
    options = SlurmSettings(
        url=slurm_cluster.url,
        token=slurm_cluster.token,
        poll_interval=0.5,
        slurm_conf=slurm_cluster.env["SLURM_CONF"],
    )
    settings = make_settings(state_dir, executor="slurm", executor_settings=options)
    try:
        with running(settings, CONFORMANCE_FACTS, unix_account=JOB_USER) as harness:
            yield harness
    finally:
        with contextlib.suppress(Exception):
            slurm_cluster.run("scancel", "--user", JOB_USER, timeout=10)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The conformance run last among the Slurm tests (see `slurm_harness`); other tests
    keep their places."""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    mine = [items[i] for i in slots]
    ordered = [t for t in mine if t.path.name != CONFORMANCE_MODULE]
    ordered += [t for t in mine if t.path.name == CONFORMANCE_MODULE]
    for slot, item in zip(slots, ordered, strict=True):
        items[slot] = item


#: a Python the jobs' unix account can run (test_slurm_metrics.py)
JOB_PYTHON = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")


@dataclass
class SlurmCenter:
    """A kaic center with the Slurm executor, user alice (unix account kaicslurm) and an
    API token for her."""

    center: RunningCenter
    cluster: SlurmCluster
    token: str

    @property
    def url(self) -> str:
        return self.center.url

    def env(self) -> dict[str, str]:
        return {**os.environ, "KAIC_TOKEN": self.token, "KAIC_CENTER": self.url}


@pytest.fixture(scope="module")
def slurm_center(
    slurm_cluster: SlurmCluster, slurm_base: Path, slurm_harness: Harness
) -> Iterator[SlurmCenter]:
    from kaic.center.store import Store
    from tests.center.jobs_support import mint_token

    state = Path(tempfile.mkdtemp(prefix="center-", dir=slurm_base))
    center = start_center(
        state,
        "--executor",
        "slurm",
        "--slurmrestd",
        slurm_cluster.url,
        "--slurm-poll-interval",
        "0.5",
        # the metrics sampler runs as the job's account, which cannot run this checkout's
        # interpreter; the system's Python finds kaic on the test job's PYTHONPATH
        *(["--metrics-python", JOB_PYTHON] if JOB_PYTHON else []),
        env={"KAIC_SLURM_JWT": slurm_cluster.token, "SLURM_CONF": slurm_cluster.env["SLURM_CONF"]},
    )
    running = SlurmCenter(center, slurm_cluster, "")
    try:
        center.add_user(USER, "correct horse battery staple", unix_account=JOB_USER)
        center.add_project(PROJECT, 5000, [USER])
        store = Store(state)
        try:
            running.token = mint_token(store, USER)
        finally:
            store.close()
        yield running
    finally:
        # A test may have restarted the center: stop the current one. Its jobs are Slurm's
        # (the cluster fixture cancels them).
        running.center.stop(kill_jobs=False)


@pytest.fixture
def alice(slurm_center: SlurmCenter, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """The CLI talks to the Slurm center as alice (an API token in the environment)."""
    monkeypatch.setenv("KAIC_TOKEN", slurm_center.token)
    monkeypatch.setenv("KAIC_CENTER", slurm_center.url)
    return slurm_center
