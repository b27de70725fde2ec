"""What a sync is asked to do (`SyncOptions`), what it reports (`SyncResult`), and the
callables it is given. Shared by the engine, its workers and both destinations; the public
entry points are in `kaic.staging.transfer`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from kaic.errors import ExitCode, KaicError
from kaic.staging.plan import SyncPlan, Warn

if TYPE_CHECKING:
    from kaic.staging.connect import SftpConnection
    from kaic.staging.remote_fs import ChecksumFn, ChecksumsFn

#: which way the files go: local -> staging host, or staging host -> local
Direction = Literal["push", "pull"]
#: (bytes, files) done since the last call — for progress bars
ProgressFn = Callable[[int, int], None]
#: what the sync is doing when it is not moving bytes ("reconnecting…"); None: transferring
StatusFn = Callable[[str | None], None]
Connect = Callable[[], "SftpConnection"]

# OpenSSH allows 10 sessions per connection (MaxSessions): each worker holds an SFTP
# channel and up to two exec channels at once, plus the connection's main SFTP channel.
CHANNELS_PER_CONNECTION = 3
#: seconds of reconnecting (without progress) before a sync gives up on a lost connection
RECONNECT_BUDGET_S = 60.0
#: rounds a failed file gets (the first try included) before it is reported
FILE_ATTEMPTS = 4
RESUME_HINT = "run the same command again to resume"


class SyncHooks(TypedDict, total=False):
    """What a sync calls back, all optional: `progress`, `on_plan` and `on_status` (for a
    progress bar), `warn`, the center's checksums (`checksums_fn`, many paths per call, or
    `checksum_fn`, one: used where the host runs no `sha256sum`), and `sleep` / `clock`
    (tests pass their own)."""

    progress: ProgressFn | None
    on_plan: Callable[[SyncPlan], None] | None
    on_status: StatusFn | None
    warn: Warn
    checksum_fn: ChecksumFn | None
    checksums_fn: ChecksumsFn | None
    sleep: Callable[[float], None]
    clock: Callable[[], float]


class TransferFailed(KaicError):
    """Some files could not be transferred or verified."""

    exit_code = ExitCode.ERROR


@dataclass
class SyncOptions:
    parallel: int = 2
    excludes: list[str] = field(default_factory=list)
    delete: bool = False
    dry_run: bool = False
    checksum: bool = False
    verify: bool = True
    #: keep reconnecting through an outage for this many seconds without progress ...
    reconnect_budget: float = RECONNECT_BUDGET_S
    #: ... and at most this many times in a row without progress (a connection that drops
    #: again and again)
    retries: int = 30
    #: rounds for a file that failed for a reason that may pass, before it is reported
    file_attempts: int = FILE_ATTEMPTS
    #: SFTP channels (worker threads) per connection
    channels: int = CHANNELS_PER_CONNECTION
    #: pipeline the SFTP requests of batches of small files (`pipeline.SftpPipe`)
    pipeline: bool = True
    #: stream each large file over all workers' channels at once (`stripes`; needs the pipe)
    stripe: bool = True
    #: what one stream takes of a striped file at a time
    chunk: int = 1 << 20
    #: the unit a striped file is verified and resumed by
    segment: int = 64 << 20
    #: the receive window of each pipe channel: how much a pull may have on its way per
    #: channel (paramiko's default is 2 MiB: ~70 MB/s per channel at 30 ms RTT)
    window: int | None = 8 << 20


@dataclass
class SyncResult:
    files_transferred: int = 0
    files_skipped: int = 0
    files_deleted: int = 0
    bytes_transferred: int = 0
    seconds: float = 0.0
    verified: bool = False
    dry_run: bool = False
    plan: SyncPlan | None = None
    #: files that failed (path: reason); non-empty means exit code 1
    failures: dict[str, str] = field(default_factory=dict)
    #: those of `failures` the staging host refused (permission): path -> the remote path
    refused: dict[str, str] = field(default_factory=dict)
    reconnects: int = 0

    def summary(self) -> dict[str, Any]:
        """CLI.md's `--json` document."""
        return {
            "files_transferred": self.files_transferred,
            "files_skipped": self.files_skipped,
            "files_deleted": self.files_deleted,
            "bytes_transferred": self.bytes_transferred,
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
        }
