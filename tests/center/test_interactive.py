"""Interactive sessions on the local executor, through a real WebSocket client talking to a
real center (uvicorn on loopback): refusals before the upgrade, exec (exit codes, streams,
stdin, tty, the job's environment), forward (100 MB byte-identical, 50 at once, a server
that closes early, a refused port), sessions that end with their job or their client,
back-pressure, limits, audit lines and `kind: interactive` jobs.

What every executor must do is also in the conformance suite (`conformance/suite.py`); these
are the center's own rules and the local executor's details.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from kaic.center.interactive.registry import SessionRegistry
from tests.center.conftest import assert_error
from tests.center.interactive_support import (
    forward_roundtrip,
    kill_pids,
    live_server,
    open_forward,
    open_ws,
    pid_alive,
    refusal,
    run_exec,
    server_ports,
    server_script,
    start_exec,
)
from tests.center.jobs_support import (
    PROJECT,
    JobsCenter,
    jobs_center,
    kill_job_processes,
    make_settings,
    open_center,
    prepare_state,
    wait_for,
)
from tests.helpers import REPO

MB = 1024 * 1024


@dataclass
class Live:
    """A center with a live WebSocket endpoint and alice's long-running jobs."""

    center: JobsCenter
    url: str
    #: a running job of alice's (1 GPU, `sleep`)
    job: str
    #: a running job of alice's serving an echo and an early-closing port
    server: str
    echo_port: int
    early_port: int

    def token(self, user: str = "alice") -> str:
        return self.center.tokens[user]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    state_dir = tmp_path_factory.mktemp("interactive") / "state"
    prepare_state(state_dir)
    settings = make_settings(state_dir, gpus=2, gpu_type="H100")
    try:
        with open_center(settings) as center, live_server(center.app) as url:
            job = center.submit("sleep 600", resources={"gpus": 1}, name="held")
            server = center.submit(server_script("ports"), name="server")
            for started in (job, server):
                center.wait_state(started["id"], "RUNNING")
            echo, early = server_ports(center.home(), "ports")
            yield Live(center, url, job["id"], server["id"], echo, early)
    finally:
        kill_job_processes(state_dir)


