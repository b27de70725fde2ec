"""The one place a job row becomes a `LaunchSpec`, for both queue policies."""

from __future__ import annotations

from collections.abc import Sequence

from kaic.center.executors.base import LaunchSpec
from kaic.center.jobs.paths import job_paths, resolve_workdir, storage_home
from kaic.center.jobs.rows import JobRow
from kaic.center.settings import CenterSettings

#: what an interactive allocation without `run` runs: it holds the allocation until it is
#: released (cancelled) or reaches its time limit, and dies with its process group (a
#: loop, not `sleep infinity`: GNU's, and a huge number on some systems)
HOLDER_SCRIPT = "while :; do sleep 3600; done\n"


def launch_spec(
    settings: CenterSettings,
    row: JobRow,
    *,
    partition: str,
    gpu_ids: Sequence[int] = (),
    group: Sequence[JobRow] = (),
    after_ok: Sequence[str] = (),
) -> LaunchSpec:
    """What the executor needs to start `row`: a job or an array task on `gpu_ids` (the
    center's own queue), or — `row` being an array's first task and `group` its pending
    tasks — the whole array as one (an executor that owns the queue).

    Raises `PathRejected` when the workdir no longer lies inside the user's storage. The
    executor creates the home and the workdir (`executors.prepare.prepare_storage`: as the
    center, handing what it made to the job's account when it runs jobs as their users, and
    never through a link — the user may change their storage after this check)."""
    whole_array = bool(group) and row.array_job_id is not None
    job_id = row.array_job_id if whole_array and row.array_job_id else row.id
    home = storage_home(settings, row.user, row.unix_account or None)
    _, workdir = resolve_workdir(home, row.workdir)
    return LaunchSpec(
        job_id=job_id,
        name=row.name,
        user=row.user,
        script=row.spec.run if row.spec.run is not None else HOLDER_SCRIPT,
        paths=job_paths(settings.state_dir, job_id),
        workdir=workdir,
        home=home,
        env=dict(row.spec.env),
        gpu_ids=tuple(gpu_ids),
        time_limit_seconds=row.time_limit_seconds,
        partition=partition,
        array_job_id=None if whole_array else row.array_job_id,
        array_task_id=None if whole_array else row.array_task_id,
        gpus=row.gpus,
        nodes=row.spec.resources.nodes,
        unix_account=row.unix_account or row.user,
        project=row.project,
        array_tasks=tuple(t.array_task_id for t in group if t.array_task_id is not None)
        if whole_array
        else (),
        array_limit=row.array_limit if whole_array else None,
        after_ok=tuple(after_ok),
        own_storage=settings.state_dir / "storage" if settings.storage_root is None else None,
        metrics_interval=settings.metrics_interval,
        metrics_python=settings.metrics_python,
    )
