"""The center's partitions, from the settings."""

from __future__ import annotations

from kaic.center.settings import CenterSettings, PartitionConfig

DEFAULT_PARTITION = "local"


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
