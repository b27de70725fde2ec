"""A center running as root never lets a user's input steer what runs as root: the job's
environment reaches only the process that has dropped to the job's account.

Needs root (to switch accounts) and a C compiler (for the preload library): skipped
otherwise, failed when `CI=true`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kaic.center.admin import add_user
from kaic.center.executors import own_account
from kaic.center.executors.base import Ended, JobPaths, LaunchSpec
from kaic.center.executors.local import LocalExecutor
from kaic.center.executors.own_account import own_account_refusal
from kaic.center.settings import CenterSettings
from kaic.center.sftp import EmbeddedSftp
from kaic.center.ssh_ca import UserCA
from kaic.center.store import Store
from kaic.staging.connect import SshTarget, open_sftp
from tests.helpers import unavailable
from tests.sshd import STAGING_USER, ensure_unix_user

from .jobs_support import JobsCenter, kill_job_processes, make_settings, open_center, prepare_state

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
        # ... and the handover descriptor is closed, stdin is /dev/null ("0" bytes).
        script='id -un; pwd; printf "%s|" "$PATH" "$MINE"; test -e /dev/fd/4 && echo fd4\n'
        "/usr/bin/wc -c\n",
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
    assert stdout == f"{ACCOUNT}\n{home / 'run'}\n{fake_bin}:/usr/bin:/bin|{value}|0\n", stdout
    assert (home / "run").stat().st_uid == account.pw_uid


# -- jobs as the center's own account ------------------------------------------------------


@contextlib.contextmanager
def _jobs_center(tmp_path: Path, **settings: Any) -> Iterator[JobsCenter]:
    state = tmp_path / "state"
    prepare_state(state)
    with open_center(make_settings(state, **settings)) as center:
        try:
            yield center
        finally:
            kill_job_processes(state)


def test_a_root_center_without_run_as_user_runs_no_job(root: None, tmp_path: Path) -> None:
    """`sudo kaic center serve` without --run-as-user (one user: no refusal at start) ran that
    user's jobs as root; `python -m kaic.center` skipped even the check at start."""
    with _jobs_center(tmp_path, single_account_ok=False) as center:
        job = center.submit("touch ~/ran")
        done = center.wait_done(job["id"])
        assert done["state"] == "FAILED", done
        assert "runs as root without --run-as-user" in done["reason"]
        assert "--run-as-user --storage-root" in done["reason"]
        assert not (center.state_dir / "storage" / "alice" / "ran").exists()


def test_the_local_center_runs_only_its_own_users_jobs(tmp_path: Path) -> None:
    """The embedded local center runs as the person who started it (root too: no one gains a
    right); a user added to it is refused, the local user's jobs keep running."""
    with _jobs_center(tmp_path, single_account_ok=False, local_user="alice") as center:
        ok = center.wait_done(center.submit("true")["id"])
        assert ok["state"] == "COMPLETED", ok
        refused = center.wait_done(center.submit("true", user="bob")["id"], user="bob")
        assert refused["state"] == "FAILED"
        assert "runs only alice's jobs" in refused["reason"], refused
        again = center.wait_done(center.submit("true")["id"])
        assert again["state"] == "COMPLETED", again


def test_a_user_added_later_is_refused_the_first_keeps_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user added (`kaic center user add`) to a running single-account center used to run
    jobs as the center's account beside the first one; now only the first does."""
    monkeypatch.setattr(own_account.os, "geteuid", lambda: 1000)  # a center not run as root
    settings = make_settings(tmp_path / "state", single_account_ok=False)
    add_user(settings.state_dir, "alice", password=None, enable_otp=False, unix_account=None)
    assert own_account_refusal(settings, "alice") is None
    add_user(settings.state_dir, "bob", password=None, enable_otp=False, unix_account=None)
    reason = own_account_refusal(settings, "bob")
    assert reason is not None and "already does for alice" in reason and "--run-as-user" in reason
    assert own_account_refusal(settings, "alice") is None
    settings.single_account_ok = True
    assert own_account_refusal(settings, "bob") is None


def test_python_m_kaic_center_refuses_several_users_on_one_account(tmp_path: Path) -> None:
    """The multi-user guard was only in `kaic center serve`: `python -m kaic.center` served
    several users from one account silently."""
    state = tmp_path / "state"
    add_user(state, "alice", password=None, enable_otp=False, unix_account=None)
    add_user(state, "bob", password=None, enable_otp=False, unix_account=None)
    ready = tmp_path / "ready.json"
    argv = ["--state-dir", str(state), "--port", "0", "--ready-file", str(ready)]
    result = subprocess.run(
        [sys.executable, "-m", "kaic.center", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "refusing to serve 2 users" in result.stderr
    assert "--single-account-ok" in result.stderr and not ready.exists()


# -- a root Slurm gateway serves files as the users ----------------------------------------


def test_the_center_acts_as_users_whenever_it_runs_their_jobs_as_them(
    root: None, tmp_path: Path
) -> None:
    """The Slurm executor refuses `run_as_users` (it always runs jobs as users), so a root
    Slurm center used to serve SFTP and checksums in process, as root."""
    assert CenterSettings(state_dir=tmp_path, executor="slurm").acts_as_users
    as_users = CenterSettings(state_dir=tmp_path, run_as_users=True, storage_root="/h/{user}")
    assert as_users.acts_as_users
    assert not CenterSettings(state_dir=tmp_path).acts_as_users  # jobs as the center's account


def test_a_root_slurm_center_serves_sftp_as_the_user(reachable: Path) -> None:
    account = pwd.getpwnam(ensure_unix_user(STAGING_USER).name)
    state = reachable / "state"
    state.mkdir(mode=0o700)
    settings = CenterSettings(state_dir=state, executor="slurm", sftp_port=0)
    store = Store(state)
    store.create_user("alice", unix_account=STAGING_USER)
    ca = UserCA(state)
    sftp = EmbeddedSftp(settings, store, ca)
    sftp.start()
    try:
        assert sftp.as_users
        conn = open_sftp(_target(sftp, ca, reachable, "alice", STAGING_USER))
        try:
            with conn.sftp.open("pushed.txt", "w") as handle:
                handle.write(b"hi\n")
            assert sftp.worker_pids()  # served by a worker running as the account
        finally:
            conn.close()
        home = state / "storage" / "alice"
        assert (home / "pushed.txt").read_bytes() == b"hi\n"
        assert (home / "pushed.txt").stat().st_uid == account.pw_uid
        assert home.stat().st_uid == account.pw_uid  # created for the account, not root's
    finally:
        sftp.stop()
        store.close()


def _target(sftp: EmbeddedSftp, ca: UserCA, tmp: Path, user: str, principal: str) -> SshTarget:
    private = ed25519.Ed25519PrivateKey.generate()
    key_path = tmp / "id"
    key_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    public = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    cert = ca.sign_user_key(
        public.decode(),
        user=user,
        principal=principal,
        now=datetime.now(timezone.utc),
        validity_seconds=600,
    )
    cert_path = key_path.with_name("id-cert.pub")
    cert_path.write_text(cert.certificate + "\n")
    assert sftp.port is not None
    return SshTarget(
        "127.0.0.1",
        sftp.port,
        principal,
        key_path,
        cert_path,
        [sftp.host_key_line],
        use_user_known_hosts=False,
    )
