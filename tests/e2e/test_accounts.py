"""Accounts through the real CLI and a real center on loopback: who may map to which unix
account, how a center shared by several users must run, and how passwords and one-time
codes are asked for."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from kaic.center.admin import add_user
from kaic.center.security import totp_code, verify_password
from kaic.center.store import Store
from tests.helpers import RunningCenter, free_port, run_cli, run_in_pty, start_center

PASSWORD = "correct horse battery staple"


def _user_add(state: Path, *args: str, expect: int = 0, password: str = PASSWORD):
    return run_cli(
        "center",
        "user",
        "add",
        *args,
        "--password-stdin",
        "--state-dir",
        str(state),
        input=password + "\n",
        expect=expect,
    )


def _unix_account(state: Path, user: str) -> str | None:
    store = Store(state)
    try:
        row = store.get_user(user)
    finally:
        store.close()
    return row.unix_account if row else None


# -- unix accounts at `user add` -----------------------------------------------------------


def test_a_second_user_on_one_unix_account_needs_the_override(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _user_add(state, "alice", "--unix-account", "lab01")
    refused = _user_add(state, "bob", "--unix-account", "lab01", expect=1)
    assert "lab01" in refused.stderr and "alice" in refused.stderr
    assert "--shared-account" in refused.stderr
    assert _unix_account(state, "bob") is None
    # The default unix account (the user name) is checked the same way.
    _user_add(state, "lab01", expect=1)

    allowed = _user_add(state, "bob", "--unix-account", "lab01", "--shared-account")
    assert "warning" in allowed.stderr.lower() and "alice" in allowed.stderr
    assert _unix_account(state, "bob") == "lab01"


@pytest.mark.parametrize("args", [("root",), ("alice", "--unix-account", "root")])
def test_root_is_refused_as_a_unix_account(tmp_path: Path, args: tuple[str, ...]) -> None:
    state = tmp_path / "state"
    refused = _user_add(state, *args, expect=1)
    assert "root" in refused.stderr
    # Not even the override makes root acceptable.
    _user_add(state, *args, "--shared-account", expect=1)
    assert _unix_account(state, args[0]) is None


# -- passwords asked for at a terminal ------------------------------------------------------


@pytest.mark.parametrize("flags", [["--password-stdin"], []], ids=["password-stdin", "prompt"])
def test_user_add_asks_for_the_password_twice_with_echo_off(
    tmp_path: Path, flags: list[str]
) -> None:
    state = tmp_path / "state"
    secret = "s3cret-" + "q" * 10
    code, shown = run_in_pty(
        "center",
        "user",
        "add",
        "alice",
        *flags,
        "--state-dir",
        str(state),
        answers=[("New password", secret), ("Repeat", secret)],
    )
    assert code == 0, shown
    assert secret not in shown
    store = Store(state)
    try:
        user = store.get_user("alice")
    finally:
        store.close()
    assert user is not None and user.password_hash is not None
    assert verify_password(secret, user.password_hash)


def test_user_add_refuses_differing_passwords_at_a_terminal(tmp_path: Path) -> None:
    state = tmp_path / "state"
    code, shown = run_in_pty(
        "center",
        "user",
        "add",
        "alice",
        "--password-stdin",
        "--state-dir",
        str(state),
        answers=[("New password", "one-password"), ("Repeat", "another-password")],
    )
    assert code == 2, shown
    assert "differ" in shown
    assert "one-password" not in shown and "another-password" not in shown
    assert _unix_account(state, "alice") is None


# -- a center several users share ----------------------------------------------------------


def test_serve_refuses_several_users_on_one_account_before_binding(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    add_user(state, "bob", password=PASSWORD, enable_otp=False, unix_account=None)
    port = free_port()
    ready = tmp_path / "ready.json"
    res = run_cli(
        "center",
        "serve",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--ready-file",
        str(ready),
        expect=2,
        timeout=60,
    )
    assert "--run-as-user" in res.stderr and "--single-account-ok" in res.stderr
    assert "2 users" in res.stderr
    assert not ready.exists()
    assert "starting on" not in res.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=2)


def test_serve_with_several_users_when_told_explicitly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    add_user(state, "bob", password=PASSWORD, enable_otp=False, unix_account=None)
    center = start_center(state, "--single-account-ok")
    try:
        assert httpx.get(center.url + "/v1/health", timeout=10).status_code == 200
        log = center.log.read_text()
        assert "WARNING" in log.upper() and "database" in log and "CA key" in log
    finally:
        center.stop()


def test_one_user_needs_no_override(tmp_path: Path) -> None:
    state = tmp_path / "state"
    add_user(state, "alice", password=PASSWORD, enable_otp=False, unix_account=None)
    center = start_center(state)
    try:
        assert httpx.get(center.url + "/v1/health", timeout=10).status_code == 200
    finally:
        center.stop()


# -- certificates ---------------------------------------------------------------------------


def test_no_certificate_for_root_even_from_an_old_database(center: RunningCenter) -> None:
    """A database written before `user add` refused root may still map a user to it."""
    store = Store(center.state_dir)
    try:
        from kaic.center.security import hash_password

        store.create_user("ops", unix_account="root", password_hash=hash_password(PASSWORD))
    finally:
        store.close()
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    public = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    with httpx.Client(base_url=center.url, timeout=30) as http:
        login = http.post(
            "/v1/auth/token",
            json={"grant_type": "password", "username": "ops", "password": PASSWORD},
        )
        assert login.status_code == 200, login.text
        response = http.post(
            "/v1/ssh/certificates",
            json={"public_key": public.decode()},
            headers={"Authorization": f"Bearer {login.json()['access_token']}"},
        )
    assert response.status_code == 403, response.text
    assert "root" in response.json()["error"]["message"]
    assert "signed SSH certificate" not in center.log.read_text()


# -- one-time codes -------------------------------------------------------------------------


def test_a_wrong_one_time_code_says_so(center: RunningCenter) -> None:
    uri = center.add_user("olga", PASSWORD, otp=True)
    assert uri is not None
    secret = uri.split("secret=")[1].split("&")[0]
    now = time.time()
    valid = {totp_code(secret, now + offset) for offset in (-60, -30, 0, 30, 60)}
    wrong = next(code for code in ("000000", "111111", "222222") if code not in valid)
    res = run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        "olga",
        "--password-stdin",
        "--otp",
        wrong,
        input=PASSWORD + "\n",
        expect=3,
    )
    assert "the one-time code was wrong or expired; try the next code" in res.stderr
    assert "invalid username or password" not in res.stderr