def exec_path(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/exec"


# -- refusals, before the upgrade ------------------------------------------------------


def test_only_the_owner_with_the_scope_reaches_a_running_job(live: Live) -> None:
    status, body = refusal(live.url, exec_path(live.job), live.token("bob"))
    assert status == 404 and body["error"]["code"] == "not_found"
    missing_status, missing = refusal(live.url, exec_path("99999"), live.token("bob"))
    # bob learns nothing: alice's job looks exactly like one that does not exist
    assert missing_status == 404
    assert body["error"]["message"] == f"no job {live.job!r}"
    assert missing["error"]["message"] == "no job '99999'"
    forward = f"/v1/jobs/{live.job}/forward?port={live.echo_port}"
    assert refusal(live.url, forward, live.token("bob"))[0] == 404

    status, body = refusal(live.url, exec_path(live.job), live.token("alice-read"))
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    assert "jobs:exec" in body["error"]["message"]
    assert refusal(live.url, exec_path(live.job), None)[0] == 401
    assert refusal(live.url, exec_path(live.job), "kaic_not-a-token")[0] == 401


def test_a_job_that_is_not_running_is_409_naming_its_state(live: Live) -> None:
    center = live.center
    pending = center.submit("true", resources={"gpus": 2})  # waits: one GPU is taken
    wait_for(lambda: center.job(pending["id"])["reason"] == "Resources", what="pending")
    status, body = refusal(live.url, exec_path(pending["id"]), live.token())
    assert (status, body["error"]["code"]) == (409, "job_not_running")
    assert "PENDING" in body["error"]["message"]
    center.post(f"/v1/jobs/{pending['id']}/cancel")

    done = center.submit("true")
    center.wait_done(done["id"])
    status, body = refusal(live.url, f"/v1/jobs/{done['id']}/forward?port=80", live.token())
    assert status == 409 and "COMPLETED" in body["error"]["message"]


def test_bad_ports_and_arrays_are_422(live: Live) -> None:
    for port in ("0", "65536", "http", ""):
        path = f"/v1/jobs/{live.job}/forward?port={port}"
        status, body = refusal(live.url, path, live.token())
        assert (status, body["error"]["code"]) == (422, "invalid_request"), port
        assert "port" in body["error"]["message"]
    status, body = refusal(live.url, f"/v1/jobs/{live.job}/forward", live.token())
    assert status == 422 and "port" in body["error"]["message"]

    array = live.center.submit("sleep 30", array="0-1")
    status, body = refusal(live.url, exec_path(array["id"]), live.token())
    assert status == 422 and f"{array['id']}_0" in body["error"]["message"]
    live.center.post(f"/v1/jobs/{array['id']}/cancel")


def test_an_executor_without_interactive_access_is_501(
    live: Live, monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = live.center.app.state.scheduler.executor
    monkeypatch.setattr(executor, "interactive_refusal", lambda: "not here")
    status, body = refusal(live.url, exec_path(live.job), live.token())
    assert (status, body["error"]) == (501, {**body["error"], "code": "not_supported"})
    assert body["error"]["message"] == "not here"


# -- exec ----------------------------------------------------------------------------------


def test_exec_exit_codes_streams_and_stdin(live: Live) -> None:
    script = "cat; echo to-stderr >&2; echo to-stdout; exit 7"
    result = run_exec(live.url, live.job, live.token(), ["sh", "-c", script], stdin=b"typed\n")
    assert result.stdout == b"typed\nto-stdout\n"
    assert result.stderr == b"to-stderr\n"
    assert result.status == {"exit_code": 7, "signal": None, "reason": None}
    assert result.close_code == 1000

    killed = run_exec(live.url, live.job, live.token(), ["sh", "-c", "kill -TERM $$"])
    assert killed.status == {"exit_code": 128 + 15, "signal": 15, "reason": None}
    missing = run_exec(live.url, live.job, live.token(), ["no-such-command-kaic"])
    assert missing.status is not None and missing.status["exit_code"] == 127
    assert b"no-such-command-kaic" in missing.stderr


def test_exec_runs_with_the_jobs_environment_and_workdir(live: Live) -> None:
    show = 'echo "$KAIC_JOB_ID $CUDA_VISIBLE_DEVICES $MINE"; pwd'
    result = run_exec(
        live.url,
        live.job,
        live.token(),
        ["sh", "-c", show],
        env={"MINE": "yes", "KAIC_JOB_ID": "forged", "CUDA_VISIBLE_DEVICES": "0,1"},
    )
    job = live.center.job(live.job)
    gpus = ",".join(str(i) for i in job["gpu_ids"])
    lines = result.stdout.decode().splitlines()
    assert lines[0] == f"{live.job} {gpus} yes"  # kaic's variables stay the job's
    assert Path(lines[1]).resolve() == live.center.home().resolve()


def test_tty_sessions_have_a_terminal_that_resizes(live: Live) -> None:
    argv = ["sh", "-c", "stty size; tty; read answer; stty size; echo got $answer"]
    with start_exec(live.url, live.job, live.token(), argv, tty=True, rows=30, cols=100) as s:
        s.read_until(b"30 100")
        s.resize(50, 120)
        s.send(b"yes\r")
        result = s.finish()
    assert result.status == {"exit_code": 0, "signal": None, "reason": None}
    text = result.stdout.decode()
    assert "/dev/pts/" in text and "50 120" in text and "got yes" in text
    assert result.stderr == b""  # a terminal has one stream


def test_an_invalid_start_or_a_broken_protocol_ends_the_session(live: Live) -> None:
    with open_ws(live.url, exec_path(live.job), live.token()) as ws:
        ws.send(json.dumps({"argv": [], "tty": "maybe"}))
        status = json.loads(ws.recv(timeout=10)[1:])
        assert status["exit_code"] is None and "argv" in status["reason"]
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4422

    with open_ws(live.url, exec_path(live.job), live.token()) as ws:
        ws.send(b"\x00binary first")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4400

    argv = ["sh", "-c", "echo $$; exec sleep 600"]
    with start_exec(live.url, live.job, live.token(), argv) as s:
        pid = int(s.read_until(b"\n").split()[0])
        s.ws.send(bytes([7]) + b"no such channel")
        result = s.finish()
    assert result.close_code == 4400 and "channel 7" in result.status["reason"]
    wait_for(lambda: not pid_alive(pid), what=f"pid {pid} to be gone")


def test_a_session_ends_with_its_job_and_leaves_nothing_behind(live: Live) -> None:
    center = live.center
    job = center.submit("sleep 600")
    center.wait_state(job["id"], "RUNNING")
    argv = ["sh", "-c", "sleep 600 & echo $! $$; wait"]
    with start_exec(live.url, job["id"], live.token(), argv) as s:
        pids = [int(p) for p in s.read_until(b"\n").split()]
        try:
            center.post(f"/v1/jobs/{job['id']}/cancel")
            result = s.finish()
        finally:
            kill_pids(pids)
    assert result.status == {"exit_code": 128 + 9, "signal": 9, "reason": "the job ended"}
    assert result.close_code == 1000
    assert center.wait_done(job["id"])["state"] == "CANCELLED"
    wait_for(lambda: not any(pid_alive(p) for p in pids), what="the session's processes gone")


def test_a_session_ends_when_its_job_times_out(live: Live) -> None:
    center = live.center
    job = center.submit("sleep 600", time_limit_seconds=2)
    center.wait_state(job["id"], "RUNNING")
    with start_exec(live.url, job["id"], live.token(), ["sleep", "600"]) as s:
        result = s.finish()
    assert result.status is not None and result.status["reason"] == "the job ended"
    assert center.wait_done(job["id"])["state"] == "TIMEOUT"


CLIENT = """
import json, sys, time
from websockets.sync.client import connect
url, token = sys.argv[1], sys.argv[2]
with connect(url, additional_headers={"Authorization": "Bearer " + token}) as ws:
    ws.send(json.dumps({"argv": ["sh", "-c", "sleep 600 & echo $! $$; wait"]}))
    print(ws.recv()[1:].decode().strip(), flush=True)
    time.sleep(600)
"""


def test_a_killed_client_leaves_no_process_behind(live: Live) -> None:
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, live.url + exec_path(live.job), live.token()],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    pids: list[int] = []
    try:
        assert client.stdout is not None
        pids = [int(p) for p in client.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        registry: SessionRegistry = live.center.app.state.sessions
        assert [s.pid for s in registry.sessions(live.job)] == [pids[1]]
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        wait_for(lambda: not any(pid_alive(p) for p in pids), what="the session's processes gone")
        wait_for(lambda: not registry.sessions(live.job), what="the session to be released")
    finally:
        client.kill()
        client.wait(10)
        kill_pids(pids)


def test_output_waits_for_a_client_that_stops_reading(live: Live) -> None:
    """Back-pressure: the center stops reading a command's output while the client does not
    read, instead of buffering it; the command blocks on its full pipe."""
    counter = live.center.home() / "written"
    writer = (
        "import os, sys\n"
        "chunk, total = b'x' * 65536, 0\n"
        "while True:\n"
        "    total += os.write(1, chunk)\n"
        f"    open({str(counter)!r} + '.tmp', 'w').write(str(total))\n"
        f"    os.replace({str(counter)!r} + '.tmp', {str(counter)!r})\n"
    )
    with open_ws(live.url, exec_path(live.job), live.token(), max_queue=1) as ws:
        ws.send(json.dumps({"argv": [sys.executable, "-c", writer]}))
        wait_for(counter.exists, what="the writer to start")
        # It stops writing: a few tens of MB at most are in the pipes, the sockets' buffers
        # and the client's one message (at GB/s it would never stop).
        last = -1
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = int(counter.read_text() or 0)
            if now == last:
                break
            last = now
            time.sleep(0.5)
        assert now == last, "the writer never stopped: output is buffered without bound"
        assert now < 64 * MB
        # Reading again lets it go on.
        for _ in range(200):
            ws.recv(timeout=10)
        wait_for(lambda: int(counter.read_text() or 0) > now, what="the writer to go on")


def test_session_limits_per_job_and_per_user(tmp_path: Path) -> None:
    with (
        jobs_center(tmp_path, exec_sessions_per_job=1, exec_sessions_per_user=2) as center,
        live_server(center.app) as url,
    ):
        jobs = [center.submit("sleep 600") for _ in range(3)]
        for job in jobs:
            center.wait_state(job["id"], "RUNNING")
        token = center.tokens["alice"]
        with start_exec(url, jobs[0]["id"], token, ["sleep", "600"]) as first:
            first.ws.ping().wait(10)
            status, body = refusal(url, exec_path(jobs[0]["id"]), token)
            assert (status, body["error"]["code"]) == (429, "too_many_sessions")
            assert f"job {jobs[0]['id']} has 1 exec sessions open" in body["error"]["message"]
            with start_exec(url, jobs[1]["id"], token, ["sleep", "600"]) as second:
                second.ws.ping().wait(10)
                status, body = refusal(url, exec_path(jobs[2]["id"]), token)
                assert status == 429 and "you have 2" in body["error"]["message"]
        # Closed sessions free their places.
        registry: SessionRegistry = center.app.state.sessions
        wait_for(lambda: not registry.sessions(), what="the sessions to be released")
        assert run_exec(url, jobs[2]["id"], token, ["true"]).status["exit_code"] == 0


def test_sessions_are_audited_without_their_arguments(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kaic.center.audit")
    secret = "hunter2-secret-argument"
    result = run_exec(live.url, live.job, live.token(), ["echo", secret], tty=True)
    assert result.status["exit_code"] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "kaic.center.audit"]
    opened = next(line for line in lines if "opened by alice" in line)
    assert f"on job {live.job}: 'echo', tty yes" in opened and "from 127.0.0.1" in opened
    session_id = opened.split()[2]
    ended = next(line for line in lines if line.startswith(f"exec session {session_id} of"))
    assert "ended: exit code 0" in ended and "bytes out" in ended
    assert not any(secret in line for line in lines)
    messages = [e["message"] for e in live.center.events(live.job)]
    assert f"exec session {session_id} opened by alice: 'echo', tty" in messages
    assert f"exec session {session_id} ended: exit code 0" in messages
    assert not any(secret in m for m in messages)

    refusal(live.url, exec_path(live.job), live.token("bob"))
    assert any(
        r.getMessage().startswith(f"exec session refused for bob on job '{live.job}': 404")
        for r in caplog.records
    )


# -- forward -------------------------------------------------------------------------------


def test_forward_carries_100_mb_byte_identical(live: Live) -> None:
    with open_forward(live.url, live.server, live.token(), live.echo_port) as ws:
        sent, received = forward_roundtrip(ws, 100 * MB)
        assert sent == received
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=30)
        assert ws.close_code == 1000


def test_fifty_forwards_at_once(live: Live) -> None:
    results: dict[int, tuple[str, str]] = {}
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            with open_forward(live.url, live.server, live.token(), live.echo_port) as ws:
                results[index] = forward_roundtrip(ws, 256 * 1024, seed=index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[:3]
    assert len(results) == 50 and all(sent == got for sent, got in results.values())


def test_a_server_that_closes_early(live: Live) -> None:
    with open_forward(live.url, live.server, live.token(), live.early_port) as ws:
        assert ws.recv(timeout=10) == b"bye"
        assert ws.recv(timeout=10) == b""  # EOF from the job's side
        ws.send(b"")  # ours
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1000


def test_a_refused_port_closes_with_4502(live: Live) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: refused
        with open_forward(live.url, live.server, live.token(), port) as ws:
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=10)
            assert ws.close_code == 4502
            assert ws.close_reason == f"connection refused on port {port} in job {live.server}"


def test_forwards_end_with_their_job(live: Live) -> None:
    center = live.center
    job = center.submit(server_script("ports-2"))
    center.wait_state(job["id"], "RUNNING")
    echo, _ = server_ports(center.home(), "ports-2")
    with open_forward(live.url, job["id"], live.token(), echo) as ws:
        ws.send(b"ping")
        assert ws.recv(timeout=10) == b"ping"
        center.post(f"/v1/jobs/{job['id']}/cancel")
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=20)
        assert ws.close_code in (4410, 1000, 1011)  # cut, or the server died first


