"""Which unix accounts kaic users may act as, and when users would share one.

A kaic user acts on the cluster as its unix account: SSH certificates name it as their
principal, and jobs run as it. So root is never one (a certificate for root would open
every host that trusts the CA), and two users on one account can read and change each
other's files and jobs. A center whose local executor runs every job as the center's own
account puts all its users on that one account — and next to the center's database and
SSH CA key.
"""

from __future__ import annotations

import os
import pwd

from kaic.center.settings import CenterSettings
from kaic.center.store import Store

ROOT_NAME = "root"


def is_root_account(account: str) -> bool:
    """Whether `account` is root: named `root`, or uid 0 on this host (e.g. `toor`)."""
    if account == ROOT_NAME:
        return True
    try:
        return pwd.getpwnam(account).pw_uid == 0
    except KeyError:  # not an account of this host (e.g. only on the cluster)
        return False


def name_list(names: list[str], *, most: int = 5) -> str:
    """`a, b, c` — or the first `most` and how many more."""
    shown = ", ".join(names[:most])
    return shown if len(names) <= most else f"{shown} and {len(names) - most} more"


def is_center_account(account: str) -> bool:
    """Whether `account` is the account this center process runs as."""
    try:
        return pwd.getpwnam(account).pw_uid == os.geteuid()
    except KeyError:
        return False


class SharedCenterAccount(Exception):
    """Several users would all run jobs as the center's own account; the message says why
    that is refused and `hint` how to serve them."""

    def __init__(self, users: list[str]) -> None:
        self.users = users
        super().__init__(
            f"refusing to serve {len(users)} users ({name_list(users)}) from one unix "
            "account: without --run-as-user the local executor runs every job as this "
            "center's own account, so each user's jobs could read and change the others' "
            "files and jobs, the center's database (password hashes, tokens) and its SSH "
            "CA key"
        )
        self.hint = (
            "run jobs as their users: `kaic center serve --run-as-user --storage-root "
            "'/home/{unix_account}'` (as root), or use --executor slurm; if every user may "
            "see everything of every other, pass --single-account-ok"
        )


def shared_center_account_users(settings: CenterSettings) -> list[str]:
    """The users whose jobs would all run as the center's own account: every user when the
    local executor does not switch accounts and there is more than one, else none.

    Raises SharedCenterAccount for several users unless `settings.single_account_ok`; the
    caller warns about the users returned. Checked before the center serves anyone.
    """
    if settings.executor != "local" or settings.run_as_users:
        return []
    store = Store(settings.state_dir, now=settings.now)
    try:
        users = store.user_names()
    finally:
        store.close()
    if len(users) < 2:
        return []
    if not settings.single_account_ok:
        raise SharedCenterAccount(users)
    return users


def shared_center_account_warning(users: list[str]) -> str:
    """The loud line a center serving `users` from its own account logs at start."""
    return (
        f"WARNING: --single-account-ok: the jobs of all {len(users)} users "
        f"({name_list(users)}) run as this center's own unix account; each user can read and "
        "change every other user's files and jobs, the center's database (password hashes, "
        "tokens) and its SSH CA key"
    )
