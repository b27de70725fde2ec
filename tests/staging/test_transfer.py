"""push/pull against a real OpenSSH sshd (certificate login, host key pinned)."""

from __future__ import annotations

import filecmp
import os
import shlex
from pathlib import Path

import pytest

from kaic.staging.connect import SftpConnection
from kaic.staging.plan import FileTask, part_name
from kaic.staging.remote_fs import RemoteSide, _command_batches
from kaic.staging.transfer import SyncOptions, pull, push
from kaic.staging.workers import (
    BATCH_BYTES,
    MAX_BATCH_FILES,
    SMALL_FILE,
    batches,
    connections_for,
    open_files,
)
from tests.staging.conftest import SshEnv
from tests.staging.faults import LatencyProxy

Remote = tuple[str, Path]


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "emptydir").mkdir()
    for i in range(40):
        (root / f"f{i:02d}.bin").write_bytes(os.urandom(i * 997))
    (root / "empty").write_bytes(b"")
    (root / "sub" / "ünïcödé ✓.txt").write_text("hello")
    (root / "sub" / "deeper" / "big.bin").write_bytes(os.urandom(5_000_000))
    (root / "link.txt").symlink_to("f01.bin")
    (root / "linkdir").symlink_to("sub")
    return root


def _same_tree(a: Path, b: Path) -> None:
    cmp = filecmp.dircmp(a, b, ignore=["linkdir"])
    pending = [cmp]
    while pending:
        c = pending.pop()
        assert not c.left_only and not c.right_only, (c.left, c.left_only, c.right_only)
        _, mismatch, errors = filecmp.cmpfiles(c.left, c.right, c.common_files, shallow=False)
        assert not mismatch and not errors
        pending.extend(c.subdirs.values())
    assert not list(b.rglob("*.kaic-part"))


def test_push_pull_tree(ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    name, view = remote_dir
    warnings: list[str] = []
    first = push(ssh_env.target(), [str(src)], name, warn=warnings.append)
    assert first.files_transferred == 44 and first.files_skipped == 0 and first.verified
    assert not first.failures
    _same_tree(src, view)
    assert (view / "emptydir").is_dir() and not (view / "linkdir").exists()
    assert any("linkdir" in w for w in warnings)
    assert int((view / "f05.bin").stat().st_mtime) == int((src / "f05.bin").stat().st_mtime)

    again = push(ssh_env.target(), [str(src)], name)
    assert again.files_transferred == 0 and again.files_skipped == 44
    assert again.bytes_transferred == 0

    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back))
    assert got.files_transferred == 44 and not got.failures
    _same_tree(view, back)
    assert pull(ssh_env.target(), [name], str(back)).files_transferred == 0


