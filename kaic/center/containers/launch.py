"""Where a job's image meets its launch: checking a job's `image:` against the center
(dry-run, submit, start) and the one change to how a job starts — `job_script`, which turns
the job's script into a launcher that runs it inside the image through the center's runtime.

Both executors run what `job_script` returns exactly where they ran the job's own script (the
local wrapper's `bash script.sh`, the Slurm batch script), so everything around it — the
privilege drop, the environment handed over after it, exit codes, signals, time limits,
logs — stays as it is. The job's script reaches the image on descriptor 3, from a here-document
(never in argv, where other users could read it), and runs as `bash /dev/fd/3`; pyxis, whose
`srun` passes no descriptors, reads it from the job's directory, mounted read-only.
"""

from __future__ import annotations

import pwd
import secrets
import shlex
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from kaic.center.containers.gpu import DEFAULT_DEVICE_GLOBS, GpuPassThrough, gpu_pass_through
from kaic.center.containers.resolve import ImageRejected, resolve_image
from kaic.center.containers.runtimes import Bind, ContainerJob, runtime
from kaic.center.containers.spec import Container
from kaic.center.executors.base import ExecutorError
from kaic.center.executors.interactive import ROOT_ENV, require_root_tool, root_tool

if TYPE_CHECKING:
    from kaic.center.executors.base import LaunchSpec
    from kaic.center.settings import CenterSettings

__all__ = ["ARRAY_TASK", "ImageRejected", "container_for", "job_script", "local_tool"]

#: The bubblewrap launcher around the runtime's command line (RUNTIME, then the here-document
#: with the script). bwrap's outer process has no signal handlers: in the job's process group
#: it would die of the center's SIGTERM at once, and take the job with it (`--die-with-parent`)
#: before its grace period — a job that traps SIGTERM to save a checkpoint would lose it. So
#: bwrap runs in a process group of its own (`set -m`), the job inside in a session of its own
#: (`--new-session`, led by the namespace's first process, bwrap's child), and this shell, in
#: the job's process group, hands SIGTERM, SIGINT and SIGHUP on to that session: the job gets
#: them exactly as without an image, and bwrap lives on to report how it ended (a `wait` a
#: trapped signal cut short returns > 128: if bwrap is gone by then, its status is collected
#: by one more `wait`, not taken from the interruption). A signal that
#: comes while bwrap is still setting up is held until the job runs (bwrap killed during its
#: setup could leave its child behind, which has not yet asked to die with it). A SIGKILL of
#: the job's group kills this shell, and with it bwrap and everything inside
#: (`--die-with-parent`, the pid namespace).
BWRAP_LAUNCHER = """\
kaic_runtime= kaic_pending= kaic_inner= kaic_child= kaic_rc= kaic_last=
kaic_is_child() {  # whether /proc/PID/stat $1 is a child of process $2 (sets kaic_child)
  local fields
  read -r fields 2>/dev/null <"$1" || return 1
  fields=${fields##*) }
  set -- "$1" "$2" $fields
  [ "$4" = "$2" ] || return 1
  fields=${1#/proc/}
  kaic_child=${fields%/stat}
}
kaic_child_of() {  # a child of process $1: among the next pids, else anywhere in /proc
  local i stat
  for ((i = $1 + 1; i <= $1 + 64; i++)); do
    kaic_is_child "/proc/$i/stat" "$1" && return 0
  done
  for stat in /proc/[0-9]*/stat; do
    kaic_is_child "$stat" "$1" && return 0
  done
  return 1
}
kaic_deliver() {  # the pending signals to the job's session, once the job runs in it
  local sig kaic_child
  [ -n "$kaic_pending" ] || return 0
  [ -n "$kaic_runtime" ] && kaic_child_of "$kaic_runtime" || return 1
  kaic_inner=$kaic_child
  kaic_child_of "$kaic_inner" || return 1
  for sig in $kaic_pending; do kill -s "$sig" -- "-$kaic_inner" 2>/dev/null; done
  kaic_pending=
}
trap 'kaic_pending="$kaic_pending TERM"; kaic_deliver' TERM
trap 'kaic_pending="$kaic_pending INT"; kaic_deliver' INT
trap 'kaic_pending="$kaic_pending HUP"; kaic_deliver' HUP
set -m
RUNTIME &
kaic_runtime=$!
set +m
while :; do
  if [ -n "$kaic_pending" ] && kill -0 "$kaic_runtime" 2>/dev/null && ! kaic_deliver; then
    /bin/sleep 0.02
    continue
  fi
  wait "$kaic_runtime"
  kaic_rc=$?
  kill -0 "$kaic_runtime" 2>/dev/null && continue
  # gone; if a trapped signal cut that wait short (> 128), its status is still to collect
  if [ "$kaic_rc" -gt 128 ]; then
    wait "$kaic_runtime" 2>/dev/null
    kaic_last=$?
    [ "$kaic_last" -eq 127 ] || kaic_rc=$kaic_last
  fi
  break
done
exit "$kaic_rc"
"""

