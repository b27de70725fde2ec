"""Where jobs live on the center: users' storage homes, job directories, workdirs."""

from __future__ import annotations

from pathlib import Path

from kaic.center.executors.base import JobPaths
from kaic.center.settings import CenterSettings
from kaic.center.storage import Outside, StorageRoot


class PathRejected(ValueError):
    """A workdir that is not inside the user's storage; the message says why."""


def storage_home(settings: CenterSettings, user: str, unix_account: str | None = None) -> Path:
    """The user's storage root and home (`~` of jobs and staging): `settings.storage_root`
    (e.g. `/home/{unix_account}`), by default `state_dir/storage/<user>`."""
    return settings.storage_root_for(user, unix_account or user)


def job_paths(state_dir: Path, job_id: str, attempt: int = 1) -> JobPaths:
    """The directory of one job or array task: `state_dir/jobs/<id>`, and for a later
    attempt of a requeued job `state_dir/jobs/<id>.attempt-<n>` (a directory of its own, so
    every attempt's logs stay readable, and a sibling: the executors keep their jobs in one
    directory)."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise ValueError(f"bad job id {job_id!r}")
    if attempt < 1:
        raise ValueError(f"bad attempt {attempt}")
    name = job_id if attempt == 1 else f"{job_id}.attempt-{attempt}"
    return JobPaths(state_dir / "jobs" / name)


def resolve_workdir(home: Path, workdir: str | None) -> tuple[str, Path]:
    """(display form `~/…`, path) of a job's workdir inside `home`, by the storage root's
    rule (`kaic.center.storage`): `~`, `~/x` and relative paths start at the home,
    absolute ones must lie inside it, `..` may not climb above it and links may not lead
    out (PathRejected, saying why). The path is the home joined with the normalised
    relative path; it need not exist yet (the executor creates it).
    """
    text = (workdir or "~").strip()
    storage = StorageRoot(home)
    try:
        relative = storage.relative(text)
        storage.follow(text)
    except Outside as exc:
        raise PathRejected(f"workdir {text!r} {exc}") from None
    return ("~/" + relative if relative else "~"), home / relative
