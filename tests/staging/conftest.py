"""Fixtures for staging tests: a real OpenSSH sshd trusting a test user CA (tests/sshd.py).

Tests that need sshd skip without it, and fail instead when `CI=true`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kaic.staging.connect import SshTarget
from tests.sshd import STAGING_USER, RunningSshd, require_sshd, start_sshd


@dataclass
class SshEnv:
    sshd: RunningSshd
    key: Path
    cert: Path
    home: Path

    def own(self, path: Path) -> None:
        """Give `path` (and what is below it) to the test user, as if it had written it."""
        entry = pwd.getpwnam(STAGING_USER)
        for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.chown(p, entry.pw_uid, entry.pw_gid, follow_symlinks=False)

    def target(self, *, port: int | None = None, known: list[str] | None = None) -> SshTarget:
        port = port or self.sshd.port
        lines = (
            known if known is not None else [f"[127.0.0.1]:{port} {self.sshd.host_key_pub_line}"]
        )
        return SshTarget(
            "127.0.0.1", port, STAGING_USER, self.key, self.cert, lines, use_user_known_hosts=False
        )


def _keygen(*args: str) -> None:
    subprocess.run(["ssh-keygen", "-q", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def ssh_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshEnv]:
    require_sshd()
    base = tmp_path_factory.mktemp("sshd")
    ca, key = base / "ca", base / "user"
    _keygen("-t", "ed25519", "-N", "", "-C", "test-ca", "-f", str(ca))
    _keygen("-t", "ed25519", "-N", "", "-C", "user", "-f", str(key))
    _keygen("-s", str(ca), "-I", "kaic-test", "-n", STAGING_USER, "-V", "-5m:+1h", f"{key}.pub")
    sshd = start_sshd(base / "d", trusted_ca_pub=Path(f"{ca}.pub"), user=STAGING_USER)
    try:
        yield SshEnv(sshd, key, Path(f"{key}-cert.pub"), Path(pwd.getpwnam(STAGING_USER).pw_dir))
    finally:
        sshd.stop()


@pytest.fixture
def remote_dir(ssh_env: SshEnv) -> Iterator[tuple[str, Path]]:
    """A fresh directory name under the test user's home: (remote path, local view of it)."""
    name = f"kaic-test-{uuid.uuid4().hex[:10]}"
    yield name, ssh_env.home / name
    shutil.rmtree(ssh_env.home / name, ignore_errors=True)


@pytest.fixture
def ssh_vars(ssh_env: SshEnv, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`kaic data` aimed at the test sshd through KAIC_SSH_* (no center), with a HOME of its
    own (no ~/.ssh/known_hosts of the developer's)."""
    known = tmp_path / "known_hosts"
    known.write_text(ssh_env.sshd.known_hosts_line() + "\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var, value in {
        "KAIC_SSH_HOST": "127.0.0.1",
        "KAIC_SSH_PORT": str(ssh_env.sshd.port),
        "KAIC_SSH_USER": ssh_env.sshd.user,
        "KAIC_SSH_KEY": str(ssh_env.key),
        "KAIC_SSH_CERT": str(ssh_env.cert),
        "KAIC_SSH_KNOWN_HOSTS": str(known),
    }.items():
        monkeypatch.setenv(var, value)
