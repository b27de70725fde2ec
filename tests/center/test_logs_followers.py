"""Many followers of a log over a real HTTP server cost the center one open file per log
and no database reads while they wait; the job's end reaches them through the ledger."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kaic.center.jobs.paths import job_paths
from kaic.center.jobs.store import JobStore

from .jobs_support import jobs_center, wait_for
from .test_logs_follow import WAIT_FOR_GO, follow_all, serve

FOLLOWERS = 20


def open_files_of(path: Path) -> int:
    """How many descriptors of this process (the center runs in it) have `path` open."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass  # closed meanwhile
    return count


@pytest.fixture
def job_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """How often each job's row is read (by `JobStore.get` or `get_many`), by job id."""
    reads: dict[str, int] = {}
    get, get_many = JobStore.get, JobStore.get_many

    def counted_get(self: JobStore, job_id: str, **kwargs: Any) -> Any:
        reads[job_id] = reads.get(job_id, 0) + 1
        return get(self, job_id, **kwargs)

    def counted_get_many(self: JobStore, job_ids: Any) -> Any:
        job_ids = list(job_ids)
        for job_id in job_ids:
            reads[job_id] = reads.get(job_id, 0) + 1
        return get_many(self, job_ids)

    monkeypatch.setattr(JobStore, "get", counted_get)
    monkeypatch.setattr(JobStore, "get_many", counted_get_many)
    yield reads


def test_followers_share_one_open_log_file(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        job = center.submit("echo first\n" + WAIT_FOR_GO + "echo second")
        center.wait_state(job["id"], "RUNNING")
        log = job_paths(center.state_dir, job["id"]).log("stdout")
        seen: list[int] = []

        def count_then_go() -> None:
            seen.append(open_files_of(log))
            (center.home() / "go").touch()

        bodies = follow_all(center, url, job["id"], FOLLOWERS, count_then_go)
        assert bodies == [b"first\nsecond\n"] * FOLLOWERS
        assert seen == [1]
        # And the last follower to leave closed it.
        wait_for(lambda: open_files_of(log) == 0, what="the log to be closed")


def test_waiting_followers_do_not_read_the_database(
    tmp_path: Path, job_reads: dict[str, int]
) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        # Silent for half a second once every follower is there: ten polls of the old way.
        job = center.submit("echo first\n" + WAIT_FOR_GO + "sleep 0.5; echo second")
        center.wait_state(job["id"], "RUNNING")
        before: list[int] = []

        def go() -> None:
            before.append(job_reads.get(job["id"], 0))
            (center.home() / "go").touch()

        bodies = follow_all(center, url, job["id"], FOLLOWERS, go)
        assert bodies == [b"first\nsecond\n"] * FOLLOWERS
        # While they waited and as the job ended: the scheduler recording the end, the
        # watcher confirming the ledger's announcement, perhaps a sweep — not one per
        # follower per poll.
        assert job_reads[job["id"]] - before[0] <= 5, job_reads[job["id"]] - before[0]


def test_the_ledger_announces_each_end(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center:
        ended: list[str] = []
        center.app.state.scheduler.ledger.on_job_end(ended.append)
        done = center.submit("true")
        blocker = center.submit("sleep 30", resources={"gpus": 0})
        center.wait_done(done["id"])
        center.post(f"/v1/jobs/{blocker['id']}/cancel")
        center.wait_done(blocker["id"])
        wait_for(lambda: blocker["id"] in ended, what="the cancelled job's end")
        assert ended.count(done["id"]) == 1
        assert ended.count(blocker["id"]) == 1


def test_followers_end_with_the_job_without_the_sweep(tmp_path: Path) -> None:
    with jobs_center(tmp_path) as center, serve(center.app) as url:
        center.app.state.log_hub.sweep = 3600  # only the ledger's announcement can end them
        job = center.submit("echo first\n" + WAIT_FOR_GO + "echo second; exit 3")
        center.wait_state(job["id"], "RUNNING")
        bodies = follow_all(
            center, url, job["id"], FOLLOWERS, lambda: (center.home() / "go").touch()
        )
        assert bodies == [b"first\nsecond\n"] * FOLLOWERS
        assert center.job(job["id"])["exit_code"] == 3


def test_the_center_raises_its_open_files_limit() -> None:
    # Each follower holds a socket: under a soft limit of 1,024 a center could not hold
    # 1,000 of them. `serve` raises the soft limit to the hard one first.
    code = (
        "import resource, sys\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "if hard == resource.RLIM_INFINITY or hard <= 256: sys.exit(f'hard limit {hard}')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "from kaic.center.server import raise_open_files_limit\n"
        "assert raise_open_files_limit() == hard\n"
        "assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
