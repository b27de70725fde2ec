"""A center restart on the local executor: jobs that ended or died while it was down, and a
shutdown that kills its jobs. Re-attaching running jobs is the executor conformance suite's
(`tests/center/conformance/`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kaic.center.executors.local import LOST_REASON, proc_start_time

from .jobs_support import (
    kill_job_processes,
    make_settings,
    open_center,
    prepare_state,
    wait_for,
)

WAIT_FOR_GO = 'while [ ! -e "$HOME/go" ]; do sleep 0.02; done\n'


def _pid_of(state_dir: Path, job_id: str) -> int:
    import sqlite3

    conn = sqlite3.connect(state_dir / "center.db")
    try:
        (pid,) = conn.execute("SELECT pid FROM jobs WHERE id = ?", (job_id,)).fetchone()
    finally:
        conn.close()
    return int(pid)


def test_job_that_ended_or_died_while_the_center_was_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    settings = make_settings(state_dir)
    go = state_dir / "storage" / "alice" / "go"
    try:
        with open_center(settings) as first:
            ends = first.submit(WAIT_FOR_GO + "exit 0")
            dies = first.submit("sleep 300")
            for job in (ends, dies):
                first.wait_state(job["id"], "RUNNING")
        go.touch()
        wait_for(lambda: (state_dir / "jobs" / ends["id"] / "exitcode").exists())
        pid = _pid_of(state_dir, dies["id"])
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: proc_start_time(pid) is None, what="the killed job to die")

        with open_center(settings) as second:
            done = second.job(ends["id"])
            assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
            lost = second.job(dies["id"])
            assert lost["state"] == "NODE_FAIL" and lost["reason"] == LOST_REASON
            assert lost["exit_code"] is None
            messages = [e["message"] for e in second.events(dies["id"])]
            assert f"lost: {LOST_REASON}" in messages
    finally:
        kill_job_processes(state_dir)


def test_shutdown_with_kill_jobs_cancels_running_jobs(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    prepare_state(state_dir)
    settings = make_settings(state_dir)
    try:
        with open_center(settings) as center:
            running = center.submit("sleep 300")
            waiting = center.submit("echo later", depends_on=[running["id"]])
            center.wait_state(running["id"], "RUNNING")
            pid = _pid_of(state_dir, running["id"])
            center.app.state.scheduler.shutdown(kill_jobs=True)
            assert proc_start_time(pid) is None
            job = center.job(running["id"])
            assert job["state"] == "CANCELLED" and job["reason"] == "the center shut down"
            assert center.job(waiting["id"])["state"] == "PENDING"
    finally:
        kill_job_processes(state_dir)
