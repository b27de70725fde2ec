"""Login, whoami, logout through the real CLI against a real center on loopback."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from tests.helpers import RunningCenter, run_cli, run_in_pty, start_center

Alice = tuple[RunningCenter, str, str]


def login(center: RunningCenter, user: str, password: str, *extra: str, expect: int = 0):
    return run_cli(
        "login",
        "--center",
        center.url,
        "--username",
        user,
        "--password-stdin",
        *extra,
        input=password + "\n",
        expect=expect,
    )


def creds_file(home: Path, profile: str) -> Path:
    return home / "config" / "credentials" / f"{profile}.json"


def test_login_whoami_keyring(alice: Alice) -> None:
    center, user, password = alice
    res = login(center, user, password)
    assert "Logged in" in res.stderr and password not in res.stderr + res.stdout
    me = run_cli("whoami", "--json").json()
    assert isinstance(me, dict)
    assert me["user"] == "alice" and me["unix_account"] == "alice"
    assert me["center"] == center.url
    assert me["token_source"] == "keyring"
    assert me["projects"] == ["ai-2026-0042"]
    assert me["expires_at"]
    assert set(me) == {
        "user",
        "unix_account",
        "center",
        "profile",
        "token_source",
        "expires_at",
        "projects",
    }


def test_insecure_storage_writes_0600_file(alice: Alice, isolated_dirs: Path) -> None:
    center, user, password = alice
    login(center, user, password, "--insecure-storage", "--profile", "work")
    path = creds_file(isolated_dirs, "work")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert run_cli("whoami", "--json").json()["token_source"] == "file"  # type: ignore[index]
    keyring_file = isolated_dirs / "keyring.json"
    assert not keyring_file.exists() or "work" not in keyring_file.read_text()


def test_wrong_password_exit_3_no_echo(alice: Alice) -> None:
    center, user, _ = alice
    res = login(center, user, "not-the-password", expect=3)
    assert "not-the-password" not in res.stdout + res.stderr
    assert "password" in res.stderr.lower()
    # Unknown user: the same answer, no hint whether the account exists.
    res2 = login(center, "mallory", "not-the-password", expect=3)
    assert (
        res2.stderr.splitlines()[0].split("(request id")[0]
        == (res.stderr.splitlines()[0].split("(request id")[0])
    )


def test_unreachable_center_exit_5_names_url() -> None:
    res = run_cli(
        "login",
        "--center",
        "http://127.0.0.1:9",
        "-u",
        "a",
        "--password-stdin",
        input="x\n",
        expect=5,
    )
    assert "http://127.0.0.1:9" in res.stderr


def test_malformed_url_exit_2() -> None:
    res = run_cli(
        "login", "--center", "ftp:/nope", "-u", "a", "--password-stdin", input="x\n", expect=2
    )
    assert "ftp:/nope" in res.stderr


def test_unknown_profile_exit_4_lists_choices(alice: Alice) -> None:
    center, user, password = alice
    login(center, user, password, "--profile", "work")
    res = run_cli("whoami", "--profile", "nope", expect=4)
    assert "nope" in res.stderr and "work" in res.stderr
    res = run_cli("config", "use", "nope", expect=4)
    assert "work" in res.stderr


def test_no_terminal_no_password_stdin_is_usage_error(alice: Alice) -> None:
    center, user, _ = alice
    res = run_cli("login", "--center", center.url, "-u", user, expect=2)
    assert "--password-stdin" in res.stderr


def test_password_prompt_on_terminal_is_hidden(alice: Alice) -> None:
    center, user, password = alice
    code, shown = run_in_pty(
        "login", "--center", center.url, "-u", user, answers=[("Password", password)]
    )
    assert code == 0, shown
    assert password not in shown
    assert "Logged in" in shown


def test_otp_login(center: RunningCenter) -> None:
    from kaic.center.security import totp_code

    step = time.time() // 30

    def totp_at(secret: str, offset: int) -> str:
        # Codes of fixed steps (this one, the next): valid with one step of skew either way
        # even when the clock crosses a step boundary during the test.
        return totp_code(secret, (step + offset) * 30)

    uri = center.add_user("bob", "bob-password-123", otp=True)
    assert uri and uri.startswith("otpauth://totp/")
    secret = uri.split("secret=")[1].split("&")[0]
    res = run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        "bob",
        "--password-stdin",
        input="bob-password-123\n",
        expect=3,
    )
    assert "--otp" in res.stderr
    run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        "bob",
        "--password-stdin",
        "--otp",
        totp_at(secret, 0),
        input="bob-password-123\n",
    )
    assert run_cli("whoami", "--json").json()["user"] == "bob"  # type: ignore[index]
    # On a terminal the code is asked for, hidden.
    code, shown = run_in_pty(
        "login",
        "--center",
        center.url,
        "-u",
        "bob",
        answers=[("Password", "bob-password-123"), ("One-time code", totp_at(secret, 1))],
    )
    assert code == 0, shown
    # A one-time code opens one session only: replaying it is refused.
    replay = run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        "bob",
        "--password-stdin",
        "--otp",
        totp_at(secret, 1),
        input="bob-password-123\n",
        expect=3,
    )
    assert "already used" in replay.stderr, replay.explain()


def test_logout_revokes_server_side(alice: Alice, isolated_dirs: Path) -> None:
    center, user, password = alice
    login(center, user, password, "--insecure-storage")
    saved = json.loads(next((isolated_dirs / "config" / "credentials").glob("*.json")).read_text())
    run_cli("logout")
    assert not list((isolated_dirs / "config" / "credentials").glob("*.json"))
    # The old access token no longer works on the center: revoked there, not just forgotten.
    res = run_cli("whoami", env={**os.environ, "KAIC_TOKEN": saved["access_token"]}, expect=3)
    assert "kaic login" in res.stderr
    assert saved["access_token"] not in res.stderr


def test_whoami_not_logged_in_exit_3(alice: Alice) -> None:
    center, _, _ = alice
    res = run_cli("whoami", env={**os.environ, "KAIC_CENTER": center.url}, expect=3)
    assert "kaic login" in res.stderr


def test_transparent_refresh_after_access_token_expiry(tmp_path: Path, isolated_dirs: Path) -> None:
    short = start_center(tmp_path / "short", "--access-token-ttl", "1")
    try:
        short.add_user("alice", "pw-alice-123456")
        login(short, "alice", "pw-alice-123456", "--insecure-storage")
        path = next((isolated_dirs / "config" / "credentials").glob("*.json"))
        before = json.loads(path.read_text())
        time.sleep(1.5)  # let the 1 s access token expire (time must pass; no state to poll)
        assert run_cli("whoami", "--json").json()["user"] == "alice"  # type: ignore[index]
        after = json.loads(path.read_text())
        assert after["refresh_token"] != before["refresh_token"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        short.stop()


def test_debug_trace_redacts_secrets(alice: Alice, isolated_dirs: Path) -> None:
    center, user, password = alice
    res = login(center, user, password, "--insecure-storage")
    env = {**os.environ, "KAIC_DEBUG": "1"}
    res = run_cli("whoami", env=env)
    saved = json.loads(next((isolated_dirs / "config" / "credentials").glob("*.json")).read_text())
    assert "GET" in res.stderr  # the request log is there
    for secret in (saved["access_token"], saved["refresh_token"], password):
        assert secret not in res.stderr + res.stdout


@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_loose_credentials_file_refused(alice: Alice, isolated_dirs: Path, mode: int) -> None:
    center, user, password = alice
    login(center, user, password, "--insecure-storage")
    path = next((isolated_dirs / "config" / "credentials").glob("*.json"))
    path.chmod(mode)
    res = run_cli("whoami", expect=1)
    assert "chmod 600" in res.stderr and str(path) in res.stderr


def test_hanging_keyring_falls_back_to_file(alice: Alice, isolated_dirs: Path) -> None:
    center, user, password = alice
    env = {
        **os.environ,
        "PYTHON_KEYRING_BACKEND": "tests.fakes.keyrings.HangingKeyring",
        "KAIC_KEYRING_TIMEOUT": "0.5",
    }
    t0 = time.monotonic()
    res = run_cli(
        "login",
        "--center",
        center.url,
        "-u",
        user,
        "--password-stdin",
        input=password + "\n",
        env=env,
    )
    assert time.monotonic() - t0 < 15
    assert "keyring" in res.stderr.lower() and "warning" in res.stderr.lower()
    path = next((isolated_dirs / "config" / "credentials").glob("*.json"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    me = run_cli("whoami", "--json", env=env).json()
    assert me["token_source"] == "file"  # type: ignore[index]


def test_corrupt_config_exit_1_names_file_and_line(alice: Alice, isolated_dirs: Path) -> None:
    center, user, password = alice
    login(center, user, password)
    cfg = isolated_dirs / "config" / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[profiles.broken\ncenter = 1\n")
    before = cfg.read_bytes()
    res = run_cli("whoami", expect=1)
    assert str(cfg) in res.stderr and "line" in res.stderr
    assert "Traceback" not in res.stderr
    assert cfg.read_bytes() == before


def test_kaic_center_elsewhere_never_gets_the_profiles_tokens(alice: Alice, tmp_path: Path) -> None:
    """A KAIC_CENTER pointing at another server must not receive the stored tokens."""
    import http.server
    import threading

    center, user, password = alice
    login(center, user, password)
    seen: list[str] = []

    class Capture(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization") or "")
            self.send_response(401)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        other = f"http://127.0.0.1:{server.server_address[1]}"
        res = run_cli("whoami", env={**os.environ, "KAIC_CENTER": other}, expect=3)
        assert "not logged in" in res.stderr
        assert seen == []  # nothing was even sent without a token for that center
    finally:
        server.shutdown()


def test_concurrent_refreshes_keep_the_session(tmp_path: Path, isolated_dirs: Path) -> None:
    """Several kaic processes meeting an expired access token at once: one refreshes, the
    others pick up its tokens; nobody replays the rotated refresh token (that would revoke
    the whole session)."""
    import subprocess
    import sys

    from tests.helpers import cli_env

    short = start_center(tmp_path / "short2", "--access-token-ttl", "1")
    try:
        short.add_user("alice", "pw-alice-123456")
        login(short, "alice", "pw-alice-123456", "--insecure-storage")
        for _round in range(2):
            time.sleep(1.5)  # let the 1 s access token expire (time must pass)
            procs = [
                subprocess.Popen(
                    [sys.executable, "-m", "kaic", "whoami", "--json"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=cli_env(),
                    text=True,
                )
                for _ in range(4)
            ]
            outs = [p.communicate(timeout=60) for p in procs]
            assert [p.returncode for p in procs] == [0, 0, 0, 0], outs
        assert run_cli("whoami", "--json").json()["user"] == "alice"  # type: ignore[index]
    finally:
        short.stop()
