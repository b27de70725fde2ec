"""`kaic exec` and `kaic forward` end to end: the real CLI against a real center on loopback
(local executor), into a real running job.

exec: exit codes (128+N for a signal), stdout and stderr separate, stdin passed, the job's
own environment; refusals: bob cannot reach alice's job (exit 4, as if it did not exist), a
job that is not RUNNING is a rejection naming its state (exit 6), an API token without
`jobs:exec` is refused (exit 6). forward: 100 MB through one connection byte for byte
(sha256), 50 connections at once, a job-side server that closes early, a port nothing
listens on (said, and the forward goes on), and the forward ends when the job does.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.test_login import login
from tests.helpers import RunningCenter, cli_env, free_port, poll, run_cli, start_center

PASSWORD = "correct horse battery staple"


@pytest.fixture
def center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A center with 2 (pretend) GPUs and a short kill grace; alice logged in, bob a user."""
    running = start_center(
        tmp_path / "center", "--gpus", "2", "--gpu-type", "H100", "--kill-grace", "1"
    )
    try:
        running.add_user("alice", PASSWORD)
        running.add_user("bob", PASSWORD)
        running.add_project("ai-2026-0042", 5000, ["alice"])
        login(running, "alice", PASSWORD)
        yield running
    finally:
        running.stop()


def state(job_id: str, **kw: object) -> str:
    return run_cli("show", job_id, "--json", **kw).json()["state"]  # type: ignore[arg-type,index,no-any-return]


def running_job(*command: str, gpus: int = 1) -> str:
    job_id = run_cli("submit", "--gpus", str(gpus), "--", *command).stdout.strip()
    poll(lambda: state(job_id) == "RUNNING")
    return job_id


def test_exec_exit_codes_streams_stdin_and_the_jobs_environment(center: RunningCenter) -> None:
    job_id = running_job("sh", "-c", "pwd; exec sleep 300")
    run_cli("exec", job_id, "--", "sh", "-c", "exit 7", expect=7)
    run_cli("exec", job_id, "--", "sh", "-c", "kill -USR1 $$", expect=128 + 10)
    both = run_cli("exec", job_id, "--", "sh", "-c", "echo out; echo err >&2; echo out2")
    assert both.stdout == "out\nout2\n" and "err\n" in both.stderr and "err" not in both.stdout
    data = "".join(f"line {i}\n" for i in range(20000))
    hashed = run_cli("exec", job_id, "--", "sha256sum", input=data)
    assert hashed.stdout.split()[0] == hashlib.sha256(data.encode()).hexdigest()
    env = run_cli(
        "exec", job_id, "--", "sh", "-c", 'echo "$KAIC_JOB_ID $CUDA_VISIBLE_DEVICES"; pwd'
    )
    job = run_cli("show", job_id, "--json").json()
    assert isinstance(job, dict)
    words, cwd = env.stdout.splitlines()
    assert words.split() == [job_id, ",".join(map(str, job["gpu_ids"]))]
    assert cwd == run_cli("logs", job_id).stdout.strip()  # the job's own workdir
    run_cli("exec", job_id, "--", "no-such-command-kaic", expect=127)


