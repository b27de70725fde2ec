"""The embedded local center: started on demand in the background, found again, stopped.

With no center configured, kaic runs the reference center on this machine on a free
loopback port. Its state lives in ``<KAIC_STATE_DIR>/center``: the database, the log, the
ready file (``center.json``: pid, port, url, instance id) and the token the center minted for
the current OS user (``local-token``, 0600). A file lock makes concurrent starters start one
center; a ready file whose process is gone or answers with another instance id is stale and
replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kaic.client.health import local_instance_answers
from kaic.errors import KaicError, Unreachable
from kaic.urls import is_loopback_url

START_TIMEOUT = float(os.environ.get("KAIC_LOCAL_CENTER_START_TIMEOUT", "30"))


@dataclass(frozen=True)
class LocalCenterPaths:
    root: Path

    @property
    def ready(self) -> Path:
        return self.root / "center.json"

    @property
    def lock(self) -> Path:
        return self.root / "center.lock"

    @property
    def log(self) -> Path:
        return self.root / "center.log"

    @property
    def token(self) -> Path:
        return self.root / "local-token"


@dataclass(frozen=True)
class LocalCenter:
    """A running local center, as found or started."""

    url: str
    pid: int
    instance_id: str
    state_dir: Path
    started: bool  # true when this call started it

    def token(self) -> str:
        """The access token the center minted for the current OS user."""
        return read_local_token(LocalCenterPaths(self.state_dir).token)


def local_state_dir() -> Path:
    from kaic.config import state_dir

    return Path(state_dir()) / "center"


def read_local_token(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
        return str(data["token"])
    except (OSError, ValueError, KeyError) as exc:
        raise KaicError(
            f"the local center's token file {path} is missing or unreadable",
            hint="run `kaic center stop` and try again",
        ) from exc


def _pid_alive(pid: int) -> bool:
    """True when pid runs as us (a zombie, dead but not yet reaped, counts as gone; another
    user's process, e.g. a reused pid, is not our center)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    with contextlib.suppress(OSError):
        if os.stat(f"/proc/{pid}").st_uid != os.getuid():
            return False
    return not _is_zombie(pid)


def _is_kaic_center(pid: int) -> bool:
    """True when pid is a kaic center process (so we never signal an unrelated process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)  # no /proc (macOS): trust the pid file
    return b"kaic.center" in cmdline or (b"kaic" in b" ".join(cmdline) and b"serve" in cmdline)


def _read_ready(paths: LocalCenterPaths) -> dict[str, object] | None:
    try:
        data = json.loads(paths.ready.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _locked(paths: LocalCenterPaths) -> Iterator[None]:
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def find_running(state_dir: Path | None = None) -> LocalCenter | None:
    """The local center if one is running and answering, else None."""
    root = state_dir or local_state_dir()
    data = _read_ready(LocalCenterPaths(root))
    if not data:
        return None
    try:
        pid, url, iid = int(data["pid"]), str(data["url"]), str(data["instance_id"])  # type: ignore[call-overload]
    except (KeyError, TypeError, ValueError):
        return None
    # The token goes wherever this file points: only to a loopback center run by us.
    if not is_loopback_url(url) or not _pid_alive(pid) or not local_instance_answers(url, iid):
        return None
    return LocalCenter(url=url, pid=pid, instance_id=iid, state_dir=root, started=False)


def ensure_running(state_dir: Path | None = None, timeout: float = START_TIMEOUT) -> LocalCenter:
    """Return the running local center, starting one if needed (one at a time, under a lock)."""
    root = state_dir or local_state_dir()
    paths = LocalCenterPaths(root)
    with _locked(paths):
        found = find_running(root)
        if found:
            return found
        _clear_stale(paths)
        return _spawn(paths, timeout)


def _clear_stale(paths: LocalCenterPaths) -> None:
    data = _read_ready(paths)
    if data is not None:
        pid = data.get("pid")
        # A process that is still ours but no longer answers is stopped before replacing it.
        if isinstance(pid, int) and _pid_alive(pid) and _is_kaic_center(pid):
            _terminate(pid)
    with contextlib.suppress(FileNotFoundError):
        paths.ready.unlink()


def _spawn(paths: LocalCenterPaths, timeout: float) -> LocalCenter:
    import getpass

    # The bare server entry point (no CLI layer): the local center starts faster.
    cmd = [
        sys.executable,
        "-m",
        "kaic.center",
        "--local-user",
        getpass.getuser(),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--state-dir",
        str(paths.root),
        "--ready-file",
        str(paths.ready),
        *_gpu_args(),
    ]
    # A daemon: its own session, no terminal, stdin closed and output to a log file, so
    # nothing (a CI runner, a pipe) waits on it.
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise KaicError(
                f"the local center exited at start (code {proc.returncode})",
                hint=f"see its log: {paths.log}\n{_log_tail(paths.log)}",
            )
        data = _read_ready(paths)
        if data and data.get("pid") == proc.pid:
            return LocalCenter(
                url=str(data["url"]),
                pid=proc.pid,
                instance_id=str(data["instance_id"]),
                state_dir=paths.root,
                started=True,
            )
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
    _terminate(proc.pid)
    raise Unreachable(
        f"the local center did not start within {timeout:.0f} s",
        hint=f"see its log: {paths.log}",
    )


def _gpu_args() -> list[str]:
    """This machine's GPUs for the local center's partition: `KAIC_LOCAL_GPUS` if set, else
    what `nvidia-smi` lists (none when it is missing)."""
    if "KAIC_LOCAL_GPUS" in os.environ:
        return ["--gpus", str(int(os.environ["KAIC_LOCAL_GPUS"] or 0))]
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    names = [line.strip() for line in out.splitlines() if line.strip()]
    if not names:
        return []
    return ["--gpus", str(len(names)), "--gpu-type", names[0]]


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _terminate(pid: int, grace: float = 10.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def stop(state_dir: Path | None = None) -> int | None:
    """Stop the local center; returns the pid stopped, or None when none was running."""
    root = state_dir or local_state_dir()
    paths = LocalCenterPaths(root)
    with _locked(paths):
        data = _read_ready(paths)
        if not data:
            return None
        pid = data.get("pid")
        stopped = None
        if isinstance(pid, int) and _pid_alive(pid) and _is_kaic_center(pid):
            _terminate(pid)
            stopped = pid
        with contextlib.suppress(FileNotFoundError):
            paths.ready.unlink()
        return stopped
