"""`kaic data ls` and `kaic data rm` on the staging host: listing a remote directory, and
removing remote paths (never the home directory itself) with a report of what went."""

from __future__ import annotations

import posixpath
import stat as stat_mod
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

from kaic.errors import KaicError, NotFound, UsageError
from kaic.staging.names import json_name
from kaic.staging.remote_fs import _is_missing, normalize_remote


@dataclass
class RemoteEntry:
    name: str
    path: str
    type: str  # file | dir | link | other
    size: int
    mtime: int
    mode: str

    def to_json(self) -> dict[str, object]:
        """CLI.md's `kaic data ls --json` entry (undecodable bytes of names as `\\xNN`)."""
        return {
            "name": json_name(self.name),
            "path": json_name(self.path),
            "type": self.type,
            "size": self.size,
            "mtime": self.mtime,
            "mode": self.mode,
        }


def _kind(mode: int) -> str:
    if stat_mod.S_ISDIR(mode):
        return "dir"
    if stat_mod.S_ISLNK(mode):
        return "link"
    if stat_mod.S_ISREG(mode):
        return "file"
    return "other"


def list_remote(sftp: paramiko.SFTPClient, path: str = "") -> list[RemoteEntry]:
    """A directory's entries (sorted by name), or the one entry of a file."""
    target = normalize_remote(path)
    try:
        st = sftp.stat(target)
    except OSError as exc:
        if _is_missing(exc):
            raise NotFound(f"{path or '~'}: no such file or directory on the staging host") from exc
        raise KaicError(f"cannot list {path}: {exc}") from exc
    mode = st.st_mode or 0
    if not stat_mod.S_ISDIR(mode):
        name = posixpath.basename(target)
        return [
            RemoteEntry(
                name,
                path,
                _kind(mode),
                st.st_size or 0,
                int(st.st_mtime or 0),
                stat_mod.filemode(mode),
            )
        ]
    entries = []
    for item in sftp.listdir_attr(target):
        m = item.st_mode or 0
        shown = item.filename if target == "." else posixpath.join(path.rstrip("/"), item.filename)
        entries.append(
            RemoteEntry(
                item.filename,
                shown,
                _kind(m),
                item.st_size or 0,
                int(item.st_mtime or 0),
                stat_mod.filemode(m),
            )
        )
    return sorted(entries, key=lambda e: e.name)


def _protected(path: str, home: str) -> bool:
    norm = posixpath.normpath(normalize_remote(path))
    return norm in (".", "/", "..") or norm.startswith("../") or norm == home.rstrip("/")


def remove_remote(
    sftp: paramiko.SFTPClient,
    paths: list[str],
    *,
    recursive: bool = False,
    on_removed: Callable[[str], None] = lambda _p: None,
) -> int:
    """Remove remote files (and, with `recursive`, directories). Returns how many entries.

    Refuses `/`, the home directory itself and paths escaping it with `..`: those are
    never what a user means by `kaic data rm -r`.
    """
    home = sftp.normalize(".")
    for path in paths:
        if _protected(path, home):
            raise UsageError(
                f"refusing to remove {path!r}: it is the root or your home directory",
                hint="name the files or subdirectories to remove",
            )
    removed = 0
    for path in paths:
        target = normalize_remote(path).rstrip("/") or "/"
        try:
            st = sftp.lstat(target)
        except OSError as exc:
            if _is_missing(exc):
                raise NotFound(f"{path}: no such file or directory on the staging host") from exc
            raise
        if stat_mod.S_ISDIR(st.st_mode or 0):
            if not recursive:
                raise UsageError(f"{path} is a directory", hint="use -r to remove it recursively")
            removed += _remove_tree(sftp, target, on_removed)
        else:
            sftp.remove(target)
            on_removed(path)
            removed += 1
    return removed


def _remove_tree(sftp: paramiko.SFTPClient, root: str, on_removed: Callable[[str], None]) -> int:
    removed = 0
    for item in sftp.listdir_attr(root):
        child = posixpath.join(root, item.filename)
        if stat_mod.S_ISDIR(item.st_mode or 0):  # lstat: links to dirs are removed, not followed
            removed += _remove_tree(sftp, child, on_removed)
        else:
            sftp.remove(child)
            on_removed(child)
            removed += 1
    sftp.rmdir(root)
    on_removed(root)
    return removed + 1
