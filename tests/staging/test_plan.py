"""Sync planning against two local trees (the planner only sees `Side`s)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kaic.errors import NotFound
from kaic.staging.plan import LocalSide, part_name, plan_sync


def _write(path: Path, data: bytes = b"x", mtime: int = 1_700_000_000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    _write(root / "a.txt", b"aaa")
    _write(root / "sub" / "b.txt", b"bbbb")
    _write(root / "sub" / "deep" / "c.log", b"c")
    _write(root / "empty", b"")
    (root / "emptydir").mkdir()
    return root


def test_directory_contents_go_into_destination(src: Path, tmp_path: Path) -> None:
    plan = plan_sync(LocalSide(), [str(src)], LocalSide(), str(tmp_path / "dst"))
    dsts = sorted(os.path.relpath(t.dst, tmp_path / "dst") for t in plan.transfers)
    assert dsts == ["a.txt", "empty", "sub/b.txt", "sub/deep/c.log"]
    assert str(tmp_path / "dst") in plan.mkdirs
    assert str(tmp_path / "dst" / "emptydir") in plan.mkdirs


def test_unchanged_skipped_by_size_and_mtime(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    _write(dst / "a.txt", b"aaa")  # same size + mtime: skipped
    _write(dst / "sub" / "b.txt", b"BBBB", mtime=1_600_000_000)  # other mtime: sent
    plan = plan_sync(LocalSide(), [str(src)], LocalSide(), str(dst))
    assert [os.path.basename(t.dst) for t in plan.skipped] == ["a.txt"]
    assert len(plan.transfers) == 3


def test_checksum_compares_content(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    _write(dst / "a.txt", b"AAA")  # same size and mtime, other content
    _write(dst / "sub" / "b.txt", b"bbbb", mtime=1)  # same content, other mtime
    plan = plan_sync(LocalSide(), [str(src)], LocalSide(), str(dst), checksum=True)
    assert {os.path.basename(t.dst) for t in plan.skipped} == {"b.txt"}
    assert str(dst / "a.txt") in {t.dst for t in plan.transfers}


def test_delete_and_excludes(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    _write(dst / "extra.txt")
    _write(dst / "olddir" / "x")
    _write(dst / "keep.log")  # excluded: protected from --delete
    (src / ".kaicignore").write_text("*.log\n")
    plan = plan_sync(
        LocalSide(), [str(src)], LocalSide(), str(dst), delete=True, excludes=["sub/b*"]
    )
    sent = {os.path.relpath(t.dst, dst) for t in plan.transfers}
    assert sent == {"a.txt", "empty", ".kaicignore"}
    assert sorted(plan.delete_files) == [str(dst / "extra.txt"), str(dst / "olddir" / "x")]
    assert plan.delete_dirs == [str(dst / "olddir")]


def test_file_destination_semantics(src: Path, tmp_path: Path) -> None:
    local = LocalSide()
    (tmp_path / "existing").mkdir()
    a = str(src / "a.txt")
    assert plan_sync(local, [a], local, str(tmp_path / "new.txt")).transfers[0].dst == str(
        tmp_path / "new.txt"
    )
    assert plan_sync(local, [a], local, str(tmp_path / "existing")).transfers[0].dst == str(
        tmp_path / "existing" / "a.txt"
    )
    plan = plan_sync(local, [a], local, str(tmp_path / "newdir") + "/")
    assert plan.transfers[0].dst == str(tmp_path / "newdir" / "a.txt")
    assert plan.mkdirs == [str(tmp_path / "newdir")]


def test_symlinks(src: Path, tmp_path: Path) -> None:
    (src / "link.txt").symlink_to("a.txt")
    (src / "linkdir").symlink_to("sub")
    (src / "dangling").symlink_to("nowhere")
    warnings: list[str] = []
    plan = plan_sync(
        LocalSide(), [str(src)], LocalSide(), str(tmp_path / "d"), warn=warnings.append
    )
    names = {os.path.basename(t.dst) for t in plan.transfers}
    assert "link.txt" in names and "linkdir" not in names and "dangling" not in names
    assert any("linkdir" in w for w in warnings) and any("dangling" in w for w in warnings)


def test_parts_tracked_and_stale(src: Path, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    _write(Path(part_name(str(dst / "a.txt"))), b"a")
    _write(Path(part_name(str(dst / "gone.txt"))), b"g")
    plan = plan_sync(LocalSide(), [str(src)], LocalSide(), str(dst))
    assert plan.parts[part_name(str(dst / "a.txt"))] == 1
    assert plan.stale_parts() == [part_name(str(dst / "gone.txt"))]


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        plan_sync(LocalSide(), [str(tmp_path / "nope")], LocalSide(), str(tmp_path / "d"))
