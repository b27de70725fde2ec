"""What shell completion offers beyond the command tree: your recent job ids, partitions and
profiles, job states, and paths on center storage for `kaic data`.

Completion runs on every TAB, so it never prompts, never starts the local center, and gives up
quietly: each lookup has a budget in all (`budget()`: 2 s, 5 s for a listing on the staging
host, which needs an SSH login; `KAIC_COMPLETION_TIMEOUT` sets both) — a request timeout, no
retries, a daemon thread abandoned if it is still waiting — and any failure offers nothing:
the shell then falls back to its own file names.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session

#: the longest a TAB waits for the center, and for the staging host
BUDGET_S = 2.0
REMOTE_BUDGET_S = 5.0
#: how many of the newest jobs a job id is completed from
RECENT_JOBS = 100

T = TypeVar("T")
Choice = tuple[str, str]


def budget(default: float) -> float:
    """`KAIC_COMPLETION_TIMEOUT` (seconds) if set to a positive number, else `default`."""
    with contextlib.suppress(ValueError):
        value = float(os.environ.get("KAIC_COMPLETION_TIMEOUT", ""))
        if value > 0:
            return value
    return default


def within(seconds: float, call: Callable[[], list[T]]) -> list[T]:
    """`call()`'s answer if it comes within `seconds`, else (or if it fails) nothing."""
    from kaic.flows.wait import within as bounded

    return bounded(seconds, call) or []


def _session(profile: str | None) -> Session:
    from kaic.flows.session import open_session

    def quiet(_text: str) -> None:
        pass

    return open_session(
        profile, warn=quiet, notice=quiet, local_if_running=True, timeout=budget(BUDGET_S)
    )


def job_ids(profile: str | None, incomplete: str) -> list[Choice]:
    """Your newest jobs whose id starts with `incomplete`, each with its name and state."""

    def look() -> list[Choice]:
        session = _session(profile)
        try:
            jobs = session.jobs.iter_jobs(all_jobs=True, limit=RECENT_JOBS)
            return [
                (job.id, f"{visible(job.name)} {job.state.value}")
                for job in jobs
                if job.id.startswith(incomplete)
            ]
        finally:
            session.close()

    return within(budget(BUDGET_S), look)


def partitions(profile: str | None, incomplete: str) -> list[Choice]:
    def look() -> list[Choice]:
        session = _session(profile)
        try:
            return [
                (p.name, f"{p.gpus_free}/{p.gpus_total} GPUs free")
                for p in session.jobs.partitions()
                if p.name.startswith(incomplete)
            ]
        finally:
            session.close()

    return within(budget(BUDGET_S), look)


def states(incomplete: str) -> list[str]:
    from kaic.models import JobState

    return [s.value for s in JobState if s.value.startswith(incomplete.upper())]


def profiles(incomplete: str) -> list[str]:
    from kaic.config import load_config

    with contextlib.suppress(Exception):
        return sorted(n for n in load_config().profiles if n.startswith(incomplete))
    return []


def remote_paths(profile: str | None, incomplete: str) -> list[str]:
    """Entries of the directory `incomplete` is in, on center storage (directories end with
    `/`, so TAB goes on into them)."""

    def look() -> list[str]:
        from kaic.flows.ssh_target import resolve_target
        from kaic.staging.connect import open_sftp
        from kaic.staging.remote_tree import list_remote

        target, _ = resolve_target(lambda: _session(profile))
        parent, _, stem = incomplete.rpartition("/")
        directory = parent or ("/" if incomplete.startswith("/") else ".")
        conn = open_sftp(target)
        try:
            entries = list_remote(conn.sftp, directory)
        finally:
            conn.close()
        prefix = f"{parent}/" if parent or incomplete.startswith("/") else ""
        return [
            posixpath.join(prefix, e.name) + ("/" if e.type == "dir" else "")
            for e in entries
            if e.name.startswith(stem)
        ]

    return within(budget(REMOTE_BUDGET_S), look)
