"""Where jobs live on the center: users' storage homes, job directories, workdirs."""

from __future__ import annotations

import os
from pathlib import Path

from kaic.center.executors.base import JobPaths
from kaic.center.settings import CenterSettings


class PathRejected(ValueError):
    """A path that is not inside the user's storage; the message says why."""


def storage_home(settings: CenterSettings, user: str, unix_account: str | None = None) -> Path:
    """The user's storage root and home (`~` of jobs and staging): `settings.storage_root`
    (e.g. `/home/{unix_account}`), by default `state_dir/storage/<user>`."""
    return settings.storage_root_for(user, unix_account or user)


def job_paths(state_dir: Path, job_id: str) -> JobPaths:
    """The directory of one job or array task: `state_dir/jobs/<id>`."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        raise ValueError(f"bad job id {job_id!r}")
    return JobPaths(state_dir / "jobs" / job_id)


def resolve_workdir(home: Path, workdir: str | None) -> tuple[str, Path]:
    """(display form `~/…`, real path) of a job's workdir inside `home`.

    `~` and `~/x` are relative to the home, as are relative paths; absolute paths must
    already lie inside it. `..` and symbolic links may not lead out (PathRejected).
    """
    text = (workdir or "~").strip()
    if "\0" in text:
        raise PathRejected("workdir contains a NUL character")
    if text == "~" or text.startswith("~/"):
        relative = text[2:]
    elif text.startswith("~"):
        raise PathRejected(f"workdir {text!r}: `~user` paths are not supported; use `~/…`")
    elif text.startswith("/"):
        try:
            relative = str(Path(os.path.normpath(text)).relative_to(home))
        except ValueError:
            raise PathRejected(
                f"workdir {text!r} is outside your storage; use a path under `~`"
            ) from None
    else:
        relative = text
    normal = os.path.normpath(relative) if relative else "."
    if normal == ".." or normal.startswith("../") or normal.startswith("/"):
        raise PathRejected(f"workdir {text!r} leads outside your storage")
    real_home = home.resolve()
    real = (home / normal).resolve()
    if real != real_home and real_home not in real.parents:
        raise PathRejected(f"workdir {text!r} leads outside your storage (through a link)")
    display = "~" if normal == "." else "~/" + normal
    return display, home / normal
