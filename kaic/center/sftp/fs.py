"""One user's storage root as an SFTP file system: every path confined to the root.

Paths the client sees are absolute paths of the host, the way sshd shows them: the root is
the `home` path `GET /v1/staging` advertises (and `realpath(".")` answers it), relative
paths start there. Which paths lead inside the root, and how an operation reaches what it
acts on without walking the path again (`*at()` calls on a checked directory descriptor),
is `kaic.center.storage.StorageRoot`: the rule the workdir check and the checksum API use
too. A path it refuses is answered as permission denied.

Names are bytes on the wire and on disk: the subsystem hands this module `str` decoded the
way the file system decodes names (`os.fsdecode`), and encodes what it answers back.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import stat as stat_mod
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from paramiko import SFTPAttributes, SFTPHandle, SFTPServerInterface
from paramiko.sftp import (
    SFTP_FAILURE,
    SFTP_NO_SUCH_FILE,
    SFTP_OK,
    SFTP_PERMISSION_DENIED,
)

from kaic.center.storage import Outside, StorageRoot, is_inside, normalise

logger = logging.getLogger("kaic.center.sftp")

#: the largest read answered at once (clients ask for 32–256 KiB; a short read is fine)
MAX_READ = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# O_PATH (Linux): a handle on a directory or file that needs no read permission
_PATH = getattr(os, "O_PATH", 0)

T = TypeVar("T")


def sftp_code(exc: OSError) -> int:
    """The SFTP status for an OS error."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        return SFTP_NO_SUCH_FILE
    if exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
        return SFTP_PERMISSION_DENIED
    return SFTP_FAILURE


def _attributes(st: os.stat_result, filename: str = "") -> SFTPAttributes:
    return SFTPAttributes.from_stat(st, filename)


def _apply(target: str | int, attr: SFTPAttributes) -> None:
    """Set size, permissions and times from `attr` on a path or descriptor (no chown).

    A field is present when it is not None (paramiko parses absent fields as None).
    """
    if attr.st_uid is not None or attr.st_gid is not None:
        raise PermissionError(errno.EPERM, "changing owner or group is not allowed")
    if attr.st_size is not None:
        os.truncate(target, attr.st_size)
    if attr.st_mode is not None:
        # Plain permission bits only: a center running as root must not make set-id files.
        os.chmod(target, attr.st_mode & 0o777)
    if attr.st_mtime is not None:
        atime = attr.st_atime if attr.st_atime is not None else attr.st_mtime
        os.utime(target, (atime, attr.st_mtime))


def _create_mode(attr: SFTPAttributes | None, default: int) -> int:
    """Permissions for a new file or directory: the client's, if it sent any."""
    if attr is None or attr.st_mode is None:
        return default
    return attr.st_mode & 0o777


class ConfinedHandle(SFTPHandle):
    """An open regular file: positional reads and writes on its descriptor."""

    def __init__(
        self, fd: int, flags: int, budget: threading.BoundedSemaphore | None = None
    ) -> None:
        super().__init__(flags)
        self._fd: int | None = fd
        self._append = bool(flags & os.O_APPEND)
        #: the endpoint's descriptor budget, given back on close
        self._budget = budget

    def _require(self) -> int:
        if self._fd is None:
            raise OSError(errno.EBADF, "handle is closed")
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            finally:
                if self._budget is not None:
                    self._budget.release()

    def read(self, offset: int, length: int) -> bytes | int:
        try:
            return os.pread(self._require(), min(length, MAX_READ), offset)
        except OSError as exc:
            return sftp_code(exc)

    def write(self, offset: int, data: Any) -> int:
        try:
            fd = self._require()
            view = memoryview(data)
            while view:
                written = os.write(fd, view) if self._append else os.pwrite(fd, view, offset)
                view = view[written:]
                offset += written
        except OSError as exc:
            return sftp_code(exc)
        return SFTP_OK

    def stat(self) -> SFTPAttributes | int:
        try:
            return _attributes(os.fstat(self._require()))
        except OSError as exc:
            return sftp_code(exc)

    def chattr(self, attr: SFTPAttributes) -> int:
        try:
            _apply(self._require(), attr)
        except OSError as exc:
            return sftp_code(exc)
        return SFTP_OK


