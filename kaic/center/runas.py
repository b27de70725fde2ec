"""Acting on users' files as their unix account: helper processes that switch to it for good.

A center that runs jobs as users (`--run-as-user`, running as root) touches a user's files
only from a process running as the user's account, so the kernel judges every access by the
user's own rights (ACLs included) and the confinement to the storage root applies on top:
the SFTP worker (`kaic.center.sftp.worker`, one per connection) and the checksum helper
(`kaic.center.files`, one per checksum request). Both are started the same way:

1. The center starts `python -m <module> --parent-pid … --uid … --gid … --groups … --user …`
   (`helper_command`) as root, in a clean environment (`helper_environment`: the center's
   may hold secrets such as KAIC_SLURM_JWT) with `/` as its directory.
2. The helper imports everything it needs — as root, but only the center's own code, no
   user path — since afterwards the center's code may not be readable (an interpreter under
   /root, say).
3. `become`: `setgroups`, `setresgid`, `setresuid` to the account, checked, root not
   regainable; then `PR_SET_PDEATHSIG(SIGKILL)` (the switch clears it), so the helper never
   outlives the thread that started it, nor the center.

Only the standard library: the helpers load this before anything else.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import pwd
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

#: prctl(2) option: the signal to get when the parent (thread) dies
PR_SET_PDEATHSIG = 1
_HELPER_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class UnixAccount:
    """The unix account a user's files are touched as."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]

    @classmethod
    def lookup(cls, name: str) -> UnixAccount:
        """The account `name`; LookupError if it does not exist or is root."""
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise LookupError(f"unix account {name!r} does not exist on this machine") from None
        if entry.pw_uid == 0:
            raise LookupError("files are not served as root")
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(entry.pw_name, entry.pw_uid, entry.pw_gid, groups)


def code_root() -> str:
    """The directory holding the `kaic` package the center runs (for the helper's imports)."""
    import kaic

    return str(Path(kaic.__file__).resolve().parent.parent)


def helper_command(module: str, account: UnixAccount, *arguments: str) -> list[str]:
    """The command line starting helper `module` for `account` (it runs `become`)."""
    return [
        sys.executable,
        "-m",
        module,
        f"--parent-pid={os.getpid()}",
        f"--uid={account.uid}",
        f"--gid={account.gid}",
        f"--groups={','.join(str(g) for g in account.groups)}",
        f"--user={account.name}",
        *arguments,
    ]


def helper_environment() -> dict[str, str]:
    """A helper's whole environment: nothing of the center's."""
    return {"PATH": _HELPER_PATH, "LANG": "C.UTF-8", "PYTHONPATH": code_root()}


def add_account_arguments(parser: argparse.ArgumentParser) -> None:
    """The options `helper_command` passes, for the helper's parser."""
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--uid", type=int, required=True)
    parser.add_argument("--gid", type=int, required=True)
    parser.add_argument("--groups", default="")
    parser.add_argument("--user", required=True)


def become(args: argparse.Namespace) -> None:
    """Switch to the account `args` name for good, then die with the center."""
    groups = [int(g) for g in args.groups.split(",") if g]
    drop_privileges(args.uid, args.gid, groups)
    die_with_parent(args.parent_pid)


def drop_privileges(uid: int, gid: int, groups: list[int]) -> None:
    """Become `uid`/`gid` with supplementary `groups` for good (real, effective and saved)."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PermissionError(f"could not switch to uid {uid} / gid {gid}")
    if uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            return
        raise PermissionError("root could be regained after switching accounts")


def die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL when the center dies; exit now if it already has."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent_pid:
        os._exit(1)