def test_exec_refusals_and_their_exit_codes(center: RunningCenter, tmp_path: Path) -> None:
    job_id = running_job("sleep", "300", gpus=2)
    # Bob cannot tell alice's job exists: 404, exit 4, for exec and forward alike.
    bob = {
        **os.environ,
        "KAIC_CONFIG_DIR": str(tmp_path / "bob"),
        "KAIC_TEST_KEYRING_FILE": str(tmp_path / "bob-keyring.json"),
    }
    run_cli(
        "login",
        "--center",
        center.url,
        "--username",
        "bob",
        "--password-stdin",
        input=PASSWORD + "\n",
        env=bob,
    )
    denied = run_cli("exec", job_id, "--", "id", env=bob, expect=4)
    assert "alice" not in denied.stderr and "Traceback" not in denied.stderr
    run_cli("forward", job_id, "8888", env=bob, expect=4)
    # Not RUNNING: a rejection naming the state (a second 2-GPU job waits: PENDING).
    pending = run_cli("submit", "--gpus", "2", "--", "true").stdout.strip()
    res = run_cli("exec", pending, "--", "true", expect=6)
    assert "PENDING" in res.stderr
    res = run_cli("forward", pending, "8888", expect=6)
    assert "PENDING" in res.stderr
    run_cli("cancel", job_id, pending)
    poll(lambda: state(job_id) == "CANCELLED")
    res = run_cli("exec", job_id, "--", "true", expect=6)
    assert "CANCELLED" in res.stderr
    # An API token needs the jobs:exec scope.
    other = running_job("sleep", "300")
    scoped = run_cli("token", "create", "ci", "--scope", "jobs:read", "--json").json()
    env = {**os.environ, "KAIC_CENTER": center.url, "KAIC_TOKEN": scoped["token"]}  # type: ignore[index]
    res = run_cli("exec", other, "--", "true", env=env, expect=6)
    assert "jobs:exec" in res.stderr
    full = run_cli("token", "create", "ci-exec", "--scope", "jobs:read,jobs:exec", "--json").json()
    env["KAIC_TOKEN"] = full["token"]  # type: ignore[index]
    assert run_cli("exec", other, "--", "echo", "ok", env=env).stdout == "ok\n"


# -- forward ---------------------------------------------------------------------------------

JOB_SERVERS = textwrap.dedent(
    """
    import socket, sys, threading
    echo_port, early_port, ready = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    def echo(conn):
        with conn:
            while True:
                data = conn.recv(1 << 16)
                if not data:
                    return  # the client's EOF: close our side too
                conn.sendall(data)

    def early(conn):
        with conn:
            conn.sendall(b"bye\\n")

    def serve(port, handler):
        sock = socket.create_server(("127.0.0.1", port), backlog=128)
        return sock, handler

    servers = [serve(echo_port, echo), serve(early_port, early)]
    open(ready, "w").close()

    def loop(sock, handler):
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    for sock, handler in servers[1:]:
        threading.Thread(target=loop, args=(sock, handler), daemon=True).start()
    loop(*servers[0])
    """
)


