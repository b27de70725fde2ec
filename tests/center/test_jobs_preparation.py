"""Job preparation shared by every executor: the account (never root), the environment, and
the one ownership rule — a directory goes to the job's account only if the center made it;
nothing that belongs to someone else is ever chowned.

The ownership cases need root (they chown): skipped otherwise, failed when `CI=true`.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kaic.center.executors.base import Executor, ExecutorError, JobPaths, LaunchSpec
from kaic.center.executors.local import LocalExecutor
from kaic.center.executors.prepare import (
    job_account,
    job_environment,
    prepare_job_dirs,
    prepare_storage,
)
from kaic.center.executors.slurm.executor import SlurmExecutor
from tests.helpers import unavailable

from .test_slurm_executor import FakeClient

#: the job's account and "someone else" (both exist on every Debian system)
ACCOUNT = "nobody"
OTHER = "daemon"


def _spec(tmp_path: Path, **kw: Any) -> LaunchSpec:
    home = kw.pop("home", tmp_path / "storage" / "alice")
    kw.setdefault("unix_account", ACCOUNT)
    return LaunchSpec(
        job_id=kw.pop("job_id", "1"),
        name="t",
        user="alice",
        script="true\n",
        paths=JobPaths(tmp_path / "jobs" / "1"),
        workdir=kw.pop("workdir", home),
        home=home,
        **kw,
    )


def _uid(path: Path) -> int:
    return path.stat().st_uid


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        unavailable("the ownership rule is exercised by chown, which needs root")


@pytest.fixture
def account(root: None) -> pwd.struct_passwd:
    return pwd.getpwnam(ACCOUNT)


@pytest.fixture
def other() -> pwd.struct_passwd:
    return pwd.getpwnam(OTHER)


def test_the_account_is_looked_up_and_never_root(tmp_path: Path) -> None:
    assert job_account(_spec(tmp_path)).pw_name == ACCOUNT
    with pytest.raises(ExecutorError, match="jobs do not run as root"):
        job_account(_spec(tmp_path, unix_account="root"))
    with pytest.raises(ExecutorError, match=r"'kaic-no-such-account'.*; ask for NSS$"):
        job_account(_spec(tmp_path, unix_account="kaic-no-such-account"), missing="ask for NSS")


def test_the_environment_is_clean_and_kaics_variables_win(tmp_path: Path) -> None:
    spec = _spec(tmp_path, env={"MINE": "1", "KAIC_JOB_ID": "spoof"}, gpu_ids=(1, 3), partition="p")
    env = job_environment(spec, login="alice01", base_path="/bin")
    assert env["PATH"] == "/bin" and env["HOME"] == str(spec.home)
    assert (env["USER"], env["LOGNAME"], env["MINE"]) == ("alice01", "alice01", "1")
    assert (env["KAIC_JOB_ID"], env["KAIC_PARTITION"]) == ("1", "p")
    assert env["CUDA_VISIBLE_DEVICES"] == env["KAIC_GPUS"] == "1,3"
    # A batch system that allocates GPUs itself, for an array submitted as one.
    env = job_environment(_spec(tmp_path, array_tasks=(0, 1)), login="x", gpus=False)
    assert not {"KAIC_GPUS", "CUDA_VISIBLE_DEVICES", "KAIC_JOB_ID"} & set(env)
    assert "KAIC_ARRAY_TASK_ID" not in env and env["KAIC_JOB_NAME"] == "t"


def test_what_the_center_creates_goes_to_the_account(
    tmp_path: Path, account: pwd.struct_passwd
) -> None:
    home = tmp_path / "storage" / "alice"
    prepare_storage(home, home / "a" / "b", account)
    for path in (home, home / "a", home / "a" / "b"):
        assert _uid(path) == account.pw_uid, path
    assert home.stat().st_mode & 0o777 == 0o700
    assert _uid(home.parent) == os.geteuid()  # created on the way, but not the account's
    prepare_job_dirs([tmp_path / "jobs" / "1_0", tmp_path / "jobs" / "1_1"], account)
    assert _uid(tmp_path / "jobs" / "1_1") == account.pw_uid
    assert _uid(tmp_path / "jobs") == os.geteuid()


@pytest.mark.parametrize("own_storage", [False, True], ids=["site-storage", "own-storage"])
def test_a_home_of_someone_else_is_refused_untouched(
    tmp_path: Path, account: pwd.struct_passwd, other: pwd.struct_passwd, own_storage: bool
) -> None:
    home = tmp_path / "storage" / "alice"
    home.mkdir(parents=True)
    os.chown(home, other.pw_uid, other.pw_gid)
    with pytest.raises(ExecutorError, match=f"fix with: chown {ACCOUNT} {home}"):
        prepare_storage(home, home / "w", account, own_storage=home.parent if own_storage else None)
    assert _uid(home) == other.pw_uid and not (home / "w").exists()


def test_a_center_owned_home_is_handed_over_only_in_the_centers_own_storage(
    tmp_path: Path, account: pwd.struct_passwd
) -> None:
    site = tmp_path / "site" / "alice"  # e.g. /home/{unix_account}: a system directory
    site.mkdir(parents=True)
    with pytest.raises(ExecutorError, match=f"belongs to uid {os.geteuid()}"):
        prepare_storage(site, site, account)
    assert _uid(site) == os.geteuid()
    # state_dir/storage/alice, made by the center (for staging) before the first job
    own = tmp_path / "state" / "storage"
    (own / "alice" / "data").mkdir(parents=True)
    prepare_storage(own / "alice", own / "alice" / "data" / "run", account, own_storage=own)
    for path in (own / "alice", own / "alice" / "data", own / "alice" / "data" / "run"):
        assert _uid(path) == account.pw_uid, path


def test_existing_directories_below_the_home_keep_their_owner(
    tmp_path: Path, account: pwd.struct_passwd, other: pwd.struct_passwd
) -> None:
    home = tmp_path / "storage" / "alice"
    (home / "shared").mkdir(parents=True)
    os.chown(home, account.pw_uid, account.pw_gid)
    os.chown(home / "shared", other.pw_uid, other.pw_gid)
    (home / "mine").mkdir()  # the center's, but not in its own storage
    for own_storage in (None, home.parent):
        prepare_storage(home, home / "shared" / "run", account, own_storage=own_storage)
        prepare_storage(home, home / "mine", account)
    assert _uid(home / "shared") == other.pw_uid
    assert _uid(home / "shared" / "run") == account.pw_uid
    assert _uid(home / "mine") == os.geteuid()


def test_a_job_directory_of_someone_else_is_refused(
    tmp_path: Path, account: pwd.struct_passwd, other: pwd.struct_passwd
) -> None:
    job_dir = tmp_path / "jobs" / "1"
    job_dir.mkdir(parents=True)
    prepare_job_dirs([job_dir], account)  # the center's own, from an earlier try
    assert _uid(job_dir) == account.pw_uid
    os.chown(job_dir, other.pw_uid, other.pw_gid)
    with pytest.raises(ExecutorError, match="belongs to uid"):
        prepare_job_dirs([job_dir], account)
    assert _uid(job_dir) == other.pw_uid


def _local() -> tuple[Executor, Callable[[], list[str]]]:
    executor = LocalExecutor(kill_grace=0.1, run_as_users=True)
    return executor, executor.running


def _slurm() -> tuple[Executor, Callable[[], list[str]]]:
    client = FakeClient()
    return SlurmExecutor(client, poll_interval=1.0), lambda: [r.name for r in client.submitted]  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [_local, _slurm], ids=["local", "slurm"])
def test_every_executor_refuses_a_home_of_someone_else(
    tmp_path: Path,
    account: pwd.struct_passwd,
    other: pwd.struct_passwd,
    make: Callable[[], tuple[Executor, Callable[[], list[str]]]],
) -> None:
    """The Slurm executor used to chown an existing home whoever owned it."""
    home = tmp_path / "storage" / "alice"
    home.mkdir(parents=True)
    os.chown(home, other.pw_uid, other.pw_gid)
    executor, started = make()
    try:
        with pytest.raises(ExecutorError, match="belongs to uid"):
            executor.start(_spec(tmp_path, workdir=home / "run"))
        assert started() == []
        assert _uid(home) == other.pw_uid and not (home / "run").exists()
    finally:
        executor.shutdown(kill_jobs=True)


def test_a_link_in_the_home_leads_root_nowhere(tmp_path: Path, account: pwd.struct_passwd) -> None:
    """Root used to follow the user's link: `~/a -> /tmp/outside` with workdir `~/a/x/y`
    created `/tmp/outside/x/y`, owned by the job's account."""
    home = tmp_path / "storage" / "alice"
    outside = tmp_path / "outside"
    home.mkdir(parents=True)
    outside.mkdir()
    os.chown(home, account.pw_uid, account.pw_gid)
    (home / "a").symlink_to(outside)
    with pytest.raises(ExecutorError, match=r"/a is a symbolic link: .*without following links"):
        prepare_storage(home, home / "a" / "x" / "y", account)
    assert list(outside.iterdir()) == [] and _uid(outside) == os.geteuid()
    # Nor may the home itself be a link (a site root the user could replace).
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "alice").symlink_to(outside)
    with pytest.raises(ExecutorError, match="is a symbolic link"):
        prepare_storage(tmp_path / "site" / "alice", tmp_path / "site" / "alice", account)
    assert _uid(outside) == os.geteuid()


