"""`add_user` / `add_project` on a state directory."""

from __future__ import annotations

import pwd
from pathlib import Path

import pytest

from kaic.center.admin import AdminError, add_project, add_user
from kaic.center.security import verify_password
from kaic.center.store import Store


def test_add_user_stores_a_hash_and_defaults_the_unix_account(tmp_path: Path) -> None:
    assert add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account=None) is None
    store = Store(tmp_path)
    user = store.get_user("alice")
    store.close()
    assert user is not None
    assert user.unix_account == "alice"
    assert user.password_hash is not None and verify_password("pw", user.password_hash)
    assert user.totp_secret is None


def test_add_user_with_otp_returns_the_uri(tmp_path: Path) -> None:
    uri = add_user(tmp_path, "olga", password="pw", enable_otp=True, unix_account="o123")
    assert uri is not None and uri.startswith("otpauth://totp/kaic%3Aolga?secret=")


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "a" * 33, "a b", "a/b", "../x"])
def test_add_user_rejects_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(AdminError, match="invalid user name"):
        add_user(tmp_path, name, password="pw", enable_otp=False, unix_account=None)


def test_add_user_rejects_bad_unix_account(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="invalid unix account"):
        add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account="Root!")


def test_add_user_refuses_duplicates(tmp_path: Path) -> None:
    add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account=None)
    with pytest.raises(AdminError, match="already exists"):
        add_user(tmp_path, "alice", password="other", enable_otp=False, unix_account=None)


def test_add_project_creates_and_updates(tmp_path: Path) -> None:
    add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account=None)
    add_user(tmp_path, "bob", password="pw", enable_otp=False, unix_account=None)
    add_project(tmp_path, "ai-2026-0042", gpu_hours=10, members=["alice"])
    add_project(tmp_path, "ai-2026-0042", gpu_hours=20.5, members=["bob"])
    store = Store(tmp_path)
    project = store.get_project("ai-2026-0042")
    assert project is not None
    assert project.gpu_hours_granted == 20.5
    assert store.project_members(project.id) == ["alice", "bob"]
    store.close()


def test_add_project_refuses_unknown_members_without_changing_anything(tmp_path: Path) -> None:
    add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account=None)
    with pytest.raises(AdminError, match=r"unknown user.*ghost"):
        add_project(tmp_path, "p1", gpu_hours=10, members=["alice", "ghost"])
    store = Store(tmp_path)
    assert store.get_project("p1") is None
    store.close()


@pytest.mark.parametrize("hours", [-1.0, float("nan"), float("inf")])
def test_add_project_refuses_bad_hours(tmp_path: Path, hours: float) -> None:
    with pytest.raises(AdminError, match="GPU hours"):
        add_project(tmp_path, "p1", gpu_hours=hours, members=[])


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 65])
def test_add_project_refuses_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(AdminError, match="invalid project name"):
        add_project(tmp_path, name, gpu_hours=1, members=[])


@pytest.mark.parametrize(("name", "account"), [("root", None), ("alice", "root")])
def test_add_user_refuses_root(tmp_path: Path, name: str, account: str | None) -> None:
    with pytest.raises(AdminError, match="root"):
        add_user(tmp_path, name, password="pw", enable_otp=False, unix_account=account)
    with pytest.raises(AdminError, match="root"):
        add_user(
            tmp_path,
            name,
            password="pw",
            enable_otp=False,
            unix_account=account,
            shared_account=True,
        )


def test_add_user_refuses_any_uid_0_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`toor` and kin: root by uid under another name."""
    real = pwd.getpwnam

    def getpwnam(name: str) -> pwd.struct_passwd:
        if name == "toor":
            return pwd.struct_passwd(("toor", "x", 0, 0, "", "/root", "/bin/sh"))
        return real(name)

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    with pytest.raises(AdminError, match="root"):
        add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account="toor")


def test_add_user_refuses_a_shared_unix_account_without_the_override(tmp_path: Path) -> None:
    add_user(tmp_path, "alice", password="pw", enable_otp=False, unix_account="lab")
    with pytest.raises(AdminError, match=r"'lab' already belongs to alice.*--shared-account"):
        add_user(tmp_path, "bob", password="pw", enable_otp=False, unix_account="lab")
    warnings: list[str] = []
    add_user(
        tmp_path,
        "bob",
        password="pw",
        enable_otp=False,
        unix_account="lab",
        shared_account=True,
        warn=warnings.append,
    )
    assert len(warnings) == 1 and "alice" in warnings[0] and "lab" in warnings[0]
    store = Store(tmp_path)
    assert store.users_with_unix_account("lab") == ["alice", "bob"]
    store.close()


def test_add_user_with_the_override_but_nobody_to_share_with_warns_nothing(tmp_path: Path) -> None:
    warnings: list[str] = []
    add_user(
        tmp_path,
        "alice",
        password=None,
        enable_otp=False,
        unix_account=None,
        shared_account=True,
        warn=warnings.append,
    )
    assert warnings == []
