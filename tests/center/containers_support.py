"""Images for container tests: a minimal root filesystem from `busybox-static`, and whether
bubblewrap runs here (CI installs both: `.ci/run`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.helpers import unavailable

#: a file only the test image has: a job that reads it ran in the image
MARKER = "kaic-test-image"
MARKER_TEXT = "inside the busybox image\n"
_APPLETS = (
    "sh", "cat", "echo", "ls", "id", "sleep", "kill", "pwd", "env", "touch", "test",
    "mkdir", "rm", "true", "false", "printf", "grep", "head", "tail", "wc", "stat",
)  # fmt: skip


def _dynamic(path: str) -> bool:
    """Whether the 64-bit ELF at `path` names a program interpreter (PT_INTERP)."""
    with open(path, "rb") as handle:
        head = handle.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return True
        phoff, phentsize, phnum = (
            int.from_bytes(head[32:40], "little"),
            int.from_bytes(head[54:56], "little"),
            int.from_bytes(head[56:58], "little"),
        )
        handle.seek(phoff)
        headers = handle.read(phentsize * phnum)
    return any(
        int.from_bytes(headers[i * phentsize : i * phentsize + 4], "little") == 3
        for i in range(phnum)
    )


def busybox_path() -> str:
    """The static busybox binary (`apt-get install busybox-static`)."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(candidate) and not _dynamic(candidate):
            return candidate
    unavailable("a static busybox is needed for image tests (apt-get install busybox-static)")


def make_rootfs(root: Path) -> Path:
    """A minimal image at `root`: busybox and its applets in /bin, a `bash` that is busybox's
    shell (jobs run their script with `bash`), /etc/passwd, and the marker file."""
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "usr" / "bin").mkdir(parents=True)
    shutil.copy2(busybox_path(), root / "bin" / "busybox")
    for applet in _APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    (root / "bin" / "bash").write_text('#!/bin/sh\nexec /bin/sh "$@"\n')
    (root / "bin" / "bash").chmod(0o755)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / MARKER).write_text(MARKER_TEXT)
    for path in (root, *root.rglob("*")):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path.parent.name == "bin" else 0o644)
    return root


def require_bwrap() -> str:
    """bwrap's path, when it runs here (the sandbox may refuse user namespaces)."""
    tool = shutil.which("bwrap")
    if tool is None:
        unavailable("bubblewrap is needed for container tests (apt-get install bubblewrap)")
    done = subprocess.run(
        [tool, "--ro-bind", "/", "/", "--unshare-pid", "--", "/bin/true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        unavailable(f"bwrap does not run here: {done.stderr.strip()}")
    return tool
