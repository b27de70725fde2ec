"""Partitions and GPUs as Slurm reports them (`/partitions`, `/nodes`), in the center's terms."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kaic.center.executors.slurm.records import SlurmNode, SlurmPartition
from kaic.center.jobs.partitions import PartitionConfig

#: node states whose GPUs are not free, whatever their GRES says
UNAVAILABLE = ("down", "drain", "fail", "unknown")


@dataclass
class Resources:
    """The last `/partitions` and `/nodes` answers, and when they came (None: never)."""

    partitions: list[SlurmPartition] = field(default_factory=list)
    nodes: list[SlurmNode] = field(default_factory=list)
    fetched_at: float | None = None


def partition_configs(
    partitions: Sequence[SlurmPartition], nodes: Sequence[SlurmNode]
) -> list[PartitionConfig]:
    """Slurm's partitions with their GPU totals and types (from their nodes' GRES); exactly
    one is the default (the first, if Slurm marks none)."""
    result: list[PartitionConfig] = []
    for part in partitions:
        members = [n for n in nodes if part.name in n.partitions]
        gpu_type = next((n.gpu_type for n in members if n.gpu_type), None)
        result.append(
            PartitionConfig(
                name=part.name,
                gpus=sum(n.gpus for n in members),
                gpu_type=gpu_type,
                max_time_seconds=part.max_time_minutes * 60
                if part.max_time_minutes is not None
                else None,
                default=part.default,
            )
        )
    if result and not any(p.default for p in result):
        result[0].default = True
    return result


def free_gpus(partitions: Sequence[SlurmPartition], nodes: Sequence[SlurmNode]) -> dict[str, int]:
    """Free GPUs per partition: on its nodes that are up, those not in use."""
    return {
        part.name: sum(
            max(0, n.gpus - n.gpus_used)
            for n in nodes
            if part.name in n.partitions and not any(bad in n.state for bad in UNAVAILABLE)
        )
        for part in partitions
    }
