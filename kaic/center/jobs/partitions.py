"""The center's partitions: what one is, and the center's own from its settings.

Imports nothing of the center at run time: the settings and the executors' interface use
`PartitionConfig`, and the settings read the executor registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kaic.center.settings import CenterSettings

DEFAULT_PARTITION = "local"


@dataclass
class PartitionConfig:
    """One partition (queue) of the center: a pool of GPUs handed out exclusively."""

    name: str
    gpus: int = 0
    gpu_type: str | None = None
    #: the longest time limit a job may ask for (seconds); None = no limit
    max_time_seconds: int | None = None
    #: jobs that name no partition go to the default one (the first, if none is marked)
    default: bool = False


def configured_partitions(settings: CenterSettings) -> list[PartitionConfig]:
    """The partitions in order, exactly one marked default.

    With no `settings.partitions`: one partition `local` with `settings.gpus` GPUs of
    `settings.gpu_type` and no time limit.
    """
    if not settings.partitions:
        return [
            PartitionConfig(
                name=DEFAULT_PARTITION,
                gpus=settings.gpus,
                gpu_type=settings.gpu_type,
                max_time_seconds=None,
                default=True,
            )
        ]
    names = [p.name for p in settings.partitions]
    if len(set(names)) != len(names):
        raise ValueError(f"partition names must be unique: {names}")
    defaults = [p.name for p in settings.partitions if p.default]
    if len(defaults) > 1:
        raise ValueError(f"only one partition may be the default: {defaults}")
    default = defaults[0] if defaults else names[0]
    return [
        PartitionConfig(
            name=p.name,
            gpus=p.gpus,
            gpu_type=p.gpu_type,
            max_time_seconds=p.max_time_seconds,
            default=p.name == default,
        )
        for p in settings.partitions
    ]
