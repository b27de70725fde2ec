"""The embedded local center: auto-start, one center for concurrent starters, stop, stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from kaic.flows.local_center import _pid_alive
from tests.helpers import cli_env, run_cli


def center_dir(home: Path) -> Path:
    return home / "state" / "center"


def test_whoami_autostarts_local_center(isolated_dirs: Path) -> None:
    res = run_cli("whoami", "--json")
    me = res.json()
    assert isinstance(me, dict)
    assert me["token_source"] == "local"
    assert me["center"].startswith("http://127.0.0.1:")
    assert me["projects"] == ["local"]
    assert "local center" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    token = center_dir(isolated_dirs) / "local-token"
    assert token.stat().st_mode & 0o777 == 0o600
    status = run_cli("center", "status", "--json").json()
    assert status["running"] is True and status["url"] == me["center"]  # type: ignore[index]
    # A second command reuses the running center.
    again = run_cli("whoami", "--json").json()
    assert again["center"] == me["center"]  # type: ignore[index]
    stopped = run_cli("center", "stop", "--json").json()
    assert stopped["stopped"] is True  # type: ignore[index]
    assert run_cli("center", "status", "--json").json()["running"] is False  # type: ignore[index]


def test_two_concurrent_starters_start_one_center(isolated_dirs: Path) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "kaic", "whoami", "--json"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=cli_env(),
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    urls = {json.loads(o)["center"] for o, _ in outs}
    assert len(urls) == 1
    notices = sorted(e.split(" the local center")[0] for _, e in outs)
    assert notices == ["kaic: started", "kaic: using"]


def test_stale_ready_file_is_replaced(isolated_dirs: Path) -> None:
    first = run_cli("center", "start", "--json").json()
    assert isinstance(first, dict)
    # Kill it hard: the ready file stays behind, pointing at a dead pid.
    os.kill(first["pid"], signal.SIGKILL)
    ready = center_dir(isolated_dirs) / "center.json"
    deadline = time.monotonic() + 10
    while _pid_alive(first["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(first["pid"]) and ready.exists()
    me = run_cli("whoami", "--json").json()
    new = json.loads(ready.read_text())
    assert new["pid"] != first["pid"] and me["center"] == new["url"]  # type: ignore[index]


def test_local_center_needs_no_login(isolated_dirs: Path) -> None:
    res = run_cli("logout")
    assert "local center" in res.stderr
    res = run_cli("login", "--username", "x", "--password-stdin", input="y\n", expect=2)
    assert "--center" in res.stderr


def test_center_daemon_detached_from_pipes(isolated_dirs: Path) -> None:
    """A test runner waiting on kaic's pipes must not hang on the background center."""
    proc = subprocess.run(
        [sys.executable, "-m", "kaic", "center", "start"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    pid = json.loads((center_dir(isolated_dirs) / "center.json").read_text())["pid"]
    fds = {os.readlink(f"/proc/{pid}/fd/{n}") for n in (0, 1, 2)}
    assert "/dev/null" in fds and not any("pipe:" in f for f in fds)


def test_local_center_stages_data_with_no_configuration(
    isolated_dirs: Path, tmp_path: Path
) -> None:
    """No center, no login, no SSH setup: the local center's embedded SFTP endpoint serves
    `kaic data` (host key and certificate come from the local center itself)."""
    src = tmp_path / "inputs"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    pushed = run_cli("data", "push", str(src), "inputs", "--json")
    assert pushed.json()["files_transferred"] == 2, pushed.explain()  # type: ignore[index]
    listing = run_cli("data", "ls", "inputs", "--json").json()
    assert {e["name"] for e in listing} == {"a.txt", "sub"}  # type: ignore[union-attr,index]
    storage = center_dir(isolated_dirs) / "storage"
    [home] = list(storage.iterdir())
    assert (home / "inputs" / "sub" / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()
    back = tmp_path / "back"
    run_cli("data", "pull", "inputs", str(back))
    assert (back / "a.txt").read_text() == "alpha\n"
