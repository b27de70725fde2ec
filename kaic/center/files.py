"""Server-side checksums of users' files, read with the user's own rights.

A path is judged by the storage root's one rule (`kaic.center.storage`): the file is
opened through a checked directory descriptor, never by walking the path again.

Whose rights: a center running as its own account (one user, or every user on one
account) reads as itself, in its own process. A center that runs jobs as users (root,
`--run-as-user`) must not answer for a file its user cannot read — the sha256 of a
root-owned 0600 file would tell what it holds — so it hashes in a helper process running as
the user's unix account, the way its SFTP endpoint serves files (`kaic.center.runas`): the
kernel judges each open by the user's rights, ACLs included. One helper per request (one
path, or a whole batch): starting it costs about 85 ms (an interpreter, its imports, the
switch); measured on 1,000 files of 1 KiB, one helper took 210 ms against 114 ms in
process, and the four requests of 250 the batch route's limit makes of them 440 ms.

`python -m kaic.center.files --root … <account options>` is that helper: paths as JSON on
stdin, results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kaic.center.runas import (
    UnixAccount,
    add_account_arguments,
    become,
    helper_command,
    helper_environment,
)
from kaic.center.storage import NotARegularFile, Outside, StorageRoot

CHUNK = 1024 * 1024

Problem = Literal["not_found", "not_a_file"]


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str


@dataclass(frozen=True)
class Checksum:
    """The answer for one path: its digest and the path as the user sees it, or a problem
    (`not_found` also for a path outside the root, or one the user may not read: the same
    answer, so nothing is revealed about what exists where the user cannot look)."""

    digest: Digest | None = None
    shown: str | None = None
    problem: Problem | None = None


def resolve_in_root(root: Path, path: str) -> Path:
    """The real path of `path` inside `root`; Outside if it leads anywhere else."""
    return Path(StorageRoot(root).follow(path))


def sha256_in_root(root: Path, path: Path | str) -> Digest:
    """sha256 and size of the regular file `path` inside `root` (e.g. a `resolve_in_root`
    result). FileNotFoundError if it is gone, Outside if it leads out (or was swapped for a
    link that does), NotARegularFile if it is not a plain file."""
    return _sha256(StorageRoot(root), os.fspath(path))[0]


def _sha256(root: StorageRoot, path: str) -> tuple[Digest, str]:
    fd, real = root.open_file(path)
    try:
        digest = hashlib.sha256()
        size = 0
        while chunk := os.read(fd, CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return Digest(size=size, sha256=digest.hexdigest()), real
    finally:
        os.close(fd)


def checksum_here(root: Path | str, path: str) -> Checksum:
    """`path`'s checksum, read by this process."""
    storage = StorageRoot(root)
    try:
        digest, real = _sha256(storage, path)
    except NotARegularFile:
        return Checksum(problem="not_a_file")
    except (Outside, OSError):
        return Checksum(problem="not_found")
    shown = storage.shown_path(real)
    if not _is_utf8(shown):
        # Reached through a link to a name that is not UTF-8, which JSON cannot carry: the
        # path as asked for (valid UTF-8, or the request would not have parsed).
        shown = storage.shown_path(storage.lexical(path))
    return Checksum(digest=digest, shown=shown)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def checksums(root: Path, paths: list[str], account: UnixAccount | None) -> list[Checksum]:
    """The checksums of `paths` in `root`, in order: read by this process (`account` None),
    or by one helper process running as `account`."""
    if account is None:
        return [checksum_here(root, path) for path in paths]
    command = helper_command("kaic.center.files", account, f"--root={os.fspath(root)}")
    # ensure_ascii: a name that is not UTF-8 travels as the escaped surrogates that stand
    # for its bytes, and comes back the same.
    request = json.dumps(paths).encode("ascii")
    done = subprocess.run(
        command, input=request, capture_output=True, env=helper_environment(), cwd="/"
    )
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise OSError(f"the checksum helper for {account.name} failed: {why}")
    answers = json.loads(done.stdout)
    if not isinstance(answers, list) or len(answers) != len(paths):
        raise OSError(f"the checksum helper for {account.name} answered {len(done.stdout)} bytes")
    return [_parse(answer) for answer in answers]


def _encoded(result: Checksum) -> list[object]:
    if result.digest is None:
        return [result.problem]
    return ["ok", result.shown, result.digest.size, result.digest.sha256]


def _parse(answer: object) -> Checksum:
    if isinstance(answer, list) and answer[:1] in (["not_found"], ["not_a_file"]):
        return Checksum(problem=answer[0])
    if (
        isinstance(answer, list)
        and len(answer) == 4
        and answer[0] == "ok"
        and isinstance(answer[1], str)
        and isinstance(answer[2], int)
        and isinstance(answer[3], str)
    ):
        return Checksum(digest=Digest(size=answer[2], sha256=answer[3]), shown=answer[1])
    raise OSError(f"the checksum helper answered {str(answer)[:200]!r}")


def main(argv: list[str] | None = None) -> int:
    """The checksum helper: become the account, then answer the paths read from stdin."""
    parser = argparse.ArgumentParser(prog="python -m kaic.center.files")
    parser.add_argument("--root", required=True)
    add_account_arguments(parser)
    args = parser.parse_args(argv)
    become(args)
    paths = json.loads(sys.stdin.buffer.read())
    answers = [_encoded(checksum_here(args.root, str(path))) for path in paths]
    sys.stdout.write(json.dumps(answers))
    return 0


class HashingSlots:
    """How many checksum requests hash at once: at most `per_user` of one user and `total` in
    all. Hashing holds one of the server's worker threads (and, as a user, a helper process)
    for as long as it reads, so one user's requests for many large files could hold every
    thread and stall the API for everyone. A request over either limit is not queued: the
    caller is told to come back (429, which clients retry after `Retry-After`)."""

    def __init__(self, *, per_user: int = 4, total: int = 16) -> None:
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, user: str) -> Iterator[bool]:
        """Yields whether `user` got a slot (released at the end of the block)."""
        with self._lock:
            mine = self._busy.get(user, 0)
            granted = mine < self.per_user and sum(self._busy.values()) < self.total
            if granted:
                self._busy[user] = mine + 1
        try:
            yield granted
        finally:
            if granted:
                with self._lock:
                    self._busy[user] -= 1
                    if not self._busy[user]:
                        del self._busy[user]


if __name__ == "__main__":
    sys.exit(main())
