"""Fault injection: connections cut at random byte counts; transfers resume until done."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from kaic.errors import Interrupted
from kaic.staging import workers
from kaic.staging.plan import part_name
from kaic.staging.remote_fs import RemoteSide
from kaic.staging.transfer import SyncOptions, pull, push
from tests.staging.conftest import SshEnv
from tests.staging.faults import CuttingProxy, LatencyProxy

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


# -- striped files ---------------------------------------------------------------------------

#: small chunks and segments, so a file of a few MiB has many of both
STRIPED = {"chunk": 256 << 10, "segment": 4 << 20}


def _random_file(path: Path, mib: int) -> Path:
    with path.open("wb") as f:
        for _ in range(mib):
            f.write(os.urandom(1 << 20))
    return path


def test_striped_push_and_pull_through_cuts(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    """A striped file (six streams over two connections) cut at random points both ways
    arrives byte-identical, verified, without a part file, and without starting over."""
    name, view = remote_dir
    big = _random_file(tmp_path / "big.bin", 40)
    size = big.stat().st_size
    options = SyncOptions(retries=CUTS * 3, **STRIPED)  # type: ignore[arg-type]
    proxy = CuttingProxy.random(ssh_env.sshd.port, 10, 200_000, 8 << 20, seed=4)
    try:
        result = push(
            ssh_env.target(port=proxy.port), [str(big)], f"{name}/", options, sleep=lambda _s: None
        )
    finally:
        proxy.close()
    assert proxy.cut_count >= 10 and result.reconnects >= 5, result
    assert not result.failures and result.verified and result.files_transferred == 1
    assert result.bytes_transferred < 2 * size
    assert _sha(view / "big.bin") == _sha(big)
    assert not list(view.glob(".*.kaic-part"))

    back = tmp_path / "back"
    # (a pull from loopback runs one stream per connection: cuts within 4 MiB, not 8, so
    # that all ten fall inside the 40 MiB)
    proxy = CuttingProxy.random(ssh_env.sshd.port, 10, 200_000, 4 << 20, seed=5)
    try:
        result = pull(
            ssh_env.target(port=proxy.port),
            [f"{name}/big.bin"],
            f"{back}/",
            options,
            sleep=lambda _s: None,
        )
    finally:
        proxy.close()
    assert proxy.cut_count >= 10 and not result.failures and result.files_transferred == 1
    assert result.bytes_transferred < 2 * size
    assert _sha(back / "big.bin") == _sha(big)
    assert not list(back.glob(".*.kaic-part"))


@pytest.mark.parametrize("direction", ["push", "pull"])
def test_striped_resume_starts_at_the_first_hole(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, direction: str
) -> None:
    """A part file with a hole (where a stream's chunk was on its way when the connection
    dropped) is resumed from the piece that holds the hole, not from its end, not from 0."""
    name, view = remote_dir
    view.mkdir()
    data = os.urandom(24 << 20)
    have, hole = 16 << 20, (9 << 20, 10 << 20)
    partial = bytearray(data[:have])
    partial[hole[0] : hole[1]] = bytes(hole[1] - hole[0])
    if direction == "push":
        src = tmp_path / "d.bin"
        src.write_bytes(data)
        Path(part_name(str(view / "d.bin"))).write_bytes(partial)
        ssh_env.own(view)
        result = push(ssh_env.target(), [str(src)], f"{name}/", SyncOptions(**STRIPED))  # type: ignore[arg-type]
        landed = view / "d.bin"
    else:
        (view / "d.bin").write_bytes(data)
        ssh_env.own(view)
        out = tmp_path / "out"
        out.mkdir()
        Path(part_name(str(out / "d.bin"))).write_bytes(partial)
        result = pull(ssh_env.target(), [f"{name}/d.bin"], f"{out}/", SyncOptions(**STRIPED))  # type: ignore[arg-type]
        landed = out / "d.bin"
    # The 16 MiB part is checked in 2 MiB pieces: 8-10 MiB holds the hole, so the transfer
    # resumes at 8 MiB (not from 0, not from the part's end).
    point = 8 << 20
    assert not result.failures and result.bytes_transferred == len(data) - point
    assert landed.read_bytes() == data
    assert not list(landed.parent.glob(".*.kaic-part"))


@pytest.mark.parametrize("twice", [False, True])
def test_striped_segment_that_does_not_verify_is_sent_again(
    ssh_env: SshEnv,
    remote_dir: Remote,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    twice: bool,
) -> None:
    """A byte of the part file changes on the host after it was written: that segment (only)
    hashes differently, is sent once more and verified; changed again, the file fails and
    its part file is removed."""
    name, view = remote_dir
    big = _random_file(tmp_path / "big.bin", 12)
    part = Path(part_name(str(view / "big.bin")))
    original = RemoteSide.exec_range_sha256
    damaged: list[tuple[int, int]] = []

    def damaging(self: RemoteSide, path: str, ranges: list[tuple[int, int]]) -> list[str | None]:
        if path.endswith(".kaic-part") and (twice or not damaged):
            start = ranges[0][0]
            with part.open("r+b") as f:  # flip one byte of the first segment asked about
                f.seek(start + 1000)
                byte = f.read(1)
                f.seek(start + 1000)
                f.write(bytes([byte[0] ^ 0xFF]))
            damaged.append(ranges[0])
        return original(self, path, ranges)

    monkeypatch.setattr(RemoteSide, "exec_range_sha256", damaging)
    warnings: list[str] = []
    result = push(
        ssh_env.target(),
        [str(big)],
        f"{name}/",
        SyncOptions(**STRIPED),
        warn=warnings.append,  # type: ignore[arg-type]
    )
    assert any("sha256 mismatch" in w for w in warnings), warnings
    if twice:
        assert result.failures and "mismatch" in next(iter(result.failures.values()))
        assert not (view / "big.bin").exists() and not part.exists()
    else:
        assert not result.failures and _sha(view / "big.bin") == _sha(big)
        start, end = damaged[0]
        assert result.bytes_transferred == big.stat().st_size + (end - start)


def test_ctrl_c_past_the_grace_still_leaves_a_pulled_part_file_without_holes(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C mid-pull when the streams do not stop within the grace (none at all here, as on
    a loaded machine): the part file is still cut back to what arrived without a gap, so it
    holds exactly a prefix of the source and the resume fetches only the rest."""
    name, view = remote_dir
    view.mkdir()
    data = os.urandom(48 << 20)
    (view / "big.bin").write_bytes(data)
    ssh_env.own(view)
    out = tmp_path / "out"
    out.mkdir()
    part = Path(part_name(str(out / "big.bin")))
    monkeypatch.setattr(workers, "STOP_GRACE_S", 0.0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    stop = threading.Event()

    def interrupt_mid_way() -> None:
        while not stop.is_set():
            if part.exists() and part.stat().st_size > (16 << 20):
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=interrupt_mid_way, daemon=True)
    try:
        with LatencyProxy(ssh_env.sshd.port, rtt_ms=10, rate_mbit=400) as proxy:
            watcher.start()
            with pytest.raises(Interrupted):
                pull(
                    ssh_env.target(port=proxy.port),
                    [f"{name}/big.bin"],
                    f"{out}/",
                    SyncOptions(**STRIPED),  # type: ignore[arg-type]
                )
    finally:
        stop.set()
        watcher.join(5)
        signal.signal(signal.SIGINT, previous)
    kept = part.read_bytes()
    assert len(kept) < len(data)  # (empty when the first chunk had not arrived: a loaded machine)
    assert kept == data[: len(kept)], "the part file has holes past what arrived in order"

    result = pull(ssh_env.target(), [f"{name}/big.bin"], f"{out}/", SyncOptions(**STRIPED))  # type: ignore[arg-type]
    assert not result.failures and result.bytes_transferred == len(data) - len(kept)
    assert (out / "big.bin").read_bytes() == data and not part.exists()
