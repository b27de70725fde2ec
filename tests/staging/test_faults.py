"""Fault injection: connections cut at random byte counts; transfers resume until done."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from kaic.staging.transfer import SyncOptions, pull, push
from tests.staging.conftest import SshEnv
from tests.staging.faults import CuttingProxy

Remote = tuple[str, Path]
CUTS = 20


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _retrying(proxy: CuttingProxy) -> SyncOptions:
    return SyncOptions(retries=CUTS * 3)


def test_push_large_file_through_cuts(ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path) -> None:
    name, view = remote_dir
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        for _ in range(64):
            f.write(os.urandom(1 << 20))
    proxy = CuttingProxy.random(ssh_env.sshd.port, CUTS, 20_000, 3 << 20, seed=1)
    try:
        result = push(
            ssh_env.target(port=proxy.port),
            [str(big)],
            f"{name}/",
            _retrying(proxy),
            sleep=lambda _s: None,
        )
    finally:
        proxy.close()
    assert proxy.cut_count >= CUTS and result.reconnects >= CUTS // 2
    assert result.bytes_transferred < 2 * (64 << 20)
    assert not result.failures and result.files_transferred == 1
    assert _sha(view / "big.bin") == _sha(big)
    assert not list(view.glob(".*.kaic-part"))


def test_push_and_pull_tree_through_cuts(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    name, view = remote_dir
    src = tmp_path / "src"
    for i in range(300):
        d = src / f"d{i % 7}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}.dat").write_bytes(os.urandom((i * 7919) % 60_000))
    for i in range(3):
        (src / f"large{i}.dat").write_bytes(os.urandom(3 << 20))
    proxy = CuttingProxy.random(ssh_env.sshd.port, CUTS, 20_000, 600_000, seed=2)
    try:
        result = push(
            ssh_env.target(port=proxy.port),
            [str(src)],
            name,
            _retrying(proxy),
            sleep=lambda _s: None,
        )
    finally:
        proxy.close()
    assert proxy.cut_count >= CUTS and not result.failures
    for f in src.rglob("*.dat"):
        assert _sha(view / f.relative_to(src)) == _sha(f)
    assert not list(view.rglob("*.kaic-part"))

    back = tmp_path / "back"
    proxy = CuttingProxy.random(ssh_env.sshd.port, CUTS, 20_000, 400_000, seed=3)
    try:
        result = pull(
            ssh_env.target(port=proxy.port),
            [name],
            str(back),
            _retrying(proxy),
            sleep=lambda _s: None,
        )
    finally:
        proxy.close()
    assert proxy.cut_count >= CUTS and not result.failures
    for f in src.rglob("*.dat"):
        assert _sha(back / f.relative_to(src)) == _sha(f)
    assert not list(back.rglob("*.kaic-part"))
