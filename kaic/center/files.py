"""Users' files on the center: paths confined to a storage root, and server-side checksums."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1024 * 1024


class PathOutside(ValueError):
    """A path that does not resolve inside the storage root (or is malformed)."""


def resolve_in_root(root: Path, path: str) -> Path:
    """The real path of `path` inside `root`; PathOutside if it leads anywhere else.

    `path` is relative to the root (`~` and `~/x` mean the root and `x` in it) or absolute
    (then it must lie inside the root, reached directly or through the root's own links).
    Everything is resolved with `os.path.realpath`, so `..` and symbolic links are judged
    by where they really lead. The root may itself be a symbolic link.
    """
    if "\0" in path:
        raise PathOutside("path contains a NUL character")
    if path == "~" or path.startswith("~/"):
        relative = path[2:]
    elif path.startswith("~"):
        raise PathOutside("`~user` paths are not supported; use `~/…`")
    else:
        relative = path
    real_root = Path(os.path.realpath(root))
    candidate = relative if os.path.isabs(relative) else os.path.join(real_root, relative)
    real = Path(os.path.realpath(candidate))
    if not is_inside(real, real_root):
        raise PathOutside("path leads outside the storage root")
    return real


def is_inside(path: Path, root: Path) -> bool:
    """Whether `path` is `root` or below it (both already real paths)."""
    return path == root or root in path.parents


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


class NotARegularFile(ValueError):
    """The path exists but is a directory, device, socket…"""


def sha256_in_root(root: Path, real: Path) -> Digest:
    """sha256 and size of the regular file `real` (a `resolve_in_root` result) under `root`.

    The final component is opened without following links, and on Linux the opened file's
    real path is checked again, so swapping a component for a link after `resolve_in_root`
    cannot make the center read a file outside the root. FileNotFoundError if it is gone,
    PathOutside if it moved out, NotARegularFile if it is not a plain file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno in (getattr(os, "ELOOP", 40),):
            raise PathOutside("path is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotARegularFile(f"{real.name or real} is not a regular file")
        proc_link = f"/proc/self/fd/{fd}"
        if os.path.exists(proc_link):
            opened = Path(os.readlink(proc_link))
            if not is_inside(opened, Path(os.path.realpath(root))):
                raise PathOutside("path leads outside the storage root")
        digest = hashlib.sha256()
        size = 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                break
            digest.update(chunk)
            size += len(chunk)
        return Digest(size=size, sha256=digest.hexdigest())
    finally:
        os.close(fd)
