"""Every example job file dry-runs on the local (embedded) center, as a user trying it on a
GPU workstation would (eight GPUs): valid, or — for what needs a multi-node center — with
exactly the problem that says so and names the fix."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli
from tests.unit.test_examples import EXAMPLES, JOB_FILES

#: the examples that cannot run on one machine, and the one problem their dry-run names
NEEDS_SEVERAL_NODES = {
    "torchrun/job.yaml": "asks for 2 nodes but the local executor runs jobs on at most 1 node "
    "(one machine: use a Slurm center, or nodes: 1)",
}


def test_every_example_dry_runs_on_the_local_center(isolated_dirs: Path) -> None:
    env = {**os.environ, "KAIC_LOCAL_GPUS": "8"}
    assert {str(p.relative_to(EXAMPLES)) for p in JOB_FILES} >= set(NEEDS_SEVERAL_NODES)
    for path in JOB_FILES:
        name = str(path.relative_to(EXAMPLES))
        expected = NEEDS_SEVERAL_NODES.get(name)
        res = run_cli("submit", str(path), "--dry-run", "--json", env=env, expect=None)
        doc = res.json()
        assert isinstance(doc, dict), res.stderr
        if expected is None:
            assert (res.code, doc["valid"], doc["problems"]) == (0, True, []), (name, doc)
        else:
            assert (res.code, doc["valid"], doc["problems"]) == (6, False, [expected]), name


def test_the_torchrun_example_dry_runs_on_one_node_when_asked(isolated_dirs: Path) -> None:
    env = {**os.environ, "KAIC_LOCAL_GPUS": "8"}
    path = EXAMPLES / "torchrun" / "job.yaml"
    doc = run_cli("submit", str(path), "--nodes", "1", "--dry-run", "--json", env=env).json()
    assert isinstance(doc, dict) and doc["valid"], doc
