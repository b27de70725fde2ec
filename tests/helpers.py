"""Test helpers: run the real CLI in a subprocess, start a real center on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)

    def explain(self) -> str:
        return (
            f"kaic {' '.join(self.args)} exited {self.code}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


def cli_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def run_cli(
    *args: str,
    expect: int | None = 0,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Result:
    """Run `python -m kaic ARGS` for real; on an unexpected exit code, fail with its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "kaic", *args],
        cwd=cwd,
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        env=cli_env(env),
        timeout=timeout,
    )
    res = Result(list(args), proc.returncode, proc.stdout, proc.stderr)
    if expect is not None and res.code != expect:
        raise AssertionError(f"expected exit {expect}\n{res.explain()}")
    return res


def run_in_pty(
    *args: str,
    answers: list[tuple[str, str]],
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, typing each answer when its prompt appears.

    Returns the exit code and everything the terminal showed.
    """
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(sys.executable, [sys.executable, "-m", "kaic", *args], cli_env(env))
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                shown += chunk
            if pending and pending[0][0].encode() in shown:
                _wait_echo_off(fd)
                os.write(fd, pending.pop(0)[1].encode() + b"\r")
                shown += b"\n"
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def _wait_echo_off(fd: int, limit: float = 2.0) -> None:
    """Wait until the program turned echo off for a hidden prompt (getpass flushes input
    typed before that, so an early answer would be lost)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if not termios.tcgetattr(fd)[3] & termios.ECHO:
            return
        time.sleep(0.01)


@dataclass
class RunningCenter:
    """A real reference center process on 127.0.0.1, stopped by PID at teardown."""

    url: str
    pid: int
    state_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path
    users: dict[str, str] = field(default_factory=dict)

    def add_user(
        self,
        name: str,
        password: str | None = "pw-" + "x" * 12,
        *,
        otp: bool = False,
        unix_account: str | None = None,
    ) -> str | None:
        from kaic.center.admin import add_user

        uri = add_user(
            self.state_dir, name, password=password, enable_otp=otp, unix_account=unix_account
        )
        if password:
            self.users[name] = password
        return uri

    def add_project(self, name: str, gpu_hours: float, members: list[str]) -> None:
        from kaic.center.admin import add_project

        add_project(self.state_dir, name, gpu_hours=gpu_hours, members=members)

    def stop(self, *, kill_jobs: bool = True) -> None:
        """Stop the center by PID, then any job it left running (a center's graceful stop
        keeps jobs running for its restart; a test must not leave them behind)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if kill_jobs:
            self.kill_jobs()

    def kill_jobs(self) -> None:
        kill_center_jobs(self.state_dir)


def kill_center_jobs(state_dir: Path) -> None:
    """SIGKILL the process group of every job a (stopped) center left RUNNING."""
    import sqlite3

    db = state_dir / "center.db"
    if not db.exists():
        return
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT pgid FROM jobs WHERE state = 'RUNNING' AND pgid IS NOT NULL"
        ).fetchall()
    for (pgid,) in rows:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(int(pgid), signal.SIGKILL)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_center(
    state_dir: Path,
    *extra: str,
    port: int = 0,
    timeout: float = 30,
    env: Mapping[str, str] | None = None,
) -> RunningCenter:
    """Start `kaic center serve` on a loopback port (0 = free) and wait until it is ready.

    `env` adds variables to the center's environment (e.g. KAIC_SLURM_JWT)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    chosen = {"--run-as-user", "--executor", "--single-account-ok"} & set(extra)
    if os.geteuid() == 0 and not chosen:
        # A root center runs no job as root unless its operator accepts it explicitly: the
        # tests, run as root, do (jobs as users: tests/e2e/test_run_as_user.py).
        extra = (*extra, "--single-account-ok")
    ready = state_dir / "ready.json"
    with contextlib.suppress(FileNotFoundError):
        ready.unlink()
    log = state_dir / "center.log"
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kaic",
                "center",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--state-dir",
                str(state_dir),
                "--ready-file",
                str(ready),
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            env=cli_env(**(env or {})),
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"center exited {proc.returncode}:\n{log.read_text()}")
        if ready.exists():
            try:
                data = json.loads(ready.read_text())
            except ValueError:
                data = None
            if data and data.get("pid") == proc.pid:
                return RunningCenter(str(data["url"]), proc.pid, state_dir, proc, log)
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"center not ready in {timeout} s:\n{log.read_text()}")


def unavailable(message: str) -> NoReturn:
    """A service or tool the test needs is missing: skip locally, fail when `CI=true` (CI
    installs everything, so a skip there would hide a broken setup)."""
    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


#: serialises account creation across test processes (pytest-xdist workers): useradd takes
#: /etc/passwd's lock and fails, rather than waits, when another useradd holds it
_ACCOUNTS_LOCK = Path("/tmp/kaic-tests-accounts.lock")


def ensure_account(name: str, *, home: bool = False, shell: str = "/usr/sbin/nologin") -> None:
    """Create the unix account `name` if it is missing (needs root); with `home`, with a
    home directory. Safe to call from several test processes at once."""
    import fcntl
    import pwd

    with open(_ACCOUNTS_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        argv = ["useradd", "--shell", shell, "--create-home" if home else "--no-create-home"]
        result = subprocess.run([*argv, name], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"useradd {name} failed: {result.stderr.strip()}")


def poll(
    fn: Callable[[], Any], *, timeout: float = 30, every: float = 0.1, what: str = "a condition"
) -> Any:
    """`fn()`'s first true value, asked every `every` seconds; AssertionError after `timeout`
    (the end-to-end tests' one way to wait for a state: no sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
