"""The side a sync writes to: what differs between a push and a pull, in one object.

`upload.RemoteDestination` writes to the staging host (a push), `download.LocalDestination`
to this machine (a pull). The engine and its workers ask the destination everything that
depends on the direction — which side is the source when planning, how directories are made
and files deleted, how one batch travels, which paths a refusal names — and never ask
which way the sync goes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from kaic.staging.connect import SftpConnection
from kaic.staging.options import SyncOptions
from kaic.staging.pipeline import SftpFailure
from kaic.staging.plan import FileTask, LocalSide, Side, Warn
from kaic.staging.remote_fs import RemoteSide
from kaic.staging.stripes import Stripes
from kaic.staging.workers import OpenWindow, Stats, WorkerPipe, connection_error


class Destination(ABC, Stripes):
    """Where files are written; holds the sync's shared state the workers record into."""

    #: what the user's account must be allowed to do with remote paths (a `Rejected` hint)
    remote_access: str

    def __init__(self, options: SyncOptions, stats: Stats, window: OpenWindow, warn: Warn):
        self.options = options
        self.stats = stats
        self.window = window
        self.warn = warn

    # -- planning and the destination's directories -------------------------------------
    @abstractmethod
    def sides(self, local: LocalSide, remote: RemoteSide) -> tuple[Side, Side]:
        """(source side, destination side) for the planner."""

    @abstractmethod
    def makedirs(self, remote: RemoteSide, paths: list[str]) -> None:
        """Create destination directories, listed parents first (each one's parent exists
        or is created too)."""

    @abstractmethod
    def remove(self, remote: RemoteSide, path: str) -> None:
        """Delete a destination file; FileNotFoundError when it is gone already."""

    @abstractmethod
    def rmdir(self, remote: RemoteSide, path: str) -> None:
        """Delete an empty destination directory."""

    # -- files ---------------------------------------------------------------------------
    def one_stream(self, conn: SftpConnection) -> bool:
        """Whether the sync's files go by one worker on one connection (`conn`, the first)
        rather than `options.channels` on each of `options.parallel`: no."""
        return False

    @abstractmethod
    def copy_batch(
        self, parts: dict[str, int], batch: list[FileTask], side: RemoteSide, pipes: WorkerPipe
    ) -> None:
        """Copy, verify and rename into place one batch over a worker's remote side and pipe
        (`parts`: the plan's part files on the destination, with their sizes)."""

    @abstractmethod
    def local_refusal(self, task: FileTask, filename: str | None) -> str | None:
        """The failure to record when this machine refused `filename` (a path of `task`
        here); None when `filename` is not one of the task's local paths."""

    @abstractmethod
    def remote_path(self, task: FileTask) -> str:
        """The path of `task` on the staging host."""

    def resumed(self, task: FileTask, point: int, verb: str) -> int:
        """Count the `point` bytes an interrupted transfer left that match the source as
        done; say so when none did (`verb`: "sending", "fetching")."""
        if point:
            self.stats.add_bytes(point, sent=False)
        else:
            self.warn(f"partial {task.dst} does not match the source; {verb} from 0")
        return point

    def file_error(self, task: FileTask, exc: OSError, side: RemoteSide) -> None:
        """One file failed (a lost connection is raised instead: the sync resumes)."""
        if connection_error(exc, [side.conn]):
            raise exc
        if isinstance(exc, PermissionError):
            local = self.local_refusal(task, exc.filename)
            if local is not None:
                self.stats.fail(task, local)
            else:
                remote = self.remote_path(task)
                self.stats.fail(
                    task, f"permission denied on the staging host: {remote}", refused=remote
                )
            return
        if isinstance(exc, SftpFailure):
            reason = "the staging host answered 'failure' (it may be out of open files or space)"
        else:
            reason = str(exc)
        self.stats.fail(task, reason, retry=True)
