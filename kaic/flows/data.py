"""`kaic data push/pull/ls/rm`, and the sync run job staging shares with them.

A push or pull is one `kaic.staging` sync to or from the SSH target (`ssh_target`), with the
transfer's progress reported through the `Ui`; its failed files become one error to exit
with (`failures_error`): exit 6 when the staging host refused every one of them, else 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kaic.errors import Interrupted, KaicError, Rejected, UsageError
from kaic.flows.ssh_target import resolve_target
from kaic.flows.ui import Ui

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.staging.connect import SshTarget
    from kaic.staging.remote_fs import ChecksumsFn
    from kaic.staging.remote_tree import RemoteEntry
    from kaic.staging.transfer import SyncOptions, SyncResult

    #: where to log in, and the center's checksums (None without a center)
    Target = tuple[SshTarget, ChecksumsFn | None]


def describe_result(result: SyncResult) -> str:
    """One line: what a finished sync did."""
    from kaic.humanize import rate, size

    return (
        f"{result.files_transferred} transferred, {result.files_skipped} unchanged, "
        f"{result.files_deleted} deleted; {size(result.bytes_transferred)} in "
        f"{result.seconds:.1f} s ({rate(result.bytes_transferred, result.seconds)})"
        + ("; sha256 verified" if result.verified and result.files_transferred else "")
    )


def failures_error(
    result: SyncResult, warn: Callable[[str], None], what: str = ""
) -> KaicError | None:
    """Warn about each file that failed; the error to exit with, None when none failed:
    `Rejected` (exit 6) when the staging host refused every one of them, else exit 1."""
    if not result.failures:
        return None
    from kaic.staging.transfer import TransferFailed

    for path, reason in sorted(result.failures.items()):
        warn(f"{path}: {reason}")
    of = f" of {what}" if what else ""
    if result.refused and len(result.refused) == len(result.failures):
        refused = sorted(result.refused.values())
        named = refused[0] if len(refused) == 1 else f"{len(refused)} files (first {refused[0]})"
        return Rejected(
            f"permission denied on the staging host{of}: {named}",
            hint="choose a remote path your account may write to and read "
            "(relative paths start in your home there)",
        )
    return TransferFailed(
        f"{len(result.failures)} file(s){of} failed",
        hint="run the same command again; unchanged and finished files are skipped",
    )


#: what Ctrl-C during a transfer says (a rerun skips what is done and resumes part files)
RESUME_HINT = "run the same command again to resume (finished files are skipped)"


def run_sync(
    target: Target,
    push: bool,
    sources: list[str],
    dest: str,
    options: SyncOptions,
    ui: Ui,
    *,
    show_progress: bool,
) -> SyncResult:
    """One push or pull to/from `target` (from `resolve_target`), with its progress shown
    through `ui.progress` when `show_progress`."""
    from kaic.flows.ui import no_progress
    from kaic.staging import transfer

    ssh_target, checksums_fn = target
    run = transfer.push if push else transfer.pull
    try:
        with (ui.progress if show_progress else no_progress)() as shown:
            return run(
                ssh_target,
                sources,
                dest,
                options,
                progress=shown.progress,
                on_plan=shown.on_plan,
                on_status=shown.on_status,
                warn=ui.warn,
                checksums_fn=checksums_fn,
                sleep=ui.sleep,
            )
    except KeyboardInterrupt as exc:
        raise Interrupted("interrupted", hint=RESUME_HINT) from exc


def sync(
    session: Callable[[], Session],
    push: bool,
    paths: list[str],
    options: SyncOptions,
    ui: Ui,
    *,
    show_progress: bool,
) -> SyncResult:
    """`kaic data push LOCAL... REMOTE` / `pull REMOTE... LOCAL`."""
    if len(paths) < 2:
        what = "push LOCAL... REMOTE" if push else "pull REMOTE... LOCAL"
        raise UsageError(f"give at least one source and a destination ({what})")
    target = resolve_target(session)
    return run_sync(target, push, paths[:-1], paths[-1], options, ui, show_progress=show_progress)


def list_remote(session: Callable[[], Session], remote: str) -> list[RemoteEntry]:
    """`kaic data ls REMOTE`: the entries of a directory (or the one file) on center storage."""
    from kaic.staging.connect import open_sftp
    from kaic.staging.remote_tree import list_remote as list_entries

    target, _ = resolve_target(session)
    conn = open_sftp(target)
    try:
        return list_entries(conn.sftp, remote)
    finally:
        conn.close()


def remove_remote(session: Callable[[], Session], remotes: list[str], *, recursive: bool) -> int:
    """`kaic data rm REMOTE...`: how many entries were removed."""
    from kaic.staging.connect import open_sftp
    from kaic.staging.remote_tree import remove_remote as remove_entries

    target, _ = resolve_target(session)
    conn = open_sftp(target)
    try:
        return remove_entries(conn.sftp, remotes, recursive=recursive)
    finally:
        conn.close()