def test_text_messages_break_a_forward(live: Live) -> None:
    with open_forward(live.url, live.server, live.token(), live.echo_port) as ws:
        ws.send("text is not allowed")
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=10)
        assert ws.close_code == 4400


# -- kind: interactive ---------------------------------------------------------------------


def test_an_interactive_job_holds_its_allocation_until_cancelled(live: Live) -> None:
    center = live.center
    used_before = next(
        p["gpu_hours_used"] for p in center.get("/v1/projects").json() if p["name"] == PROJECT
    )
    dry = center.post(
        "/v1/jobs",
        params={"dry_run": "true"},
        json={"kind": "interactive", "time_limit_seconds": 60},
    )
    assert dry.status_code == 200 and dry.json()["valid"] is True, dry.text
    response = center.post(
        "/v1/jobs",
        json={"kind": "interactive", "resources": {"gpus": 1}, "time_limit_seconds": 600},
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["kind"], job["name"]) == ("interactive", "interactive")
    center.wait_state(job["id"], "RUNNING")
    listed = center.get("/v1/jobs").json()["jobs"]
    assert {j["id"]: j["kind"] for j in listed}[job["id"]] == "interactive"
    assert {j["id"]: j["kind"] for j in listed}[live.job] == "batch"
    result = run_exec(live.url, job["id"], live.token(), ["sh", "-c", "echo $KAIC_JOB_ID"])
    assert result.stdout == f"{job['id']}\n".encode()
    time.sleep(0.05)  # some GPU time to charge
    center.post(f"/v1/jobs/{job['id']}/cancel")
    done = center.wait_done(job["id"])
    assert done["state"] == "CANCELLED" and done["kind"] == "interactive"
    used = next(
        p["gpu_hours_used"] for p in center.get("/v1/projects").json() if p["name"] == PROJECT
    )
    assert used > used_before  # charged like any job
    assert any("charged" in e["message"] for e in center.events(job["id"]))


def test_only_interactive_jobs_may_leave_out_run(live: Live) -> None:
    center = live.center
    error = assert_error(center.post("/v1/jobs", json={"name": "x"}), 422, "invalid_request")
    assert "body.run: Field required" in error["message"]
    error = assert_error(
        center.post("/v1/jobs", json={"kind": "batch", "resources": {"gpus": 0}}),
        422,
        "invalid_request",
    )
    assert "body.run" in error["message"]
    error = assert_error(
        center.post("/v1/jobs", json={"kind": "interactive", "array": "0-3"}), 422, "invalid_job"
    )
    assert "interactive allocation is one job" in error["message"]
    error = assert_error(center.post("/v1/jobs", json={"kind": "shell"}), 422, "invalid_request")
    assert "body.kind" in error["message"]
