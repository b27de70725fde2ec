"""The container runtimes behind one interface: each turns a job's command line into the
runtime's, which starts it inside the job's image with the job's storage, workdir and GPUs.

- `Bubblewrap` (`bwrap`): unprivileged, over an unpacked root filesystem; runs here for real
  (the local center, tests, and Slurm nodes that have it). The image's top-level entries are
  bound read-only over bwrap's own empty root ("underlay"), so the mount points of the job's
  storage and workdir can be made at their own paths whatever the image holds; `/tmp` and
  `/sys` are the host's (as Apptainer's defaults), GPUs are passed through as `--nv` does
  (`containers.gpu`).
- `Apptainer` (`apptainer exec --nv`): a SIF file or a sandbox directory.
- `Pyxis` (enroot through Slurm's `srun --container-image`): a registry reference or a
  squashfs file; Slurm batch jobs only.

Every runtime is started as the job's account, after the privilege drop (never with more
privilege than the job has: no setuid helper — a setuid `bwrap` is refused), and inherits the
job's environment, which the center has already built clean; none is told to clean it
(`apptainer --cleanenv` would drop the job's own variables). Exit codes pass through (bwrap and
Apptainer exit with the command's status, 128+N when a signal N killed it), so a job's
outcome is the same with and without an image.
"""

from __future__ import annotations

import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from kaic.center.containers.gpu import BIN_DIR, LIB_DIR, GpuPassThrough
from kaic.center.containers.spec import ResolvedImage
from kaic.center.executors.base import ExecutorError
from kaic.models.images import ImageFormat

#: the runtimes `kaic center serve --container-runtime` offers
RUNTIME_NAMES = ("bubblewrap", "apptainer", "pyxis")

#: host paths the bubblewrap runtime shares with the job, when they exist (Apptainer's defaults)
SHARED_HOST_PATHS = ("/tmp", "/etc/resolv.conf", "/etc/hosts")
#: top-level entries of an image that bwrap provides itself (or the host's are used)
PROVIDED = ("proc", "dev", "sys", "tmp")


@dataclass(frozen=True)
class Bind:
    """A host path seen inside the container at `target`."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class ContainerJob:
    """What a runtime needs to start one job's command in its image."""

    image: ResolvedImage
    #: the user's storage home (`~`), mounted read-write at its own path
    home: str
    #: where the command starts (inside `home`)
    workdir: str
    #: more paths to mount (the job's directory on a Slurm node)
    binds: tuple[Bind, ...] = ()
    gpus: GpuPassThrough = field(default_factory=GpuPassThrough)
    #: the job's environment (what LD_LIBRARY_PATH and PATH are extended from)
    env: Mapping[str, str] = field(default_factory=dict)


class RuntimeRefused(ExecutorError):
    """The runtime cannot start jobs here (a setuid tool); the message says why."""


class Runtime(ABC):
    """A container runtime: which images it runs and its command line."""

    name: str
    #: the executable it starts, by name (found on the job's PATH, or by the executor)
    tool: str
    formats: tuple[ImageFormat, ...]
    #: the executors whose jobs it can run
    executors: tuple[str, ...] = ("local", "slurm")

    @abstractmethod
    def command(
        self, job: ContainerJob, argv: Sequence[str], *, tool: str | None = None
    ) -> list[str]:
        """The command line that runs `argv` inside `job`'s image (`tool`: the runtime's
        executable by absolute path, when the caller resolved it)."""


def _under(path: str, top: str) -> bool:
    return path.startswith(top.rstrip("/") + "/")


def underlay(root: str, targets: Sequence[str], *, skip: Sequence[str] = PROVIDED) -> list[str]:
    """bwrap arguments that rebuild the image at `root` read-only over bwrap's empty root,
    entry by entry, opening up (as a fresh directory holding the entries, recursively) every
    directory on the way to one of `targets`, so that their mount points can be made. Links
    are recreated as links, except one on the way to a target (a real directory takes its
    place). `skip`: top-level names left out (what bwrap or the host provides)."""
    args: list[str] = []

    def walk(inside: str) -> None:
        host_dir = root.rstrip("/") + inside
        try:
            names = sorted(os.listdir(host_dir or "/"))
        except OSError:
            return
        for name in names:
            if inside == "" and name in skip:
                continue
            path = f"{inside}/{name}"
            host = f"{host_dir}/{name}"
            if path in targets:
                continue  # a mount takes its place
            leads = any(_under(t, path) for t in targets)
            try:
                mode = os.lstat(host).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                if not leads:
                    args.extend(["--symlink", os.readlink(host), path])
            elif stat.S_ISDIR(mode):
                if leads:
                    args.extend(["--dir", path])
                    walk(path)
                else:
                    args.extend(["--ro-bind", host, path])
            elif stat.S_ISREG(mode):
                args.extend(["--ro-bind", host, path])

    walk("")
    return args


