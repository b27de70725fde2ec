from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RunningCenter, kill_center_jobs, start_center
from tests.inprocess import FakeCenter, RunLine, bind

# Variables that would make a test talk to the developer's real center or keyring.
_LEAKY = (
    "KAIC_TOKEN",
    "KAIC_CENTER",
    "KAIC_PROFILE",
    "KAIC_DEBUG",
    "KAIC_CA_BUNDLE",
    "KAIC_INSECURE_HTTP",
    "PYTHON_KEYRING_BACKEND",
)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own config and state dirs and no ambient credentials."""
    home = tmp_path / "kaic-home"
    monkeypatch.setenv("KAIC_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("KAIC_STATE_DIR", str(home / "state"))
    for var in _LEAKY:
        monkeypatch.delenv(var, raising=False)
    # No real keyring in tests: a fake that persists to a file, unless a test picks another.
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "tests.fakes.keyrings.FileFakeKeyring")
    monkeypatch.setenv("KAIC_TEST_KEYRING_FILE", str(home / "keyring.json"))
    yield home
    # Stop a local center a test may have started through the CLI (by its recorded PID).
    local = home / "state" / "center"
    if (local / "center.json").exists():
        from kaic.flows.local_center import stop

        stop(local)
    kill_center_jobs(local)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[RunningCenter]:
    """A real reference center on a free 127.0.0.1 port, stopped by PID afterwards."""
    running = start_center(tmp_path / "center-state")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def alice(center: RunningCenter) -> tuple[RunningCenter, str, str]:
    password = "correct horse battery staple"
    center.add_user("alice", password)
    center.add_project("ai-2026-0042", 5000, ["alice"])
    return center, "alice", password


#: Tests that share something machine-wide run in one pytest-xdist worker per group (the
#: Makefile runs the suite with `--dist loadgroup`): the Slurm tests share one session-wide
#: cluster (its own munged socket and ports, so separate runs do not collide); the
#: real-account tests share accounts and their homes (/home/kaicstage…).
SERIAL_GROUPS = {
    "slurm": ("tests/slurm/",),
    "accounts": (
        "tests/e2e/test_run_as_user.py",
        "tests/e2e/test_secrets_as_user.py",
        "tests/e2e/test_sftp_as_users.py",
        "tests/e2e/test_ssh_login.py",
        "tests/center/test_checksums_as_user.py",
        "tests/center/test_sftp_byte_names.py",
    ),
}


def pytest_itemcollected(item: pytest.Item) -> None:
    # At collection, before any `pytest_collection_modifyitems` (pytest-xdist reads the
    # marks in its own, which may run before ours).
    for group, prefixes in SERIAL_GROUPS.items():
        if item.nodeid.startswith(prefixes):
            item.add_marker(pytest.mark.xdist_group(group))


def pytest_report_header() -> str:
    return f"CI={os.environ.get('CI', '')}"


@pytest.fixture
def fake_center() -> FakeCenter:
    """The center API as a table of answers (`tests/inprocess.py`)."""
    return FakeCenter()


@pytest.fixture
def run_line(fake_center: FakeCenter) -> RunLine:
    """`run_line("jobs", "--json")`: the real CLI in process against `fake_center`; on an
    unexpected exit code the test fails with stdout, stderr and the requests made."""
    return bind(fake_center)
