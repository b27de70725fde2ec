"""The container runtimes' command lines against their documented flags (Apptainer's
`apptainer exec`, pyxis's `srun --container-*`; neither is installed here), bubblewrap's
underlay, GPU pass-through discovery, the catalogue format and the launcher script."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from kaic.center.containers.catalogue import CatalogueError, find, load_catalogue
from kaic.center.containers.gpu import LIB_DIR, GpuPassThrough, device_nodes, driver_libraries
from kaic.center.containers.launch import ARRAY_TASK, job_script
from kaic.center.containers.resolve import ImageRejected, image_format, resolve_image
from kaic.center.containers.runtimes import (
    Apptainer,
    Bind,
    Bubblewrap,
    ContainerJob,
    Pyxis,
    RuntimeRefused,
    refuse_setuid,
    runtime,
    underlay,
)
from kaic.center.containers.spec import Container, ResolvedImage
from kaic.center.executors.base import JobPaths, LaunchSpec

HOME, WORKDIR = "/home/alice01", "/home/alice01/runs/a"


def _job(fmt: str, location: str, **kw: object) -> ContainerJob:
    image = ResolvedImage("img", fmt, location)  # type: ignore[arg-type]
    return ContainerJob(image=image, home=HOME, workdir=WORKDIR, **kw)  # type: ignore[arg-type]


def test_apptainer_exec_with_nv_home_binds_and_pwd() -> None:
    job = _job("sif", "/srv/images/pytorch.sif", binds=(Bind("/scratch/x", "/data", True),))
    argv = Apptainer().command(job, ["bash", "/dev/fd/3"])
    assert argv == [
        "apptainer",
        "exec",
        "--nv",  # GPUs and the driver's libraries: Apptainer's own --nv
        "--home",
        f"{HOME}:{HOME}",  # the storage home is the container's $HOME, at its own path
        "--bind",
        "/scratch/x:/data:ro",  # src:dest:opts
        "--pwd",
        WORKDIR,
        "/srv/images/pytorch.sif",
        "bash",
        "/dev/fd/3",
    ]
    # The job's environment is already the clean one the center built: --cleanenv would
    # drop the job's own variables (only APPTAINERENV_* would pass).
    assert "--cleanenv" not in argv and "-e" not in argv


def test_pyxis_srun_options() -> None:
    job = _job(
        "registry",
        "nvcr.io#nvidia/pytorch:24.10-py3",
        binds=(Bind("/state/jobs/7", "/state/jobs/7", read_only=True),),
    )
    argv = Pyxis().command(job, ["bash", "/state/jobs/7/script.sh"])
    assert argv == [
        "srun",
        "--container-image=nvcr.io#nvidia/pytorch:24.10-py3",
        f"--container-mounts={HOME}:{HOME},/state/jobs/7:/state/jobs/7:ro",
        f"--container-workdir={WORKDIR}",
        "--no-container-mount-home",
        "bash",
        "/state/jobs/7/script.sh",
    ]
    assert Pyxis().executors == ("slurm",)


def test_the_runtimes_take_their_formats() -> None:
    assert Bubblewrap().formats == ("rootfs",)
    assert set(Apptainer().formats) == {"sif", "rootfs", "squashfs"}
    assert set(Pyxis().formats) == {"registry", "squashfs"}
    with pytest.raises(ValueError, match="runtimes: bubblewrap, apptainer, pyxis"):
        runtime("docker")


def _tree(root: Path) -> Path:
    for d in ("bin", "etc", "home/x", "proc", "tmp", "usr/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc" / "passwd").write_text("")
    (root / "lib").symlink_to("usr/lib")
    (root / "srv").symlink_to("/elsewhere")
    return root


def _ops(args: list[str]) -> list[tuple[str, ...]]:
    """bwrap's arguments as operations: `--dir DEST`, the others `--op SRC DEST`."""
    ops, i = [], 0
    while i < len(args):
        width = 2 if args[i] == "--dir" else 3
        ops.append(tuple(args[i : i + width]))
        i += width
    return ops


