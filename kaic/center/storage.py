"""A user's storage root, and the one rule confining the paths users name to it.

Every entry point taking a path from a user goes through here: a job's workdir
(`kaic.center.jobs.paths.resolve_workdir`), the checksum API (`kaic.center.files`) and the
embedded SFTP endpoint (`kaic.center.sftp.fs`). The rule:

- A path is relative to the root (``""``, ``.``, ``~``, ``~/x``, ``x``) or absolute.
  Everything after ``~/`` is relative to the root, as in a shell (``~//x`` is ``~/x``).
  ``~user`` is refused: a user has one home here.
- A relative path may not climb above the root, even to come back: ``..`` is collapsed
  lexically, and ``../alice/x`` is refused in the root ``/storage/alice``. What a relative
  path names must not depend on the root's name or on where it is.
- An absolute path is normalised lexically (``.``, ``..``, ``//``) and must then lie in the
  root, named as it is advertised or with its links resolved.
- Symbolic links are followed — the root's own, and those inside it — and must lead to a
  place inside the root with every link resolved; one leading out opens nothing.
- NUL is refused. Names are bytes: a `str` here is the file system's decoding
  (`os.fsdecode`, surrogateescape), so a name that is not UTF-8 passes through unchanged.

Between the check and an operation a concurrent process (a job of the user) could swap a
directory for a link. So an operation never walks the checked path again: it opens the
checked parent directory (`O_NOFOLLOW`), confirms through `/proc/self/fd` where that
descriptor really is, and acts on the last component relative to it (`*at()` calls with
`dir_fd`), opening files with `O_NOFOLLOW`. A swap then makes the operation fail; it cannot
leave the root.

This module imports nothing of the center: the SFTP worker and the checksum helper, which
run as the user's unix account, load it without settings or database.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Iterator

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
#: O_PATH (Linux): a handle on a directory or file that needs no read permission
_PATH = getattr(os, "O_PATH", 0)


class Outside(ValueError):
    """The path leads outside the storage root, or is malformed; the message says how
    (it reads after the path: "… leads outside your storage")."""


class NotARegularFile(OSError):
    """The path is inside the root but names a directory, device, FIFO, socket…"""

    def __init__(self, name: str = "") -> None:
        super().__init__(errno.EISDIR, "not a regular file", name)


class LinkInTheWay(OSError):
    """A symbolic link (or something else that is not a directory) where a directory was to be
    opened without following links."""

    def __init__(self, name: str, what: str) -> None:
        super().__init__(errno.ELOOP, what, name)


def open_directory(dir_fd: int, name: str, *, create: int | None = None) -> tuple[int, bool]:
    """(descriptor, created) of the directory `name` in the directory `dir_fd`, never through
    a link; with `create` (a mode), made first when it is missing.

    A process acting for a user (root creating a job's workdir) walks down with this, one
    component at a time, so a link the user put on the way is refused (LinkInTheWay) rather
    than followed somewhere else. The caller closes the descriptor."""
    created = False
    if create is not None:
        try:
            os.mkdir(name, create, dir_fd=dir_fd)
            created = True
        except FileExistsError:
            pass
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        found = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        what = "is a symbolic link" if stat.S_ISLNK(found.st_mode) else "is not a directory"
        raise LinkInTheWay(name, what) from None
    return fd, created


def is_inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it (both normalised absolute paths)."""
    return path == root or path.startswith(root.rstrip("/") + "/")


def normalise(path: str) -> str:
    """An absolute path with `.`, `..` and `//` collapsed lexically."""
    # posixpath.normpath keeps a leading "//"; the host's namespace has one root.
    return "/" + posixpath.normpath(path).lstrip("/")


class StorageRoot:
    """One storage root: where a user's path leads, and descriptors confined to it."""

    def __init__(self, root: str | bytes | os.PathLike[str]) -> None:
        #: the root as shown to the user (the `home` path `GET /v1/staging` advertises)
        self.shown = normalise(os.fsdecode(root))
        #: the root with every link resolved (what the kernel reports for descriptors)
        self.real = os.path.realpath(self.shown)

    # -- the rule ----------------------------------------------------------------------------
    def relative(self, path: str | bytes) -> str:
        """`path` relative to the root, normalised (`""` for the root itself); Outside if it
        leaves the root lexically. Links are not looked at (see `follow`)."""
        path = os.fsdecode(path)
        if "\0" in path:
            raise Outside("contains a NUL character")
        if path in ("", ".", "~"):
            return ""
        if path.startswith("~/"):
            relative = path[2:].lstrip("/")
        elif path.startswith("~"):
            raise Outside("is a `~user` path, which is not supported; use `~/…`")
        elif path.startswith("/"):
            norm = normalise(path)
            for base in (self.shown, self.real):
                if is_inside(norm, base):
                    return norm[len(base) :].lstrip("/")
            raise Outside("is outside your storage; use a path under `~`")
        else:
            relative = path
        normal = posixpath.normpath(relative) if relative else "."
        if normal == ".." or normal.startswith("../"):
            raise Outside("leads outside your storage")
        return "" if normal == "." else normal

    def lexical(self, path: str | bytes) -> str:
        """`path` as an absolute path below the real root, `..` collapsed; Outside if above."""
        relative = self.relative(path)
        return posixpath.join(self.real, relative) if relative else self.real

    def follow(self, path: str | bytes) -> str:
        """The real path `path` leads to (links followed); Outside unless inside the root."""
        real = os.path.realpath(self.lexical(path))
        if not is_inside(real, self.real):
            raise Outside("leads outside your storage (through a link)")
        return real

    def parent(self, path: str | bytes) -> tuple[str, str]:
        """(real parent directory, last component) of `path`, the component not followed.

        The root itself is `(root, ".")`.
        """
        lexical = self.lexical(path)
        if lexical == self.real:
            return self.real, "."
        head, name = posixpath.split(lexical)
        real_head = os.path.realpath(head)
        if not is_inside(real_head, self.real):
            raise Outside("leads outside your storage (through a link)")
        return real_head, name

    def shown_path(self, real: str) -> str:
        """How the user sees the real path `real` (inside the root)."""
        if real == self.real:
            return self.shown
        return posixpath.join(self.shown, real[len(self.real) :].lstrip("/"))

    def canonical(self, path: str) -> str:
        """An absolute path as the user sees it for `path` (SFTP realpath).

        Links inside the root are resolved; a path outside the root, or through a link that
        leads outside, is only normalised (its operations are refused anyway, and where a
        link points outside is not revealed).
        """
        try:
            lexical = self.lexical(path)
        except Outside:
            if path.startswith("/"):
                return normalise(path)
            return normalise(posixpath.join(self.shown, path))
        real = os.path.realpath(lexical)
        return self.shown_path(real if is_inside(real, self.real) else lexical)

    # -- descriptors -------------------------------------------------------------------------
    def check_fd(self, fd: int) -> None:
        """Outside unless the open descriptor `fd` really is inside the root (Linux /proc)."""
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            if os.path.isdir("/proc/self/fd"):
                # /proc is there but says nothing of this descriptor: unconfirmed is refused.
                raise Outside("could not be confirmed inside your storage") from None
            return  # no /proc (macOS): the realpath check before opening is what we have
        if not is_inside(where, self.real):
            raise Outside("leads outside your storage (it was moved)")

    @contextlib.contextmanager
    def directory(self, real_dir: str) -> Iterator[int]:
        """A descriptor on the (already checked) real directory `real_dir`, confirmed inside."""
        fd = os.open(real_dir, (_PATH or os.O_RDONLY) | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
        try:
            self.check_fd(fd)
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def located(self, real: str) -> Iterator[tuple[int, str]]:
        """(directory descriptor, name) for the real path `real` inside the root."""
        if real == self.real:
            with self.directory(real) as fd:
                yield fd, "."
            return
        head, name = posixpath.split(real)
        with self.directory(head) as fd:
            yield fd, name

    @contextlib.contextmanager
    def handle_on(self, real: str) -> Iterator[int]:
        """A descriptor on the file or directory `real` itself (not a link), confirmed inside."""
        with self.located(real) as (dir_fd, name):
            flags = (_PATH or (os.O_RDONLY | _NONBLOCK)) | _NOFOLLOW | _CLOEXEC
            fd = os.open(name, flags, dir_fd=dir_fd)
        try:
            self.check_fd(fd)
            if stat.S_ISLNK(os.fstat(fd).st_mode):  # O_PATH|O_NOFOLLOW opens a link itself
                raise Outside("leads outside your storage (it was moved)")
            yield fd
        finally:
            os.close(fd)

    def open_file(
        self, path: str | bytes, flags: int = os.O_RDONLY, mode: int = 0o666
    ) -> tuple[int, str]:
        """(descriptor, real path) of the regular file `path` opened with `flags` (created
        with `mode` if `flags` say so), confirmed inside; NotARegularFile for anything else.

        The caller closes the descriptor.
        """
        real = self.follow(path)
        with self.located(real) as (dir_fd, name):
            # O_NONBLOCK: opening a FIFO someone left in the root must not hang us.
            fd = os.open(name, flags | _NOFOLLOW | _CLOEXEC | _NONBLOCK, mode, dir_fd=dir_fd)
        try:
            self.check_fd(fd)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotARegularFile(posixpath.basename(real))
            if _NONBLOCK:
                os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, real
