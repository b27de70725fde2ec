"""Remote storage over SFTP: the planner's remote `Side` and remote sha256 (`ls` and `rm`
are in `remote_tree.py`).

Remote paths are POSIX paths on center storage; relative paths (and `~/…`) are from the
user's home there, which is where both SFTP and exec commands start.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import re
import shlex
import stat as stat_mod
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import paramiko

from kaic.errors import KaicError, Unreachable
from kaic.staging.ahead import Opening
from kaic.staging.connect import SftpConnection
from kaic.staging.host_hash import FAST_HASH, RANGE_SHA256
from kaic.staging.ignore import IgnoreRules
from kaic.staging.names import is_text, name_bytes, name_text
from kaic.staging.plan import Entry, Tree, Warn, is_part
from kaic.staging.sftp_client import warn_refused

#: one file's sha256 hex from the center (`GET /v1/files/checksum`), None if it has none
ChecksumFn = Callable[[str], str | None]
#: many files' at once (`POST /v1/files/checksums`, `kaic.client.staging.FileChecksumsClient`)
ChecksumsFn = Callable[[Sequence[str]], dict[str, str | None]]

#: directories a scan lists at once (one level of a tree at a time)
SCAN_AT_ONCE = 64
#: names one hashing exec takes, at most, and the most bytes of them (a command line)
_EXEC_BATCH = 512
_EXEC_BYTES = 64 << 10

_HEX = re.compile(r"[0-9a-f]{64}")


def _plain_name(name: str) -> bool:
    return not any(c in name for c in "\\\n\r")


def normalize_remote(path: str) -> str:
    """`~` and `~/x` -> home-relative; empty -> home (`.`)."""
    if path in ("", "~", "~/"):
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def _dir_key(name: str) -> str:
    """A remote directory's name without the trailing slash a user may have typed."""
    return name.rstrip("/") or name