def test_a_link_to_another_users_home_is_not_handed_over(
    tmp_path: Path, account: pwd.struct_passwd
) -> None:
    """In the center's own storage, `storage/alice/w -> ../bob` used to chown bob's home (the
    center's, adoptable) to alice's account."""
    own = tmp_path / "state" / "storage"
    alice, bob = own / "alice", own / "bob"
    (bob / "data").mkdir(parents=True)
    alice.mkdir()
    (alice / "w").symlink_to("../bob")
    with pytest.raises(ExecutorError, match="is a symbolic link"):
        prepare_storage(alice, alice / "w", account, own_storage=own)
    with pytest.raises(ExecutorError, match="is a symbolic link"):
        prepare_storage(alice, alice / "w" / "data", account, own_storage=own)
    assert _uid(bob) == _uid(bob / "data") == os.geteuid()
    assert _uid(alice) == account.pw_uid  # alice's own home was still hers to get


def test_a_file_on_the_way_is_named(tmp_path: Path, account: pwd.struct_passwd) -> None:
    home = tmp_path / "storage" / "alice"
    home.mkdir(parents=True)
    os.chown(home, account.pw_uid, account.pw_gid)
    (home / "f").write_text("")
    with pytest.raises(ExecutorError, match="/f is not a directory"):
        prepare_storage(home, home / "f" / "x", account)


def test_slurm_writes_no_script_through_a_link_the_account_left(
    tmp_path: Path, account: pwd.struct_passwd
) -> None:
    """A Slurm job's directory is the account's: a `script.sh` link left there from an earlier
    try made root write the job's script into the file it pointed at."""
    victim = tmp_path / "roots-file"
    victim.write_text("root's\n")
    job_dir = tmp_path / "jobs" / "1"
    job_dir.mkdir(parents=True)
    os.chown(job_dir, account.pw_uid, account.pw_gid)
    (job_dir / "script.sh").symlink_to(victim)
    executor, started = _slurm()
    try:
        executor.start(_spec(tmp_path, workdir=tmp_path / "storage" / "alice" / "run"))
        assert started() == ["t"]
    finally:
        executor.shutdown(kill_jobs=True)
    assert victim.read_text() == "root's\n"
    assert not (job_dir / "script.sh").is_symlink()
    assert (job_dir / "script.sh").read_text() == "true\n"
