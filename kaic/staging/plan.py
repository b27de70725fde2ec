"""Sync planning: which files to send, skip and delete, given a source and a destination.

Pure logic over two `Side`s (local disk, or remote storage over SFTP), so it is tested
without a network. Path semantics are CLI.md's, i.e. `rsync -a src/ dst/`:

- a source *directory's contents* go into the destination directory (created if missing);
- a source *file* goes into the destination when the destination ends with `/`, is an
  existing directory, or there are several sources; otherwise the destination is its name.

Unchanged files are skipped: same size and same mtime (whole seconds), or with
`checksum=True` same size and same sha256. Symlinks to files are followed (the target's
content is copied); symlinks to directories and dangling symlinks are skipped with a
warning (following directory links risks loops and copying outside the tree).
Part files (`part_name`: where a file is written until it is complete and verified) are
never treated as data: on the destination they are resumed or removed, in a source they are
left out with a warning. They are recognised by a check in their name (`is_part`), so a
user's own file is never taken for one because it happens to end in `.kaic-part`.
"""

from __future__ import annotations

import functools
import hashlib
import os
import posixpath
import re
import stat as stat_mod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kaic.errors import NotFound, UsageError
from kaic.staging.ignore import IGNORE_FILE, IgnoreRules
from kaic.staging.names import name_bytes

PART_SUFFIX = ".kaic-part"
_PART_RE = re.compile(r"^\.(?P<label>.+)\.(?P<check>[0-9a-f]{16})\.kaic-part$", re.DOTALL)
#: names up to this many bytes appear whole in their part file's name ...
_LABEL_MAX = 200
#: ... longer ones by this many bytes of their start plus a hash of the whole name
_LABEL_PREFIX = 180

Warn = Callable[[str], None]


def _check(label: str) -> str:
    return hashlib.sha256(b"kaic-part\0" + name_bytes(label)).hexdigest()[:16]


def _label(name: str) -> str:
    """`name` itself, or for a long one its start and a hash of all of it (`x…x~HASH`)."""
    raw = name_bytes(name)
    if len(raw) <= _LABEL_MAX:
        return name
    prefix = name
    while len(name_bytes(prefix)) > _LABEL_PREFIX:
        prefix = prefix[:-1]  # whole characters: the label stays valid UTF-8
    return f"{prefix}~{hashlib.sha256(raw).hexdigest()[:16]}"


@functools.lru_cache(maxsize=1 << 16)
def part_name(path: str) -> str:
    """The temporary name a file is written under, in the same directory (so the final
    rename is atomic): `.NAME.CHECK.kaic-part`, CHECK being 16 hex digits of a hash of NAME.

    It always fits in NAME_MAX (255 bytes): a name over 200 bytes appears as its first 180
    bytes and a hash of the whole name (distinct names keep distinct part files). The check
    is what `is_part` recognises: a user's `.notes.kaic-part` is not a part file.
    (Kept for the last 65,536 paths: a sync asks it for each file three or four times,
    and each answer is two hashes.)
    """
    head, tail = posixpath.split(path)
    label = _label(tail)
    return posixpath.join(head, f".{label}.{_check(label)}{PART_SUFFIX}")


def is_part(name: str) -> bool:
    """Whether a directory entry's name is one `part_name` makes (its check matches)."""
    match = _PART_RE.match(name)
    return match is not None and match["check"] == _check(match["label"])


@dataclass(frozen=True)
class Entry:
    """What `stat` says about one path (symlinks followed)."""

    is_dir: bool
    size: int = 0
    mtime: int = 0
    mode: int = 0o644


@dataclass
class Tree:
    """A scanned directory: relative `/`-paths of files and directories below the root."""

    files: dict[str, Entry] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    #: relative paths of part files (`is_part`), and their sizes
    parts: dict[str, int] = field(default_factory=dict)


class Side(Protocol):
    """A file system the planner can look at: the local disk or remote storage."""

    def join(self, *parts: str) -> str: ...

    def stat(self, path: str) -> Entry | None: ...

    def read_text(self, path: str) -> str | None: ...

    def scan(self, root: str, rules: IgnoreRules, warn: Warn) -> Tree: ...

    def sha256_many(self, paths: list[str]) -> dict[str, str]: ...


