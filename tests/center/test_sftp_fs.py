"""The embedded SFTP file system: everything confined to the user's storage root.

These drive the SFTP server interface directly on a real directory tree (the SSH layer and
the OpenSSH client are covered in tests/e2e/test_embedded_sftp.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from paramiko import SFTPAttributes
from paramiko.sftp import SFTP_FAILURE, SFTP_NO_SUCH_FILE, SFTP_OK, SFTP_PERMISSION_DENIED

from kaic.center.sftp.fs import ConfinedHandle, ConfinedSFTP


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    """(root, outside): a storage root and a secret next to it."""
    root = tmp_path / "storage" / "alice"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.txt").write_text("inside\n")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "key.txt").write_text("do not read\n")
    return root, outside


@pytest.fixture
def sftp(tree: tuple[Path, Path]) -> ConfinedSFTP:
    root, _ = tree
    return ConfinedSFTP(SimpleNamespace(storage_root=root, username="alice"))


def _read(sftp: ConfinedSFTP, path: str) -> bytes | int:
    handle = sftp.open(path, os.O_RDONLY, SFTPAttributes())
    if not isinstance(handle, ConfinedHandle):
        return handle
    try:
        data = handle.read(0, 1 << 20)
        assert isinstance(data, bytes)
        return data
    finally:
        handle.close()


def _write(sftp: ConfinedSFTP, path: str, data: bytes) -> int:
    handle = sftp.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SFTPAttributes())
    if not isinstance(handle, ConfinedHandle):
        return handle
    try:
        return handle.write(0, data)
    finally:
        handle.close()


def test_paths_are_the_roots_absolute_paths(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert sftp.canonicalize(".") == str(root)
    assert sftp.canonicalize("") == str(root)
    assert sftp.canonicalize("sub/../sub/data.txt") == str(root / "sub" / "data.txt")
    assert _read(sftp, "sub/data.txt") == b"inside\n"
    assert _read(sftp, str(root / "sub" / "data.txt")) == b"inside\n"
    assert _read(sftp, "~/sub/data.txt") == b"inside\n"
    names = sftp.list_folder(".")
    assert isinstance(names, list) and [a.filename for a in names] == ["sub"]


@pytest.mark.parametrize(
    "path",
    ["../../secret/key.txt", "..", "sub/../../alice2", "/etc/passwd", "/", "../alice/../secret"],
)
def test_traversal_refused(sftp: ConfinedSFTP, path: str) -> None:
    assert _read(sftp, path) == SFTP_PERMISSION_DENIED
    assert sftp.stat(path) == SFTP_PERMISSION_DENIED
    assert sftp.list_folder(path) == SFTP_PERMISSION_DENIED
    assert _write(sftp, path.rstrip("/") + "/new", b"x") == SFTP_PERMISSION_DENIED
    assert sftp.mkdir(path.rstrip("/") + "/dir", SFTPAttributes()) == SFTP_PERMISSION_DENIED


def test_dotdot_in_absolute_path_refused(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    sneaky = f"{root}/../../secret/key.txt"
    assert _read(sftp, sneaky) == SFTP_PERMISSION_DENIED
    # realpath answers the normalised path, without touching what is there
    assert sftp.canonicalize(sneaky) == str(outside / "key.txt")
    assert sftp.stat(sftp.canonicalize(sneaky)) == SFTP_PERMISSION_DENIED


def test_symlink_out_of_the_root_opens_nothing(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    (root / "to-file").symlink_to(outside / "key.txt")
    (root / "to-dir").symlink_to(outside)
    (root / "sub" / "relative").symlink_to("../../../secret/key.txt")
    for path in ("to-file", "to-dir/key.txt", "sub/relative"):
        assert _read(sftp, path) == SFTP_PERMISSION_DENIED, path
        assert sftp.stat(path) == SFTP_PERMISSION_DENIED, path
    assert sftp.list_folder("to-dir") == SFTP_PERMISSION_DENIED
    assert _write(sftp, "to-file", b"overwritten") == SFTP_PERMISSION_DENIED
    assert _write(sftp, "to-dir/new.txt", b"planted") == SFTP_PERMISSION_DENIED
    attr = SFTPAttributes()
    attr.st_mode = 0o777
    assert sftp.chattr("to-file", attr) == SFTP_PERMISSION_DENIED
    assert (outside / "key.txt").read_text() == "do not read\n"
    assert not (outside / "new.txt").exists()
    assert stat.S_IMODE((outside / "key.txt").stat().st_mode) != 0o777
    # the link itself can be seen, read as a link and removed
    link = sftp.lstat("to-file")
    assert isinstance(link, SFTPAttributes) and stat.S_ISLNK(link.st_mode or 0)
    assert sftp.readlink("to-file") == str(outside / "key.txt")
    # realpath does not reveal where an escaping link leads
    assert sftp.canonicalize("to-dir") == str(root / "to-dir")
    assert sftp.remove("to-file") == SFTP_OK
    assert (outside / "key.txt").exists()


def test_symlinks_inside_the_root_work(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert sftp.symlink("sub/data.txt", "alias") == SFTP_OK
    assert sftp.symlink(str(root / "sub"), "subdir") == SFTP_OK
    assert os.readlink(root / "alias") == "sub/data.txt"
    assert _read(sftp, "alias") == b"inside\n"
    assert _read(sftp, "subdir/data.txt") == b"inside\n"
    assert sftp.canonicalize("subdir/data.txt") == str(root / "sub" / "data.txt")


@pytest.mark.parametrize("target", ["/etc/passwd", "../../secret/key.txt", "sub/../../x"])
def test_creating_a_link_out_of_the_root_refused(
    sftp: ConfinedSFTP, tree: tuple[Path, Path], target: str
) -> None:
    root, _ = tree
    assert sftp.symlink(target, "escape") == SFTP_PERMISSION_DENIED
    assert not os.path.lexists(root / "escape")
    # .. from a subdirectory that stays inside is fine
    assert sftp.symlink("../sub/data.txt", "sub/up") == SFTP_OK


def test_rename_and_posix_rename(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    assert _write(sftp, "a.part", b"new") == SFTP_OK
    assert _write(sftp, "a", b"old") == SFTP_OK
    # plain SFTP rename never overwrites; posix-rename replaces atomically
    assert sftp.rename("a.part", "a") == SFTP_FAILURE
    assert sftp.posix_rename("a.part", "a") == SFTP_OK
    assert (root / "a").read_bytes() == b"new" and not (root / "a.part").exists()
    assert sftp.rename("a", "sub/b") == SFTP_OK
    assert sftp.rename("sub/b", "../../secret/b") == SFTP_PERMISSION_DENIED
    assert sftp.posix_rename("sub/b", str(outside / "b")) == SFTP_PERMISSION_DENIED
    assert sftp.rename(".", "elsewhere") == SFTP_PERMISSION_DENIED
    assert (root / "sub" / "b").exists() and not (outside / "b").exists()


def test_mkdir_rmdir_remove(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    assert sftp.mkdir("new/deeper", SFTPAttributes()) == SFTP_NO_SUCH_FILE
    assert sftp.mkdir("new", SFTPAttributes()) == SFTP_OK
    assert sftp.remove("new") == SFTP_FAILURE  # a directory
    assert sftp.rmdir("new") == SFTP_OK
    assert sftp.rmdir(".") == SFTP_PERMISSION_DENIED
    assert sftp.remove("missing") == SFTP_NO_SUCH_FILE
    assert root.is_dir()


def test_setstat_mtime_and_mode(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    attr = SFTPAttributes()
    attr.st_mode = 0o4755  # set-id bits are dropped
    attr.st_atime = attr.st_mtime = 1_600_000_000
    assert sftp.chattr("sub/data.txt", attr) == SFTP_OK
    st = (root / "sub" / "data.txt").stat()
    assert int(st.st_mtime) == 1_600_000_000 and stat.S_IMODE(st.st_mode) == 0o755
    seen = sftp.stat("sub/data.txt")
    assert isinstance(seen, SFTPAttributes) and seen.st_mtime == 1_600_000_000
    owner = SFTPAttributes()
    owner.st_uid, owner.st_gid = 0, 0
    assert sftp.chattr("sub/data.txt", owner) == SFTP_PERMISSION_DENIED


def test_append_and_exclusive_create(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    handle = sftp.open("log", flags, SFTPAttributes())
    assert isinstance(handle, ConfinedHandle)
    handle.write(0, b"one\n")
    handle.close()
    assert sftp.open("log", flags, SFTPAttributes()) == SFTP_FAILURE  # exists
    handle = sftp.open("log", os.O_WRONLY | os.O_APPEND, SFTPAttributes())
    assert isinstance(handle, ConfinedHandle)
    handle.write(0, b"two\n")
    handle.close()
    assert (root / "log").read_bytes() == b"one\ntwo\n"


def test_special_files_are_not_opened(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, _ = tree
    os.mkfifo(root / "fifo")
    # would block forever if opened normally
    assert sftp.open("fifo", os.O_RDONLY, SFTPAttributes()) == SFTP_FAILURE
    assert sftp.open("sub", os.O_RDONLY, SFTPAttributes()) == SFTP_FAILURE


def test_root_behind_a_symlink(tmp_path: Path) -> None:
    """The root as advertised may run through a link; both spellings work, nothing else."""
    real = tmp_path / "real-storage" / "alice"
    real.mkdir(parents=True)
    (real / "f").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "real-storage")
    shown = tmp_path / "link" / "alice"
    sftp = ConfinedSFTP(SimpleNamespace(storage_root=shown, username="alice"))
    assert sftp.canonicalize(".") == str(shown)
    assert sftp.canonicalize("f") == str(shown / "f")
    assert _read(sftp, str(shown / "f")) == b"x"
    assert _read(sftp, str(real / "f")) == b"x"
    assert _read(sftp, str(tmp_path / "link" / "other")) == SFTP_PERMISSION_DENIED


def test_hard_links_stay_in_the_root(sftp: ConfinedSFTP, tree: tuple[Path, Path]) -> None:
    root, outside = tree
    assert sftp.hardlink("sub/data.txt", "alias.txt") == SFTP_OK
    assert (root / "alias.txt").stat().st_ino == (root / "sub" / "data.txt").stat().st_ino
    assert sftp.hardlink("../../secret/key.txt", "stolen") == SFTP_PERMISSION_DENIED
    assert sftp.hardlink(str(outside / "key.txt"), "stolen") == SFTP_PERMISSION_DENIED
    assert sftp.hardlink("sub/data.txt", "../planted") == SFTP_PERMISSION_DENIED
    assert sftp.hardlink(".", "root-again") == SFTP_PERMISSION_DENIED
    assert not (root / "stolen").exists() and not (root.parent / "planted").exists()
    # a link planted in the root is linked itself (link(2) does not follow it), so the new
    # name opens nothing outside either
    (root / "escape").symlink_to(outside / "key.txt")
    assert sftp.hardlink("escape", "escape2") == SFTP_OK
    assert (root / "escape2").is_symlink()
    assert (outside / "key.txt").stat().st_nlink == 1
    assert _read(sftp, "escape2") == SFTP_PERMISSION_DENIED


def test_directory_handles_read_in_batches_and_give_their_descriptor_back(
    tree: tuple[Path, Path],
) -> None:
    import threading

    from kaic.center.sftp.fs import ConfinedDirHandle

    root, _ = tree
    for i in range(5):
        (root / f"f{i}").write_text("x")
    budget = threading.BoundedSemaphore(2)
    endpoint = SimpleNamespace(file_budget=budget)
    sftp = ConfinedSFTP(SimpleNamespace(storage_root=root, username="alice", endpoint=endpoint))
    first = sftp.open_folder(".")
    second = sftp.open_folder("sub")
    assert isinstance(first, ConfinedDirHandle) and isinstance(second, ConfinedDirHandle)
    assert sftp.open_folder(".") == SFTP_FAILURE  # the endpoint's descriptors are counted
    names: list[str] = []
    while batch := first.read_batch(2):
        assert not isinstance(batch, int) and len(batch) <= 2
        names += [a.filename for a in batch]
    assert sorted(names) == ["f0", "f1", "f2", "f3", "f4", "sub"]
    first.close()
    first.close()  # twice is harmless
    third = sftp.open_folder(".")
    assert isinstance(third, ConfinedDirHandle)
    for handle in (second, third):
        handle.close()
    assert budget._value == 2  # type: ignore[attr-defined]
    assert sftp.open_folder("../..") == SFTP_PERMISSION_DENIED
    assert budget._value == 2  # type: ignore[attr-defined]