class ConfinedDirHandle(SFTPHandle):
    """An open directory, listed a batch at a time instead of all at once.

    It holds the open directory and an `os.scandir` iterator on it (the kernel's position
    in it), never the listing: whatever the directory's size, what it keeps between two
    READDIRs is a descriptor, and a READDIR builds at most one batch.
    """

    def __init__(self, fd: int, budget: threading.BoundedSemaphore | None = None) -> None:
        super().__init__()
        # scandir reads through a duplicate of `fd` but stats its entries relative to `fd`
        # itself, so `fd` stays open as long as the iterator.
        self._fd = fd
        self._scan: Iterator[os.DirEntry[str]] | None = os.scandir(fd)
        #: the endpoint's descriptor budget, given back on close
        self._budget = budget

    def read_batch(self, limit: int) -> list[SFTPAttributes] | int:
        """The next entries (at most `limit`; none at the end), or an SFTP status code."""
        if self._scan is None:
            return []
        batch: list[SFTPAttributes] = []
        try:
            for entry in self._scan:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # removed meanwhile
                batch.append(_attributes(st, entry.name))
                if len(batch) >= limit:
                    break
        except OSError as exc:
            return batch or sftp_code(exc)
        return batch

    def close(self) -> None:
        scan, self._scan = self._scan, None
        if scan is not None:
            try:
                scan.close()  # type: ignore[attr-defined]
                os.close(self._fd)
            finally:
                if self._budget is not None:
                    self._budget.release()


