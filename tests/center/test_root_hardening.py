"""A center running as root never lets a user's input steer what runs as root: the job's
environment reaches only the process that has dropped to the job's account.

Needs root (to switch accounts) and a C compiler (for the preload library): skipped
otherwise, failed when `CI=true`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.executors.base import Ended, JobPaths, LaunchSpec
from kaic.center.executors.local import LocalExecutor
from tests.helpers import unavailable

#: the job's account (exists on every Debian system)
ACCOUNT = "nobody"

FAKE_TOOL = """#!/bin/sh
/usr/bin/touch {marker}
exec /usr/bin/{name} "$@"
"""

PRELOAD_C = """
#include <fcntl.h>
#include <unistd.h>
__attribute__((constructor)) static void kaic_marker(void) {
    if (geteuid() == 0) close(open("%s", O_WRONLY | O_CREAT, 0644));
}
"""


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        unavailable("running jobs as users needs root")


@pytest.fixture
def reachable(root: None) -> Iterator[Path]:
    """A directory the job's account can pass through (pytest's tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="kaic-root-hardening-", dir="/tmp"))
    base.chmod(0o711)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _run(executor: LocalExecutor, spec: LaunchSpec) -> Ended:
    executor.start(spec)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for ended in executor.poll():
            if ended.job_id == spec.job_id:
                return ended
        time.sleep(0.05)
    raise AssertionError("the job never ended")


def test_the_jobs_environment_reaches_no_root_process(reachable: Path, tmp_path: Path) -> None:
    """The wrapper used to run as root with the job's environment: the job's PATH made it run
    the user's `setpriv`/`mv` as root, its LD_PRELOAD loaded the user's library into root."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        unavailable("a C compiler is needed to build the preload library")
    account = pwd.getpwnam(ACCOUNT)
    marker = tmp_path / "ran-as-root"  # root's 0700 tmp_path: only root can create it
    fake_bin = reachable / "bin"
    fake_bin.mkdir(mode=0o755)
    for name in ("setpriv", "mv", "bash", "sh", "env"):
        tool = fake_bin / name
        tool.write_text(FAKE_TOOL.format(marker=marker, name=name))
        tool.chmod(0o755)
    source = reachable / "preload.c"
    source.write_text(PRELOAD_C % marker)
    library = reachable / "preload.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    library.chmod(0o755)
    startup = reachable / "startup.sh"  # what a shell reads at its start (BASH_ENV, ENV)
    startup.write_text(f"/usr/bin/touch {marker} 2>/dev/null\n")
    startup.chmod(0o644)
    home = reachable / "home"
    value = "two\nlines and 'quotes' $HOME ; =x"
    spec = LaunchSpec(
        job_id="1",
        name="t",
        user="alice",
        script='id -un; pwd; printf "%s|" "$PATH" "$MINE"\n',
        paths=JobPaths(tmp_path / "jobs" / "1"),
        workdir=home / "run",
        home=home,
        env={
            "PATH": f"{fake_bin}:/usr/bin:/bin",
            "LD_PRELOAD": str(library),
            "BASH_ENV": str(startup),
            "ENV": str(startup),
            "MINE": value,
        },
        unix_account=ACCOUNT,
    )
    executor = LocalExecutor(kill_grace=0.1, run_as_users=True)
    try:
        ended = _run(executor, spec)
    finally:
        executor.shutdown(kill_jobs=True)
    stdout = spec.paths.stdout.read_text()
    assert ended.exit_code == 0, (stdout, spec.paths.stderr.read_text())
    assert not marker.exists(), "a root process ran the user's tool or library"
    # The job itself still ran as the account, in its workdir, with its own variables.
    assert stdout == f"{ACCOUNT}\n{home / 'run'}\n{fake_bin}:/usr/bin:/bin|{value}|", stdout
    assert (home / "run").stat().st_uid == account.pw_uid
