"""Job preparation every executor shares: the unix account a job runs as, its directories and
who owns them, and its environment.

**The ownership rule** (the same for every executor). When jobs run as their users' unix
accounts (the local executor with `run_as_users`, the Slurm executor in a center running as
root), a directory is given to the job's account only if the center made it:

- created just now, by this preparation (the storage home, the missing directories down to
  the workdir, the job's own directory);
- or, inside the center's own storage (`state_dir/storage`, where the center creates homes
  for staging and, serving SFTP as itself, the directories users push), still owned by the
  center's own uid.

Any other existing directory is left as it is. An existing storage home that belongs to
anyone but the account (a misconfigured storage root must not hand a system directory over)
fails the job, saying which `chown` fixes it; so does a job directory that belongs to
someone else. Without an owner (jobs run as the center's own account) directories are only
created.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import Sequence
from pathlib import Path

from kaic.center.executors.base import ExecutorError, LaunchSpec
from kaic.center.storage import LinkInTheWay, open_directory

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def center_path() -> str:
    """The center's PATH, with its own interpreter's bin dir first, so jobs find the `kaic`
    installed beside the center (e.g. in its virtualenv) — `kaic bench --remote` relies on it."""
    own_bin = str(Path(sys.executable).parent)
    parts = [p for p in (os.environ.get("PATH") or _DEFAULT_PATH).split(os.pathsep) if p]
    return os.pathsep.join([own_bin, *(p for p in parts if p != own_bin)])


def job_account(spec: LaunchSpec, *, missing: str | None = None) -> pwd.struct_passwd:
    """The unix account a job runs as (never root); `missing` is added to the error when
    the account does not exist here (what the operator must provide)."""
    name = spec.unix_account or spec.user
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise ExecutorError(
            f"unix account {name!r} of user {spec.user} does not exist on this machine"
            + (f"; {missing}" if missing else "")
        ) from None
    if account.pw_uid == 0:
        raise ExecutorError(f"jobs do not run as root (user {spec.user}'s unix account)")
    return account


def job_environment(
    spec: LaunchSpec, *, login: str, base_path: str | None = None, gpus: bool = True
) -> dict[str, str]:
    """A clean environment for a job: a small base, the job's own env, then kaic's variables
    (which the job's env cannot override).

    `login` is the `USER`/`LOGNAME` the job sees. `gpus`: the GPU ids are known now
    (`KAIC_GPUS`, `CUDA_VISIBLE_DEVICES`); a batch system that allocates them itself sets
    them in the job. An array handed over as one (`spec.array_tasks`) gets no per-task ids:
    its batch script sets them for each task."""
    env = {
        "PATH": base_path or center_path(),
        "HOME": str(spec.home),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "USER": login,
        "LOGNAME": login,
    }
    env.update(spec.env)
    # Secrets (kaic.center.secrets): resolved at the job's start; they reach only the job's
    # environment (no file, no argv). A variable is in env or in secrets, never both.
    env.update(spec.secrets)
    env.update({"KAIC_JOB_NAME": spec.name, "KAIC_PARTITION": spec.partition})
    if not spec.array_tasks:
        env.update(
            {
                "KAIC_JOB_ID": spec.job_id,
                "KAIC_ARRAY_JOB_ID": spec.array_job_id or "",
                "KAIC_ARRAY_TASK_ID": "" if spec.array_task_id is None else str(spec.array_task_id),
            }
        )
    if gpus:
        ids = ",".join(str(i) for i in spec.gpu_ids)
        env.update({"KAIC_GPUS": ids, "CUDA_VISIBLE_DEVICES": ids})
    return env


def _is_below(path: Path, root: Path | None) -> bool:
    return root is not None and (path == root or root in path.parents)


def _give(path: Path, owner: pwd.struct_passwd) -> None:
    os.chown(path, owner.pw_uid, owner.pw_gid)


def _adoptable(path: Path, uid: int, own_storage: Path | None) -> bool:
    """Whether an existing `path` (owned by `uid`) is the center's own making: in its own
    storage and still owned by the center's uid."""
    return _is_below(path, own_storage) and uid == os.geteuid()


def prepare_storage(
    home: Path,
    workdir: Path,
    owner: pwd.struct_passwd | None,
    *,
    own_storage: Path | None = None,
) -> None:
    """Make the job's storage home and workdir (inside it) exist, owned by the rule above.

    `own_storage`: the center's own storage root (`state_dir/storage`) when homes live
    there, None when the site's storage root holds them (e.g. `/home/{unix_account}`).

    With an owner (root acting for a user) the home and everything below it is walked with
    directory descriptors, never through a link (`kaic.center.storage.open_directory`): the
    user controls what lies in the home and could otherwise have root create or chown
    directories wherever a link of theirs leads. A link on the way fails the job."""
    if workdir != home and home not in workdir.parents:
        raise ExecutorError(f"workdir {workdir} is not inside the storage home {home}")
    if owner is None:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        workdir.mkdir(parents=True, exist_ok=True)
        return
    # Above the home: the site's or the center's directories, no user's.
    home.parent.mkdir(parents=True, exist_ok=True)
    parent = os.open(home.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd, created = _open(parent, home, create=0o700)
    finally:
        os.close(parent)
    try:
        found = os.fstat(fd).st_uid
        if not created and found != owner.pw_uid and not _adoptable(home, found, own_storage):
            raise ExecutorError(
                f"storage home {home} belongs to uid {found}, not to {owner.pw_name}; "
                f"fix with: chown {owner.pw_name} {home}"
            )
        if found != owner.pw_uid:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        path = home
        for name in workdir.relative_to(home).parts:
            path = path / name
            child, created = _open(fd, path, create=0o777)
            os.close(fd)
            fd = child
            found = os.fstat(fd).st_uid
            if created or (found != owner.pw_uid and _adoptable(path, found, own_storage)):
                os.fchown(fd, owner.pw_uid, owner.pw_gid)
    finally:
        os.close(fd)


def _open(dir_fd: int, path: Path, *, create: int) -> tuple[int, bool]:
    """`open_directory` for the last component of `path`; a link there fails the job."""
    try:
        return open_directory(dir_fd, path.name, create=create)
    except LinkInTheWay as exc:
        raise ExecutorError(
            f"{path} {exc.strerror}: the center creates a job's directories without following "
            "links (name the directory itself as the workdir)"
        ) from None


def prepare_job_dirs(dirs: Sequence[Path], owner: pwd.struct_passwd | None) -> None:
    """Make the job's own directories (in the center's state dir) exist; with an owner, a
    directory created now, or one of the center's own from an earlier try, is the
    account's (a batch system running as the account writes the logs there)."""
    for directory in dirs:
        created = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if owner is None:
            continue
        found = directory.stat().st_uid
        if found == owner.pw_uid:
            continue
        if not created and found != os.geteuid():
            raise ExecutorError(
                f"job directory {directory} belongs to uid {found}, not to {owner.pw_name} "
                "or the center"
            )
        _give(directory, owner)
