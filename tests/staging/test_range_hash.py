"""The host's sha256 of byte ranges of a file (`RemoteSide.exec_range_sha256`): by python3
where the host has it, by `tail | head | openssl` where it has not — the same digests
either way, against a real sshd and as the shell snippet run here with and without python3
on its PATH."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from kaic.staging.connect import open_sftp
from kaic.staging.host_hash import RANGE_SHA256
from kaic.staging.remote_fs import RemoteSide
from tests.staging.conftest import SshEnv

Remote = tuple[str, Path]

#: ranges `[start, end)`: whole, empty, one byte, across the 1 MiB reads, past the end
SIZE = 3 * (1 << 20) + 12345


def _ranges() -> list[tuple[int, int]]:
    return [(0, SIZE), (10, 10), (5, 6), ((1 << 20) - 7, (2 << 20) + 9), (SIZE - 100, SIZE + 50)]


def _expected(data: bytes) -> list[str]:
    return [hashlib.sha256(data[start:end]).hexdigest() for start, end in _ranges()]


def _snippet(path: Path, bin_dir: Path | None) -> list[str]:
    """The shell snippet run here by sh, with PATH = `bin_dir` (None: this machine's)."""
    parts = " ".join(f"{start + 1}:{end - start}" for start, end in _ranges())
    env = dict(os.environ)
    if bin_dir is not None:
        env["PATH"] = str(bin_dir)
    done = subprocess.run(
        ["/bin/sh", "-c", f"F={path}; R='{parts}'; {RANGE_SHA256}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    return [line[:64] for line in done.stdout.splitlines()]


def test_both_ways_of_hashing_ranges_give_the_same_digests(tmp_path: Path) -> None:
    data = os.urandom(SIZE)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert shutil.which("python3"), "the machine's python3 (the host's fast way)"
    assert _snippet(path, None) == _expected(data)
    # a host without python3: tail, head and openssl only
    bare = tmp_path / "bin"
    bare.mkdir()
    for tool in ("tail", "head", "openssl"):
        found = shutil.which(tool)
        assert found, tool
        (bare / tool).symlink_to(found)
    assert _snippet(path, bare) == _expected(data)


def test_the_host_hashes_ranges_of_a_file(ssh_env: SshEnv, remote_dir: Remote) -> None:
    name, view = remote_dir
    view.mkdir(parents=True)
    data = os.urandom(SIZE)
    (view / "odd name's.bin").write_bytes(data)
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        side = RemoteSide(conn)
        got = side.exec_range_sha256(f"{name}/odd name's.bin", _ranges())
        assert got == _expected(data)
        assert side.exec_range_sha256(f"{name}/missing.bin", _ranges()) == [None] * 5
    finally:
        conn.close()
