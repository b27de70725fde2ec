"""Starting a job's metrics sampler (`python -m kaic.gpu.sampler`, run by the center's own
interpreter by absolute path, or the one `--metrics-python` names where the nodes or the
jobs' accounts cannot run that: the center itself never imports NVML) from a job's wrapper
or batch script: one shell line each, prepended to what starts the job.

The line starts the sampler in a subshell that exits at once, so the sampler is not a child
of the job's shell (a script's bare `wait` does not wait for it) but stays in the job's
process group (it is killed with the job on cancel and time limit). It watches the job's
process (`$$`: the wrapper, or the batch shell) and exits with it; its output goes to
/dev/null and a failure of it changes nothing of the job's.

A center running jobs as their users starts it through setpriv as the job's account, with
the wrapper's fixed root environment (nothing of the job's), handing it the metrics
directory — the account's, inside the center's 0700 job directory — as an open descriptor.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from kaic.center.executors.base import LaunchSpec

#: the directory, in a job's directory, the sampler writes into (`kaic.center.metrics`)
METRICS_DIR = "metrics"


def _command(spec: LaunchSpec, where: str, gpus: str | None) -> str:
    python = spec.metrics_python or sys.executable
    argv = [python, "-m", "kaic.gpu.sampler", "--interval", f"{spec.metrics_interval:g}"]
    text = shlex.join(argv) + ' --watch "$$" ' + where
    if gpus is not None:
        text += " --gpus " + shlex.quote(gpus)
    return text


def _background(command: str) -> str:
    return f"( {command} </dev/null >/dev/null 2>&1 & )\n"


def local_line(spec: LaunchSpec, metrics_dir: Path, *, as_user: bool) -> str:
    """The line that starts the sampler from the local executor's wrapper (`WRAPPER`, or
    `WRAPPER_AS_USER`, whose `$3`/`$4`/`$5` are the account's uid, gid and setpriv)."""
    gpus = ",".join(str(i) for i in spec.gpu_ids)
    command = _command(spec, "--dir-fd 5", gpus)
    if as_user:
        command = '"$5" --reuid="$3" --regid="$4" --init-groups -- ' + command
    return _background(f"{command} 5<{shlex.quote(str(metrics_dir))}")


def rank_line(spec: LaunchSpec) -> str:
    """The line that starts the sampler for one rank of a multi-node job, on that rank's node
    (`slurm/ranks.py`'s rank script, where `$1` is the job's directory and `$$` the rank):
    each node writes its own file, named by the node."""
    if spec.metrics_interval <= 0:
        return ""
    return _background(_command(spec, f'--dir "$1"/{METRICS_DIR}', None))


def batch_lines(spec: LaunchSpec) -> list[str]:
    """Lines of a Slurm batch script that start the sampler on the node it runs on, as the
    job's account, for the job's GPUs (`CUDA_VISIBLE_DEVICES`). Kept as one marked block so
    a per-node launch (multi-node jobs) can take it over."""
    if spec.metrics_interval <= 0:
        return []
    if spec.array_tasks:
        prefix = str(spec.paths.dir.parent / f"{spec.job_id}_")
        where = f'{shlex.quote(prefix)}"${{SLURM_ARRAY_TASK_ID:-}}"/{METRICS_DIR}'
    else:
        where = shlex.quote(str(spec.paths.dir / METRICS_DIR))
    return [
        "# kaic: the job's metrics sampler on this node (kaic.center.executors.sampler)",
        _background(_command(spec, f"--dir {where}", None)).rstrip("\n"),
        "# kaic: end of the sampler's start",
    ]