def test_underlay_binds_entries_read_only_and_opens_the_way_to_mounts(tmp_path: Path) -> None:
    root = str(_tree(tmp_path / "img"))
    args = underlay(root, ["/etc/resolv.conf", "/home/alice/run", "/srv/data"])
    pairs = _ops(args)
    assert ("--ro-bind", f"{root}/bin", "/bin") in pairs
    assert ("--symlink", "usr/lib", "/lib") in pairs
    # /etc holds a mount target: a fresh directory with the image's entries bound one by one
    assert ("--dir", "/etc") in pairs
    assert ("--ro-bind", f"{root}/etc/passwd", "/etc/passwd") in pairs
    assert ("--dir", "/home") in pairs
    assert ("--ro-bind", f"{root}/home/x", "/home/x") in pairs
    # a link on the way to a mount is left out (the mount makes a real directory there)
    assert not any("/srv" in op for op in pairs)
    # what bwrap provides is not taken from the image
    assert not any("/proc" in op or "/tmp" in op for op in pairs)
    assert [op[0] for op in pairs if op[-1].count("/") == 1] == [
        "--ro-bind",
        "--dir",
        "--dir",
        "--symlink",
        "--ro-bind",
    ]  # bin, etc, home, lib, usr — in order, once each


def test_bubblewrap_command(tmp_path: Path) -> None:
    root = str(_tree(tmp_path / "img"))
    gpus = GpuPassThrough(
        devices=("/dev/nvidia0", "/dev/nvidiactl", "/tmp/fake/gpu0"),
        libraries=(("/usr/lib/x86_64-linux-gnu/libcuda.so.1", f"{LIB_DIR}/libcuda.so.1"),),
    )
    job = _job("rootfs", root, gpus=gpus, env={"LD_LIBRARY_PATH": "/opt/x"})
    argv = Bubblewrap().command(job, ["bash", "/dev/fd/3"])
    assert argv[:4] == ["bwrap", "--new-session", "--die-with-parent", "--unshare-pid"]
    assert argv[-5:] == ["--chdir", WORKDIR, "--", "bash", "/dev/fd/3"]
    text = " ".join(argv)
    assert f"--bind {HOME} {HOME}" in text
    assert "--proc /proc --dev /dev" in text
    for device in gpus.devices:
        assert f"--dev-bind-try {device} {device}" in text
    assert f"--ro-bind-try /usr/lib/x86_64-linux-gnu/libcuda.so.1 {LIB_DIR}/libcuda.so.1" in text
    assert f"--setenv LD_LIBRARY_PATH {LIB_DIR}:/opt/x" in text
    # the home's mount point is made through /home, opened up
    assert "--dir /home" in text


def test_a_setuid_runtime_is_refused(tmp_path: Path) -> None:
    tool = tmp_path / "bwrap"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    refuse_setuid(str(tool))
    tool.chmod(0o4755)
    with pytest.raises(RuntimeRefused, match="setuid"):
        refuse_setuid(str(tool))


LDCONFIG = """\
3 libs found in cache `/etc/ld.so.cache'
\tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
\tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
\tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6
"""


def test_driver_libraries_come_from_the_linker_cache_like_nvliblist() -> None:
    assert driver_libraries(LDCONFIG) == (
        ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", f"{LIB_DIR}/libcuda.so.1"),
        ("/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1", f"{LIB_DIR}/libnvidia-ml.so.1"),
    )  # not the CUDA runtime (the image's own), not 32-bit, not libc


def test_device_nodes_are_globbed(tmp_path: Path) -> None:
    for name in ("gpu0", "gpu1"):
        (tmp_path / name).write_text("")
    assert device_nodes((str(tmp_path / "gpu*"), "/nonexistent*")) == (
        str(tmp_path / "gpu0"),
        str(tmp_path / "gpu1"),
    )


