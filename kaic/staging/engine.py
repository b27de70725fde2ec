"""The engine of a sync: connect, plan, transfer, delete — and ride out lost connections.

One entry point for both ways (`Engine.run`); what differs between a push and a pull is
asked of the `Destination` (`upload.RemoteDestination`, `download.LocalDestination`). The
workers that move the files are in `workers`; the module doc of `kaic.staging.transfer`
tells the whole story.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from functools import partial

from kaic.errors import Interrupted, KaicError, Rejected, Unreachable
from kaic.staging.ahead import PipesAhead
from kaic.staging.connect import SftpConnection
from kaic.staging.destination import Destination
from kaic.staging.download import LocalDestination
from kaic.staging.ignore import IGNORE_FILE
from kaic.staging.options import RESUME_HINT, Connect, Direction, SyncHooks, SyncOptions, SyncResult
from kaic.staging.plan import LocalSide, SyncPlan, plan_sync
from kaic.staging.remote_fs import RemotePermissionError, RemoteSide, one_by_one
from kaic.staging.upload import RemoteDestination
from kaic.staging.workers import (
    OpenWindow,
    Stats,
    connection_error,
    connections_for,
    open_files,
    run_workers,
)

RECONNECT_START_S = 0.2
RECONNECT_CAP_S = 5.0
RETRY_START_S = 0.5

#: the destination of each direction
DESTINATIONS: dict[Direction, type[Destination]] = {
    "push": RemoteDestination,
    "pull": LocalDestination,
}


class _Connector:
    """Opens extra connections in the background while the first one logs in and the sync
    is planned (a login takes a few round trips and ~0.1 s of CPU: overlapping it helps
    short syncs)."""

    def __init__(self, connect: Connect, n: int, ahead: PipesAhead):
        self._ahead = ahead
        self._results: list[SftpConnection | BaseException] = []
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._one, args=(connect,), name="kaic-connect", daemon=True)
            for _ in range(n)
        ]
        for thread in self._threads:
            thread.start()

    def _one(self, connect: Connect) -> None:
        try:
            opened = connect()
            self._ahead.start(opened)  # (while its main SFTP channel opens)
            try:
                opened.ready()  # a host that turns this one away: an error, the sync goes on
            except BaseException:
                opened.close()
                raise
            conn: SftpConnection | BaseException = opened
        except BaseException as exc:
            conn = exc
        with self._lock:
            self._results.append(conn)

    def take(self, n: int) -> tuple[list[SftpConnection], list[BaseException]]:
        """Up to `n` connections, and the errors of the logins that failed (a server that
        caps connections per user refuses some: the sync goes on with fewer)."""
        for thread in self._threads:
            thread.join()
        with self._lock:
            good = [c for c in self._results if isinstance(c, SftpConnection)][:n]
            errors = [e for e in self._results if isinstance(e, BaseException)]
            for conn in good:
                self._results.remove(conn)
        return good, errors

    def close(self) -> None:
        """Wait for the logins still running and close what nobody took."""
        for thread in self._threads:
            thread.join()
        with self._lock:
            for conn in self._results:
                if isinstance(conn, SftpConnection):
                    conn.close()
            self._results.clear()


@dataclass
class _Outage:
    """A stretch of lost connections with no progress in between."""

    since: float
    drops: int = 0
    delay: float = RECONNECT_START_S

    def next_delay(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, RECONNECT_CAP_S)
        return delay


class Engine:
    """One sync, either way (`direction`), from `sources` to `dest`."""

    def __init__(
        self,
        direction: Direction,
        connect: Connect,
        sources: list[str],
        dest: str,
        options: SyncOptions,
        hooks: SyncHooks,
    ):
        self.connect = connect
        self.sources = sources
        self.dest = dest
        self.options = options
        self.on_plan = hooks.get("on_plan")
        self.on_status = hooks.get("on_status") or (lambda _s: None)
        self.warn = hooks.get("warn") or (lambda _m: None)
        self.checksums_fn = hooks.get("checksums_fn")
        checksum_fn = hooks.get("checksum_fn")
        if self.checksums_fn is None and checksum_fn is not None:
            self.checksums_fn = one_by_one(checksum_fn)
        self.sleep = hooks.get("sleep") or time.sleep
        self.clock = hooks.get("clock") or time.monotonic
        self.stats = Stats(hooks.get("progress"))
        self.destination = DESTINATIONS[direction](
            options, self.stats, OpenWindow(open_files(options)), self.warn
        )
        self.local = LocalSide()

    # -- the outer loop: plan, transfer, reconnect -----------------------------------------
    def run(self) -> SyncResult:
        try:
            return self._run()
        except KeyboardInterrupt:
            # The connections are closed by now (finally blocks below); part files stay.
            raise Interrupted("interrupted", hint=RESUME_HINT) from None
        except PermissionError as exc:
            raise self._permission_error(exc) from None

    def _run(self) -> SyncResult:
        started = time.monotonic()
        result = SyncResult(verified=self.options.verify, dry_run=self.options.dry_run)
        first = True
        connected = False
        outage: _Outage | None = None
        while True:
            conns: list[SftpConnection] = []
            extra: _Connector | None = None
            # each connection's pipes open as soon as it is logged in (`ahead`)
            ahead = PipesAhead(self.options.channels, self.options.window, self.options.pipeline)
            mark = self.stats.mark()
            try:
                # The extra connections log in alongside the first one, not after it: a
                # login is several round trips (~0.3 s at 30 ms RTT) the sync would wait
                # for twice.
                if not self.options.dry_run and self.options.parallel > 1:
                    extra = _Connector(self.connect, self.options.parallel - 1, ahead)
                turned_away: list[BaseException] = []
                conns.append(self._first_connection(extra, ahead, turned_away))
                connected = True
                remote = RemoteSide(conns[0], checksums_fn=self.checksums_fn)
                plan = self._plan(remote)
                if outage is not None:
                    self.on_status(None)
                if first:
                    first = False
                    result.plan = plan
                    result.files_skipped = len(plan.skipped)
                    if self.on_plan is not None:
                        self.on_plan(plan)
                if self.options.dry_run:
                    result.files_deleted = len(plan.delete_files)
                    break
                self._prepare(plan, remote)
                if plan.transfers:
                    options = self.options
                    if self.destination.one_stream(conns[0]):  # (a pull from a near host)
                        options = dataclasses.replace(options, parallel=1, channels=1)
                    wanted = connections_for(plan.transfers, options)
                    if extra is not None and wanted > 1:
                        more, errors = extra.take(wanted - 1)
                        errors = turned_away + errors
                        conns += more
                        if errors and len(conns) < wanted:
                            self.warn(f"using {len(conns)} of {wanted} connections: {errors[0]}")
                    self._transfer_all(plan, conns, ahead, options)
                if self.stats.failures:
                    break
                result.files_deleted += self._delete(plan, remote)
                break
            except Exception as exc:
                if not connection_error(exc, conns):
                    raise
                if not connected:  # the host never answered: nothing to ride out
                    if isinstance(exc, KaicError):
                        raise
                    raise Unreachable(f"cannot reach the staging host: {exc}") from exc
                if outage is None or self.stats.mark() != mark:
                    outage = _Outage(self.clock())  # progress since the last loss: start over
                outage.drops += 1
                waited = self.clock() - outage.since
                if waited > self.options.reconnect_budget or outage.drops > self.options.retries:
                    raise Unreachable(
                        f"lost the connection to the staging host and could not resume "
                        f"within {self.options.reconnect_budget:.0f} s "
                        f"({outage.drops} attempts); last error: {exc}",
                        hint=f"{RESUME_HINT}: finished files are skipped, partial files resumed",
                    ) from exc
                result.reconnects += 1
                delay = outage.next_delay()
                if outage.drops == 1:
                    self.warn(
                        f"connection lost ({exc}); reconnecting… (for up to "
                        f"{self.options.reconnect_budget:.0f} s)"
                    )
                else:
                    self.warn(f"still no connection ({exc}); trying again in {delay:.1f} s")
                self.on_status("reconnecting…")
                self.sleep(delay)
            finally:
                if extra is not None:
                    extra.close()
                for conn in conns:
                    conn.close()
                ahead.close()
        result.files_transferred = self.stats.files
        result.bytes_transferred = self.stats.bytes
        result.failures = dict(self.stats.failures)
        result.refused = dict(self.stats.refused)
        result.seconds = time.monotonic() - started
        return result

    def _first_connection(
        self, extra: _Connector | None, ahead: PipesAhead, turned_away: list[BaseException]
    ) -> SftpConnection:
        """The connection the sync plans on: the first one, its pipes opening beside its
        main SFTP channel (`ahead`). An error there is the host's answer, not a lost
        connection — unless an extra connection logged in meanwhile: a host that caps
        connections per user lets in whichever login comes first, so the sync goes on with
        that one (the first's error goes to `turned_away`, for the warning)."""
        conn: SftpConnection | None = None
        try:
            conn = self.connect()
            if not self.options.dry_run:
                ahead.start(conn)  # (while the main SFTP channel opens)
            conn.ready()
            return conn
        except Exception as exc:
            if conn is not None:
                conn.close()
            more = extra.take(1)[0] if extra is not None else []
            if not more:
                raise
            turned_away.append(exc)
            return more[0]

    def _permission_error(self, exc: PermissionError) -> KaicError:
        """A refusal that stopped the whole sync, as a KaicError naming the path."""
        path = exc.filename if exc.filename is not None else "?"
        if isinstance(exc, RemotePermissionError):
            return Rejected(
                f"permission denied on the staging host: {path}",
                hint=f"choose a remote path your account may {self.destination.remote_access}",
            )
        return KaicError(
            f"permission denied: {path}",
            hint="check that path's permissions on this machine, or choose another one",
        )

    def _plan(self, remote: RemoteSide) -> SyncPlan:
        src_side, dst_side = self.destination.sides(self.local, remote)
        # Each remote STAT also opens the path as a directory, and on the source side
        # tries its .kaicignore: one round trip where planning asks three in a row.
        remote.look_ahead = True
        remote.look_for = IGNORE_FILE if src_side is remote else None
        try:
            return plan_sync(
                src_side,
                self.sources,
                dst_side,
                self.dest,
                excludes=self.options.excludes,
                delete=self.options.delete,
                checksum=self.options.checksum,
                warn=self.warn,
            )
        finally:
            remote.look_ahead = False
            remote.forget_glances()

    def _prepare(self, plan: SyncPlan, remote: RemoteSide) -> None:
        """Create destination directories; remove part files nothing will resume."""
        self.destination.makedirs(remote, plan.mkdirs)
        for part in plan.stale_parts():
            with contextlib.suppress(FileNotFoundError):
                self.destination.remove(remote, part)

    def _delete(self, plan: SyncPlan, remote: RemoteSide) -> int:
        deleted = 0
        for path in plan.delete_files:
            try:
                self.destination.remove(remote, path)
                deleted += 1
            except FileNotFoundError:
                pass
        for path in plan.delete_dirs:
            try:
                self.destination.rmdir(remote, path)
            except OSError as exc:
                self.warn(f"could not remove directory {path}: {exc}")
        return deleted

    # -- workers -------------------------------------------------------------------------
    def _transfer_all(
        self,
        plan: SyncPlan,
        conns: list[SftpConnection],
        ahead: PipesAhead,
        options: SyncOptions,
    ) -> None:
        """Transfer the plan's files over `conns`, `options.channels` workers on each; files
        that failed for a reason that may pass go again (after a growing pause) until
        `file_attempts` rounds are used up."""
        pending = list(plan.transfers)
        for attempt in range(1, max(1, self.options.file_attempts) + 1):
            self.stats.retry.clear()
            copy = partial(self.destination.copy_batch, plan.parts)
            run_workers(pending, conns, options, self.checksums_fn, copy, self.destination, ahead)
            pending = list(self.stats.retry.values())
            if not pending or attempt >= self.options.file_attempts:
                return
            first = pending[0].dst
            delay = min(RETRY_START_S * 2 ** (attempt - 1), RECONNECT_CAP_S)
            self.warn(
                f"{len(pending)} file(s) failed (e.g. {first}: "
                f"{self.stats.failures.get(first, '?')}); trying them again in {delay:.1f} s "
                f"(round {attempt + 1} of {self.options.file_attempts})"
            )
            self.sleep(delay)
