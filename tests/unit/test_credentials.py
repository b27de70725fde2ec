"""Credential store: env > keyring (bounded by a timeout) > 0600 file, never silent fallback."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import keyring
import keyring.core
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null

from kaic.auth import credentials as store
from kaic.auth.credentials import Credentials
from kaic.auth.keyring_timeout import reset_keyring_state
from kaic.errors import ConfigError, UsageError
from tests.fakes.keyrings import (
    RELEASE_HANGING,
    BrokenKeyring,
    FileFakeKeyring,
    HangingKeyring,
    RecordingKeyring,
)

CREDS = Credentials(
    access_token="kaa_access_secret_1",
    refresh_token="kar_refresh_secret_1",
    expires_at=datetime(2030, 1, 1, tzinfo=timezone.utc),
    kind="session",
)
OTHER = Credentials(access_token="kaa_access_secret_2", refresh_token="kar_refresh_secret_2")


@pytest.fixture(autouse=True)
def keyring_backend() -> Iterator[None]:
    """Restore keyring's process-wide backend and kaic's timeout memory after each test."""
    saved = keyring.core._keyring_backend
    RELEASE_HANGING.clear()
    reset_keyring_state()
    yield
    RELEASE_HANGING.set()  # let worker threads stuck in HangingKeyring finish
    keyring.core._keyring_backend = saved
    reset_keyring_state()


@pytest.fixture
def warned() -> list[str]:
    return []


def use_backend(backend: KeyringBackend) -> None:
    keyring.set_keyring(backend)


def test_repr_hides_secrets() -> None:
    text = repr(CREDS) + str(CREDS)
    assert "secret" not in text
    assert "kind='session'" in text


def test_json_round_trip() -> None:
    assert Credentials.from_json(CREDS.to_json()) == CREDS
    api = Credentials.from_token(" kaic_abcdef123 ")
    assert api.kind == "api"
    assert api.access_token == "kaic_abcdef123"
    assert Credentials.from_json(api.to_json()) == api


def test_working_keyring_is_used_and_no_file_written(tmp_path: Path, warned: list[str]) -> None:
    use_backend(FileFakeKeyring())
    assert store.save("default", CREDS, warn=warned.append) == "keyring"
    assert warned == []
    assert not store.credentials_path("default").exists()
    assert not store.credentials_dir().exists()
    assert set(FileFakeKeyring().entries()) == {"kaic/default"}
    assert store.load("default") == (CREDS, "keyring")


def test_keyring_selected_by_env_is_resolved_in_worker(warned: list[str]) -> None:
    # The conftest points PYTHON_KEYRING_BACKEND at FileFakeKeyring; force re-resolution.
    keyring.core._keyring_backend = None
    assert store.save("work", CREDS, warn=warned.append) == "keyring"
    assert isinstance(keyring.get_keyring(), FileFakeKeyring)
    assert warned == []


def test_precedence_env_then_keyring_then_file(
    monkeypatch: pytest.MonkeyPatch, warned: list[str]
) -> None:
    use_backend(FileFakeKeyring())
    store.save("default", OTHER, insecure_storage=True, warn=warned.append)
    assert store.load("default") == (OTHER, "file")
    FileFakeKeyring().set_password("kaic", "default", CREDS.to_json())
    assert store.load("default") == (CREDS, "keyring")
    monkeypatch.setenv("KAIC_TOKEN", "kaic_env_token_123")
    found = store.load("default")
    assert found is not None
    assert found[1] == "env"
    assert found[0].access_token == "kaic_env_token_123"
    assert found[0].refresh_token is None
    # logout must look past the environment's token to the stored session
    assert store.load("default", use_env=False) == (CREDS, "keyring")
    assert warned == []


def test_nothing_stored_is_none() -> None:
    use_backend(FileFakeKeyring())
    assert store.load("default") is None


def test_hanging_keyring_falls_back_to_file_within_timeout(
    monkeypatch: pytest.MonkeyPatch, warned: list[str]
) -> None:
    monkeypatch.setenv("KAIC_KEYRING_TIMEOUT", "0.5")
    # Selected by env and resolved inside the worker thread, as on a real machine.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.fakes.keyrings.HangingKeyring")
    keyring.core._keyring_backend = None
    started = time.monotonic()
    assert store.save("default", CREDS, warn=warned.append) == "file"
    assert time.monotonic() - started < 3
    assert len(warned) == 1
    assert "timed out after 0.5 s" in warned[0]
    assert str(store.credentials_path("default").name) in warned[0]
    assert "0600" in warned[0]
    assert "secret" not in warned[0]
    # The keyring is known to hang now: loading does not wait another timeout.
    started = time.monotonic()
    warned.clear()
    assert store.load("default", warn=warned.append) == (CREDS, "file")
    assert time.monotonic() - started < 0.4
    assert warned and "keyring unavailable" in warned[0]


def test_hanging_keyring_on_load_returns_file(
    monkeypatch: pytest.MonkeyPatch, warned: list[str]
) -> None:
    monkeypatch.setenv("KAIC_KEYRING_TIMEOUT", "0.3")
    store.save("default", CREDS, insecure_storage=True, warn=warned.append)
    use_backend(HangingKeyring())
    started = time.monotonic()
    assert store.load("default", warn=warned.append) == (CREDS, "file")
    assert time.monotonic() - started < 3
    assert "timed out after 0.3 s" in warned[0]


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring()])
def test_no_backend_falls_back_to_file_with_warning(
    backend: KeyringBackend, warned: list[str]
) -> None:
    use_backend(backend)
    assert store.save("default", CREDS, warn=warned.append) == "file"
    assert len(warned) == 1
    assert "no keyring backend" in warned[0]
    assert store.load("default", credential_store="file") == (CREDS, "file")


def test_backend_error_falls_back_without_leaking_the_secret(warned: list[str]) -> None:
    use_backend(BrokenKeyring())
    assert store.save("default", CREDS, warn=warned.append) == "file"
    assert len(warned) == 1
    assert "RuntimeError" in warned[0]
    assert "secret" not in warned[0]


def test_insecure_storage_never_touches_keyring(warned: list[str]) -> None:
    RecordingKeyring.calls.clear()
    use_backend(RecordingKeyring())
    assert store.save("default", CREDS, insecure_storage=True, warn=warned.append) == "file"
    assert store.load("default", credential_store="file") == (CREDS, "file")
    assert RecordingKeyring.calls == []
    assert warned == []


def test_file_is_created_0600_in_0700_dir(warned: list[str]) -> None:
    store.save("default", CREDS, insecure_storage=True, warn=warned.append)
    path = store.credentials_path("default")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["access_token"] == CREDS.access_token
    assert [p.name for p in path.parent.iterdir()] == ["default.json"]  # no temp file left


def test_group_readable_file_is_refused(warned: list[str]) -> None:
    store.save("default", CREDS, insecure_storage=True, warn=warned.append)
    path = store.credentials_path("default")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as info:
        store.load("default", credential_store="file")
    assert f"chmod 600 {path}" in info.value.message
    assert str(path) in info.value.message
    assert "secret" not in info.value.message


def test_corrupt_file_error_has_no_secret(warned: list[str]) -> None:
    path = store.credentials_path("default")
    path.parent.mkdir(parents=True, mode=0o700)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, b'{"access_token": "kaa_secret_but_truncated')
    os.close(fd)
    with pytest.raises(ConfigError) as info:
        store.load("default", credential_store="file")
    assert "secret" not in info.value.message
    assert str(path) in info.value.message


def test_keyring_save_removes_stale_file(warned: list[str]) -> None:
    use_backend(FileFakeKeyring())
    store.save("default", OTHER, insecure_storage=True, warn=warned.append)
    assert store.save("default", CREDS, warn=warned.append) == "keyring"
    assert not store.credentials_path("default").exists()


def test_delete_removes_keyring_entry_and_file(warned: list[str]) -> None:
    use_backend(FileFakeKeyring())
    store.save("default", CREDS, warn=warned.append)
    # an inconsistent state: both stores hold something
    store.credentials_path("default").parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(store.credentials_path("default"), os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, OTHER.to_json().encode())
    os.close(fd)
    assert store.delete("default") is True
    assert FileFakeKeyring().entries() == {}
    assert not store.credentials_path("default").exists()
    assert store.load("default") is None
    assert store.delete("default") is False


def test_delete_with_hanging_keyring_is_bounded(
    monkeypatch: pytest.MonkeyPatch, warned: list[str]
) -> None:
    monkeypatch.setenv("KAIC_KEYRING_TIMEOUT", "0.2")
    store.save("default", CREDS, insecure_storage=True, warn=warned.append)
    use_backend(HangingKeyring())
    started = time.monotonic()
    assert store.delete("default", warn=warned.append) is True
    assert time.monotonic() - started < 3
    assert not store.credentials_path("default").exists()
    assert warned and "timed out" in warned[0]


def test_profile_name_cannot_escape_the_credentials_dir() -> None:
    with pytest.raises(UsageError):
        store.credentials_path("../evil")


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("kaic_first_line\nsecond-line-secret", "a line break"),
        ("kaic_first_line\r\nsecond-line-secret", "a line break"),
        ("kaic_first second-line-secret", "a space or tab"),
        ("kaic_first\x1bsecond-line-secret", "a control character"),
        ("kaic_firstésecond-line-secret", "not plain ASCII"),
        ("\ufeffkaic_firstsecond-line-secret", "not plain ASCII"),
    ],
)
def test_kaic_token_that_cannot_be_a_header_is_exit_3_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str, why: str
) -> None:
    from kaic.errors import AuthRequired, ExitCode

    monkeypatch.setenv("KAIC_TOKEN", value)
    with pytest.raises(AuthRequired) as info:
        store.from_env()
    err = info.value
    assert err.exit_code == ExitCode.AUTH
    assert "KAIC_TOKEN" in err.message and why in err.message
    shown = err.message + (err.hint or "") + repr(err)
    assert "second-line-secret" not in shown and "kaic_first" not in shown
    # The credential store reads it through from_env too.
    with pytest.raises(AuthRequired):
        store.load("default")


def test_kaic_token_surrounding_whitespace_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAIC_TOKEN", "  kaic_0123456789abcdef\n")
    found = store.from_env()
    assert found is not None and found.access_token == "kaic_0123456789abcdef"
