"""The executor conformance suite: what every executor must do, through a real center.

Every executor of the registry (`kaic.center.executors.registry`) runs this suite: submit,
exit codes, signals (128+N), logs (stdout/stderr content, complete and in order, followed),
cancel (CANCELLED), arrays (with a `%` limit), dependencies (after-ok, and never
satisfied), restart recovery (the center restarted while jobs run: re-attached, ending
right), interactive sessions through a real WebSocket client (exec: exit codes, stdout and
stderr apart, stdin, a tty that resizes, the job's environment; forward: bytes identical
both ways, a server that closes early, a refused port; sessions end with their job, and a
client that vanishes leaves no process behind) and time limits (TIMEOUT, last: a batch
system counts them in minutes, so those jobs — and an interactive one with a session in
it — are submitted when the center starts and checked at the end).

**Adding an executor** (containers, multi-node, ...): put it in `kaic/center/executors/<name>/`
with its registry entry, then subclass `ExecutorConformance` in a test module of its own,
with a class-scoped `harness` fixture that starts a center over it (`harness.running`):
copy `tests/center/conformance/test_local.py`, or, for one that needs a service,
`tests/slurm/test_conformance.py` and the `slurm_harness` fixture of `tests/slurm/conftest.py`.
Name the module in `CONFORMANCE` below and state in `Facts` the few things that may differ
(nothing else may). `test_registry.py` fails until every registered executor has its run. A
test that needs a service it cannot find must fail under `CI=true`
(`tests.helpers.unavailable`).

The Slurm run lives in `tests/slurm/`, over the session's private Slurm cluster (its own munged
socket and ports: several runs may go on at once).
"""

from __future__ import annotations

import socket

import pytest
from websockets.exceptions import ConnectionClosed

from tests.center.conformance.harness import Harness
from tests.center.conftest import assert_error
from tests.center.interactive_support import (
    forward_roundtrip,
    kill_pids,
    open_forward,
    pid_alive,
    run_exec,
    server_ports,
    server_script,
    start_exec,
)
from tests.center.jobs_support import max_overlap, spans, wait_for

#: every registered executor -> the test module that runs this suite against it
CONFORMANCE = {
    "local": "tests/center/conformance/test_local.py",
    "slurm": "tests/slurm/test_conformance.py",
}


def wait_for_file(name: str) -> str:
    """A script line that waits until `$HOME/<name>` exists."""
    return f'while [ ! -e "$HOME/{name}" ]; do sleep 0.02; done\n'