class Forward:
    """`kaic forward` running in the background: its URLs, its stderr, its exit."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kaic", "forward", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
        )
        self.urls: list[str] = []

    def wait_for_urls(self, count: int) -> list[str]:
        assert self.proc.stdout is not None
        while len(self.urls) < count:
            line = self.proc.stdout.readline().decode()
            assert line, f"kaic forward ended early: {self.finish()}"
            self.urls.append(line.strip())
        return self.urls

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        try:
            _out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _out, err = self.proc.communicate()
        return self.proc.returncode, err.decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _connect(url: str) -> socket.socket:
    port = int(url.rsplit(":", 1)[1])
    return socket.create_connection(("127.0.0.1", port), timeout=60)


def _echo_through(url: str, payload: bytes) -> bytes:
    """Send `payload` while reading the echo, then half-close; all that came back."""
    with _connect(url) as sock:
        got = bytearray()

        def send() -> None:
            for i in range(0, len(payload), 1 << 16):
                sock.sendall(payload[i : i + (1 << 16)])
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        while data := sock.recv(1 << 20):
            got.extend(data)
        sender.join()
    return bytes(got)


def test_forward_bytes_concurrency_early_close_refusal_and_job_end(
    center: RunningCenter, tmp_path: Path
) -> None:
    script = tmp_path / "servers.py"
    script.write_text(JOB_SERVERS)
    ready = tmp_path / "ready"
    echo_port, early_port, closed_port = free_port(), free_port(), free_port()
    job_id = running_job(
        sys.executable, str(script), str(echo_port), str(early_port), str(ready), gpus=0
    )
    poll(ready.exists)
    local = [free_port(), free_port(), free_port()]
    forward = Forward(
        job_id,
        f"{echo_port}:{local[0]}",
        f"{early_port}:{local[1]}",
        f"{closed_port}:{local[2]}",
    )
    try:
        echo_url, early_url, closed_url = forward.wait_for_urls(3)
        assert echo_url == f"http://127.0.0.1:{local[0]}"

        # 100 MB through one connection, byte for byte.
        payload = os.urandom(100 * 1024 * 1024)
        back = _echo_through(echo_url, payload)
        assert len(back) == len(payload)
        assert hashlib.sha256(back).hexdigest() == hashlib.sha256(payload).hexdigest()

        # 50 connections at once, each its own bytes.
        def one(i: int) -> bool:
            data = os.urandom(64 * 1024) + str(i).encode()
            return _echo_through(echo_url, data) == data

        with ThreadPoolExecutor(50) as pool:
            assert all(pool.map(one, range(50)))

        # A job-side server that closes at once: its bytes, then EOF.
        with _connect(early_url) as sock:
            got = b""
            while data := sock.recv(1024):
                got += data
        assert got == b"bye\n"

        # Nothing listens on the port in the job: this connection ends, the forward goes on.
        with _connect(closed_url) as sock:
            assert sock.recv(1024) == b""
        assert _echo_through(echo_url, b"still here") == b"still here"

        # The job ends: so does the forward (exit 0, saying why).
        run_cli("cancel", job_id)
        code, err = forward.finish()
        assert code == 0, err
        assert f"connection refused on port {closed_port} in job {job_id}" in err
        assert f"job {job_id} ended CANCELLED; forwarding stopped" in err
    finally:
        forward.stop()


def test_forward_local_port_taken_names_the_fix(center: RunningCenter) -> None:
    job_id = running_job("sleep", "300", gpus=0)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        res = run_cli("forward", job_id, str(port), expect=1)
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert f"kaic forward {job_id} {port}:LOCALPORT" in res.stderr


FAKE_JUPYTER = """#!/bin/sh
# Stands in for JupyterLab (not installed in CI): HTTP on the --port it is given.
for arg; do case $arg in --port=*) port=${arg#--port=};; esac; done
echo "    http://127.0.0.1:$port/lab?token=not-a-real-token" >&2
exec "$FAKE_JUPYTER_PYTHON" -m http.server --bind 127.0.0.1 "$port"
"""


def test_jupyter_example_reached_through_forward(center: RunningCenter, tmp_path: Path) -> None:
    """examples/jupyter.yaml as the README shows it, with a small HTTP server as `jupyter`."""
    import urllib.request

    from tests.helpers import REPO

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "jupyter").write_text(FAKE_JUPYTER)
    (bin_dir / "jupyter").chmod(0o755)
    port, local = free_port(), free_port()
    job_id = run_cli(
        "submit",
        str(REPO / "examples" / "jupyter.yaml"),
        "--gpus",
        "0",
        "--env",
        f"JUPYTER_PORT={port}",
        "--env",
        f"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "--env",
        f"FAKE_JUPYTER_PYTHON={sys.executable}",
    ).stdout.strip()
    poll(lambda: "token=" in run_cli("logs", job_id, "--stream", "stderr").stderr)
    forward = Forward(job_id, f"{port}:{local}")
    try:
        (url,) = forward.wait_for_urls(1)
        with urllib.request.urlopen(url + "/", timeout=30) as answer:
            assert answer.status == 200 and b"Directory listing" in answer.read()
        run_cli("cancel", job_id)
        code, err = forward.finish()
        assert code == 0, err
    finally:
        forward.stop()


def test_exec_session_ends_with_the_job(center: RunningCenter) -> None:
    job_id = running_job("sleep", "300", gpus=0)
    proc = subprocess.Popen(
        [sys.executable, "-m", "kaic", "exec", job_id, "--", "sh", "-c", "echo started; sleep 120"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"started\n"
        run_cli("cancel", job_id)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode >= 128, err  # killed by a signal: 128+N, as for jobs
    assert f"session in job {job_id} ended: the job ended" in err.decode()
