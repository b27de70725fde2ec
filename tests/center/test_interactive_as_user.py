"""A `--run-as-user` center starts a session's process as root and drops to the job's
account: nothing of the job's environment may act on the part that runs as root.

The job's environment is the user's to choose (`env:` in the job file, a session's `env`):
a PATH that finds a `setpriv` or `setsid` of the user's making, or an LD_PRELOAD, given to
the process the center starts as root, would run the user's code as root. The session's
process must still run as the account, with exactly those variables.

Needs root, a real account (created if missing) and a C compiler for the marker library:
skipped otherwise, failed when `CI=true`.
"""

from __future__ import annotations

import os
import pwd
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.executors.base import JobPaths, LaunchSpec, SessionTarget
from kaic.center.executors.interactive import ROOT_ENV, SessionProcess, as_account
from kaic.center.executors.local import LocalExecutor
from kaic.models.interactive import ExecStart
from tests.helpers import ensure_account, unavailable

ACCOUNT = "kaic-exec-user"
DEADLINE = 30.0

#: appends "<uid>\n" to $KAIC_TEST_MARKER in every process that loads it
MARKER_LIBRARY = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void mark(void) {
    const char *path = getenv("KAIC_TEST_MARKER");
    FILE *f = path ? fopen(path, "a") : NULL;
    if (f) { fprintf(f, "%d\n", (int)getuid()); fclose(f); }
}
"""


@pytest.fixture
def sandbox() -> Iterator[Path]:
    """A directory every account can traverse, removed afterwards."""
    if os.geteuid() != 0:
        unavailable("dropping to a job's account needs root")
    if shutil.which("cc") is None:
        unavailable("the LD_PRELOAD marker library needs a C compiler (cc)")
    base = Path(tempfile.mkdtemp(prefix="kaic-exec-env-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fake_tools(directory: Path, marker: Path) -> None:
    """`setpriv` and `setsid` that leave `marker` behind, then do the real thing."""
    directory.mkdir(mode=0o755)
    for tool in ("setpriv", "setsid"):
        real = shutil.which(tool)
        assert real is not None
        fake = directory / tool
        fake.write_text(f'#!/bin/sh\necho {tool} >> {marker}\nexec {real} "$@"\n')
        fake.chmod(0o755)


def _collect(process: SessionProcess) -> bytes:
    """Everything the process writes (stdout, then the pty or stderr), until it ends."""
    fds = {process.stdout, *([process.stderr] if process.stderr is not None else [])}
    out = b""
    deadline = time.monotonic() + DEADLINE
    while fds and time.monotonic() < deadline:
        ready, _, _ = select.select(list(fds), [], [], 0.5)
        for fd in ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # a pty whose other side closed: EIO
                data = b""
            if data:
                out += data
            else:
                fds.discard(fd)
    return out


@pytest.mark.parametrize("tty", [False, True], ids=["pipes", "tty"])
def test_the_root_side_never_sees_the_jobs_environment(sandbox: Path, tty: bool) -> None:
    ensure_account(ACCOUNT)
    account = pwd.getpwnam(ACCOUNT)
    library = sandbox / "marker.so"
    source = sandbox / "marker.c"
    source.write_text(MARKER_LIBRARY)
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True, timeout=60
    )
    preloaded = sandbox / "preloaded"
    preloaded.touch(mode=0o666)
    preloaded.chmod(0o666)
    faked = sandbox / "faked"
    _fake_tools(sandbox / "bin", faked)
    home = sandbox / "home"
    home.mkdir()
    os.chown(home, account.pw_uid, account.pw_gid)
    job_path = f"{sandbox / 'bin'}:/usr/bin:/bin"
    spec = LaunchSpec(
        job_id="7",
        name="t",
        user="alice",
        script="true\n",
        paths=JobPaths(sandbox / "jobs" / "7"),
        workdir=home,
        home=home,
        env={
            "PATH": job_path,
            "LD_PRELOAD": str(library),
            "KAIC_TEST_MARKER": str(preloaded),
            "MINE": "a secret with spaces\nand a newline",
        },
        unix_account=ACCOUNT,
    )
    executor = LocalExecutor(kill_grace=0.1, run_as_users=True)
    script = 'id -u; printf "%s|" "$MINE" "$PATH" "$KAIC_JOB_ID"; pwd'
    process = executor.exec(
        SessionTarget(spec, "0"),
        ExecStart(argv=["sh", "-c", script], tty=tty, env={"EXTRA": "x"}),
    )
    try:
        output = _collect(process).replace(b"\r\n", b"\n").decode()
        deadline = time.monotonic() + DEADLINE
        while process.returncode is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.returncode == 0, output
    finally:
        process.kill()
        process.close()
    assert not faked.exists(), f"the job's {faked.read_text().split()} ran as root"
    uids = preloaded.read_text().split()
    assert "0" not in uids, "the job's LD_PRELOAD was loaded by a process running as root"
    assert str(account.pw_uid) in uids, "the job's LD_PRELOAD did not reach its command"
    lines = output.splitlines()
    assert str(account.pw_uid) in lines, output
    assert f"a secret with spaces\nand a newline|{job_path}|7|{home}" in output, output


def test_the_command_started_as_root_is_fixed_and_carries_no_value() -> None:
    """What `as_account` hands to Popen when it drops (no root needed to build it): absolute
    tools, root's fixed environment, and none of the job's values in argv (`ps` shows it)."""
    job_env = {"PATH": "/home/u/bin", "TOKEN": "s3cret", "LD_PRELOAD": "/home/u/x.so"}
    command, env, fd = as_account(["srun", "--", "cmd"], job_env, pwd.getpwnam("nobody"))
    try:
        assert env == ROOT_ENV
        assert command[0].startswith("/") and Path(command[0]).name == "setpriv"
        assert not any("s3cret" in word or "/home/u" in word for word in command), command
        assert fd is not None
        assert os.pread(fd, 4096, 0).split(b"\0")[:3] == [
            b"PATH=/home/u/bin",
            b"TOKEN=s3cret",
            b"LD_PRELOAD=/home/u/x.so",
        ]
    finally:
        if fd is not None:
            os.close(fd)
    # Without a drop it is the same user: the job's environment as it is.
    command, env, fd = as_account(["cmd"], job_env, None)
    assert (env, fd) == (job_env, None) and command[-2:] == ["--", "cmd"]
