"""Resumable, verified, parallel transfers: `sync("push" | "pull", ...)`, and `push` / `pull`.

How a file travels:

1. Its data goes to a part file next to the destination (`plan.part_name`:
   `.NAME.CHECK.kaic-part`, always within NAME_MAX), never to NAME itself.
2. If that part file already exists (an earlier, interrupted run), the sha256 of its first N
   bytes is compared on both sides (remote: by an exec, `host_hash.RANGE_SHA256`, else
   read back over SFTP); if equal, the transfer resumes at N, else it restarts at 0.
3. The sha256 of the whole file is computed while sending and compared with the other side's
   (remote: `sha256sum` over SSH exec; else the center's checksums, one call per batch; else
   read back). A mismatch is re-sent once from 0; a second mismatch is reported, never
   accepted.
4. Mode and mtime are set on the part file, which is then renamed over NAME atomically
   (`posix-rename@openssh.com` / `os.replace`).

Work is spread over `parallel` SSH connections with several SFTP channels each (small files
are latency-bound: many requests in flight); small files travel in batches so one
`sha256sum` call verifies many. Within a batch, small files with nothing to resume go over
`pipeline.SftpPipe`: the OPENs of the whole batch are sent back to back, then all WRITEs +
FSETSTATs (mode, mtime) + CLOSEs, then — once verified — all renames, so a batch costs a
few round trips instead of ~5 per file (pull: OPEN, READ, CLOSE likewise).

When things go wrong:

- **A server short of file descriptors** answers some OPENs with SSH_FX_FAILURE (OpenSSH's
  sftp-server on EMFILE; the embedded endpoint over its 512-file budget). That is
  back-pressure: `workers.OpenWindow` halves how many files a batch opens at once (all workers
  share it), and the refused files are tried again.
- **Failed files are tried again** within the run: after each round the files that failed
  for a reason that may pass (not a refusal, not a second sha256 mismatch) go again after a
  growing pause, `file_attempts` rounds in all; only then are they reported.
- **A dropped connection** (or a center restart: the embedded endpoint goes with it) is
  ridden out: the engine reconnects with backoff (0.2 s doubling to 5 s) for up to
  `reconnect_budget` seconds without progress, plans again (finished files are skipped,
  part files resumed) and goes on; after that it gives up with `Unreachable` (exit 5).
  A host that never answered fails at once.
- **Permission denied** becomes `Rejected` naming the remote path (exit 6) when the staging
  host refused, a `KaicError` naming the local path when the local system did.
- **Ctrl-C** stops the workers, closes the connections (so no paramiko thread is left to
  print a traceback) and raises `Interrupted`: part files stay, the next run resumes them.

Where the parts are: `engine` (the outer loop: connect, plan, transfer, delete, reconnect),
`workers` (batches over connections and channels), `destination` with `upload` (a push
writes to the staging host) and `download` (a pull writes here), `options` (what a sync is
asked and reports).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kaic.staging.connect import SshTarget, open_sftp
from kaic.staging.engine import Engine
from kaic.staging.options import (
    Connect,
    Direction,
    ProgressFn,
    StatusFn,
    SyncHooks,
    SyncOptions,
    SyncResult,
    TransferFailed,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "Direction",
    "ProgressFn",
    "StatusFn",
    "SyncHooks",
    "SyncOptions",
    "SyncResult",
    "TransferFailed",
    "pull",
    "push",
    "sync",
]


def sync(
    direction: Direction,
    target: SshTarget | Connect,
    sources: list[str],
    dest: str,
    options: SyncOptions | None = None,
    **hooks: Unpack[SyncHooks],
) -> SyncResult:
    """Sync `sources` to `dest`: local to the staging host (`"push"`) or back (`"pull"`).

    `target` is where to connect (or a function that opens a connection); `hooks` what the
    sync calls back (`SyncHooks`: progress, warnings, the center's checksums, the clock).
    See the module doc for the rest.
    """
    connect = (
        (lambda: open_sftp(target, sftp_in_background=True))
        if isinstance(target, SshTarget)
        else target
    )
    return Engine(direction, connect, sources, dest, options or SyncOptions(), hooks).run()


def push(
    target: SshTarget | Connect,
    local_paths: list[str],
    remote_dest: str,
    options: SyncOptions | None = None,
    **hooks: Unpack[SyncHooks],
) -> SyncResult:
    """Sync local files/directories to `remote_dest` on the staging host (`sync("push")`)."""
    return sync("push", target, local_paths, remote_dest, options, **hooks)


def pull(
    target: SshTarget | Connect,
    remote_paths: list[str],
    local_dest: str,
    options: SyncOptions | None = None,
    **hooks: Unpack[SyncHooks],
) -> SyncResult:
    """Sync remote files/directories to `local_dest` (`sync("pull")`)."""
    return sync("pull", target, remote_paths, local_dest, options, **hooks)
