"""The sessions open in jobs, per job and per user: their limits, their end when the job ends,
and the audit lines of who opened which session on which job, and how it ended.

A session is reserved before the WebSocket upgrade (so a refusal is still an HTTP answer)
and released when its handler ends. The ledger tells the registry when a job ends
(`job_ended`, on the scheduler's thread, inside the transaction that records the end); the
registry then cuts every session of that job: it sets the session's `cut` event on the
session's own event loop, and the session's bridge kills what the session started. A job
that ended a moment before a session was reserved is remembered (`_ended`, the most recent
ends), so a session cannot slip in between the route's state check and the end.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from kaic.models.interactive import JOB_ENDED

audit = logging.getLogger("kaic.center.audit")

SessionKind = Literal["exec", "forward"]
#: how many recent job ends the registry remembers (the race it closes lasts milliseconds)
_REMEMBERED_ENDS = 4096


@dataclass(frozen=True)
class SessionLimits:
    """How many sessions may be open at once: exec sessions per job and per user, and
    forwarded connections per job and per user (a browser opens many at once)."""

    exec_per_job: int = 16
    exec_per_user: int = 64
    forward_per_job: int = 128
    forward_per_user: int = 256

    def of(self, kind: SessionKind) -> tuple[int, int]:
        """(per job, per user) for sessions of `kind`."""
        if kind == "exec":
            return self.exec_per_job, self.exec_per_user
        return self.forward_per_job, self.forward_per_user


class SessionRefused(Exception):
    """A session cannot be opened now; `status` and `code` are the HTTP refusal's."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Session:
    """One open session: who, on which job, what (`detail`: argv[0] or the port)."""

    id: str
    kind: SessionKind
    job_id: str
    user: str
    peer: str
    detail: str
    opened: float = field(default_factory=time.monotonic)
    #: bytes from the client to the job, and from the job to the client
    bytes_in: int = 0
    bytes_out: int = 0
    #: the session's process (its pid is also its session id), once started; tests and the
    #: audit line read it
    pid: int | None = None
    #: why the center cut the session ("the job ended"), None while it was not
    cut_reason: str | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _cut: asyncio.Event | None = None

    def bind(self) -> asyncio.Event:
        """The event set when the center cuts the session, on the running loop (call from
        the session's handler)."""
        self._loop = asyncio.get_running_loop()
        self._cut = asyncio.Event()
        if self.cut_reason is not None:
            self._cut.set()
        return self._cut

    def cut(self, reason: str) -> None:
        """End the session from any thread: its handler kills what it started."""
        if self.cut_reason is None:
            self.cut_reason = reason
        loop, event = self._loop, self._cut
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    @property
    def duration(self) -> float:
        return time.monotonic() - self.opened


def _shown(text: str, limit: int = 64) -> str:
    """A user's word for a log line: quoted, control characters escaped, bounded."""
    shown = repr(text[:limit])
    return shown + ("…" if len(text) > limit else "")


class SessionRegistry:
    """The open sessions of one center (thread-safe)."""

    def __init__(self, limits: SessionLimits | None = None) -> None:
        self.limits = limits or SessionLimits()
        self._lock = threading.Lock()
        self._sessions: dict[str, Session] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()

    def reserve(
        self, kind: SessionKind, *, job_id: str, user: str, peer: str, detail: str
    ) -> Session:
        """A new session of `user` on the running job `job_id`; SessionRefused when a limit
        is reached or the job has just ended."""
        per_job, per_user = self.limits.of(kind)
        what = "exec sessions" if kind == "exec" else "forwarded connections"
        with self._lock:
            if job_id in self._ended:
                raise SessionRefused(409, "job_not_running", f"job {job_id} has just ended")
            mine = [s for s in self._sessions.values() if s.kind == kind]
            if sum(s.job_id == job_id for s in mine) >= per_job:
                raise SessionRefused(
                    429,
                    "too_many_sessions",
                    f"job {job_id} has {per_job} {what} open, the most it may have; "
                    "close one first",
                )
            if sum(s.user == user for s in mine) >= per_user:
                raise SessionRefused(
                    429,
                    "too_many_sessions",
                    f"you have {per_user} {what} open, the most a user may have; close one first",
                )
            session = Session(
                id="s-" + secrets.token_hex(6),
                kind=kind,
                job_id=job_id,
                user=user,
                peer=peer,
                detail=detail,
            )
            self._sessions[session.id] = session
        return session

    def release(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.id, None)

    def sessions(self, job_id: str | None = None) -> list[Session]:
        """The open sessions (of one job)."""
        with self._lock:
            return [s for s in self._sessions.values() if job_id in (None, s.job_id)]

    def job_ended(self, job_id: str) -> None:
        """The ledger recorded the end of `job_id`: cut its sessions (any thread)."""
        with self._lock:
            self._ended[job_id] = None
            while len(self._ended) > _REMEMBERED_ENDS:
                self._ended.popitem(last=False)
            cut = [s for s in self._sessions.values() if s.job_id == job_id]
        for session in cut:
            session.cut(JOB_ENDED)

    def end_all(self, reason: str) -> None:
        """Cut every session (the center is shutting down)."""
        for session in self.sessions():
            session.cut(reason)

    # -- audit ---------------------------------------------------------------------------

    @staticmethod
    def audit_opened(session: Session, *, tty: bool | None = None) -> None:
        """The audit line of a session that opened (argv beyond argv[0] is never logged:
        it may carry secrets)."""
        if session.kind == "exec":
            audit.info(
                "exec session %s opened by %s on job %s: %s, tty %s, pid %s, from %s",
                session.id,
                session.user,
                session.job_id,
                _shown(session.detail),
                "yes" if tty else "no",
                session.pid,
                session.peer,
            )
        else:
            audit.info(
                "forward session %s opened by %s on job %s: port %s, from %s",
                session.id,
                session.user,
                session.job_id,
                session.detail,
                session.peer,
            )

    @staticmethod
    def audit_ended(session: Session, outcome: str) -> None:
        audit.info(
            "%s session %s of %s on job %s ended: %s; %.1fs, %d bytes in, %d bytes out",
            session.kind,
            session.id,
            session.user,
            session.job_id,
            outcome,
            session.duration,
            session.bytes_in,
            session.bytes_out,
        )

    @staticmethod
    def audit_refused(kind: SessionKind, user: str, job_id: str, status: int, message: str) -> None:
        audit.info(
            "%s session refused for %s on job %s: %s %s",
            kind,
            user,
            _shown(job_id),
            status,
            message,
        )
