"""Staging against a real sshd where it gets hard: servers short of file descriptors, names
at NAME_MAX, files named like part files, refused paths."""

from __future__ import annotations

import os
import pwd
import resource
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.errors import Unreachable
from kaic.staging.connect import SftpConnection, open_sftp
from kaic.staging.plan import is_part, part_name
from kaic.staging.transfer import SyncOptions, pull, push
from tests.helpers import cli_env, free_port, run_cli, unavailable
from tests.sshd import STAGING_USER, RunningSshd, start_sshd
from tests.staging.conftest import SshEnv
from tests.staging.faults import CuttingProxy

Remote = tuple[str, Path]


# -- back-pressure ---------------------------------------------------------------------------


@pytest.fixture
def starved_sshd(ssh_env: SshEnv, tmp_path: Path) -> Iterator[RunningSshd]:
    """A second sshd (same CA and user) whose processes may hold only 40 descriptors, so
    each SFTP session can open ~25 files at once: fewer than a pipelined batch asks for."""
    ca_pub = ssh_env.sshd.config_path.parent.parent / "ca.pub"
    sshd = start_sshd(tmp_path / "starved", trusted_ca_pub=ca_pub, user=STAGING_USER)
    try:
        resource.prlimit(sshd.pid, resource.RLIMIT_NOFILE, (40, 40))
        yield sshd
    finally:
        sshd.stop()


def test_server_short_of_descriptors_slows_down_instead_of_failing(
    ssh_env: SshEnv, starved_sshd: RunningSshd, remote_dir: Remote, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(400):
        (src / f"f{i:03d}.dat").write_bytes(os.urandom(200 + i))
    name, view = remote_dir
    target = ssh_env.target(port=starved_sshd.port, known=[starved_sshd.known_hosts_line()])
    warnings: list[str] = []
    result = push(
        target,
        [str(src)],
        name,
        SyncOptions(parallel=2),
        warn=warnings.append,
        sleep=lambda _s: None,
    )
    assert not result.failures, list(result.failures.items())[:3]
    assert result.files_transferred == 400
    # the server did refuse opens (that is the point), and those files went again
    assert any("trying them again" in w for w in warnings), warnings
    for f in src.iterdir():
        assert (view / f.name).read_bytes() == f.read_bytes()
    back = tmp_path / "back"
    got = pull(target, [name], str(back), SyncOptions(parallel=2), sleep=lambda _s: None)
    assert not got.failures, list(got.failures.items())[:3]
    assert got.files_transferred == 400
    for f in src.iterdir():
        assert (back / f.name).read_bytes() == f.read_bytes()


# -- outages --------------------------------------------------------------------------------


def test_an_outage_longer_than_the_budget_gives_up_resumably(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    """The connection is cut mid-file and the host stays unreachable: kaic keeps trying for
    its reconnect budget, gives up with Unreachable (exit 5), and the next run resumes."""
    name, view = remote_dir
    big = tmp_path / "big.bin"
    data = os.urandom(24 << 20)
    big.write_bytes(data)
    proxy = CuttingProxy(ssh_env.sshd.port, [6 << 20])
    dead = free_port()  # nothing listens there: every reconnect is refused
    ports: list[int] = []

    def connect() -> SftpConnection:
        ports.append(proxy.port if not ports else dead)
        return open_sftp(ssh_env.target(port=ports[-1]))

    warnings: list[str] = []
    try:
        with pytest.raises(Unreachable) as info:
            push(
                connect,
                [str(big)],
                f"{name}/",
                # One stream: its part file has no holes, so the next run resumes exactly
                # at its end (striped files resume at their first hole: test_faults.py).
                SyncOptions(parallel=1, reconnect_budget=1.0, stripe=False),
                warn=warnings.append,
            )
    finally:
        proxy.close()
    assert "could not resume within 1 s" in info.value.message
    assert info.value.exit_code == 5 and "run the same command again" in (info.value.hint or "")
    assert any("reconnecting" in w for w in warnings) and len(ports) >= 3
    part = Path(part_name(str(view / "big.bin")))
    partial = part.stat().st_size
    assert 0 < partial < len(data)

    resumed = push(ssh_env.target(), [str(big)], f"{name}/")
    assert resumed.bytes_transferred == len(data) - partial
    assert (view / "big.bin").read_bytes() == data and not part.exists()


# -- names at NAME_MAX ----------------------------------------------------------------------


LONG_NAMES = [
    "a" * 245 + ".bin",  # 249 bytes
    "b" * 255,
    "é" * 125 + ".txt",  # 254 bytes, 129 characters
]


def test_part_names_always_fit_and_are_recognised() -> None:
    for name in [*LONG_NAMES, "x", ".hidden", "a.kaic-part", ".a.kaic-part"]:
        part = part_name(f"dir/{name}")
        head, tail = os.path.split(part)
        assert head == "dir" and len(tail.encode()) <= 255, name
        assert is_part(tail), name
        assert not is_part(name), name
    # distinct long names sharing a long prefix get distinct part files
    assert part_name("x" * 240 + "1") != part_name("x" * 240 + "2")


def test_long_names_push_pull_and_resume(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i, fname in enumerate(LONG_NAMES):
        (src / fname).write_bytes(os.urandom(1000 + i))
    big = src / ("c" * 250)
    data = os.urandom(6 << 20)
    big.write_bytes(data)
    name, view = remote_dir
    first = push(ssh_env.target(), [str(src)], name)
    assert not first.failures and first.files_transferred == 4
    for f in src.iterdir():
        assert (view / f.name).read_bytes() == f.read_bytes()
    assert not [p for p in view.iterdir() if is_part(p.name)]

    # resume a long-named push from a part file on the host
    (view / big.name).unlink()
    Path(part_name(str(view / big.name))).write_bytes(data[: 2 << 20])
    ssh_env.own(view)
    resumed = push(ssh_env.target(), [str(src)], name)
    assert not resumed.failures and resumed.files_transferred == 1
    assert resumed.bytes_transferred == len(data) - (2 << 20)
    assert (view / big.name).read_bytes() == data

    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back))
    assert not got.failures and got.files_transferred == 4
    for f in src.iterdir():
        assert (back / f.name).read_bytes() == f.read_bytes()
    # ... and resume a long-named pull from a local part file
    (back / big.name).unlink()
    Path(part_name(str(back / big.name))).write_bytes(data[: 3 << 20])
    again = pull(ssh_env.target(), [name], str(back))
    assert not again.failures and again.bytes_transferred == len(data) - (3 << 20)
    assert (back / big.name).read_bytes() == data
    assert not [p for p in back.iterdir() if is_part(p.name)]


# -- files named like part files ------------------------------------------------------------


def test_files_named_like_part_files_are_data(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    lookalikes = [".notes.kaic-part", ".x.kaic-part", "kaic-part", ".kaic-part"]
    for fname in lookalikes:
        (src / fname).write_text(fname)
    (src / "real.txt").write_text("real")
    # A real part file of an interrupted pull into this directory is not data: it is left
    # out, and said so.
    Path(part_name(str(src / "half.bin"))).write_bytes(b"half")
    name, view = remote_dir
    warnings: list[str] = []
    pushed = push(ssh_env.target(), [str(src)], name, warn=warnings.append)
    assert not pushed.failures and pushed.files_transferred == len(lookalikes) + 1
    for fname in lookalikes:
        assert (view / fname).read_text() == fname
    assert not [p for p in view.iterdir() if is_part(p.name)]
    assert any("half.bin" in w and "part" in w for w in warnings), warnings

    # a second push leaves them alone (and does not delete them as stale parts)
    again = push(ssh_env.target(), [str(src)], name)
    assert again.files_transferred == 0 and again.files_skipped == len(lookalikes) + 1
    assert all((view / fname).exists() for fname in lookalikes)

    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back))
    assert not got.failures and got.files_transferred == len(lookalikes) + 1
    for fname in lookalikes:
        assert (back / fname).read_text() == fname


