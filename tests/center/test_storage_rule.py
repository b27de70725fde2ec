"""The storage root's one rule, against the three entry points that take a user's path: the
workdir check (`resolve_workdir`), the checksum API (`checksums`, what both checksum routes
call) and the SFTP endpoint (`ConfinedSFTP`).

A property-based test throws hostile paths at all three — `..`, absolute paths, `~other`,
links in and out of the root, `../<root-name>/x`, NUL, very long names, names that are not
UTF-8 — over one tree whose root is itself reached through a link, and checks that

- they agree: a path the workdir check refuses, the checksum API and SFTP refuse too; a
  path it accepts, the other two treat as the kernel sees that path (a file is hashed and
  read with the same bytes, a directory is not hashed, a missing file is missing);
- nothing outside the root is ever reached: no outside file is hashed or read, an accepted
  workdir lies inside the root with its links resolved, and nothing is created outside.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from paramiko import SFTPAttributes
from paramiko.sftp import SFTP_OK, SFTP_PERMISSION_DENIED

from kaic.center.files import checksums
from kaic.center.jobs.paths import PathRejected, resolve_workdir
from kaic.center.sftp.fs import ConfinedHandle, ConfinedSFTP
from kaic.center.storage import Outside, StorageRoot

from .test_sftp_fs import _read

NOT_UTF8 = os.fsdecode(b"caf\xe9-\xff.bin")
LONG = "n" * 300  # longer than any file system's name limit (255 bytes)

#: path components the strategy draws from (besides arbitrary ones)
COMPONENTS = [
    ".",
    "..",
    "",
    "~",
    "~other",
    "alice",
    "alice2",
    "bob",
    "storage",
    "secret",
    "key.txt",
    "x.txt",
    "data",
    "sub",
    "a.txt",
    "b.txt",
    NOT_UTF8,
    "in-link",
    "in-dir-link",
    "deep-link",
    "out-link",
    "out-abs",
    "out-dir",
    "up-link",
    "self",
    "loop",
    "fifo",
    "a\0b",
    LONG,
]
#: how a path starts: relative, `~/`, or absolute through the shown root, the real root,
#: the storage directory above them, or `/`
PREFIXES = ["", "~/", "shown/", "real/", "storage/", "/"]


@dataclass(frozen=True)
class Tree:
    base: Path
    shown: Path  # the root as configured: a link to `real` (as /home -> /data/home)
    real: Path
    outside_digests: frozenset[str]

    def render(self, prefix: str, parts: list[str]) -> str:
        start = {
            "shown/": f"{self.shown}/",
            "real/": f"{self.real}/",
            "storage/": f"{self.real.parent}/",
        }.get(prefix, prefix)
        return start + "/".join(parts)

    def outside(self) -> set[str]:
        """Every name under the base that is not in the root (to see nothing is created)."""
        found = set()
        for top, dirs, files in os.walk(self.base):
            if Path(top) == self.real:
                dirs.clear()
                continue
            found.update(os.path.join(top, name) for name in dirs + files)
        return found


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    base = tmp_path_factory.mktemp("storage-rule")
    storage = base / "storage"
    real = storage / "alice"
    (real / "data" / "sub").mkdir(parents=True)
    (real / "data" / "a.txt").write_bytes(b"INSIDE a\n")
    (real / "data" / "sub" / "b.txt").write_bytes(b"INSIDE b\n")
    (real / NOT_UTF8).write_bytes(b"INSIDE not utf-8\n")
    (real / "in-link").symlink_to("data/a.txt")
    (real / "in-dir-link").symlink_to("data")
    (real / "deep-link").symlink_to("data/sub")
    (real / "self").symlink_to(".")
    (real / "loop").symlink_to("loop")
    (real / "out-link").symlink_to("../../secret/key.txt")
    (real / "out-abs").symlink_to(base / "secret" / "key.txt")
    (real / "out-dir").symlink_to(base / "secret")
    (real / "up-link").symlink_to("..")
    os.mkfifo(real / "fifo")
    for sibling in ("alice2", "bob"):
        (storage / sibling).mkdir()
        (storage / sibling / "x.txt").write_bytes(f"OUTSIDE {sibling}\n".encode())
    (base / "secret").mkdir()
    (base / "secret" / "key.txt").write_bytes(b"OUTSIDE secret\n")
    (storage / "x.txt").write_bytes(b"OUTSIDE storage\n")
    shown = base / "home-alice"
    shown.symlink_to(real)
    digests = frozenset(
        hashlib.sha256(path.read_bytes()).hexdigest()
        for path in base.rglob("*")
        if path.is_file() and not path.is_symlink() and b"OUTSIDE" in path.read_bytes()
    )
    yield Tree(base, shown, real, digests)


def _sftp(tree: Tree) -> ConfinedSFTP:
    return ConfinedSFTP(SimpleNamespace(storage_root=tree.shown, username="alice"))


def _kernel_view(path: Path) -> tuple[str, bytes | None]:
    """What the kernel finds at `path` (links followed): file (and its bytes), other, missing."""
    try:
        info = os.stat(path)
    except OSError:
        return "missing", None
    if not stat.S_ISREG(info.st_mode):
        return "other", None
    return "file", path.read_bytes()


def check_one(tree: Tree, path: str) -> None:
    """The three entry points on `path`: they agree, and nothing outside is reached."""
    sftp = _sftp(tree)
    before = tree.outside()
    answer = checksums(tree.shown, [path], None)[0]
    stat_answer = sftp.stat(path)
    read_answer = _read(sftp, path)
    try:
        _display, workdir = resolve_workdir(tree.shown, path)
    except PathRejected:
        # refused everywhere
        assert answer.digest is None and answer.problem == "not_found", answer
        assert stat_answer == SFTP_PERMISSION_DENIED, stat_answer
        assert read_answer == SFTP_PERMISSION_DENIED, read_answer
    else:
        assert str(workdir) == str(tree.shown) or str(workdir).startswith(f"{tree.shown}/")
        real = os.path.realpath(workdir)
        assert real == str(tree.real) or real.startswith(f"{tree.real}/"), real
        kind, data = _kernel_view(workdir)
        if kind == "file":
            assert data is not None and answer.digest is not None, (answer, kind)
            assert answer.digest.sha256 == hashlib.sha256(data).hexdigest()
            assert read_answer == data
            assert isinstance(stat_answer, SFTPAttributes) and stat_answer.st_size == len(data)
        elif kind == "other":
            assert answer.problem == "not_a_file", answer
            assert isinstance(stat_answer, SFTPAttributes), stat_answer
            assert not isinstance(read_answer, bytes)
        else:
            assert answer.problem == "not_found", answer
            assert stat_answer != SFTP_OK and not isinstance(stat_answer, SFTPAttributes)
            assert not isinstance(read_answer, bytes)
    if answer.digest is not None:
        assert answer.digest.sha256 not in tree.outside_digests
    if isinstance(read_answer, bytes):
        assert b"OUTSIDE" not in read_answer
    # writing: whatever is created lies inside the root (and is removed again)
    for made in (sftp.mkdir(path, SFTPAttributes()), _create(sftp, path)):
        if made == SFTP_OK:
            _remove_inside(tree, sftp, path)
    assert tree.outside() == before


def _create(sftp: ConfinedSFTP, path: str) -> int:
    handle = sftp.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SFTPAttributes())
    if not isinstance(handle, ConfinedHandle):
        return handle
    handle.close()
    return SFTP_OK


def _remove_inside(tree: Tree, sftp: ConfinedSFTP, path: str) -> None:
    head, name = StorageRoot(tree.shown).parent(path)
    assert head == str(tree.real) or head.startswith(f"{tree.real}/"), head
    created = os.path.join(head, name)
    if os.path.isdir(created) and not os.path.islink(created):
        os.rmdir(created)
    else:
        os.unlink(created)


arbitrary = st.binary(min_size=1, max_size=12).map(os.fsdecode)
component = st.one_of(st.sampled_from(COMPONENTS), arbitrary)


@settings(max_examples=400, deadline=None)
@given(prefix=st.sampled_from(PREFIXES), parts=st.lists(component, max_size=7))
@example(prefix="", parts=["..", "alice", "data", "a.txt"])  # ../<root-name>/x
@example(prefix="~/", parts=["..", "alice", "data", "a.txt"])
@example(prefix="shown/", parts=["..", "alice", "data", "a.txt"])
@example(prefix="real/", parts=["..", "alice", "data", "a.txt"])
@example(prefix="storage/", parts=["alice", "data", "a.txt"])
@example(prefix="storage/", parts=["alice2", "x.txt"])
@example(prefix="", parts=["~other", "x"])
@example(prefix="~/", parts=["", "data", "a.txt"])  # ~//data/a.txt
@example(prefix="", parts=["out-link"])
@example(prefix="", parts=["out-dir", "key.txt"])
@example(prefix="", parts=["up-link", "alice", "data", "a.txt"])
@example(prefix="", parts=["up-link", "bob", "x.txt"])
@example(prefix="", parts=["deep-link", "..", "a.txt"])
@example(prefix="", parts=["in-link"])
@example(prefix="", parts=["loop"])
@example(prefix="", parts=["fifo"])
@example(prefix="", parts=["data", "a\0b"])
@example(prefix="", parts=[LONG])
@example(prefix="", parts=[LONG] * 20)
@example(prefix="", parts=[NOT_UTF8])
def test_the_three_entry_points_agree_and_never_leave_the_root(
    tree: Tree, prefix: str, parts: list[str]
) -> None:
    path = tree.render(prefix, parts)
    if path != path.strip():
        return  # the workdir check strips blanks around a workdir; the others take names
    check_one(tree, path)


@pytest.mark.parametrize(
    "path, relative",
    [
        ("", ""),
        ("~", ""),
        ("~/", ""),
        ("./data/../data/a.txt", "data/a.txt"),
        ("~//data", "data"),
        ("data/sub/..", "data"),
    ],
)
def test_relative_paths(tree: Tree, path: str, relative: str) -> None:
    assert StorageRoot(tree.shown).relative(path) == relative


@pytest.mark.parametrize(
    "path, why",
    [
        ("../alice/data", "leads outside your storage"),
        ("data/../../alice", "leads outside your storage"),
        ("~/../alice", "leads outside your storage"),
        ("~other/x", "is a `~user` path, which is not supported; use `~/…`"),
        ("/etc", "is outside your storage; use a path under `~`"),
        ("data/\0", "contains a NUL character"),
    ],
)
def test_refused_paths_say_why(tree: Tree, path: str, why: str) -> None:
    with pytest.raises(Outside) as refused:
        StorageRoot(tree.shown).relative(path)
    assert str(refused.value) == why


def test_absolute_paths_through_either_name_of_the_root(tree: Tree) -> None:
    root = StorageRoot(tree.shown)
    for base in (tree.shown, tree.real):
        assert root.relative(f"{base}/data/a.txt") == "data/a.txt"
        assert root.follow(f"{base}/in-link") == str(tree.real / "data" / "a.txt")
    # An absolute path names the root, so `..` in it is only normalised: the real root's
    # parent holds `alice`, the shown root's does not.
    assert root.relative(f"{tree.real}/../alice/data") == "data"
    with pytest.raises(Outside):
        root.relative(f"{tree.shown}/../alice/data")
    with pytest.raises(Outside, match="through a link"):
        root.follow("out-dir/key.txt")
