"""Fake keyring backends for tests: never the developer's real keyring.

Select one with ``keyring.set_keyring(...)`` or, for a fresh process (CLI subprocess tests),
``PYTHON_KEYRING_BACKEND=tests.fakes.keyrings.<Name>``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError

#: Set by tests (in teardown) to let threads stuck in HangingKeyring finish.
RELEASE_HANGING = threading.Event()
HANG_SECONDS = 60.0


class FileFakeKeyring(KeyringBackend):
    """A working keyring that keeps its entries in a JSON file.

    The file is ``$KAIC_TEST_KEYRING_FILE``, read on every call so that each test (which sets
    its own path) sees its own keyring even though keyring caches the backend per process.
    """

    priority = 1

    @staticmethod
    def _path() -> Path:
        value = os.environ.get("KAIC_TEST_KEYRING_FILE")
        if not value:
            raise RuntimeError("KAIC_TEST_KEYRING_FILE is not set")
        return Path(value)

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self._path().read_text())
        except FileNotFoundError:
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def _write(self, data: dict[str, str]) -> None:
        path = self._path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, sort_keys=True))

    @staticmethod
    def _key(service: str, username: str) -> str:
        return f"{service}\x00{username}"

    def get_password(self, service: str, username: str) -> str | None:
        return self._read().get(self._key(service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        data = self._read()
        data[self._key(service, username)] = password
        self._write(data)

    def delete_password(self, service: str, username: str) -> None:
        data = self._read()
        if data.pop(self._key(service, username), None) is None:
            raise PasswordDeleteError("no such password")
        self._write(data)

    def entries(self) -> dict[str, str]:
        """All stored entries as ``{"service/username": value}`` (for assertions)."""
        return {k.replace("\x00", "/"): v for k, v in self._read().items()}


class HangingKeyring(KeyringBackend):
    """A keyring whose every call hangs (like Secret Service over a dead D-Bus, or WSL2).

    Calls block for up to 60 s, or until `RELEASE_HANGING` is set by the test's teardown.
    A test watching another process sets ``$KAIC_TEST_KEYRING_ENTERED`` to a path: the first
    call creates that file, so the test knows the process now hangs in the keyring.
    """

    priority = 1
    calls: list[str] = []  # noqa: RUF012 - shared on purpose: visible from the worker thread

    def _hang(self, what: str) -> None:
        HangingKeyring.calls.append(what)
        entered = os.environ.get("KAIC_TEST_KEYRING_ENTERED")
        if entered:
            Path(entered).touch()
        RELEASE_HANGING.wait(HANG_SECONDS)

    def get_password(self, service: str, username: str) -> str | None:
        self._hang("get")
        return None

    def set_password(self, service: str, username: str, password: str) -> None:
        self._hang("set")

    def delete_password(self, service: str, username: str) -> None:
        self._hang("delete")


class BrokenKeyring(KeyringBackend):
    """A keyring whose backend raises (a locked collection, a D-Bus error ...)."""

    priority = 1

    def get_password(self, service: str, username: str) -> str | None:
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")

    def set_password(self, service: str, username: str, password: str) -> None:
        raise RuntimeError(f"cannot store {password}")  # a careless backend echoing the secret

    def delete_password(self, service: str, username: str) -> None:
        raise RuntimeError("org.freedesktop.DBus.Error.ServiceUnknown")


class RecordingKeyring(FileFakeKeyring):
    """A working FileFakeKeyring that records every call (to prove one was never made)."""

    calls: list[str] = []  # noqa: RUF012

    def get_password(self, service: str, username: str) -> str | None:
        RecordingKeyring.calls.append("get")
        return super().get_password(service, username)

    def set_password(self, service: str, username: str, password: str) -> None:
        RecordingKeyring.calls.append("set")
        super().set_password(service, username, password)

    def delete_password(self, service: str, username: str) -> None:
        RecordingKeyring.calls.append("delete")
        super().delete_password(service, username)