def sha256_prefix(path: str, limit: int | None = None) -> Any:
    """A sha256 object fed with a local file (its first `limit` bytes when given); the
    caller may go on feeding it (a resumed transfer hashes the rest as it sends)."""
    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as f:
        while remaining is None or remaining > 0:
            block = f.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest


def sha256_file(path: str) -> str:
    """sha256 of a local file."""
    return str(sha256_prefix(path).hexdigest())


class LocalSide:
    """The local disk as a planning `Side`."""

    def join(self, *parts: str) -> str:
        return os.path.join(*parts)

    def stat(self, path: str) -> Entry | None:
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return Entry(
            stat_mod.S_ISDIR(st.st_mode), st.st_size, int(st.st_mtime), st.st_mode & 0o7777
        )

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def scan(self, root: str, rules: IgnoreRules, warn: Warn) -> Tree:
        tree = Tree()
        stack = [""]
        while stack:
            rel_dir = stack.pop()
            abs_dir = os.path.join(root, rel_dir) if rel_dir else root
            try:
                entries = list(os.scandir(abs_dir))
            except OSError as exc:
                warn(f"cannot read {abs_dir}: {exc.strerror or exc}")
                continue
            for item in entries:
                rel = f"{rel_dir}/{item.name}" if rel_dir else item.name
                if is_part(item.name) and item.is_file(follow_symlinks=False):
                    tree.parts[rel] = item.stat(follow_symlinks=False).st_size
                    continue
                link = item.is_symlink()
                try:
                    st = item.stat(follow_symlinks=True)
                except OSError:
                    warn(f"skipping dangling symlink {os.path.join(abs_dir, item.name)}")
                    continue
                is_dir = stat_mod.S_ISDIR(st.st_mode)
                if rules.ignored(rel, is_dir):
                    continue
                if is_dir:
                    if link:
                        warn(f"skipping symlink to a directory {os.path.join(abs_dir, item.name)}")
                        continue
                    tree.dirs.add(rel)
                    stack.append(rel)
                elif stat_mod.S_ISREG(st.st_mode):
                    tree.files[rel] = Entry(
                        False, st.st_size, int(st.st_mtime), st.st_mode & 0o7777
                    )
                else:
                    warn(f"skipping special file {os.path.join(abs_dir, item.name)}")
        return tree

    def sha256_many(self, paths: list[str]) -> dict[str, str]:
        return {p: sha256_file(p) for p in paths}


@dataclass
class FileTask:
    """One file to copy (or skipped): source and destination paths on their sides."""

    src: str
    dst: str
    size: int
    mtime: int
    mode: int


@dataclass
class SyncPlan:
    transfers: list[FileTask] = field(default_factory=list)
    skipped: list[FileTask] = field(default_factory=list)
    #: destination directories to create, parents first
    mkdirs: list[str] = field(default_factory=list)
    #: destination files to delete (`delete=True`), then directories, deepest first
    delete_files: list[str] = field(default_factory=list)
    delete_dirs: list[str] = field(default_factory=list)
    #: destination part files: path -> size (resumable, or garbage to remove)
    parts: dict[str, int] = field(default_factory=dict)

    @property
    def bytes_to_transfer(self) -> int:
        return sum(t.size for t in self.transfers)

    def stale_parts(self) -> list[str]:
        """Part files no transfer of this plan will resume."""
        wanted = {part_name(t.dst) for t in self.transfers}
        return sorted(p for p in self.parts if p not in wanted)


def _posix_rel_join(side: Side, root: str, rel: str) -> str:
    return side.join(root, *rel.split("/")) if rel else root


