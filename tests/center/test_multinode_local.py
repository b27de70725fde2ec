"""Multi-node jobs on the local center: refused with the fix named (one machine), a job's
one-rank rendezvous variables and node name, and the logs route's `node` on a one-node job."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from kaic.center.executors.rendezvous import master_port

from .conftest import assert_error
from .jobs_support import JobsCenter, jobs_center

REFUSAL = (
    "asks for 2 nodes but the local executor runs jobs on at most 1 node "
    "(one machine: use a Slurm center, or nodes: 1)"
)


@pytest.fixture
def center(tmp_path: Path) -> Iterator[JobsCenter]:
    with jobs_center(tmp_path, gpus=2) as c:
        yield c


def test_the_local_executor_refuses_several_nodes_naming_the_fix(center: JobsCenter) -> None:
    job = {"run": "true", "resources": {"nodes": 2}}
    error = assert_error(center.post("/v1/jobs", json=job), 422, "invalid_job")
    assert REFUSAL in error["message"]
    dry = center.post("/v1/jobs", params={"dry_run": "true"}, json=job).json()
    assert (dry["valid"], dry["problems"]) == (False, [REFUSAL])


def test_a_one_node_job_is_rank_0_of_1(center: JobsCenter) -> None:
    job = center.submit(
        'echo "$KAIC_NNODES $KAIC_NODE_RANK $KAIC_NODELIST $KAIC_MASTER_ADDR'
        ' $KAIC_MASTER_PORT $KAIC_GPUS_PER_NODE"',
        resources={"gpus": 2},
    )
    done = center.wait_done(job["id"])
    host = socket.gethostname()
    assert done["nodes"] == [host]
    port = master_port(int(job["id"]))
    assert center.stdout(job["id"]) == f"1 0 {host} 127.0.0.1 {port} 2\n"
    # Its one rank's log is its own log; there is no other rank.
    assert center.logs(job["id"], node=0).content == center.logs(job["id"]).content
    error = assert_error(center.logs(job["id"], node=1), 404, "not_found")
    assert error["message"] == f"job {job['id']} has no rank 1: it runs on one node (rank 0)"
    assert_error(center.logs(job["id"], node=-1), 422, "invalid_request")
