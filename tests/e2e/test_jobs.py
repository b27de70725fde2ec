"""Jobs end to end through the real CLI against a real center on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_login import login
from tests.helpers import RunningCenter, cli_env, free_port, poll, run_cli, start_center

PASSWORD = "correct horse battery staple"


@pytest.fixture
def gpu_center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center with 2 (pretend) GPUs and a short kill grace, alice logged in."""
    center = start_center(
        tmp_path / "gpu-center", "--gpus", "2", "--gpu-type", "H100", "--kill-grace", "1"
    )
    try:
        center.add_user("alice", PASSWORD)
        center.add_user("bob", PASSWORD)
        center.add_project("ai-2026-0042", 5000, ["alice"])
        center.add_project("tiny", 1, ["alice", "bob"])
        login(center, "alice", PASSWORD)
        yield center
    finally:
        center.stop()


def job_json(job_id: str, **kw: object) -> dict:  # type: ignore[type-arg]
    return run_cli("show", job_id, "--json", **kw).json()  # type: ignore[return-value,arg-type]


def test_exit_code_passes_through(gpu_center: RunningCenter) -> None:
    res = run_cli("submit", "--wait", "--", "bash", "-c", "echo hi; exit 7", expect=7)
    assert "FAILED" in res.stderr and "exit code 7" in res.stderr
    ok = run_cli("submit", "--wait", "--json", "--", "true")
    doc = ok.json()
    assert doc["state"] == "COMPLETED" and doc["exit_code"] == 0  # type: ignore[index]


def test_signal_exit_code(gpu_center: RunningCenter) -> None:
    run_cli("submit", "--wait", "--", "bash", "-c", "kill -USR1 $$", expect=128 + 10)


def test_timeout_exits_124(gpu_center: RunningCenter) -> None:
    res = run_cli("submit", "--wait", "--json", "--time", "2s", "--", "sleep", "60", expect=124)
    assert res.json()["state"] == "TIMEOUT"  # type: ignore[index]


def test_cancel_exits_125(gpu_center: RunningCenter) -> None:
    job_id = run_cli("submit", "--", "sleep", "60").stdout.strip()
    poll(lambda: job_json(job_id)["state"] == "RUNNING")
    run_cli("cancel", job_id)
    res = run_cli("wait", job_id, "--json", expect=125)
    assert res.json()[0]["state"] == "CANCELLED"  # type: ignore[index]


def test_queueing_with_fewer_gpus_than_jobs(gpu_center: RunningCenter) -> None:
    ids = [
        run_cli(
            "submit",
            "--gpus",
            "1",
            "--",
            "bash",
            "-c",
            'echo "gpu=$CUDA_VISIBLE_DEVICES"; sleep 30',
        ).stdout.strip()
        for _ in range(3)
    ]
    poll(lambda: [job_json(i)["state"] for i in ids[:2]] == ["RUNNING", "RUNNING"])
    third = job_json(ids[2])
    assert third["state"] == "PENDING" and "Resources" in (third["reason"] or "")
    listed = run_cli("jobs", "--json").json()
    assert {j["id"] for j in listed} >= set(ids)  # type: ignore[union-attr,index]
    gpus = {job_json(i)["gpu_ids"][0] for i in ids[:2]}
    assert gpus == {0, 1}
    run_cli("cancel", *ids)
    run_cli("wait", *ids, expect=125)


def test_array_and_dependency(gpu_center: RunningCenter) -> None:
    arr = run_cli(
        "submit", "--array", "0-3%2", "--", "bash", "-c", 'echo "task $KAIC_ARRAY_TASK_ID"'
    ).stdout.strip()
    dep = run_cli("submit", "--after", arr, "--", "echo", "after").stdout.strip()
    run_cli("wait", arr, dep)
    doc = job_json(arr)
    assert doc["state"] == "COMPLETED" and len(doc["array_tasks"]) == 4
    out = run_cli("logs", doc["array_tasks"][3]).stdout
    assert out == "task 3\n"
    # A failed dependency cancels the dependant, with a reason.
    bad = run_cli("submit", "--", "false").stdout.strip()
    child = run_cli("submit", "--after", bad, "--", "echo", "never").stdout.strip()
    res = run_cli("wait", child, "--json", expect=125)
    assert "Dependency" in (res.json()[0]["reason"] or "")  # type: ignore[index]