class ConfinedSFTP(SFTPServerInterface):
    """paramiko's SFTP server interface over one user's storage root.

    The SSH server object that accepted the login carries the root as `storage_root`
    (set once the certificate checked out); paramiko builds one of these per SFTP channel.
    """

    def __init__(self, server: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(server, *args, **kwargs)
        root = getattr(server, "storage_root", None)
        if root is None:  # pragma: no cover - the gate opens no channel before login
            raise RuntimeError("SFTP channel without an authenticated storage root")
        self.fs = StorageRoot(root)
        self._who = str(getattr(server, "username", "?"))
        endpoint = getattr(server, "endpoint", None)
        #: open files hold descriptors of the whole center: the endpoint caps them
        self._budget: threading.BoundedSemaphore | None = getattr(endpoint, "file_budget", None)

    def _run(self, what: str, path: str, action: Callable[[], T]) -> T | int:
        try:
            return action()
        except Outside:
            logger.info(
                "sftp: %s refused for %s: %r leads outside the storage root",
                what,
                self._who,
                path[:200],
            )
            return SFTP_PERMISSION_DENIED
        except OSError as exc:
            return sftp_code(exc)

    # -- reading -----------------------------------------------------------------------------
    def stat(self, path: str) -> SFTPAttributes | int:
        def action() -> SFTPAttributes:
            real = self.fs.follow(path)
            with self.fs.located(real) as (dir_fd, name):
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat_mod.S_ISLNK(st.st_mode):  # swapped for a link since the check
                raise Outside("leads outside your storage (it was moved)")
            return _attributes(st, posixpath.basename(real))

        return self._run("stat", path, action)

    def lstat(self, path: str) -> SFTPAttributes | int:
        def action() -> SFTPAttributes:
            head, name = self.fs.parent(path)
            with self.fs.directory(head) as dir_fd:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            return _attributes(st, name)

        return self._run("lstat", path, action)

    def list_folder(self, path: str) -> list[SFTPAttributes] | int:
        """The whole listing (paramiko's interface; the endpoint streams it with
        `open_folder` instead)."""
        folder = self.open_folder(path)
        if not isinstance(folder, ConfinedDirHandle):
            return folder
        try:
            entries: list[SFTPAttributes] = []
            while batch := folder.read_batch(1024):
                if isinstance(batch, int):
                    return batch
                entries += batch
            return entries
        finally:
            folder.close()

    def open_folder(self, path: str) -> ConfinedDirHandle | int:
        """An open directory to list a batch at a time (SFTP OPENDIR)."""

        def action() -> ConfinedDirHandle:
            real = self.fs.follow(path)
            with self.fs.located(real) as (dir_fd, name):
                fd = os.open(
                    name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd
                )
            try:
                self.fs.check_fd(fd)
                return ConfinedDirHandle(fd, self._budget)
            except BaseException:
                os.close(fd)
                raise

        if self._budget is not None and not self._budget.acquire(blocking=False):
            logger.warning("sftp: opendir refused for %s: too many open files", self._who)
            return SFTP_FAILURE
        handle = self._run("list", path, action)
        if self._budget is not None and not isinstance(handle, ConfinedDirHandle):
            self._budget.release()
        return handle

    def readlink(self, path: str) -> str | int:
        def action() -> str:
            head, name = self.fs.parent(path)
            with self.fs.directory(head) as dir_fd:
                target = os.readlink(name, dir_fd=dir_fd)
            if target.startswith("/"):
                norm = normalise(target)
                if is_inside(norm, self.fs.real):
                    return self.fs.shown_path(norm)
            return target

        return self._run("readlink", path, action)

    def canonicalize(self, path: str) -> str:
        return self.fs.canonical(path)

    # -- opening -----------------------------------------------------------------------------
    def open(self, path: str, flags: int, attr: SFTPAttributes) -> ConfinedHandle | int:
        def action() -> ConfinedHandle:
            fd, _ = self.fs.open_file(path, flags, _create_mode(attr, 0o666))
            return ConfinedHandle(fd, flags, self._budget)

        if self._budget is not None and not self._budget.acquire(blocking=False):
            logger.warning("sftp: open refused for %s: too many open files", self._who)
            return SFTP_FAILURE
        handle = self._run("open", path, action)
        if self._budget is not None and not isinstance(handle, ConfinedHandle):
            self._budget.release()
        return handle

    # -- changing ----------------------------------------------------------------------------
    def remove(self, path: str) -> int:
        def action() -> int:
            head, name = self.fs.parent(path)
            with self.fs.directory(head) as dir_fd:
                if stat_mod.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                    raise IsADirectoryError(errno.EISDIR, "is a directory")
                os.unlink(name, dir_fd=dir_fd)
            return SFTP_OK

        return self._run("remove", path, action)

    def mkdir(self, path: str, attr: SFTPAttributes) -> int:
        def action() -> int:
            mode = _create_mode(attr, 0o777)
            head, name = self.fs.parent(path)
            with self.fs.directory(head) as dir_fd:
                os.mkdir(name, mode, dir_fd=dir_fd)
            return SFTP_OK

        return self._run("mkdir", path, action)

    def rmdir(self, path: str) -> int:
        def action() -> int:
            head, name = self.fs.parent(path)
            if name == ".":
                raise PermissionError(errno.EPERM, "the storage root cannot be removed")
            with self.fs.directory(head) as dir_fd:
                os.rmdir(name, dir_fd=dir_fd)
            return SFTP_OK

        return self._run("rmdir", path, action)

    def _rename(self, oldpath: str, newpath: str, *, replace: bool) -> int:
        def action() -> int:
            old_head, old_name = self.fs.parent(oldpath)
            new_head, new_name = self.fs.parent(newpath)
            if "." in (old_name, new_name):
                raise PermissionError(errno.EPERM, "the storage root cannot be renamed")
            with self.fs.directory(old_head) as old_fd, self.fs.directory(new_head) as new_fd:
                if not replace:
                    # SFTP v3 rename never overwrites (OpenSSH's sftp-server neither).
                    try:
                        os.stat(new_name, dir_fd=new_fd, follow_symlinks=False)
                    except FileNotFoundError:
                        pass
                    else:
                        raise FileExistsError(errno.EEXIST, "destination exists")
                os.rename(old_name, new_name, src_dir_fd=old_fd, dst_dir_fd=new_fd)
            return SFTP_OK

        return self._run("rename", oldpath, action)

    def rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, replace=False)

    def posix_rename(self, oldpath: str, newpath: str) -> int:
        return self._rename(oldpath, newpath, replace=True)

    def hardlink(self, oldpath: str, newpath: str) -> int:
        """A new name `newpath` for the file `oldpath` (hardlink@openssh.com; a link at
        `oldpath` is linked itself, not followed, like link(2) and sftp-server)."""

        def action() -> int:
            old_head, old_name = self.fs.parent(oldpath)
            new_head, new_name = self.fs.parent(newpath)
            if "." in (old_name, new_name):
                raise PermissionError(errno.EPERM, "the storage root cannot be linked")
            with self.fs.directory(old_head) as old_fd, self.fs.directory(new_head) as new_fd:
                os.link(
                    old_name,
                    new_name,
                    src_dir_fd=old_fd,
                    dst_dir_fd=new_fd,
                    follow_symlinks=False,
                )
            return SFTP_OK

        return self._run("hardlink", oldpath, action)

    def chattr(self, path: str, attr: SFTPAttributes) -> int:
        def action() -> int:
            real = self.fs.follow(path)
            with self.fs.handle_on(real) as fd:
                proc = f"/proc/self/fd/{fd}"
                # An O_PATH descriptor takes no fchmod/futimens: act through its /proc link,
                # which names exactly the opened inode.
                _apply(proc if _PATH and os.path.exists(proc) else real, attr)
            return SFTP_OK

        return self._run("setstat", path, action)

    def symlink(self, target_path: str, path: str) -> int:
        def action() -> int:
            head, name = self.fs.parent(path)
            if name == ".":
                raise FileExistsError(errno.EEXIST, "exists")
            # Where the link would lead, judged lexically from the link's directory: it must
            # stay in the root (following it is checked again at every use anyway).
            lexical_dir = posixpath.dirname(self.fs.lexical(path))
            if target_path.startswith("/"):
                self.fs.lexical(target_path)
            else:
                self.fs.lexical(normalise(posixpath.join(lexical_dir, target_path)))
            with self.fs.directory(head) as dir_fd:
                os.symlink(target_path, name, dir_fd=dir_fd)
            return SFTP_OK

        return self._run("symlink", path, action)
