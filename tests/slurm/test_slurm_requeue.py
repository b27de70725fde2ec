"""Requeue after a real node failure on Slurm: the node is set DOWN under a running job
(`scontrol update nodename=localhost state=down`), Slurm ends the job NODE_FAIL, and the kaic
center runs it again — the same kaic id, attempt 2, a new Slurm job — once the node is back.

On a cluster of its own (its own munged, slurmctld, slurmd, slurmrestd, stopped by PID at
the end): taking the node down would kill the shared cluster's jobs. The node is resumed
whatever happens.

Slurm 22.05's slurmrestd (v0.0.38) submits every batch job requeueable, whatever the center
asks, so Slurm requeues the job itself after the node failure; the center cancels that
run in Slurm and records the NODE_FAIL, and the job's `retry:` decides (here: run again).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import poll, run_cli, start_center
from tests.slurm.cluster import JOB_USER, SlurmCluster, missing_binaries
from tests.slurm.conftest import PROJECT, USER, SlurmCenter, _unavailable

#: the first run marks the workdir and sleeps (its node fails); the second completes
SCRIPT = (
    "if [ -e first-done ]; then echo second; exit 0; fi; touch first-done; echo first; sleep 300"
)


def resume(cluster: SlurmCluster) -> None:
    cluster.run("scontrol", "update", "nodename=localhost", "state=resume", timeout=10)


@pytest.fixture(scope="module")
def requeue_center() -> Iterator[SlurmCenter]:
    missing = missing_binaries()
    if missing:
        _unavailable(f"missing {', '.join(missing)}")
    if os.geteuid() != 0:
        _unavailable("must run as root (munged/slurmd users, jobs as a unix account)")
    from kaic.center.store import Store
    from tests.center.jobs_support import mint_token

    base = Path(tempfile.mkdtemp(prefix="kaic-slurm-requeue-"))
    base.chmod(0o711)
    cluster = SlurmCluster(base / "slurm")
    try:
        cluster.start()
        state = Path(tempfile.mkdtemp(prefix="center-", dir=base))
        center = start_center(
            state,
            "--executor", "slurm",
            "--slurmrestd", cluster.url,
            "--slurm-poll-interval", "0.5",
            env={"KAIC_SLURM_JWT": cluster.token, "SLURM_CONF": cluster.env["SLURM_CONF"]},
        )  # fmt: skip
        try:
            center.add_user(USER, "correct horse battery staple", unix_account=JOB_USER)
            center.add_project(PROJECT, 5000, [USER])
            store = Store(state)
            try:
                token = mint_token(store, USER)
            finally:
                store.close()
            yield SlurmCenter(center, cluster, token)
        finally:
            center.stop(kill_jobs=False)
    finally:
        with contextlib.suppress(Exception):
            cluster.run("scancel", "--user", JOB_USER, timeout=10)
        with contextlib.suppress(Exception):
            resume(cluster)
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def job_json(job_id: str) -> dict[str, Any]:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return doc


def test_a_node_failure_requeues_the_job_as_the_same_id(
    requeue_center: SlurmCenter, isolated_dirs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIC_TOKEN", requeue_center.token)
    monkeypatch.setenv("KAIC_CENTER", requeue_center.url)
    cluster = requeue_center.cluster
    job_id = run_cli("submit", "--retry", "NODE_FAIL:1", "--", "bash", "-c", SCRIPT).stdout
    job_id = job_id.strip()
    poll(lambda: run_cli("logs", job_id).stdout == "first\n", timeout=60, what="attempt 1")
    cluster.run("scontrol", "update", "nodename=localhost", "state=down", "reason=kaic-test")
    try:
        try:
            poll(lambda: job_json(job_id)["attempt"] == 2, timeout=60, what="the requeue")
        except AssertionError:
            slurm = cluster.run("scontrol", "show", "job", timeout=10).stdout
            raise AssertionError(f"{job_json(job_id)}\n{slurm}\n{cluster.logs()}") from None
    finally:
        resume(cluster)
    (done,) = run_cli("wait", job_id, "--json").json()  # type: ignore[misc,has-type]
    assert (done["id"], done["state"], done["attempt"]) == (job_id, "COMPLETED", 2)
    assert run_cli("logs", job_id, "--attempt", "1").stdout == "first\n"
    assert run_cli("logs", job_id).stdout == "second\n"
    events = [e["message"] for e in run_cli("show", job_id, "--json").json()["events"]]  # type: ignore[index]
    assert any(m.startswith("attempt 1 ended NODE_FAIL") for m in events), events
    assert any(m.startswith("attempt 2 of 2 after NODE_FAIL") for m in events), events
    submitted = [m for m in events if m.startswith("submitted to slurm as job")]
    assert len(submitted) == 2 and submitted[0] != submitted[1], events