class ExecutorConformance:
    """The checklist; a subclass provides a class-scoped `harness` fixture."""

    #: the registry name of the executor under test
    executor: str = ""

    @pytest.fixture
    def h(self, harness: Harness) -> Harness:
        assert harness.settings.executor == self.executor
        return harness

    def test_submit_exit_codes_and_signals(self, h: Harness) -> None:
        center = h.center
        ok = center.submit("echo hello", name="ok")
        failed = center.submit("echo oops >&2; exit 7")
        signalled = center.submit("kill -TERM $$; sleep 5")
        killed = center.submit("kill -KILL $$")
        usr1 = center.submit("kill -USR1 $$")
        assert ok["id"].isdigit() and ok["state"] == "PENDING" and ok["name"] == "ok"
        assert int(failed["id"]) == int(ok["id"]) + 1

        done = h.wait_done(ok["id"])
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        assert done["started_at"] and done["ended_at"] and done["user"] == "alice"
        assert center.stdout(ok["id"]) == "hello\n"

        done = h.wait_done(failed["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 7)
        assert center.logs(failed["id"], stream="stderr").text == "oops\n"

        for job, sig in ((signalled, 15), (killed, 9), (usr1, 10)):
            done = h.wait_done(job["id"])
            assert (done["state"], done["exit_code"]) == ("FAILED", 128 + sig), done
            assert done["reason"] == f"killed by signal {sig}", done

        events = center.events(failed["id"])
        assert events[0]["message"] == "submitted"
        assert events[-1]["state"] == "FAILED" and "exit code 7" in events[-1]["message"]

    def test_logs_are_complete_and_in_order(self, h: Harness) -> None:
        script = (
            "for b in $(seq 0 19); do for i in $(seq 1 500); do n=$((b*500+i)); "
            'echo "out $n"; echo "err $n" >&2; done; sleep 0.1; done; exit 3'
        )
        job = h.center.submit(script)
        h.wait_state(job["id"], "RUNNING", "FAILED")
        followed = h.center.logs(job["id"], follow="true")  # ends when the job has ended
        assert followed.status_code == 200
        assert followed.text.splitlines() == [f"out {n}" for n in range(1, 10_001)]
        done = h.wait_done(job["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 3)
        stderr = h.center.logs(job["id"], stream="stderr").text
        assert stderr.splitlines() == [f"err {n}" for n in range(1, 10_001)]

    def test_cancel_running_pending_and_terminal(self, h: Harness) -> None:
        center = h.center
        running = center.submit("sleep 300", resources={"gpus": h.facts.gpus})
        pending = center.submit("echo never", resources={"gpus": h.facts.gpus})
        h.wait_state(running["id"], "RUNNING")
        wait_for(
            lambda: center.job(pending["id"])["reason"] == "Resources",
            timeout=h.facts.deadline,
            what="the second job to wait for GPUs",
        )

        response = center.post(f"/v1/jobs/{pending['id']}/cancel")
        assert response.status_code == 200, response.text
        if h.facts.cancels_pending_at_once:
            assert response.json()["state"] == "CANCELLED"

        response = center.post(f"/v1/jobs/{running['id']}/cancel")
        assert response.status_code == 200
        done = h.wait_done(running["id"])
        assert (done["state"], done["exit_code"]) == ("CANCELLED", 128 + 15)
        assert done["reason"] == "cancelled by the user"
        messages = [e["message"] for e in center.events(running["id"])]
        assert any(m.startswith("cancel requested") for m in messages)
        assert any(m.startswith(h.facts.running_event) for m in messages), messages

        again = center.post(f"/v1/jobs/{running['id']}/cancel").json()
        assert again == done
        done = h.wait_done(pending["id"])
        assert done["state"] == "CANCELLED" and done["reason"] == "cancelled by the user"
        assert center.stdout(pending["id"]) == ""

    def test_array_respects_its_limit(self, h: Harness) -> None:
        center = h.center
        script = (
            'echo "task $KAIC_ARRAY_TASK_ID of $KAIC_ARRAY_JOB_ID as $KAIC_JOB_ID"\n'
            f'echo "start $(date +%s.%N)"\nsleep {h.facts.task_seconds}\n'
            'echo "end $(date +%s.%N)"\n'
        )
        parent = center.submit(script, user="bob", array="0-3%2", name="arr")
        array_id = parent["id"]
        assert parent["array_tasks"] == [f"{array_id}_{i}" for i in range(4)]
        assert parent["state"] == "PENDING"
        done = h.wait_done(array_id, user="bob")
        assert (done["state"], done["exit_code"]) == ("COMPLETED", 0)
        intervals = []
        for index, task_id in enumerate(parent["array_tasks"]):
            task = center.job(task_id, user="bob")
            assert task["array_job_id"] == array_id and task["array_task_id"] == index
            assert task["state"] == "COMPLETED"
            out = center.stdout(task_id, user="bob")
            assert out.startswith(f"task {index} of {array_id} as {task_id}\n")
            intervals.append(spans(out))
        assert max_overlap(intervals) <= 2
        assert any(
            e["message"] == "pending: JobArrayTaskLimit" for t in parent["array_tasks"]
            for e in center.events(t, user="bob")
        )  # fmt: skip

        listed = center.get("/v1/jobs", user="bob").json()["jobs"]
        assert [j["id"] for j in listed] == [array_id]
        error = assert_error(center.logs(array_id, user="bob"), 422, "invalid_request")
        assert f"{array_id}_0" in error["message"]

    def test_array_state_is_that_of_its_first_failed_task(self, h: Harness) -> None:
        center = h.center
        parent = center.submit('exit "$KAIC_ARRAY_TASK_ID"', array="0,3,5")
        done = h.wait_done(parent["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 3)
        assert done["reason"].startswith(f"task {parent['id']}_3 ended FAILED")
        cancelled = center.submit("sleep 30", array="0-5%1")
        h.wait_state(cancelled["array_tasks"][0], "RUNNING")
        assert center.job(cancelled["id"])["state"] == "RUNNING"
        center.post(f"/v1/jobs/{cancelled['id']}/cancel")
        done = h.wait_done(cancelled["id"])
        assert done["state"] == "CANCELLED"
        wait_for(
            lambda: {center.job(t)["state"] for t in cancelled["array_tasks"]} == {"CANCELLED"},
            timeout=h.facts.deadline,
            what="every task CANCELLED",
        )

    def test_dependencies_after_ok_and_never_satisfied(self, h: Harness) -> None:
        center = h.center
        first = center.submit(wait_for_file("go-deps") + "echo first")
        second = center.submit("echo second", depends_on=[first["id"]])
        wait_for(
            lambda: center.job(second["id"])["reason"] == "Dependency",
            timeout=h.facts.deadline,
            what="the dependant to wait for its dependency",
        )
        assert center.job(second["id"])["depends_on"] == [first["id"]]
        h.wait_state(first["id"], "RUNNING")
        started = f"{h.facts.running_event} {first['partition']} with GPUs none"
        assert any(e["message"].startswith(started) for e in center.events(first["id"]))
        (center.home() / "go-deps").touch()
        assert h.wait_done(second["id"])["state"] == "COMPLETED"
        assert center.stdout(second["id"]) == "second\n"
        assert center.job(first["id"])["ended_at"] <= center.job(second["id"])["started_at"]

        # A dependency that already failed: the dependant never runs.
        failing = center.submit("exit 1")
        assert h.wait_done(failing["id"])["state"] == "FAILED"
        dependant = center.submit("echo never", depends_on=[failing["id"], first["id"]])
        done = h.wait_done(dependant["id"])
        assert done["state"] == "CANCELLED"
        assert done["reason"] == f"DependencyNeverSatisfied: job {failing['id']} ended FAILED"
        assert center.stdout(dependant["id"]) == ""
        # One that fails while the dependant waits for it: the same, once it has failed.
        bad = center.submit("sleep 1; false")
        child = center.submit("echo never", depends_on=[bad["id"]])
        done = h.wait_done(child["id"])
        assert done["state"] == "CANCELLED", done
        assert done["reason"].startswith("DependencyNeverSatisfied"), done
        assert center.stdout(child["id"]) == ""

        response = center.post("/v1/jobs", json={"run": "true", "depends_on": ["999"]})
        assert_error(response, 422, "invalid_job")

    def test_restart_reattaches_running_jobs(self, h: Harness) -> None:
        go = wait_for_file("go-restart")
        center = h.center
        reattached = center.submit(go + "echo done; exit 5", resources={"gpus": 1})
        finished = center.submit(go + "echo finished", resources={"gpus": 1})
        queued = center.submit("echo queued", resources={"gpus": 1})
        waiting = center.submit("echo next", depends_on=[reattached["id"]])
        for job in (reattached, finished):
            h.wait_state(job["id"], "RUNNING")
        h.wait_state(queued["id"], "PENDING")

        h.restart()  # the first center is gone; its jobs are not
        center = h.center
        job = center.job(reattached["id"])
        assert job["state"] == "RUNNING" and job["gpu_ids"]
        messages = [e["message"] for e in center.events(reattached["id"])]
        assert "re-attached after a center restart" in messages
        # Its GPUs stay taken: the queued job still waits.
        assert center.job(queued["id"])["state"] == "PENDING"
        (center.home() / "go-restart").touch()
        done = h.wait_done(reattached["id"])
        assert (done["state"], done["exit_code"]) == ("FAILED", 5)
        assert h.wait_done(finished["id"])["state"] == "COMPLETED"
        assert h.wait_done(queued["id"])["state"] == "COMPLETED"
        assert center.stdout(reattached["id"]) == "done\n"
        done = h.wait_done(waiting["id"])
        assert done["state"] == "CANCELLED" and done["reason"].startswith(
            "DependencyNeverSatisfied"
        )

    # -- interactive sessions ------------------------------------------------------------

    def test_exec_exit_codes_streams_stdin_and_environment(self, h: Harness) -> None:
        job = h.held_job()
        script = 'cat; echo to-stderr >&2; echo "$KAIC_JOB_ID $MINE"; pwd; exit 7'
        result = run_exec(
            h.url, job, h.token(), ["sh", "-c", script], stdin=b"typed\n", env={"MINE": "x"}
        )
        assert result.status == {"exit_code": 7, "signal": None, "reason": None}, result
        lines = result.stdout.decode().splitlines()
        assert lines[:2] == ["typed", f"{job} x"], result
        assert lines[2] == str(h.center.home()) or lines[2].endswith("/storage/alice"), lines
        assert result.stderr == b"to-stderr\n"
        assert result.close_code == 1000
        killed = run_exec(h.url, job, h.token(), ["sh", "-c", "kill -TERM $$"])
        assert killed.status is not None and killed.status["exit_code"] == 128 + 15, killed
        assert killed.stderr == b""

    def test_exec_tty_resizes(self, h: Harness) -> None:
        job = h.held_job()
        argv = ["sh", "-c", "stty size; read answer; stty size; echo got $answer; exit 3"]
        with start_exec(h.url, job, h.token(), argv, tty=True, rows=30, cols=100) as s:
            s.read_until(b"30 100")
            s.resize(50, 120)
            s.send(b"yes\r")
            result = s.finish()
        assert result.status is not None and result.status["exit_code"] == 3, result
        assert b"50 120" in result.stdout and b"got yes" in result.stdout, result
        assert b"srun" not in result.stdout

    def test_a_vanished_client_leaves_no_process(self, h: Harness) -> None:
        job = h.held_job()
        argv = ["sh", "-c", "sleep 600 & echo $! $$; wait"]
        pids: list[int] = []
        try:
            with start_exec(h.url, job, h.token(), argv) as s:
                pids = [int(p) for p in s.read_until(b"\n").split()]
                assert all(pid_alive(p) for p in pids)
                s.ws.socket.shutdown(socket.SHUT_RDWR)  # gone, without a close
            wait_for(
                lambda: not any(pid_alive(p) for p in pids),
                timeout=h.facts.deadline,
                what="the session's processes to be gone",
            )
        finally:
            kill_pids(pids)

    def test_sessions_end_with_their_job(self, h: Harness) -> None:
        center = h.center
        job = center.submit("", kind="interactive")
        h.wait_state(job["id"], "RUNNING")
        argv = ["sh", "-c", "sleep 600 & echo $! $$; wait"]
        pids: list[int] = []
        try:
            with start_exec(h.url, job["id"], h.token(), argv) as s:
                pids = [int(p) for p in s.read_until(b"\n").split()]
                center.post(f"/v1/jobs/{job['id']}/cancel")
                result = s.finish(timeout=h.facts.deadline)
            assert result.status is not None and result.status["reason"] == "the job ended"
            assert h.wait_done(job["id"])["state"] == "CANCELLED"
            wait_for(
                lambda: not any(pid_alive(p) for p in pids),
                timeout=h.facts.deadline,
                what="the session's processes to be gone",
            )
        finally:
            kill_pids(pids)

    def test_forward_bytes_both_ways(self, h: Harness) -> None:
        center = h.center
        server = center.submit(server_script("conformance-ports"), name="server")
        h.wait_state(server["id"], "RUNNING")
        echo, early = server_ports(center.home(), "conformance-ports", timeout=h.facts.deadline)
        with open_forward(h.url, server["id"], h.token(), echo) as ws:
            sent, received = forward_roundtrip(ws, 8 * 1024 * 1024)
            assert sent == received
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=h.facts.deadline)
            assert ws.close_code == 1000
        with open_forward(h.url, server["id"], h.token(), early) as ws:
            assert ws.recv(timeout=h.facts.deadline) == b"bye"
            assert ws.recv(timeout=h.facts.deadline) == b""
            ws.send(b"")
            with pytest.raises(ConnectionClosed):
                ws.recv(timeout=h.facts.deadline)
            assert ws.close_code == 1000
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
            with open_forward(h.url, server["id"], h.token(), port) as ws:
                with pytest.raises(ConnectionClosed):
                    ws.recv(timeout=h.facts.deadline)
                assert ws.close_code == 4502, ws.close_reason
                assert ws.close_reason == f"connection refused on port {port} in job {server['id']}"
        center.post(f"/v1/jobs/{server['id']}/cancel")
        h.wait_done(server["id"])

    def test_time_limit_ends_jobs_with_timeout(self, h: Harness) -> None:
        """Last: the time-limited jobs were submitted when the center started."""
        center = h.center
        deadline = 3 * h.facts.time_limit + h.facts.deadline
        polite = center.wait_state(h.early["polite"], timeout=deadline)
        assert (polite["state"], polite["exit_code"]) == ("TIMEOUT", 128 + 15), polite
        assert polite["reason"] == "time limit reached"
        stubborn = center.wait_state(h.early["stubborn"], timeout=deadline)
        assert (stubborn["state"], stubborn["exit_code"]) == ("TIMEOUT", 128 + 9), stubborn
        assert any("time limit" in e["message"] for e in center.events(stubborn["id"]))
        # The session opened in the interactive job ended with it.
        early = h.early_session
        assert early is not None and early.thread is not None
        held = center.wait_state(early.job_id, timeout=deadline)
        assert held["state"] == "TIMEOUT" and held["kind"] == "interactive", held
        early.thread.join(h.facts.deadline)
        assert early.error is None, early.error
        if early.ended_before_reopen:
            return  # cut by the center's restart; the job timed out before it could reopen
        assert early.result is not None and early.result.status is not None, early.result
        assert early.result.status["reason"] == "the job ended", early.result