def test_delete_and_dry_run(ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    (src / "b").write_text("b")
    name, view = remote_dir
    push(ssh_env.target(), [str(src)], name)
    (src / "b").unlink()
    (src / "c").write_text("c")
    dry = push(ssh_env.target(), [str(src)], name, SyncOptions(delete=True, dry_run=True))
    assert dry.dry_run and dry.plan is not None
    assert [t.dst for t in dry.plan.transfers] == [f"{name}/c"]
    assert dry.plan.delete_files == [f"{name}/b"] and dry.files_deleted == 1
    assert sorted(p.name for p in view.iterdir()) == ["a", "b"]  # nothing changed

    real = push(ssh_env.target(), [str(src)], name, SyncOptions(delete=True))
    assert real.files_transferred == 1 and real.files_deleted == 1
    assert sorted(p.name for p in view.iterdir()) == ["a", "c"]


def test_single_files(ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path) -> None:
    name, view = remote_dir
    f = tmp_path / "model.pt"
    f.write_bytes(os.urandom(1000))
    push(ssh_env.target(), [str(f)], f"{name}/")
    assert (view / "model.pt").read_bytes() == f.read_bytes()
    push(ssh_env.target(), [str(f)], f"{name}/renamed.pt")
    assert (view / "renamed.pt").read_bytes() == f.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    pull(ssh_env.target(), [f"{name}/renamed.pt"], str(out))
    assert (out / "renamed.pt").read_bytes() == f.read_bytes()


@pytest.mark.parametrize("corrupt", [False, True])
def test_push_resume_verifies_prefix(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, corrupt: bool
) -> None:
    name, view = remote_dir
    data = os.urandom(3_000_000)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    view.mkdir()
    prefix = bytearray(data[:1_000_000])
    if corrupt:
        prefix[123_456] ^= 0xFF
    part = Path(part_name(str(view / "data.bin")))
    part.write_bytes(bytes(prefix))
    ssh_env.own(view)
    warnings: list[str] = []
    result = push(ssh_env.target(), [str(f)], f"{name}/", warn=warnings.append)
    assert (view / "data.bin").read_bytes() == data and not part.exists()
    if corrupt:
        assert result.bytes_transferred == len(data)
        assert any("does not match" in w for w in warnings)
    else:
        assert result.bytes_transferred == len(data) - 1_000_000


@pytest.mark.parametrize("corrupt", [False, True])
def test_pull_resume_verifies_prefix(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, corrupt: bool
) -> None:
    name, view = remote_dir
    data = os.urandom(2_000_000)
    view.mkdir()
    (view / "d.bin").write_bytes(data)
    ssh_env.own(view)
    out = tmp_path / "out"
    out.mkdir()
    prefix = bytearray(data[:700_000])
    if corrupt:
        prefix[0] ^= 1
    Path(part_name(str(out / "d.bin"))).write_bytes(bytes(prefix))
    result = pull(ssh_env.target(), [f"{name}/d.bin"], str(out) + "/")
    assert (out / "d.bin").read_bytes() == data
    assert result.bytes_transferred == (len(data) if corrupt else len(data) - 700_000)
    assert not list(out.glob("*.kaic-part"))


def test_mismatch_is_resent_once_then_reported(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, view = remote_dir
    f = tmp_path / "x.bin"
    f.write_bytes(os.urandom(10_000))
    calls: list[list[str]] = []

    def lying(self: RemoteSide, paths: list[str]) -> dict[str, str | None]:
        calls.append(paths)
        return dict.fromkeys(paths, "0" * 64)

    monkeypatch.setattr(RemoteSide, "remote_sha256", lying)
    result = push(ssh_env.target(), [str(f)], f"{name}/")
    assert len(calls) == 2  # checked, re-sent, checked again
    assert list(result.failures) == [f"{name}/x.bin"] and result.files_transferred == 0
    assert not (view / "x.bin").exists() and not Path(part_name(str(view / "x.bin"))).exists()

    # --no-verify does not check
    result = push(ssh_env.target(), [str(f)], f"{name}/", SyncOptions(verify=False))
    assert result.files_transferred == 1 and not result.verified


def test_without_exec_falls_back(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host that refuses exec: checksum_fn, else reading the file back."""
    monkeypatch.setattr(SftpConnection, "exec", lambda self, command, **_kw: (-1, b"", b""))
    name, view = remote_dir
    src = tmp_path / "s"
    src.mkdir()
    (src / "a").write_bytes(os.urandom(300_000))
    (src / "b").write_bytes(os.urandom(1000))
    asked: list[str] = []

    def checksum_fn(path: str) -> str | None:
        asked.append(path)
        return None  # the API does not know: read back

    result = push(ssh_env.target(), [str(src)], name, checksum_fn=checksum_fn)
    assert result.files_transferred == 2 and not result.failures
    assert sorted(asked) == sorted([part_name(f"{name}/a"), part_name(f"{name}/b")])
    assert (view / "a").read_bytes() == (src / "a").read_bytes()


def test_awkward_names_verify_on_both_hash_paths(
    ssh_env: SshEnv, remote_dir: Remote, tmp_path: Path
) -> None:
    """Plain names are hashed by OpenSSL on the host, names with a backslash or a line break
    by sha256sum (their escaping differs): all of them verify and land byte-identical."""
    src = tmp_path / "src"
    src.mkdir()
    names = ["plain name.bin", "back\\slash.bin", "line\nbreak.bin", "-dash.bin", "*star"]
    for i, fname in enumerate(names):
        (src / fname).write_bytes(os.urandom(1000 + i))
    name, view = remote_dir
    done = push(ssh_env.target(), [str(src)], name)
    assert done.files_transferred == len(names) and done.verified and not done.failures
    for fname in names:
        assert (view / fname).read_bytes() == (src / fname).read_bytes()
    back = tmp_path / "back"
    got = pull(ssh_env.target(), [name], str(back))
    assert got.files_transferred == len(names) and not got.failures
    for fname in names:
        assert (back / fname).read_bytes() == (src / fname).read_bytes()


def test_remote_hash_prefers_openssl(ssh_env: SshEnv, remote_dir: Remote) -> None:
    """The host-side hash is OpenSSL's (SHA-NI; ~4x coreutils sha256sum) when the host has
    it, else sha256sum; either way the digests are right."""
    import hashlib

    from kaic.staging.connect import open_sftp
    from kaic.staging.host_hash import FAST_HASH

    name, view = remote_dir
    view.mkdir()
    (view / "x").write_bytes(b"abc")
    ssh_env.own(view)
    conn = open_sftp(ssh_env.target())
    try:
        has_openssl = conn.exec("command -v openssl")[0] == 0
        chosen = conn.exec(FAST_HASH + 'echo "$H"')[1].decode().strip()
        assert chosen == ("openssl dgst -sha256 -r" if has_openssl else "sha256sum")
        without = conn.exec("PATH=/nonexistent; " + FAST_HASH + 'echo "$H"')[1].decode()
        assert without.strip() == "sha256sum"
        side = RemoteSide(conn)
        want = hashlib.sha256(b"abc").hexdigest()
        assert side.exec_sha256([f"{name}/x"]) == {f"{name}/x": want}
        assert side.prefix_sha256(f"{name}/x", 2) == hashlib.sha256(b"ab").hexdigest()
    finally:
        conn.close()


def test_one_large_file_streams_over_every_connection(
    ssh_env: SshEnv, remote_dir: tuple[str, Path], tmp_path: Path
) -> None:
    """A sync of one large file streams it over every connection it opened (`parallel`),
    both ways: each carries a share of the bytes (one file used to go over one)."""
    name, view = remote_dir
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(12 << 20))
    options = SyncOptions(parallel=3, chunk=256 << 10, segment=4 << 20)
    with LatencyProxy(ssh_env.sshd.port, rtt_ms=20) as proxy:  # (all streams get going)
        result = push(ssh_env.target(port=proxy.port), [str(big)], f"{name}/", options)
        assert result.verified and result.files_transferred == 1
        assert filecmp.cmp(big, view / "big.bin", shallow=False)
        back = tmp_path / "back"
        result = pull(ssh_env.target(port=proxy.port), [f"{name}/big.bin"], f"{back}/", options)
        assert result.verified and result.files_transferred == 1
        assert filecmp.cmp(big, back / "big.bin", shallow=False)
    assert proxy.connections == len(proxy.carried) == 6  # (counted as the proxy closed)
    # a login alone is ~4.5 KB
    assert min(proxy.carried) > 100_000, proxy.carried


def test_connections_follow_the_files() -> None:
    one_big = [FileTask("big", "big", SMALL_FILE, 0, 0o644)]
    smalls = [FileTask(f"f{i}", f"f{i}", 10, 0, 0o644) for i in range(5)]
    assert connections_for(one_big, SyncOptions(parallel=4)) == 4
    assert connections_for(one_big, SyncOptions(parallel=4, stripe=False)) == 1
    assert connections_for(smalls[:2], SyncOptions(parallel=4)) == 2
    assert connections_for(smalls, SyncOptions(parallel=4)) == 4
    assert connections_for([], SyncOptions(parallel=4)) == 0


def test_small_files_are_spread_over_the_workers_in_few_batches() -> None:
    def files(n: int, size: int = 16 << 10) -> list[FileTask]:
        return [FileTask(f"f{i}", f"f{i}", size, 0, 0o644) for i in range(n)]

    def sizes(tasks: list[FileTask], workers: int) -> list[int]:
        return [len(b) for b in batches(tasks, workers=workers)]

    assert sizes(files(2000), 6) == [334] * 5 + [330]  # one batch per worker
    assert sizes(files(100), 6) == [64, 36]  # no batch smaller than BATCH_FILES ...
    assert max(sizes(files(9000), 6)) == MAX_BATCH_FILES  # ... or larger than this
    big = files(40, size=1 << 20)  # ... or holding more than BATCH_BYTES
    assert sizes(big, 1) == [BATCH_BYTES >> 20] * (40 // (BATCH_BYTES >> 20))


def test_one_hashing_exec_takes_many_names_but_a_bounded_command() -> None:
    short = [f"d/f{i}" for i in range(1200)]
    assert [len(b) for b in _command_batches(short)] == [512, 512, 176]
    for name in ("x" * 4000, "数据" * 1300, "it's" * 1000):  # bytes on the line, quoted
        runs = list(_command_batches([name] * 40))
        assert sum(map(len, runs)) == 40
        assert all(len(" ".join(map(shlex.quote, r)).encode()) <= 64 << 10 for r in runs)


def test_the_workers_share_the_endpoints_open_files() -> None:
    """The embedded endpoint allows 512 open files in all: the workers' windows fit."""
    for parallel, channels in ((1, 1), (2, 3), (4, 3), (16, 3)):
        options = SyncOptions(parallel=parallel, channels=channels)
        assert 1 <= open_files(options) * parallel * channels <= 512
    assert open_files(SyncOptions()) == 80
