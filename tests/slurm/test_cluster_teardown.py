"""The test cluster's teardown: what it kills is exactly its own jobs' leftovers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.slurm.cluster import SlurmCluster


def test_the_teardown_finds_only_this_clusters_leftover_job_processes(tmp_path: Path) -> None:
    cluster = SlurmCluster(tmp_path / "slurm")  # (not started: only its directory counts)
    conf = str(cluster.dir / "slurm.conf")
    spawned = {
        name: subprocess.Popen(["sleep", "60"], env={**os.environ, "SLURM_CONF": value})
        for name, value in (("mine", conf), ("other", conf + ".other"), ("none", ""))
    }
    try:
        found = cluster.leftover_job_processes()
        assert spawned["mine"].pid in found
        assert spawned["other"].pid not in found and spawned["none"].pid not in found
        assert os.getpid() not in found
    finally:
        for proc in spawned.values():
            proc.kill()
            proc.wait()
