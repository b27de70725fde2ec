"""How a `LaunchSpec` becomes a Slurm submission: the job's directories on the shared state
dir (by the ownership rule of `executors.prepare`), the batch script and the submit request."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from kaic.center.containers.launch import ARRAY_TASK, job_script
from kaic.center.executors.base import ExecutorError, JobPaths, LaunchSpec
from kaic.center.executors.prepare import job_environment, prepare_job_dirs, prepare_storage
from kaic.center.executors.sampler import batch_lines as sampler_lines
from kaic.center.executors.slurm.api import SubmitRequest, dependency_clause
from kaic.center.executors.slurm.ranks import launch_ranks, one_node


def comment(job_id: str) -> str:
    """The Slurm comment that ties a Slurm job to its kaic job."""
    return f"kaic job {job_id}"


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _slurm_path(path: Path) -> str:
    """A path for Slurm's output file options, where `%` starts a pattern."""
    return str(path).replace("%", "%%")


def _traversable(path: Path) -> None:
    """Let other users pass through (not list) a root-owned directory on the way to their
    own directories."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o011 != 0o011:
        path.chmod(mode | 0o011)


def _write_script(path: Path, text: str) -> None:
    """Write a job's script afresh: its directory may be the account's (from an earlier try),
    so whatever the account left under that name (a link to a file of root's) is removed,
    not written through."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(path, flags, 0o644), "w", encoding="utf-8") as handle:
        handle.write(text)


def prepare(spec: LaunchSpec, owner: pwd.struct_passwd | None) -> list[JobPaths]:
    """Create the job's directories (one per array task) and workdir; with an `owner` (a
    center running as root) they are the job's account's, so Slurm (running as that account)
    can write the logs there."""
    jobs_root = spec.paths.dir.parent
    dirs = (
        [JobPaths(jobs_root / f"{spec.job_id}_{i}") for i in spec.array_tasks]
        if spec.array_tasks
        else [spec.paths]
    )
    try:
        jobs_root.mkdir(parents=True, exist_ok=True)
        prepare_storage(spec.home, spec.workdir, owner, own_storage=spec.own_storage)
        if owner is not None:
            for parent in (jobs_root.parent, jobs_root, spec.home.parent):
                _traversable(parent)
        prepare_job_dirs([paths.dir for paths in dirs], owner)
        for paths in dirs:
            _write_script(paths.script, spec.script)
    except OSError as exc:
        raise ExecutorError(f"could not prepare the job's directories: {exc}") from exc
    return dirs


def batch_script(spec: LaunchSpec) -> str:
    """The batch script: kaic's per-task variables, the metrics sampler, then the job's own
    script."""
    lines = ["#!/bin/bash", f"# kaic job {spec.job_id}"]
    if spec.array_tasks:
        parent = _shell_quote(spec.job_id)
        lines += [
            f"export KAIC_ARRAY_JOB_ID={parent}",
            'export KAIC_ARRAY_TASK_ID="${SLURM_ARRAY_TASK_ID:-}"',
            f'export KAIC_JOB_ID={parent}"_${{SLURM_ARRAY_TASK_ID:-}}"',
        ]
    lines.append('export KAIC_GPUS="${CUDA_VISIBLE_DEVICES:-}"')
    if spec.nodes == 1:  # a multi-node job's ranks start one each (`slurm/ranks.py`)
        lines += sampler_lines(spec)
    header = "\n".join(lines) + "\n"
    # Multi-node launch: on several nodes the script runs once per node through srun, one
    # rank each, with the rendezvous variables (`slurm/ranks.py`); on one node, inline.
    if spec.nodes > 1:
        return header + launch_ranks(spec)
    # The launch change for images: the job's script, or a launcher running it in its image
    # (`kaic.center.containers.launch`; pyxis reads it from the task's directory).
    task_dir = f"{spec.job_id}_{ARRAY_TASK}" if spec.array_tasks else spec.job_id
    script = job_script(spec, script_file=str(spec.paths.dir.parent / task_dir / "script.sh"))
    return header + one_node(spec) + script + ("" if script.endswith("\n") else "\n")


def submit_request(
    spec: LaunchSpec, account: str, *, base_path: str | None, account_from_project: bool
) -> SubmitRequest:
    """What to submit for `spec`, as the unix account `account`."""
    jobs_root = spec.paths.dir.parent
    if spec.array_tasks:
        stdout = _slurm_path(jobs_root / f"{spec.job_id}_") + "%a/stdout"
        stderr = _slurm_path(jobs_root / f"{spec.job_id}_") + "%a/stderr"
        indices = ",".join(str(i) for i in spec.array_tasks)
        array = indices + (f"%{spec.array_limit}" if spec.array_limit else "")
    else:
        stdout = _slurm_path(spec.paths.stdout)
        stderr = _slurm_path(spec.paths.stderr)
        array = None
    minutes = None
    if spec.time_limit_seconds:
        # Slurm counts whole minutes: round up, never cut a job short.
        minutes = max(1, -(-spec.time_limit_seconds // 60))
    return SubmitRequest(
        name=spec.name,
        script=batch_script(spec),
        workdir=str(spec.workdir),
        stdout=stdout,
        stderr=stderr,
        environment=job_environment(spec, login=account, base_path=base_path, gpus=False),
        time_limit_minutes=minutes,
        partition=spec.partition,
        gpus_per_node=spec.gpus,
        nodes=spec.nodes,
        array=array,
        dependency=dependency_clause(list(spec.after_ok)),
        account=spec.project if account_from_project else None,
        comment=comment(spec.job_id),
    )
