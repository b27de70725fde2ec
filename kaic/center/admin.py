"""Administration on a state directory, for `kaic center user add` and `project add`.

These work on the database directly, so they also work while a server is running
(SQLite WAL lets both write).
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

from kaic.center.accounts import is_root_account, name_list
from kaic.center.security import hash_password, new_totp_secret, otpauth_uri
from kaic.center.store import Store

USER_NAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
PROJECT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class AdminError(Exception):
    """An administration request that cannot be carried out; the message says why."""


def add_user(
    state_dir: Path,
    name: str,
    *,
    password: str | None,
    enable_otp: bool,
    unix_account: str | None,
    shared_account: bool = False,
    warn: Callable[[str], None] | None = None,
) -> str | None:
    """Create a user; returns the otpauth:// URI to enrol when OTP was enabled, else None.

    `unix_account` defaults to the user name. It is never root, and it belongs to no other
    user unless `shared_account` says the sharing is meant (then `warn` is told who shares
    it). A user without a password cannot log in with the password grant (the local
    center's user works that way).
    """
    if not USER_NAME_RE.match(name):
        raise AdminError(
            f"invalid user name {name!r}: use lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_', at most 32 characters"
        )
    account = unix_account if unix_account is not None else name
    if not USER_NAME_RE.match(account):
        raise AdminError(f"invalid unix account {account!r}")
    if is_root_account(account):
        raise AdminError(
            f"unix account {account!r} is root: a kaic user acts as its unix account (SSH "
            "certificates, jobs), so it must be a personal, unprivileged one; "
            "give one with --unix-account"
        )
    if password is not None and not password:
        raise AdminError("the password must not be empty")
    secret = new_totp_secret() if enable_otp else None
    password_hash = hash_password(password) if password is not None else None
    store = Store(state_dir)
    try:
        # One write transaction: a concurrent `user add` cannot slip a second user onto
        # the account between the check and the insert.
        with store.transaction():
            if store.get_user(name) is not None:
                raise AdminError(f"user {name!r} already exists")
            sharing = store.users_with_unix_account(account)
            if sharing and not shared_account:
                raise AdminError(
                    f"unix account {account!r} already belongs to {name_list(sharing)}: users "
                    "on one unix account can read and change each other's files and jobs; "
                    "give another --unix-account, or pass --shared-account if they are "
                    "meant to share it"
                )
            try:
                store.create_user(
                    name,
                    unix_account=account,
                    password_hash=password_hash,
                    totp_secret=secret,
                )
            except sqlite3.IntegrityError as exc:  # created concurrently since the check
                raise AdminError(f"user {name!r} already exists") from exc
    finally:
        store.close()
    if sharing and warn is not None:
        warn(
            f"{name} now shares the unix account {account!r} with {name_list(sharing)}: "
            "each can read and change the others' files and jobs"
        )
    return otpauth_uri(secret, name) if secret else None


def add_project(state_dir: Path, name: str, *, gpu_hours: float, members: Sequence[str]) -> None:
    """Create a project, or update an existing one's grant; `members` are added to it.

    Existing members are kept (this command only adds). Unknown members are refused
    before anything changes.
    """
    if not PROJECT_NAME_RE.match(name):
        raise AdminError(
            f"invalid project name {name!r}: use letters, digits, '.', '_' and '-', "
            "at most 64 characters"
        )
    if not math.isfinite(gpu_hours) or gpu_hours < 0:
        raise AdminError(f"GPU hours must be a non-negative number, not {gpu_hours}")
    store = Store(state_dir)
    try:
        with store.transaction():
            member_ids: list[int] = []
            unknown: list[str] = []
            for member in members:
                user = store.get_user(member)
                if user is None:
                    unknown.append(member)
                else:
                    member_ids.append(user.id)
            if unknown:
                raise AdminError(f"unknown user(s): {', '.join(unknown)}; add them first")
            store.upsert_project(name, gpu_hours_granted=gpu_hours, member_ids=member_ids)
    finally:
        store.close()