def test_idempotent_resubmission(gpu_center: RunningCenter) -> None:
    first = run_cli("submit", "--idempotency-key", "k-123", "--", "echo", "a").stdout.strip()
    again = run_cli("submit", "--idempotency-key", "k-123", "--", "echo", "a").stdout.strip()
    assert first == again
    res = run_cli("submit", "--idempotency-key", "k-123", "--", "echo", "b", expect=6)
    assert "idempotency" in res.stderr.lower()


def test_dry_run_over_quota(gpu_center: RunningCenter) -> None:
    res = run_cli(
        "submit",
        "--dry-run",
        "--json",
        "--project",
        "tiny",
        "--gpus",
        "2",
        "--time",
        "4h",
        "--",
        "python",
        "train.py",
        expect=6,
    )
    doc = res.json()
    assert doc["dry_run"] is True and doc["valid"] is False  # type: ignore[index]
    assert doc["estimated_gpu_hours"] == pytest.approx(8.0)  # type: ignore[index]
    assert any("quota" in p.lower() or "gpu-hours" in p.lower() for p in doc["problems"])  # type: ignore[index]
    assert run_cli("jobs", "--json", "--all").json() == []


def test_cross_user_isolation(gpu_center: RunningCenter, tmp_path: Path) -> None:
    job_id = run_cli("submit", "--", "echo", "secret").stdout.strip()
    run_cli("wait", job_id)
    bob_env = {**os.environ, "KAIC_CONFIG_DIR": str(tmp_path / "bob-config")}
    run_cli(
        "login",
        "--center",
        gpu_center.url,
        "-u",
        "bob",
        "--password-stdin",
        input=PASSWORD + "\n",
        env=bob_env,
    )
    assert run_cli("jobs", "--all", "--json", env=bob_env).json() == []
    run_cli("show", job_id, env=bob_env, expect=4)
    run_cli("logs", job_id, env=bob_env, expect=4)
    run_cli("cancel", job_id, env=bob_env, expect=4)


def test_read_scope_cannot_submit(gpu_center: RunningCenter) -> None:
    token = run_cli("token", "create", "ro", "--scope", "jobs:read").stdout.strip()
    env = {**os.environ, "KAIC_TOKEN": token, "KAIC_CENTER": gpu_center.url}
    run_cli("jobs", "--json", env=env)
    res = run_cli("submit", "--", "true", env=env, expect=6)
    assert "jobs:write" in res.stderr


def test_logs_without_follow_and_tail(gpu_center: RunningCenter) -> None:
    job_id = run_cli(
        "submit", "--", "bash", "-c", "seq 1 100; echo oops >&2; exit 3"
    ).stdout.strip()
    run_cli("wait", job_id, expect=3)
    res = run_cli("logs", job_id)  # exits 0 without -f, whatever the job did
    assert res.stdout == "".join(f"{i}\n" for i in range(1, 101))
    assert "oops" in res.stderr
    assert run_cli("logs", job_id, "--tail", "2", "--stream", "stdout").stdout == "99\n100\n"
    assert run_cli("logs", job_id, "-f", expect=3).stdout.endswith("100\n")


def test_lossless_follow_across_center_restart(tmp_path: Path) -> None:
    """Tens of thousands of numbered lines on stdout and stderr while the center is killed
    and restarted mid-stream: `kaic logs -f` prints each exactly once, in order."""
    port = free_port()
    state = tmp_path / "restart-center"
    center = start_center(state, port=port)
    follower = None
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("p", 100, ["alice"])
        login(center, "alice", PASSWORD)
        script = (
            "for b in $(seq 0 59); do for i in $(seq 1 500); do n=$((b*500+i)); "
            'echo "out $n"; echo "err $n" >&2; done; sleep 0.1; done; exit 3'
        )
        job_id = run_cli("submit", "--", "bash", "-c", script).stdout.strip()
        out_path, err_path = tmp_path / "follow.out", tmp_path / "follow.err"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            follower = subprocess.Popen(
                [sys.executable, "-m", "kaic", "logs", "-f", job_id],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=cli_env(),
            )
        poll(lambda: out_path.stat().st_size > 20_000, timeout=60, every=0.02)
        center.proc.send_signal(signal.SIGKILL)  # a crash, mid-stream
        center.proc.wait(10)
        time.sleep(0.5)
        center = start_center(state, port=port)
        code = follower.wait(120)
        lines = out_path.read_text().splitlines()
        assert lines == [f"out {n}" for n in range(1, 30_001)]
        errs = [ln for ln in err_path.read_text().splitlines() if ln.startswith("err ")]
        assert errs == [f"err {n}" for n in range(1, 30_001)]
        assert code == 3
    finally:
        if follower and follower.poll() is None:
            follower.kill()
        center.stop()


