"""File names that are not UTF-8, through the embedded SFTP endpoint with the OpenSSH client.

A name on Linux is bytes (a Latin-1 file system, a careless tool): SFTP v3 carries bytes,
and OpenSSH's sftp-server passes them through. paramiko decodes and encodes names as strict
UTF-8, so a directory holding one could not be listed ("Failure") and one could not be
pushed at all. The endpoint, in process and in a worker running as the user's account,
must put, list, get, rename and remove such a name byte for byte.

Needs the OpenSSH `sftp` client (skipped without it, failed when `CI=true`); the worker
case needs root (to switch to a real account).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.settings import CenterSettings
from kaic.center.sftp import EmbeddedSftp
from kaic.center.ssh_ca import UserCA
from kaic.center.store import Store
from kaic.staging.connect import SshTarget
from tests.e2e.test_sftp_as_users import ensure_account
from tests.helpers import unavailable

from .test_sftp_server import Endpoint

#: a Latin-1 "café" and a byte that is never UTF-8
NAME = b"caf\xe9-\xff.bin"
RENAMED = b"\xff\xfe-renamed"
DIRECTORY = b"dir-\xe9"
ACCOUNT = "kaicsftpa"  # tests/e2e/test_sftp_as_users.py's first account


def printed(name: bytes) -> bytes:
    """`name` as OpenSSH's sftp prints it: a byte it will not print as is, in octal."""
    return b"".join(bytes([c]) if 32 <= c < 127 else b"\\%03o" % c for c in name)


class _Endpoint(Endpoint):
    """`Endpoint` over any settings, its user on `account`."""

    def __init__(self, tmp_path: Path, settings: CenterSettings, account: str) -> None:
        self.settings = settings
        self.store = Store(settings.state_dir)
        self.store.create_user("alice", unix_account=account)
        self.ca = UserCA(settings.state_dir)
        self.sftp = EmbeddedSftp(settings, self.store, self.ca)
        self.sftp.start()
        self.tmp = tmp_path
        self.account = account

    def home(self) -> Path:
        return self.settings.ensure_storage_root("alice", self.account)


@pytest.fixture(params=["in-process", "as-user"])
def endpoint(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[_Endpoint]:
    if shutil.which("sftp") is None:
        unavailable("needs the OpenSSH client (sftp: apt-get install openssh-client)")
    state = tmp_path / "state"
    with contextlib.ExitStack() as stack:
        if request.param == "in-process":
            settings, account = CenterSettings(state_dir=state, sftp_port=0), "alice01"
        else:
            template = stack.enter_context(account_storage("serving SFTP as a user"))
            settings = CenterSettings(
                state_dir=state, sftp_port=0, run_as_users=True, storage_root=template
            )
            account = ACCOUNT
        running = _Endpoint(tmp_path, settings, account)
        stack.callback(running.close)
        yield running


@contextlib.contextmanager
def account_storage(what: str) -> Iterator[str]:
    """A storage root template (`…/{unix_account}`) whose root for `ACCOUNT` exists and is
    the account's own (0700), under /var/tmp, removed afterwards. Needs root: `what` says
    what for (unavailable otherwise)."""
    if os.geteuid() != 0:
        unavailable(f"{what} needs root (to switch to the user's account)")
    account = ensure_account(ACCOUNT)
    base = Path(tempfile.mkdtemp(prefix="kaic-account-storage-", dir="/var/tmp"))
    try:
        base.chmod(0o755)
        (base / ACCOUNT).mkdir(mode=0o700)
        os.chown(base / ACCOUNT, account.pw_uid, account.pw_gid)
        yield f"{base}/{{unix_account}}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _sftp(endpoint: _Endpoint, commands: list[bytes], cwd: Path) -> bytes:
    """Run OpenSSH's `sftp` in batch mode (stops at the first failing command); its stdout."""
    target: SshTarget = endpoint.target("alice", endpoint.account)
    target.key_path.chmod(0o600)
    known_hosts = endpoint.tmp / "known_hosts"
    known_hosts.write_text(f"[{target.host}]:{target.port} {endpoint.sftp.host_key_line}\n")
    command = ["sftp", "-F", "/dev/null", "-b", "-", "-P", str(target.port)]
    command += ["-i", str(target.key_path), "-o", f"CertificateFile={target.cert_path}"]
    for option in (
        "IdentitiesOnly=yes",
        "IdentityAgent=none",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "GlobalKnownHostsFile=/dev/null",
        "BatchMode=yes",
    ):
        command += ["-o", option]
    done = subprocess.run(
        [*command, f"{target.username}@{target.host}"],
        input=b"\n".join(commands) + b"\n",
        capture_output=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    assert done.returncode == 0, f"sftp exited {done.returncode}\n{done.stdout!r}\n{done.stderr!r}"
    return done.stdout


def test_a_name_that_is_not_utf8_is_put_listed_and_got_byte_for_byte(
    endpoint: _Endpoint, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    local = tmp_path / "local"
    local.mkdir()
    (local / os.fsdecode(NAME)).write_bytes(data)
    back = tmp_path / "back"
    back.mkdir()
    home = endpoint.home()
    out = _sftp(
        endpoint,
        [
            b"put " + NAME,
            b"mkdir " + DIRECTORY,
            b"put " + NAME + b" " + DIRECTORY + b"/" + NAME,
            b"ls -1",
            b"ls -l " + DIRECTORY,
            b"get " + NAME + b" " + os.fsencode(back) + b"/" + NAME,
            b"rename " + DIRECTORY + b"/" + NAME + b" " + DIRECTORY + b"/" + RENAMED,
            b"ls -1 " + DIRECTORY,
        ],
        cwd=local,
    )
    # on disk: exactly the bytes the client sent, as names and as contents
    assert sorted(os.listdir(os.fsencode(home))) == sorted([NAME, DIRECTORY])
    assert (home / os.fsdecode(NAME)).read_bytes() == data
    assert os.listdir(os.fsencode(home / os.fsdecode(DIRECTORY))) == [RENAMED]
    # listed: the names as the bytes they are (short and long listings)
    lines = out.splitlines()
    assert printed(NAME) in lines and printed(DIRECTORY) in lines, out
    assert any(line.startswith(b"-rw") and line.endswith(b" " + printed(NAME)) for line in lines)
    assert lines[-1] == printed(DIRECTORY + b"/" + RENAMED), out
    # got back: the same name, the same bytes
    assert (back / os.fsdecode(NAME)).read_bytes() == data
    if endpoint.settings.run_as_users:  # written by the worker, as the account
        assert (home / os.fsdecode(NAME)).stat().st_uid == os.stat(home).st_uid != 0


def test_a_directory_holding_such_a_name_lists_and_its_file_is_removed(
    endpoint: _Endpoint, tmp_path: Path
) -> None:
    # made on disk by someone else (a job, a careless tool): the listing must not fail
    home = endpoint.home()
    with open(os.path.join(os.fsencode(home), NAME), "wb") as handle:
        handle.write(b"x" * 10)
    if endpoint.settings.run_as_users:
        os.chown(os.path.join(os.fsencode(home), NAME), os.stat(home).st_uid, -1)
    (home / "plain.txt").write_text("ok\n")
    out = _sftp(endpoint, [b"ls -1", b"rm " + NAME, b"ls -1"], cwd=tmp_path)
    lines = out.splitlines()
    assert lines.count(printed(NAME)) == 1, out
    assert sorted(os.listdir(os.fsencode(home))) == [b"plain.txt"]
