"""The local executor on its own: start, poll, cancel with escalation, recover."""

from __future__ import annotations

import time
from pathlib import Path

from kaic.center.executors.base import Ended, JobPaths, Launched, LaunchSpec, RunningJob
from kaic.center.executors.local import LOST_REASON, LocalExecutor

from .jobs_support import wait_for


def _spec(tmp_path: Path, job_id: str, script: str) -> LaunchSpec:
    home = tmp_path / "home"
    return LaunchSpec(
        job_id=job_id,
        name=job_id,
        user="alice",
        script=script,
        paths=JobPaths(tmp_path / "jobs" / job_id),
        workdir=home,
        home=home,
        gpu_ids=(1, 3),
    )


def _collect(executor: LocalExecutor, count: int) -> dict[str, Ended]:
    ended: dict[str, Ended] = {}

    def check() -> bool:
        ended.update({e.job_id: e for e in executor.poll()})
        return len(ended) >= count

    wait_for(check, what=f"{count} jobs to end")
    return ended


def test_start_poll_cancel(tmp_path: Path) -> None:
    executor = LocalExecutor(kill_grace=0.3)
    try:
        launched = executor.start(_spec(tmp_path, "1", 'echo "$CUDA_VISIBLE_DEVICES"; exit 4'))
        assert launched.pid == launched.pgid and launched.start_time is not None
        executor.start(_spec(tmp_path, "2", "trap '' TERM; sleep 30"))
        executor.start(_spec(tmp_path, "3", "sleep 30"))
        time.sleep(0.1)  # let the traps be installed before signalling
        executor.cancel("2")
        executor.cancel("3")
        executor.cancel("unknown")
        ended = _collect(executor, 3)
        assert (ended["1"].exit_code, ended["1"].signal) == (4, None)
        assert (ended["2"].exit_code, ended["2"].signal) == (137, 9)
        assert ended["3"].exit_code == 143
        assert (tmp_path / "jobs" / "1" / "stdout").read_text() == "1,3\n"
        assert (tmp_path / "jobs" / "1" / "exitcode").read_text() == "4\n"
        assert executor.poll() == []
    finally:
        executor.shutdown(kill_jobs=True)


def test_recover(tmp_path: Path) -> None:
    first = LocalExecutor(kill_grace=0.3)
    go = tmp_path / "home" / "go"
    alive = first.start(_spec(tmp_path, "1", f'while [ ! -e "{go}" ]; do sleep 0.02; done'))
    first.shutdown(kill_jobs=False)
    second = LocalExecutor(kill_grace=0.3)
    try:
        # Same pid, another start time: the pid was reused, the job is gone.
        reused = Launched("x", pid=alive.pid, pgid=alive.pgid, start_time=1)
        gone = RunningJob("2", reused, JobPaths(tmp_path / "jobs" / "2"))
        ended = second.recover([RunningJob("1", alive, JobPaths(tmp_path / "jobs" / "1")), gone])
        assert ended == [Ended("2", None, lost=True, reason=LOST_REASON)]
        assert second.running() == ["1"]
        go.touch()
        assert _collect(second, 1)["1"].exit_code == 0
    finally:
        second.shutdown(kill_jobs=True)