#: in a `script_file`, stands for the Slurm array task's index (`$SLURM_ARRAY_TASK_ID`)
ARRAY_TASK = "\0task\0"


def container_for(
    settings: CenterSettings, home: Path, ref: str | None, *, here: bool = False
) -> Container | None:
    """How a job with `image: ref` and storage home `home` runs (None without an image);
    ImageRejected saying why it cannot (an unknown name, a path that is outside the user's
    storage, missing or not an image, a format the runtime does not run; with `here`, for an
    executor that runs jobs on this host: the runtime is not installed)."""
    if not ref:
        return None
    chosen = runtime(settings.container_runtime)
    if here and root_tool(chosen.tool) is None:
        raise ImageRejected(
            f"the center's container runtime ({chosen.tool}) is not installed on its host, so "
            "it cannot run jobs in images; drop `image`, or ask its operator to install "
            f"{chosen.name}"
        )
    image = resolve_image(settings.images, home, ref, chosen.formats)
    globs = (
        tuple(settings.container_devices) if settings.container_devices else DEFAULT_DEVICE_GLOBS
    )
    return Container(image=image, runtime=chosen.name, device_globs=globs)


def local_tool(spec: LaunchSpec, account: pwd.struct_passwd | None = None) -> str | None:
    """The runtime's executable of a job with an image that runs on this host, by absolute
    path on the center's fixed PATH (ExecutorError when missing); None without an image.

    With the job's `account` (a center running jobs as their users), the image is first
    checked as that account: the center (root) looks into the image to build the launcher,
    and must not do so for an image the account could not open itself."""
    if spec.container is None:
        return None
    tool = require_root_tool(runtime(spec.container.runtime).tool)
    image = spec.container.image
    if account is not None and image.format != "registry":
        test = "-d" if image.format == "rootfs" else "-f"
        check = [
            require_root_tool("setpriv"),
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--init-groups",
            "--",
            require_root_tool("test"),
            test,
            image.location,
            "-a",
            "-r",
            image.location,
        ]
        if test == "-d":
            check += ["-a", "-x", image.location]
        done = subprocess.run(check, env=dict(ROOT_ENV), cwd="/", capture_output=True, check=False)
        if done.returncode != 0:
            raise ExecutorError(
                f"image {image.reference!r} cannot be read by unix account {account.pw_name}; "
                "make it readable (`chmod -R a+rX`) or pick one of `kaic images`"
            )
    return tool


def _delimiter(script: str) -> str:
    """A here-document delimiter that no line of `script` equals."""
    lines = set(script.splitlines())
    while True:
        candidate = f"KAIC_SCRIPT_{secrets.token_hex(8)}"
        if candidate not in lines:
            return candidate


def _quote(arg: str) -> str:
    quoted = shlex.quote(arg)
    return quoted.replace(ARRAY_TASK, "'\"${SLURM_ARRAY_TASK_ID}\"'")


# --- launch: the job's command line, or the container runtime's around it ----------------
def job_script(spec: LaunchSpec, *, tool: str | None = None, script_file: str | None = None) -> str:
    """What the executor runs as the job's script: `spec.script` itself, or for a job with an
    image a launcher that starts the runtime on it (`exec`s it, or for bubblewrap stays to hand
    signals on: `BWRAP_LAUNCHER`).

    `tool`: the runtime's executable by absolute path (the local executor resolves it on the
    center's fixed PATH); None runs it by name on the job's PATH (a Slurm node). `script_file`:
    where the job's script lies on the node (its job directory, mounted read-only), for a
    runtime that cannot take it on a descriptor (pyxis); ARRAY_TASK stands for the task's index."""
    container = spec.container
    if container is None:
        return spec.script
    chosen = runtime(container.runtime)
    binds: tuple[Bind, ...] = ()
    if chosen.name == "pyxis":
        if script_file is None:
            raise ImageRejected("the pyxis runtime runs Slurm batch jobs only")
        job_dir = str(Path(script_file).parent)
        binds = (Bind(job_dir, job_dir, read_only=True),)
        inner = ["bash", script_file]
    else:
        inner = ["bash", "/dev/fd/3"]
    gpus = (
        gpu_pass_through(container.device_globs)
        if chosen.name == "bubblewrap"
        else GpuPassThrough()
    )
    job = ContainerJob(
        image=container.image,
        home=str(spec.home),
        workdir=str(spec.workdir),
        binds=binds,
        gpus=gpus,
        env=spec.env,
    )
    line = " ".join(_quote(arg) for arg in chosen.command(job, inner, tool=tool))
    if chosen.name == "pyxis":
        return f"exec {line}\n"
    script = spec.script if spec.script.endswith("\n") else spec.script + "\n"
    delimiter = _delimiter(script)
    if chosen.name == "bubblewrap":
        head, _, tail = BWRAP_LAUNCHER.partition("RUNTIME &\n")
        return f"{head}{line} 3<<'{delimiter}' &\n{script}{delimiter}\n{tail}"
    # Apptainer hands signals on to the container itself.
    return f"exec {line} 3<<'{delimiter}'\n{script}{delimiter}\n"