def test_catalogue_directory_and_file(tmp_path: Path) -> None:
    d = tmp_path / "cat"
    d.mkdir()
    (d / "pytorch.yaml").write_text("tag: '24.10'\nsif: /srv/p.sif\ndescription: CUDA 12.6\n")
    (d / "nvidia-pytorch.yml").write_text("name: nvidia/pytorch\nuri: nvcr.io#nvidia/pytorch\n")
    (d / "README.md").write_text("ignored")
    entries = load_catalogue(d)
    assert [(e.reference, e.format) for e in entries] == [
        ("nvidia/pytorch", "registry"),
        ("pytorch:24.10", "sif"),
    ]
    assert find(entries, "pytorch") is find(entries, "pytorch:24.10") is entries[1]
    assert find(entries, "pytorch:23.01") is None
    listing = tmp_path / "images.yaml"
    listing.write_text(
        "- {name: a, tag: '1', rootfs: /srv/a}\n- {name: a, tag: '2', rootfs: /srv/a2}\n"
    )
    entries = load_catalogue(listing)
    assert find(entries, "a") is None  # two of that name: say the tag
    assert find(entries, "a:2") is entries[1]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("- {name: a}\n", "exactly one of"),
        ("- {name: a, rootfs: /x, sif: /y}\n", "exactly one of"),
        ("- {name: a, rootfs: rel}\n", "absolute path"),
        ("- {name: ~/a, rootfs: /x}\n", "does not start with"),
        ("- {name: a, rootfs: /x, colour: red}\n", "unknown key"),
        ("- {name: a, rootfs: /x}\n- {name: a, rootfs: /y}\n", "listed twice"),
        ("name: a\n", "must be a list"),
    ],
)
def test_catalogue_mistakes_are_named(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "images.yaml"
    path.write_text(text)
    with pytest.raises(CatalogueError, match=why):
        load_catalogue(path)


def test_image_formats_are_recognised(tmp_path: Path) -> None:
    (tmp_path / "root" / "bin").mkdir(parents=True)
    (tmp_path / "root" / "bin" / "sh").symlink_to("busybox")
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.sif").write_bytes(b"#!/usr/bin/env run-singularity\n\0SIF_MAGIC" + b"\0" * 64)
    (tmp_path / "x.sqsh").write_bytes(b"hsqs" + b"\0" * 64)
    (tmp_path / "x.txt").write_text("hello")
    found = {
        p: image_format(str(tmp_path / p)) for p in ("root", "empty", "x.sif", "x.sqsh", "x.txt")
    }
    assert found == {
        "root": "rootfs",
        "empty": None,
        "x.sif": "sif",
        "x.sqsh": "squashfs",
        "x.txt": None,
    }
    with pytest.raises(ImageRejected, match=r"is a sif image.*runs: rootfs"):
        resolve_image(None, tmp_path, str(tmp_path / "x.sif"), ("rootfs",))


def _spec(container: Container | None, script: str, **kw: object) -> LaunchSpec:
    return LaunchSpec(
        job_id="7",
        name="t",
        user="alice",
        script=script,
        paths=JobPaths(Path("/state/jobs/7")),
        workdir=Path(WORKDIR),
        home=Path(HOME),
        container=container,
        **kw,  # type: ignore[arg-type]
    )


def test_job_script_hands_the_script_over_on_fd3_never_in_argv(tmp_path: Path) -> None:
    rootfs = _tree(tmp_path / "img")
    script = "echo 'KAIC_SCRIPT_x'\nsecret-looking-line\n"
    container = Container(ResolvedImage("img", "rootfs", str(rootfs)), "bubblewrap")
    launcher = job_script(_spec(container, script), tool="/usr/bin/bwrap")
    (line,) = [x for x in launcher.splitlines() if x.startswith("/usr/bin/bwrap ")]
    assert "secret-looking-line" not in line
    delimiter = line.rsplit("3<<", 1)[1].removesuffix(" &").strip("'")
    assert line.endswith(f"-- bash /dev/fd/3 3<<'{delimiter}' &")
    assert f"{line}\n{script}{delimiter}\n" in launcher
    assert job_script(_spec(None, script)) == script  # no image: the script itself
    apptainer = Container(ResolvedImage("img", "sif", "/srv/x.sif"), "apptainer")
    first = job_script(_spec(apptainer, script)).splitlines()[0]
    assert first.startswith("exec apptainer exec --nv ") and first.endswith(
        "3<<'" + first.rsplit("'", 2)[1] + "'"
    )


def test_job_script_for_pyxis_reads_the_task_script_from_its_directory() -> None:
    container = Container(ResolvedImage("p", "registry", "nvcr.io#nvidia/pytorch"), "pyxis")
    spec = _spec(container, "echo hi\n")
    launcher = job_script(spec, script_file=f"/state/jobs/7_{ARRAY_TASK}/script.sh")
    # bash expands the task's index; nothing else is expanded
    done = subprocess.run(
        ["bash", "-c", 'srun() { printf "%s\\n" "$@"; }; ' + launcher.replace("exec ", "", 1)],
        env={**os.environ, "SLURM_ARRAY_TASK_ID": "3"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "--container-image=nvcr.io#nvidia/pytorch",
        f"--container-mounts={HOME}:{HOME},/state/jobs/7_3:/state/jobs/7_3:ro",
        f"--container-workdir={WORKDIR}",
        "--no-container-mount-home",
        "bash",
        "/state/jobs/7_3/script.sh",
    ]