# -- refused paths ---------------------------------------------------------------------------


def test_remote_permission_denied_exits_6_naming_the_path(
    ssh_vars: None, ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    name, view = remote_dir
    (view / "locked").mkdir(parents=True)
    ssh_env.own(view)
    os.chown(view / "locked", 0, 0)  # root's, 0755: the user cannot write there
    f = tmp_path / "model.pt"
    f.write_bytes(b"weights")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")

    cases = [
        (["push", str(f), f"{name}/locked/"], f"{name}/locked/model.pt"),
        (["push", str(src), f"{name}/locked/sub"], f"{name}/locked/sub"),
        (["push", str(src), "/root/kaic-forbidden"], "/root/kaic-forbidden"),
        (["pull", "/root/.bashrc", str(tmp_path / "out") + "/"], "/root/.bashrc"),
    ]
    for args, path in cases:
        res = run_cli("data", *args, expect=None)
        assert res.code == 6, res.explain()
        assert path in res.stderr, res.explain()
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr
        assert "ermission denied" in res.stderr, res.explain()


def test_local_permission_denied_names_the_local_path(
    ssh_vars: None, ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    """kaic runs without the capabilities that let root ignore file permissions (setpriv),
    so the kernel really refuses: a pull into a directory it cannot write, a push of a file
    it cannot read."""
    if shutil.which("setpriv") is None:
        unavailable("needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
    name, view = remote_dir
    view.mkdir()
    (view / "a.txt").write_text("a")
    ssh_env.own(view)
    nobody = pwd.getpwnam("nobody")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not yours")
    secret.chmod(0o600)
    for p in (locked, secret):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)

    def without_dac(*args: str) -> subprocess.CompletedProcess[str]:
        drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
        return subprocess.run(
            [*drop, sys.executable, "-m", "kaic", "data", *args],
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )

    pulled = without_dac("pull", name, str(locked / "out"))
    assert pulled.returncode == 1, pulled.stderr
    assert str(locked / "out") in pulled.stderr and "ermission denied" in pulled.stderr
    assert "Traceback" not in pulled.stderr and "internal error" not in pulled.stderr

    pushed = without_dac("push", str(secret), f"{name}/")
    assert pushed.returncode == 1, pushed.stderr
    assert str(secret) in pushed.stderr and "ermission denied" in pushed.stderr
    assert "Traceback" not in pushed.stderr and "internal error" not in pushed.stderr
