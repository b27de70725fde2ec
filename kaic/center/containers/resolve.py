"""What a job's `image:` names: an entry of the operator's catalogue, or a path on the user's
own storage — resolved by the one storage rule (`kaic.center.storage`), so it cannot lead
out of the user's root — and whether the center's runtime can run it.

The check runs at dry-run and submit (a problem naming `kaic images`) and again when the job
starts (the catalogue or the user's files may have changed meanwhile). The runtime itself is
started as the job's account, so it can read nothing of the image the job could not.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from kaic.center.containers.catalogue import (
    PATH_STARTS,
    CatalogueError,
    find,
    load_catalogue,
)
from kaic.center.containers.spec import ResolvedImage
from kaic.center.executors.base import ExecutorError
from kaic.center.storage import Outside, StorageRoot
from kaic.models.images import ImageFormat

logger = logging.getLogger("kaic.center.images")

#: the first bytes of a squashfs image (enroot's `.sqsh`, Apptainer's old format)
SQUASHFS_MAGIC = b"hsqs"
#: a SIF file's magic, at offset 32 (after the launch line `#!/usr/bin/env run-singularity`)
SIF_MAGIC = b"SIF_MAGIC"
SIF_MAGIC_OFFSET = 32


class ImageRejected(ExecutorError):
    """A job's image that cannot be run; the message says why and names the fix (a problem
    at dry-run and submit, the job's reason when it fails at start)."""


def image_format(path: str) -> ImageFormat | None:
    """What the file or directory `path` holds: "rootfs" (a directory with `/bin/sh`), "sif",
    "squashfs"; None when it is none of those.

    The path is the user's and the center may be root: it is opened without following a
    link (one swapped in after the storage rule resolved it) and without blocking (a FIFO
    would hold the center's thread forever), and only a directory or a regular file is
    looked into."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            shells = ("bin/sh", "usr/bin/sh")
            real = f"/proc/self/fd/{fd}"
            return "rootfs" if any(os.path.lexists(os.path.join(real, s)) for s in shells) else None
        if not stat.S_ISREG(mode):
            return None
        head = os.pread(fd, SIF_MAGIC_OFFSET + len(SIF_MAGIC), 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    if head.startswith(SQUASHFS_MAGIC):
        return "squashfs"
    if head[SIF_MAGIC_OFFSET:] == SIF_MAGIC:
        return "sif"
    return None


def _path_image(home: Path, ref: str) -> ResolvedImage:
    try:
        real = StorageRoot(home).follow(ref)
    except Outside as exc:
        raise ImageRejected(
            f"image {ref!r} {exc}; push the image there (`kaic data push`) or pick one of "
            "`kaic images`"
        ) from None
    if not os.path.lexists(real):
        raise ImageRejected(
            f"image {ref!r} does not exist on your storage; push it first "
            "(`kaic data push ./rootfs images/NAME`) or pick one of `kaic images`"
        )
    found = image_format(real)
    if found is None:
        raise ImageRejected(
            f"image {ref!r} is not an image (an unpacked root filesystem with /bin/sh, a SIF "
            "or a squashfs file); see `kaic images` for the center's images"
        )
    return ResolvedImage(reference=ref, format=found, location=real)


def resolve_image(
    catalogue: Path | None, home: Path, ref: str, formats: tuple[str, ...]
) -> ResolvedImage:
    """The image `ref` names for a job whose storage home is `home`, runnable by a runtime
    that takes `formats`; ImageRejected saying why not (and what to do instead)."""
    try:
        entries = load_catalogue(catalogue)
    except CatalogueError as exc:
        logger.warning("image catalogue: %s", exc)  # the operator's paths stay in the log
        raise ImageRejected(
            "the center's image catalogue cannot be read; tell its operator (its log says why)"
        ) from None
    entry = find(entries, ref)
    if entry is not None:
        image = ResolvedImage(reference=ref, format=entry.format, location=entry.location)
    elif ref.startswith(PATH_STARTS):
        image = _path_image(home, ref)
    else:
        offered = ", ".join(e.reference for e in entries) or "none"
        raise ImageRejected(
            f"unknown image {ref!r} (the center offers: {offered}); see `kaic images`, or "
            "name an image on your storage by its path (`~/images/NAME`)"
        )
    if image.format not in formats:
        raise ImageRejected(
            f"image {ref!r} is a {image.format} image, which this center's container runtime "
            f"does not run (it runs: {', '.join(formats)}); see `kaic images`"
        )
    return image
