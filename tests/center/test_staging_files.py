"""Path confinement to a user's storage root, and the server-side checksum."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kaic.center.files import resolve_in_root, sha256_in_root
from kaic.center.storage import NotARegularFile, Outside


@pytest.fixture
def root(tmp_path: Path) -> Path:
    home = tmp_path / "storage" / "alice"
    (home / "data").mkdir(parents=True)
    (home / "data" / "a.txt").write_text("alpha\n")
    (tmp_path / "secret.txt").write_text("not yours\n")
    return home


@pytest.mark.parametrize(
    "path, expected",
    [
        ("data/a.txt", "data/a.txt"),
        ("~/data/a.txt", "data/a.txt"),
        ("./data/../data/a.txt", "data/a.txt"),
        ("~", "."),
        ("", "."),
        (".", "."),
        ("data/new-file", "data/new-file"),
    ],
)
def test_inside(root: Path, path: str, expected: str) -> None:
    assert resolve_in_root(root, path) == (root / expected).resolve()


def test_absolute_inside_is_accepted(root: Path) -> None:
    assert resolve_in_root(root, str(root / "data" / "a.txt")) == root / "data" / "a.txt"


@pytest.mark.parametrize(
    "path",
    [
        "..",
        "../secret.txt",
        "data/../../secret.txt",
        "~/../secret.txt",
        "/etc/passwd",
        "~bob/x",
        "data/\0",
    ],
)
def test_outside_is_refused(root: Path, path: str) -> None:
    with pytest.raises(Outside):
        resolve_in_root(root, path)


def test_absolute_outside_and_sibling_prefix(root: Path) -> None:
    with pytest.raises(Outside):
        resolve_in_root(root, str(root.parent.parent / "secret.txt"))
    # /…/alice2 starts with the string /…/alice but is not inside it.
    sibling = root.parent / (root.name + "2")
    sibling.mkdir()
    with pytest.raises(Outside):
        resolve_in_root(root, str(sibling))


def test_symlink_to_outside_is_refused(root: Path) -> None:
    (root / "escape").symlink_to(root.parent.parent / "secret.txt")
    (root / "escape-dir").symlink_to("/etc")
    for path in ("escape", "escape-dir/passwd", "~/escape-dir"):
        with pytest.raises(Outside):
            resolve_in_root(root, path)


def test_symlink_inside_is_followed(root: Path) -> None:
    (root / "link").symlink_to("data/a.txt")
    assert resolve_in_root(root, "link") == root / "data" / "a.txt"


def test_symlinked_root(root: Path, tmp_path: Path) -> None:
    # e.g. /home -> /data/home: the root itself is a link; its files are still inside.
    link = tmp_path / "home-link"
    link.symlink_to(root)
    assert resolve_in_root(link, "data/a.txt") == root / "data" / "a.txt"
    assert resolve_in_root(link, str(link / "data" / "a.txt")) == root / "data" / "a.txt"
    with pytest.raises(Outside):
        resolve_in_root(link, "../secret.txt")


def test_sha256(root: Path) -> None:
    big = root / "big.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    big.write_bytes(data)
    digest = sha256_in_root(root, resolve_in_root(root, "big.bin"))
    assert digest.size == len(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest()


def test_sha256_refuses_non_files_and_swapped_links(root: Path, tmp_path: Path) -> None:
    with pytest.raises(NotARegularFile):
        sha256_in_root(root, resolve_in_root(root, "data"))
    with pytest.raises(FileNotFoundError):
        sha256_in_root(root, resolve_in_root(root, "data/missing"))
    fifo = root / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(NotARegularFile):
        sha256_in_root(root, resolve_in_root(root, "fifo"))
    # Resolved while it was a file, swapped for a link to outside before it is opened.
    target = resolve_in_root(root, "data/a.txt")
    target.unlink()
    target.symlink_to(tmp_path / "secret.txt")
    with pytest.raises(Outside):
        sha256_in_root(root, target)
    # ... or a parent directory swapped for a link to outside.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.txt").write_text("outside\n")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("inside\n")
    resolved = resolve_in_root(root, "sub/b.txt")
    (root / "sub" / "b.txt").unlink()
    (root / "sub").rmdir()
    (root / "sub").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(Outside):
        sha256_in_root(root, resolved)
