"""Secrets on a real Slurm: the value reaches the job's environment (through the submit
request's environment, as every variable of a job does) and nowhere on the center's side —
not its database, its log, the job's batch script or any API answer."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import run_cli
from tests.slurm.conftest import SlurmCenter

VALUE = "wandb-SLURM-SECRET-0b7e4c21"


def test_a_secret_reaches_the_slurm_job_and_nothing_of_the_center(alice: SlurmCenter) -> None:
    run_cli("secret", "set", "wandb", "--stdin", input=VALUE)
    submitted = run_cli(
        "submit", "--wait", "--json", "--secret", "WANDB_API_KEY=wandb", "--",
        "bash", "-c", 'echo "key=$WANDB_API_KEY"',
    )  # fmt: skip
    job = submitted.json()
    assert isinstance(job, dict) and job["state"] == "COMPLETED", submitted.explain()
    job_id = job["id"]
    assert run_cli("logs", job_id).stdout == f"key={VALUE}\n"
    answers = [
        submitted.stdout,
        submitted.stderr,
        run_cli("show", job_id, "--json").stdout,
        run_cli("jobs", "--all", "--json").stdout,
        run_cli("secret", "list", "--json").stdout,
    ]
    for text in answers:
        assert VALUE not in text, text
    state = alice.center.state_dir
    job_output = {state / "jobs" / job_id / name for name in ("stdout", "stderr")}
    for dirpath, _, files in os.walk(state):
        for name in files:
            path = Path(dirpath) / name
            if path in job_output or path.is_symlink():
                continue
            assert VALUE.encode() not in path.read_bytes(), path
