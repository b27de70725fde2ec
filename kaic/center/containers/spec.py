"""A job's container as the launch carries it (`LaunchSpec.container`): the resolved image,
the runtime that runs it and the device nodes it gets. No imports of the center: the
executors' interface refers to it."""

from __future__ import annotations

from dataclasses import dataclass

from kaic.models.images import ImageFormat


@dataclass(frozen=True)
class ResolvedImage:
    """A job's image as the runtime gets it."""

    #: what the job named (`pytorch:24.10`, `~/images/busybox`)
    reference: str
    format: ImageFormat
    #: a path on the nodes (rootfs, sif, squashfs) or a registry reference
    location: str


@dataclass(frozen=True)
class Container:
    """How one job runs in an image: which image, which runtime (a name of
    `containers.runtimes.RUNTIME_NAMES`) and which device nodes (globs) it passes through."""

    image: ResolvedImage
    runtime: str
    device_globs: tuple[str, ...] = ()