def plan_sync(
    src_side: Side,
    sources: list[str],
    dst_side: Side,
    dest: str,
    *,
    excludes: Iterable[str] = (),
    delete: bool = False,
    checksum: bool = False,
    warn: Warn = lambda _msg: None,
) -> SyncPlan:
    """Work out what syncing `sources` to `dest` takes, changing nothing."""
    if not sources:
        raise UsageError("nothing to copy: give at least one source")
    excludes = list(excludes)
    plan = SyncPlan()
    dest_entry = dst_side.stat(dest)
    dest_is_dir = dest.endswith("/") or len(sources) > 1 or bool(dest_entry and dest_entry.is_dir)
    dest_root = dest.rstrip("/") or dest
    mkdirs: list[str] = []
    compare: list[tuple[FileTask, Entry | None]] = []

    def want_dir(path: str) -> None:
        if path not in mkdirs:
            mkdirs.append(path)

    for source in sources:
        entry = src_side.stat(source)
        if entry is None:
            raise NotFound(f"{source}: no such file or directory")
        if entry.is_dir:
            if dest_entry is not None and not dest_entry.is_dir:
                raise UsageError(f"{dest} exists and is not a directory")
            rules = IgnoreRules.from_text(
                src_side.read_text(src_side.join(source, IGNORE_FILE)), excludes
            )
            src_tree = src_side.scan(source, rules, warn)
            for rel in sorted(src_tree.parts):
                warn(
                    f"skipping {_posix_rel_join(src_side, source, rel)}: the part file of an "
                    "interrupted kaic transfer into this directory (run that transfer again "
                    "to finish it, or delete the file)"
                )
            dst_tree = dst_side.scan(dest_root, rules, warn) if dest_entry is not None else Tree()
            if dest_entry is None:
                want_dir(dest_root)
            for rel in sorted(src_tree.dirs, key=lambda r: (r.count("/"), r)):
                if rel in dst_tree.files:
                    raise UsageError(
                        f"{_posix_rel_join(dst_side, dest_root, rel)} is a file on the "
                        f"destination but a directory in {source}"
                    )
                if rel not in dst_tree.dirs:
                    want_dir(_posix_rel_join(dst_side, dest_root, rel))
            for rel, src_file in sorted(src_tree.files.items()):
                if rel in dst_tree.dirs:
                    raise UsageError(
                        f"{_posix_rel_join(dst_side, dest_root, rel)} is a directory on the "
                        f"destination but a file in {source}"
                    )
                task = FileTask(
                    _posix_rel_join(src_side, source, rel),
                    _posix_rel_join(dst_side, dest_root, rel),
                    src_file.size,
                    src_file.mtime,
                    src_file.mode,
                )
                compare.append((task, dst_tree.files.get(rel)))
            for rel, size in dst_tree.parts.items():
                plan.parts[_posix_rel_join(dst_side, dest_root, rel)] = size
            if delete:
                for rel in sorted(set(dst_tree.files) - set(src_tree.files)):
                    plan.delete_files.append(_posix_rel_join(dst_side, dest_root, rel))
                for rel in sorted(
                    set(dst_tree.dirs) - set(src_tree.dirs), key=lambda r: (-r.count("/"), r)
                ):
                    plan.delete_dirs.append(_posix_rel_join(dst_side, dest_root, rel))
        else:
            name = posixpath.basename(source.rstrip("/")) or source
            if excludes and IgnoreRules(excludes).ignored(name):
                continue
            if dest_is_dir:
                if dest_entry is None:
                    want_dir(dest_root)
                target = dst_side.join(dest_root, name)
            else:
                target = dest
            target_entry = dest_entry if target == dest else dst_side.stat(target)
            if target_entry is not None and target_entry.is_dir:
                raise UsageError(f"{target} is a directory; cannot replace it with a file")
            part = part_name(target)
            part_entry = dst_side.stat(part)
            if part_entry is not None and not part_entry.is_dir:
                plan.parts[part] = part_entry.size
            task = FileTask(source, target, entry.size, entry.mtime, entry.mode)
            compare.append((task, target_entry))

    # Unchanged? size + mtime, or size + sha256 (hashing only same-size candidates).
    if checksum:
        same_size = [(t, e) for t, e in compare if e is not None and e.size == t.size]
        src_sums = src_side.sha256_many([t.src for t, _ in same_size]) if same_size else {}
        dst_sums = dst_side.sha256_many([t.dst for t, _ in same_size]) if same_size else {}
        unchanged = {
            id(t)
            for t, _ in same_size
            if src_sums.get(t.src) is not None and src_sums.get(t.src) == dst_sums.get(t.dst)
        }
    else:
        unchanged = {
            id(t) for t, e in compare if e is not None and e.size == t.size and e.mtime == t.mtime
        }
    for task, _ in compare:
        (plan.skipped if id(task) in unchanged else plan.transfers).append(task)
    plan.mkdirs = mkdirs
    return plan