def _with_prefix(value: str | None, prefix: str) -> str:
    return f"{prefix}:{value}" if value else prefix


class Bubblewrap(Runtime):
    """bubblewrap over an unpacked root filesystem (see the module's docstring)."""

    name = "bubblewrap"
    tool = "bwrap"
    formats = ("rootfs",)

    def command(
        self, job: ContainerJob, argv: Sequence[str], *, tool: str | None = None
    ) -> list[str]:
        if tool is not None:
            refuse_setuid(tool)
        shared = [p for p in SHARED_HOST_PATHS if os.path.exists(p)]
        binds = [Bind(job.home, job.home), *job.binds]
        devices = job.gpus.devices
        targets = [
            *shared,
            *(b.target for b in binds),
            *(d for d in devices if not _under(d, "/dev")),
        ]
        args = [tool or self.tool, "--new-session", "--die-with-parent", "--unshare-pid"]
        args += underlay(job.image.location, targets)
        args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind-try", "/sys", "/sys"]
        for path in shared:
            args += ["--ro-bind" if path.startswith("/etc/") else "--bind", path, path]
        for device in devices:
            args += ["--dev-bind-try", device, device]
        for source, target in (*job.gpus.libraries, *job.gpus.tools):
            args += ["--ro-bind-try", source, target]
        for bind in binds:
            args += ["--ro-bind" if bind.read_only else "--bind", bind.source, bind.target]
        if job.gpus.libraries:
            args += [
                "--setenv",
                "LD_LIBRARY_PATH",
                _with_prefix(job.env.get("LD_LIBRARY_PATH"), LIB_DIR),
            ]
        if job.gpus.tools:
            args += ["--setenv", "PATH", f"{job.env.get('PATH') or '/usr/bin:/bin'}:{BIN_DIR}"]
        return [*args, "--chdir", job.workdir, "--", *argv]


class Apptainer(Runtime):
    """`apptainer exec --nv` on a SIF file or a sandbox directory: GPUs and driver libraries
    are Apptainer's business (`--nv`); the storage home is the container's home."""

    name = "apptainer"
    tool = "apptainer"
    formats = ("sif", "rootfs", "squashfs")

    def command(
        self, job: ContainerJob, argv: Sequence[str], *, tool: str | None = None
    ) -> list[str]:
        if tool is not None:
            refuse_setuid(tool)
        args = [tool or self.tool, "exec", "--nv", "--home", f"{job.home}:{job.home}"]
        for bind in job.binds:
            args += ["--bind", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        return [*args, "--pwd", job.workdir, job.image.location, *argv]


class Pyxis(Runtime):
    """enroot through pyxis, Slurm's SPANK plugin: `srun --container-image=…` inside the
    batch script. GPUs and driver libraries are enroot's hooks' business."""

    name = "pyxis"
    tool = "srun"
    formats = ("registry", "squashfs")
    executors = ("slurm",)

    def srun_options(self, job: ContainerJob) -> list[str]:
        """pyxis's options of `srun` (for a launch that adds its own, one step per node)."""
        mounts = [f"{job.home}:{job.home}"] + [
            f"{b.source}:{b.target}" + (":ro" if b.read_only else "") for b in job.binds
        ]
        return [
            f"--container-image={job.image.location}",
            f"--container-mounts={','.join(mounts)}",
            f"--container-workdir={job.workdir}",
            "--no-container-mount-home",
        ]

    def command(
        self, job: ContainerJob, argv: Sequence[str], *, tool: str | None = None
    ) -> list[str]:
        return [tool or self.tool, *self.srun_options(job), *argv]


RUNTIMES: dict[str, Runtime] = {r.name: r for r in (Bubblewrap(), Apptainer(), Pyxis())}


def runtime(name: str) -> Runtime:
    """The runtime called `name` (one of `RUNTIME_NAMES`); ValueError naming the others."""
    try:
        return RUNTIMES[name]
    except KeyError:
        raise ValueError(
            f"unknown container runtime {name!r} (runtimes: {', '.join(RUNTIME_NAMES)})"
        ) from None


def refuse_setuid(tool: str) -> None:
    """RuntimeRefused when the runtime's executable is setuid or setgid: it would start with
    more privilege than the job has."""
    try:
        mode = os.stat(tool).st_mode
    except OSError as exc:
        raise RuntimeRefused(f"container runtime {tool} cannot be used: {exc.strerror}") from None
    if mode & (stat.S_ISUID | stat.S_ISGID):
        raise RuntimeRefused(
            f"container runtime {tool} is setuid/setgid; kaic starts runtimes only with the "
            "job's own privileges (install an unprivileged one: user namespaces)"
        )
