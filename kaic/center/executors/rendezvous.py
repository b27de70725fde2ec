"""The rendezvous variables of a job: where it stands among its nodes and where its ranks
meet, so that `torchrun --nnodes=$KAIC_NNODES --node_rank=$KAIC_NODE_RANK
--master_addr=$KAIC_MASTER_ADDR --master_port=$KAIC_MASTER_PORT` works for every job.

A multi-node job gets them per rank from its batch script (`slurm/ranks.py`); a job on one
node gets the one-rank values here: rank 0 of 1, meeting itself on 127.0.0.1.

`KAIC_MASTER_PORT` is fixed per job — `MASTER_PORT_BASE + number % MASTER_PORT_SPAN`, the
number being the job's (Slurm: its Slurm job id) — below Linux's ephemeral ports (32768+), so
that two jobs sharing a node do not pick the same port unless their numbers are a multiple
of `MASTER_PORT_SPAN` apart.
"""

from __future__ import annotations

import zlib

from kaic.center.executors.base import LaunchSpec

MASTER_PORT_BASE = 20000
MASTER_PORT_SPAN = 10000


def master_port(number: int) -> int:
    """The `KAIC_MASTER_PORT` of the job numbered `number`."""
    return MASTER_PORT_BASE + number % MASTER_PORT_SPAN


def job_number(job_id: str) -> int:
    """A kaic job id as a number: itself ("42"), or a stable hash (an array task, "42_3")."""
    return int(job_id) if job_id.isdigit() else zlib.crc32(job_id.encode())


def one_node(spec: LaunchSpec, node: str) -> dict[str, str]:
    """The variables of a job that runs on one node, `node`, with GPUs known at start."""
    return {
        "KAIC_NNODES": "1",
        "KAIC_NODE_RANK": "0",
        "KAIC_NODELIST": node,
        "KAIC_MASTER_ADDR": "127.0.0.1",
        "KAIC_MASTER_PORT": str(master_port(job_number(spec.job_id))),
        "KAIC_GPUS_PER_NODE": str(len(spec.gpu_ids) or spec.gpus),
    }
