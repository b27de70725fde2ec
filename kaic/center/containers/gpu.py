"""GPU pass-through for runtimes that do not do it themselves (bubblewrap), the way
Apptainer's `--nv` does: the device nodes, and the driver's user-space libraries and tools
found the way `nvliblist.conf` lists them, looked up in the dynamic linker's cache
(`ldconfig -p`) and on PATH, bound read-only into the image under `/.kaic/nvidia`.

Without an NVIDIA driver on the host there is nothing to find and nothing is bound; jobs
keep seeing only the GPUs `CUDA_VISIBLE_DEVICES` names, as without an image.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from dataclasses import dataclass

#: device nodes passed through by default (the driver's; `--container-devices` adds others)
DEFAULT_DEVICE_GLOBS = ("/dev/nvidia*", "/dev/nvidia-caps/*")
#: where the driver's libraries and tools appear inside the image
LIB_DIR = "/.kaic/nvidia/lib"
BIN_DIR = "/.kaic/nvidia/bin"

#: the driver's user-space libraries (after Apptainer's `nvliblist.conf`): a library is bound
#: under each of its sonames that starts with one of these
DRIVER_LIBRARIES = (
    "libcuda.so",
    "libcudadebugger.so",
    "libnvidia-allocator.so",
    "libnvidia-cfg.so",
    "libnvidia-compiler.so",
    "libnvidia-eglcore.so",
    "libnvidia-encode.so",
    "libnvidia-fatbinaryloader.so",
    "libnvidia-glcore.so",
    "libnvidia-gpucomp.so",
    "libnvidia-ml.so",
    "libnvidia-nvvm.so",
    "libnvidia-opencl.so",
    "libnvidia-opticalflow.so",
    "libnvidia-pkcs11.so",
    "libnvidia-ptxjitcompiler.so",
    "libnvidia-rtcore.so",
    "libnvcuvid.so",
    "libnvoptix.so",
)
#: the driver's tools (nvliblist.conf's binaries)
DRIVER_TOOLS = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)


@dataclass(frozen=True)
class GpuPassThrough:
    """What to bind into an image for its GPUs: device nodes (at their own paths), and
    driver files as (host path, path inside)."""

    devices: tuple[str, ...] = ()
    libraries: tuple[tuple[str, str], ...] = ()
    tools: tuple[tuple[str, str], ...] = ()


def device_nodes(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The existing paths the glob `patterns` match, sorted, each once."""
    found = {path for pattern in patterns for path in glob.glob(pattern)}
    return tuple(sorted(p for p in found if not os.path.isdir(p)))


def driver_libraries(ldconfig_output: str) -> tuple[tuple[str, str], ...]:
    """(host path, path inside) of the driver's libraries in `ldconfig -p`'s output, native
    (64-bit) entries only, each soname once."""
    found: dict[str, str] = {}
    for line in ldconfig_output.splitlines():
        name, arrow, path = line.strip().partition(" => ")
        if not arrow:
            continue
        soname, _, flags = name.partition(" ")
        if "x86-64" not in flags and "64bit" not in flags and "AArch64" not in flags:
            continue
        if soname.startswith(DRIVER_LIBRARIES) and soname not in found:
            found[soname] = path.strip()
    return tuple((path, f"{LIB_DIR}/{soname}") for soname, path in sorted(found.items()))


def _ldconfig() -> str:
    tool = shutil.which("ldconfig", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if tool is None:
        return ""
    try:
        done = subprocess.run(
            [tool, "-p"], capture_output=True, text=True, timeout=10, env={"LANG": "C"}
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def driver_tools(search_path: str = "/usr/bin:/bin:/usr/sbin:/sbin") -> tuple[tuple[str, str], ...]:
    """(host path, path inside) of the driver's tools found on `search_path`."""
    found = ((tool, shutil.which(tool, path=search_path)) for tool in DRIVER_TOOLS)
    return tuple((path, f"{BIN_DIR}/{tool}") for tool, path in found if path)


def gpu_pass_through(device_globs: tuple[str, ...]) -> GpuPassThrough:
    """What this host offers its jobs' images; the driver's files only when it has a GPU
    device node (no driver, nothing to look for)."""
    devices = device_nodes(device_globs)
    if not any(os.path.basename(d).startswith("nvidia") for d in devices):
        return GpuPassThrough(devices=devices)
    return GpuPassThrough(
        devices=devices, libraries=driver_libraries(_ldconfig()), tools=driver_tools()
    )