def test_job_lost_while_center_down_exits_126(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "lost-center"
    center = start_center(state, port=port)
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("p", 100, ["alice"])
        login(center, "alice", PASSWORD)
        job_id = run_cli("submit", "--", "sleep", "119.73").stdout.strip()
        poll(lambda: job_json(job_id)["state"] == "RUNNING")
        center.proc.send_signal(signal.SIGKILL)
        center.proc.wait(10)
        # The job's process dies too while nobody watches.
        found = subprocess.run(["pgrep", "-f", "sleep 119.73"], capture_output=True, text=True)
        pids = [int(p) for p in found.stdout.split()]
        assert pids, "the job's process should still run after the center was killed"
        for pid in pids:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        center = start_center(state, port=port)
        res = run_cli("wait", job_id, "--json", expect=126)
        doc = res.json()[0]  # type: ignore[index]
        assert doc["state"] == "NODE_FAIL" and doc["reason"]
    finally:
        center.stop()


def test_jobs_survive_center_restart(tmp_path: Path) -> None:
    port = free_port()
    state = tmp_path / "reattach-center"
    center = start_center(state, port=port)
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("p", 100, ["alice"])
        login(center, "alice", PASSWORD)
        job_id = run_cli("submit", "--", "bash", "-c", "sleep 2; exit 5").stdout.strip()
        poll(lambda: job_json(job_id)["state"] == "RUNNING")
        center.stop(kill_jobs=False)  # SIGTERM: a graceful restart keeps jobs running
        center = start_center(state, port=port)
        res = run_cli("wait", job_id, "--json", expect=5)
        assert res.json()[0]["state"] == "FAILED"  # type: ignore[index]
    finally:
        center.stop()


def test_json_job_fields(gpu_center: RunningCenter) -> None:
    doc = run_cli(
        "submit", "--json", "--name", "fields", "--gpus", "1", "--time", "10m", "--", "true"
    ).json()
    assert isinstance(doc, dict)
    for key in (
        "id",
        "name",
        "state",
        "exit_code",
        "user",
        "project",
        "partition",
        "resources",
        "time_limit_seconds",
        "submitted_at",
        "started_at",
        "ended_at",
        "reason",
    ):
        assert key in doc
    assert doc["resources"]["gpus"] == 1 and doc["time_limit_seconds"] == 600
    assert doc["user"] == "alice" and isinstance(doc["id"], str)
    json.dumps(doc)


def test_command_after_double_dash_is_never_read_as_a_job_file(
    gpu_center: RunningCenter, tmp_path: Path
) -> None:
    (tmp_path / "echo").write_text("not: a job file\n")  # a local file named like the command
    res = run_cli("submit", "--wait", "--follow", "--", "echo", "hi", cwd=tmp_path)
    assert res.stdout == "hi\n"


def test_cancel_after_restart_is_cancelled_not_node_fail(tmp_path: Path) -> None:
    """A re-attached job (no longer the center's child) killed by cancel is CANCELLED (125)."""
    port = free_port()
    state = tmp_path / "cancel-center"
    center = start_center(state, "--kill-grace", "1", port=port)
    try:
        center.add_user("alice", PASSWORD)
        center.add_project("p", 100, ["alice"])
        login(center, "alice", PASSWORD)
        job_id = run_cli("submit", "--", "bash", "-c", "trap '' TERM; sleep 60").stdout.strip()
        poll(lambda: job_json(job_id)["state"] == "RUNNING")
        center.stop(kill_jobs=False)
        center = start_center(state, "--kill-grace", "1", port=port)
        run_cli("cancel", job_id)
        res = run_cli("wait", job_id, "--json", expect=125)
        assert res.json()[0]["state"] == "CANCELLED"  # type: ignore[index]
    finally:
        center.stop()