def _is_missing(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT


class RemotePermissionError(PermissionError):
    """The staging host refused an operation on `filename`, a remote path (paramiko's
    errors do not say which path; this one does, and says it is the host's refusal)."""


def remote_denied(path: str) -> RemotePermissionError:
    return RemotePermissionError(errno.EACCES, "permission denied on the staging host", path)


def parse_sha256sum(output: bytes) -> dict[str, str]:
    """`sha256sum` (or `openssl dgst -sha256 -r`) output -> {name: hex}; understands
    sha256sum's `\\`-escaped names."""
    sums: dict[str, str] = {}
    for raw in name_text(output).split("\n"):
        if not raw:
            continue
        escaped = raw.startswith("\\")
        line = raw[1:] if escaped else raw
        digest, name = line[:64], line[66:]
        if escaped:
            name = name.replace("\\n", "\n").replace("\\r", "\r").replace("\\\\", "\\")
        sums[name] = digest
    return sums


def one_by_one(checksum_fn: ChecksumFn) -> ChecksumsFn:
    """A `ChecksumsFn` asking a one-path `checksum_fn` path by path (None where it fails)."""

    def many(paths: Sequence[str]) -> dict[str, str | None]:
        sums: dict[str, str | None] = {}
        for path in paths:
            try:
                sums[path] = checksum_fn(path)
            except KaicError:
                sums[path] = None
        return sums

    return many


def _command_batches(paths: list[str]) -> Iterator[list[str]]:
    """`paths` in runs of at most `_EXEC_BATCH` names and `_EXEC_BYTES` bytes of them as
    the command line has them (quoted, in UTF-8: the shell takes one argument of at most
    128 KiB)."""
    batch: list[str] = []
    size = 0
    for path in paths:
        length = len(name_bytes(shlex.quote(normalize_remote(path)))) + 1
        if batch and (len(batch) >= _EXEC_BATCH or size + length > _EXEC_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(path)
        size += length
    if batch:
        yield batch


class RemoteSide:
    """Remote storage as a planning `Side`, plus the remote hashing the transfers need."""

    def __init__(
        self,
        conn: SftpConnection,
        sftp: paramiko.SFTPClient | None = None,
        *,
        checksum_fn: ChecksumFn | None = None,
        checksums_fn: ChecksumsFn | None = None,
    ):
        self.conn = conn
        self.sftp = sftp or conn.sftp
        if checksums_fn is None and checksum_fn is not None:
            checksums_fn = one_by_one(checksum_fn)
        #: the center's checksums (many paths per call), when the caller supplies them
        self.checksums_fn = checksums_fn
        #: can we run `sha256sum` on the host? None until first tried
        self.exec_ok: bool | None = None
        #: a session channel opened ahead for the next exec (`exec_ahead`)
        self._session: Opening[paramiko.Channel] | None = None
        #: planning: `stat` glances at a directory (`look_ahead`), and at this file in it
        self.look_ahead = False
        self.look_for: str | None = None
        #: what glancing learned: directories opened for `scan`; files that cannot be read
        self._opened_dirs: dict[str, bytes] = {}
        self._unreadable: set[str] = set()

    # -- Side ------------------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return posixpath.join(*parts)

    def stat(self, path: str) -> Entry | None:
        try:
            st = self._glance(path) if self.look_ahead else self.sftp.stat(normalize_remote(path))
        except OSError as exc:
            if _is_missing(exc):
                return None
            if isinstance(exc, PermissionError):
                raise remote_denied(path) from exc
            raise
        mode = st.st_mode or 0
        return Entry(stat_mod.S_ISDIR(mode), st.st_size or 0, int(st.st_mtime or 0), mode & 0o7777)

    def _glance(self, path: str) -> paramiko.SFTPAttributes:
        """STAT `path` and, in the same round trip, open it as a directory (for `scan`)
        and try to open `look_for` in it (for `read_text`): `SftpClient.glance`."""
        glance = getattr(self.sftp, "glance", None)  # (kaic's SftpClient)
        name = normalize_remote(path)
        if glance is None:
            return self.sftp.stat(name)
        inner = posixpath.join(name, self.look_for) if self.look_for else None
        seen = glance(name, inner)
        if seen.dir_handle is not None:
            self._keep_dir(name, seen.dir_handle)
        if inner is not None and seen.inner_readable is False:
            self._unreadable.add(inner)
        if isinstance(seen.attrs, OSError):
            raise seen.attrs
        return seen.attrs

    def _keep_dir(self, name: str, handle: bytes) -> None:
        old = self._opened_dirs.pop(_dir_key(name), None)
        if old is not None:
            self.sftp.close_handle(old)  # type: ignore[attr-defined]
        self._opened_dirs[_dir_key(name)] = handle

    def forget_glances(self) -> None:
        """Close the directories glanced at that no scan listed; forget what was seen."""
        for handle in self._opened_dirs.values():
            with contextlib.suppress(Exception):
                self.sftp.close_handle(handle)  # type: ignore[attr-defined]
        self._opened_dirs.clear()
        self._unreadable.clear()

    def read_text(self, path: str) -> str | None:
        if normalize_remote(path) in self._unreadable:  # (glanced at: it cannot be opened)
            return None
        try:
            with self.sftp.open(normalize_remote(path), "r") as f:
                return bytes(f.read()).decode("utf-8", errors="replace")
        except OSError:
            return None

    def scan(self, root: str, rules: IgnoreRules, warn: Warn) -> Tree:
        """The tree under `root`, listed level by level: the directories of a level at
        once (`SftpClient.listdir_many`, `SCAN_AT_ONCE` at a time), not one after another
        (each listing is two round trips or more)."""
        tree = Tree()
        base = normalize_remote(root)
        level = [""]
        while level:
            below: list[str] = []
            for start in range(0, len(level), SCAN_AT_ONCE):
                group = level[start : start + SCAN_AT_ONCE]
                dirs = [posixpath.join(base, rel) if rel else base for rel in group]
                for rel_dir, abs_dir, listing in zip(group, dirs, self._list(dirs), strict=True):
                    if isinstance(listing, OSError):
                        warn(f"cannot read remote {abs_dir}: {listing}")
                        continue
                    below += self._entries(tree, base, rel_dir, abs_dir, listing, rules, warn)
                warn_refused(self.sftp, warn)
            level = below
        return tree

    def _list(self, dirs: list[str]) -> list[list[paramiko.SFTPAttributes] | OSError]:
        many = getattr(self.sftp, "listdir_many", None)  # (kaic's SftpClient)
        if many is not None:
            opened = {
                d: self._opened_dirs.pop(_dir_key(d))
                for d in dirs
                if _dir_key(d) in self._opened_dirs
            }
            return many(dirs, opened)
        listings: list[list[paramiko.SFTPAttributes] | OSError] = []
        for path in dirs:
            try:
                listings.append(self.sftp.listdir_attr(path))
            except OSError as exc:
                listings.append(exc)
        return listings

    def _entries(
        self,
        tree: Tree,
        base: str,
        rel_dir: str,
        abs_dir: str,
        listing: list[paramiko.SFTPAttributes],
        rules: IgnoreRules,
        warn: Warn,
    ) -> list[str]:
        """Add one directory's entries to `tree`; the subdirectories to list next."""
        below: list[str] = []
        for item in listing:
            rel = f"{rel_dir}/{item.filename}" if rel_dir else item.filename
            mode = item.st_mode or 0
            if is_part(item.filename) and stat_mod.S_ISREG(mode):
                tree.parts[rel] = item.st_size or 0
                continue
            link = stat_mod.S_ISLNK(mode)
            if link:
                try:
                    item = self.sftp.stat(posixpath.join(abs_dir, item.filename))
                except OSError:
                    warn(
                        f"skipping dangling remote symlink {posixpath.join(abs_dir, item.filename)}"
                    )
                    continue
                mode = item.st_mode or 0
            is_dir = stat_mod.S_ISDIR(mode)
            if rules.ignored(rel, is_dir):
                continue
            if is_dir:
                if link:
                    warn(f"skipping remote symlink to a directory {posixpath.join(base, rel)}")
                    continue
                tree.dirs.add(rel)
                below.append(rel)
            elif stat_mod.S_ISREG(mode):
                tree.files[rel] = Entry(
                    False, item.st_size or 0, int(item.st_mtime or 0), mode & 0o7777
                )
        return below

    def sha256_many(self, paths: list[str]) -> dict[str, str]:
        return {p: h for p, h in self.remote_sha256(paths).items() if h is not None}

    # -- hashing ---------------------------------------------------------------------
    def exec_ahead(self) -> None:
        """Start opening the channel of the next exec now (a round trip the exec then
        does not wait for): a batch does this while it sends, before hashing."""
        if self.exec_ok is not False and self._session is None and self.conn is not None:
            self._session = Opening(partial(self.conn.transport.open_session, timeout=30.0))

    def _exec(self, command: str) -> tuple[int, bytes] | None:
        """Run a command if the host allows exec; None when it does not."""
        if self.exec_ok is False:
            return None
        session, self._session = self._session, None
        channel = session.wait() if session is not None else None
        status, out, _err = self.conn.exec(command, channel=channel)
        if status == -1:  # channel refused: by policy (stop asking), or MaxSessions (retry)
            if self.exec_ok is None:
                self.exec_ok = False  # never worked on this host: do not pay a round trip again
            return None
        if status in (126, 127):  # no such command there: stop asking
            self.exec_ok = False
            return None
        self.exec_ok = True
        return status, out

    def exec_sha256(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 of remote files by OpenSSL or `sha256sum` over SSH exec (None where that
        failed)."""
        result: dict[str, str | None] = dict.fromkeys(paths)
        for batch in _command_batches(paths):
            names = [normalize_remote(p) for p in batch]
            quoted = " ".join(shlex.quote(n) for n in names)
            if all(_plain_name(n) for n in names):
                ran = self._exec(f"{FAST_HASH}$H -- {quoted}")
            else:
                ran = self._exec(f"sha256sum -- {quoted}")
            if ran is None:
                break
            sums = parse_sha256sum(ran[1])
            for path, name in zip(batch, names, strict=False):
                result[path] = sums.get(name)
        return result

    def exec_range_sha256(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[str | None]:
        """sha256 of byte ranges `[start, end)` of one remote file, by one exec on the host
        (`RANGE_SHA256`: python3 reading the file, else `tail -c +K | head -c N` into
        OpenSSL or `sha256sum` per range); None for each range where that failed or the
        host runs no commands."""
        if not ranges:
            return []
        name = shlex.quote(normalize_remote(path))
        parts = " ".join(f"{start + 1}:{end - start}" for start, end in ranges)
        ran = self._exec(f"F={name}; R='{parts}'; {RANGE_SHA256}")
        if ran is None or ran[0] != 0:
            return [None] * len(ranges)
        lines = [line[:64] for line in ran[1].decode(errors="replace").splitlines()]
        if len(lines) != len(ranges) or not all(_HEX.fullmatch(d) for d in lines):
            return [None] * len(ranges)
        return list(lines)

    def range_sha256(self, path: str, ranges: Sequence[tuple[int, int]]) -> list[str | None]:
        """sha256 of byte ranges of a remote file: by exec on the host, else read back."""
        sums = self.exec_range_sha256(path, ranges)
        return [
            digest if digest is not None else self.read_back_sha256(path, end - start, start)
            for digest, (start, end) in zip(sums, ranges, strict=True)
        ]

    def remote_sha256(self, paths: list[str]) -> dict[str, str | None]:
        """sha256 of remote files: `sha256sum` over exec, else the center's checksums (one
        call for the batch), else read back."""
        result = self.exec_sha256(paths)
        missing = [p for p in paths if result.get(p) is None]
        if missing and self.checksums_fn is not None:
            result.update(self._center_sha256(missing))
        for path in paths:
            if result.get(path) is None:
                result[path] = self.read_back_sha256(path)
        return result

    def _center_sha256(self, paths: list[str]) -> dict[str, str | None]:
        assert self.checksums_fn is not None
        # The API speaks JSON, which carries no undecodable bytes: those are read back.
        paths = [p for p in paths if is_text(p)]
        if not paths:
            return {}
        try:
            sums = self.checksums_fn([normalize_remote(p) for p in paths])
        except KaicError as exc:
            if not self.conn.is_active():  # the center went away with its endpoint: resume
                raise Unreachable(f"connection to {self.conn.target.address} lost") from exc
            return {}  # the API failed, the host is there: read the files back
        return {p: sums.get(normalize_remote(p)) for p in paths}

    def read_back_sha256(self, path: str, limit: int | None = None, offset: int = 0) -> str | None:
        """sha256 of a remote file (or its `limit` bytes from `offset`) by reading it over
        SFTP; None if it cannot be read (a lost connection raises, so the sync resumes)."""
        digest = hashlib.sha256()
        try:
            with self.sftp.open(normalize_remote(path), "r") as f:
                size = max(0, (f.stat().st_size or 0) - offset)
                want = size if limit is None else min(limit, size)
                if offset:
                    f.seek(offset)
                f.prefetch(offset + want)  # prefetch takes where to stop
                remaining = want
                while remaining > 0:
                    block = f.read(min(1 << 20, remaining))
                    if not block:
                        break
                    digest.update(block)
                    remaining -= len(block)
                if remaining:
                    return None
        except OSError as exc:
            if not self.conn.is_active():
                raise Unreachable(f"connection to {self.conn.target.address} lost") from exc
            return None
        return digest.hexdigest()

    def prefix_sha256(self, path: str, length: int) -> str | None:
        """sha256 of the first `length` bytes of a remote file (by exec, else read back)."""
        return self.exec_range_sha256(path, [(0, length)])[0] or self.read_back_sha256(path, length)
