"""Whose jobs may run as the center's own account: the check the local executor makes when
it does not switch accounts (no `run_as_users`), at every job start.

`kaic center serve` refuses to start for several users on one account (`kaic.center.accounts`,
checked again in `kaic.center.server.serve` for every entry point), but users can be added
while a center runs, and a center started as root would run its jobs as root. So the rule is
checked where a job starts, against the database as it is now:

- jobs never run as root: a center running as root without `run_as_users` starts none
  (unless its operator said `single_account_ok`, accepting that jobs run as the center's own
  account, root included);
- the embedded local center (`local_user`) runs only its own user's jobs; it runs as the
  person who started it, so as root it runs root's own jobs — no one gains a right;
- otherwise one user runs jobs as the center's account: the first one created; a user added
  later is refused unless the operator said `single_account_ok`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaic.center.settings import CenterSettings

RUN_AS_USER_HINT = (
    "serve jobs as their users' accounts: `kaic center serve --run-as-user --storage-root "
    "'/home/{unix_account}'` (as root), or use --executor slurm"
)


def own_account_refusal(settings: CenterSettings, user: str) -> str | None:
    """Why `user`'s job may not run as the center's own account, or None when it may."""
    if settings.run_as_users or settings.executor != "local":
        return None
    if settings.local_user is not None:
        if user == settings.local_user or settings.single_account_ok:
            return None
        return (
            f"this local center runs only {settings.local_user}'s jobs, as its own unix "
            f"account; {user}'s jobs would run as that account too. {RUN_AS_USER_HINT}"
        )
    if settings.single_account_ok:
        return None
    if os.geteuid() == 0:
        return (
            "this center runs as root without --run-as-user, and jobs never run as root. "
            f"{RUN_AS_USER_HINT}; or run the center as an unprivileged account"
        )
    first = _first_user(settings)
    if first is None or user == first:
        return None
    return (
        f"this center runs every job as its own unix account and already does for {first}: "
        f"{user}'s jobs could read and change theirs, the center's database and its SSH CA "
        f"key. {RUN_AS_USER_HINT}; or restart it with --single-account-ok if every user may "
        "act as every other"
    )


def _first_user(settings: CenterSettings) -> str | None:
    """The center's first user (the one a single-account center serves), None if none."""
    from kaic.center.store import Store

    store = Store(settings.state_dir, now=settings.now)
    try:
        rows = store.fetchall("SELECT name FROM users ORDER BY id LIMIT 1")
    finally:
        store.close()
    return str(rows[0]["name"]) if rows else None
