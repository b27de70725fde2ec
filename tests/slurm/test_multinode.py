"""Multi-node jobs end to end on a real two-node Slurm on this machine (`n1`, `n2`), through
the real CLI and center: one rank per node with the `KAIC_*` rendezvous variables, the ranks
meeting over TCP, a failing rank failing the job with its own code and stopping the others,
per-rank logs (merged with `[rank N]`, one with `--node`, followed losslessly)."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from kaic.center.executors.rendezvous import MASTER_PORT_BASE, MASTER_PORT_SPAN
from tests.helpers import poll, run_cli
from tests.slurm.conftest import PROJECT, SlurmCenter
from tests.terminal import run_on_terminal

RENDEZVOUS = Path(__file__).with_name("rendezvous.py")
#: the system's Python: jobs run as kaicslurm, who may not reach the test run's virtualenv
PYTHON = "/usr/bin/python3"


def job_json(job_id: str) -> dict[str, Any]:
    doc = run_cli("show", job_id, "--json").json()
    assert isinstance(doc, dict)
    return doc


def gpu_hours_used() -> float:
    projects = run_cli("usage", "--json").json()
    assert isinstance(projects, list)
    (project,) = [p for p in projects if p["name"] == PROJECT]
    return float(project["gpu_hours_used"])


def test_ranks_meet_using_only_the_kaic_variables(alice_2n: SlurmCenter) -> None:
    before = gpu_hours_used()
    res = run_cli(
        "submit", "--nodes", "2", "--gpus", "1", "--wait", "--json",
        "--", "bash", "-c", f"{PYTHON} {RENDEZVOUS} && sleep 3",
    )  # fmt: skip
    job = res.json()
    assert isinstance(job, dict)
    assert (job["state"], job["exit_code"]) == ("COMPLETED", 0), res.stderr
    assert job["nodes"] == ["n1", "n2"]
    # Charged for one GPU on each of two nodes, by Slurm's own times (whole seconds; the
    # job's started_at may be when the center first saw it running, up to a poll later).
    ran = (_time(job["ended_at"]) - _time(job["started_at"])).total_seconds()
    charged = (gpu_hours_used() - before) * 3600
    assert 2 * ran - 0.01 <= charged <= 2 * (ran + 2), (charged, ran)
    out = run_cli("logs", job["id"], "--prefix").stdout
    assert "[rank 0] rank 0 got value-of-rank-1\n" in out
    assert "[rank 1] rank 1 got value-of-rank-0\n" in out
    heads = re.findall(r"\[rank (\d)\] rank \1 of 2: nodelist=n1,n2 master=(\S+):(\d+) "
                       r"gpus_per_node=1\n", out)  # fmt: skip
    assert sorted(rank for rank, _, _ in heads) == ["0", "1"], out
    (master,) = {(addr, port) for _, addr, port in heads}  # both ranks were told the same
    assert MASTER_PORT_BASE <= int(master[1]) < MASTER_PORT_BASE + MASTER_PORT_SPAN


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_dry_run_counts_gpus_on_every_node(alice_2n: SlurmCenter) -> None:
    """GPUs are per node: 1 GPU on 2 nodes for an hour is 2 GPU-hours; 3 on 2 nodes is more
    than the cluster's 4."""
    ask = ("submit", "--nodes", "2", "--time", "1h", "--dry-run", "--json")
    fits = run_cli(*ask, "--gpus", "1", "--", "true").json()
    assert isinstance(fits, dict)
    assert (fits["valid"], fits["estimated_gpu_hours"]) == (True, 2.0), fits
    too_many = run_cli(*ask, "--gpus", "3", "--", "true", expect=6).json()
    assert isinstance(too_many, dict)
    assert too_many["problems"] == [
        "asks for 3 GPUs on each of 2 nodes but partition 'debug' has 4 in all"
    ]


def test_a_multinode_job_in_an_image_is_refused_not_run_outside_it(alice_2n: SlurmCenter) -> None:
    """Ranks are started per node by srun, outside the image launcher: until they run in
    the image, such a job is refused, never run outside its image."""
    ask = ("submit", "--nodes", "2", "--image", "~/images/x", "--dry-run", "--json")
    refused = run_cli(*ask, "--", "true", expect=6).json()
    assert isinstance(refused, dict)
    assert "a multi-node job cannot run in an image yet" in " ".join(refused["problems"])


def test_a_failing_rank_fails_the_job_with_its_code_and_stops_the_others(
    alice_2n: SlurmCenter,
) -> None:
    marker = f"kaic-rank0-{os.getpid()}"
    stopped = Path(f"/tmp/{marker}.stopped")  # (rank 0 runs as alice on this machine)
    stopped.unlink(missing_ok=True)
    # Rank 1 fails once rank 0 has its trap set (a fixed second was not enough when CI was
    # busy: rank 0 started later and was stopped before it could say so).
    script = (
        'if [ "$KAIC_NODE_RANK" = 1 ]; then\n'
        f"  for i in $(seq 300); do [ -e {marker}.ready ] && break; sleep 0.1; done\n"
        '  echo "rank 1 fails" >&2; exit 3\n'
        "fi\n"
        # The trap forks nothing (a redirection, not `touch`): a step less for a busy
        # machine to delay. (Probed here: a trap that worked for 2.4 s after the TERM still
        # finished, KillWait being 2 s; why a CI run once saw no trap at all is not known.)
        f"trap ': > {stopped}; echo \"rank 0 stopped\"; exit 143' TERM\n"
        f"exec -a {marker} sleep 300 &\n"
        f"touch {marker}.ready\n"
        "wait\n"
    )
    res = run_cli("submit", "--nodes", "2", "--wait", "--", "bash", "-c", script, expect=3)
    job_id = res.stdout.strip()
    job = job_json(job_id)
    assert (job["state"], job["exit_code"]) == ("FAILED", 3)
    out = run_cli("logs", job_id, "--prefix")
    assert "[rank 1] rank 1 fails\n" in out.stderr
    assert "kaic: rank 1 exited with code 3; the other ranks were stopped\n" in out.stderr
    # Rank 0 got TERM (not a KILL) and ran its trap — possibly a moment after the job
    # ended: srun returns once it has signalled the step. (Whether the trap's line still
    # reaches the log then is a race with the step's output closing: a busy CI lost it.)
    try:
        poll(stopped.exists, timeout=20, every=0.2, what="rank 0's TERM trap")
    finally:
        stopped.unlink(missing_ok=True)
    # Nothing of rank 0 outlives the job (its `sleep` got the TERM too).
    poll(lambda: not _processes_named(marker), timeout=30)


def _processes_named(name: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().split(b"\0")[0] == name.encode():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_rank_logs_merged_with_prefix_or_one_rank(alice_2n: SlurmCenter) -> None:
    script = 'echo "out of rank $KAIC_NODE_RANK"; echo "err of rank $KAIC_NODE_RANK" >&2'
    res = run_cli("submit", "--nodes", "2", "--wait", "--", "bash", "-c", script)
    job_id = res.stdout.strip()
    merged = run_cli("logs", job_id, "--prefix")
    assert sorted(merged.stdout.splitlines()) == [
        "[rank 0] out of rank 0",
        "[rank 1] out of rank 1",
    ]
    assert sorted(merged.stderr.splitlines()) == [
        "[rank 0] err of rank 0",
        "[rank 1] err of rank 1",
    ]
    # Piped, the default is no prefix; on a terminal, the prefix.
    plain = run_cli("logs", job_id, "--stream", "stdout")
    assert sorted(plain.stdout.splitlines()) == ["out of rank 0", "out of rank 1"]
    shown = run_on_terminal("logs", job_id, "--stream", "stdout")
    assert shown.code == 0, shown.explain()
    assert sorted(shown.text.splitlines()) == ["[rank 0] out of rank 0", "[rank 1] out of rank 1"]
    one = run_cli("logs", job_id, "--node", "1")
    assert (one.stdout, one.stderr) == ("out of rank 1\n", "err of rank 1\n")
    bad = run_cli("logs", job_id, "--node", "2", expect=2)
    assert "has no rank 2" in bad.stderr and "--node takes ranks 0-1" in bad.stderr


def test_following_two_ranks_gets_every_line_once(alice_2n: SlurmCenter) -> None:
    lines = 400
    script = (
        f'for i in $(seq 0 {lines - 1}); do echo "r$KAIC_NODE_RANK line $i"; '
        "if [ $((i % 50)) = 0 ]; then sleep 0.2; fi; done"
    )
    job_id = run_cli("submit", "--nodes", "2", "--", "bash", "-c", script).stdout.strip()
    followed = run_cli("logs", "-f", job_id, "--prefix", "--stream", "stdout").stdout
    for rank in (0, 1):
        mine = [line for line in followed.splitlines() if line.startswith(f"[rank {rank}] ")]
        assert mine == [f"[rank {rank}] r{rank} line {i}" for i in range(lines)]
    assert len(followed.splitlines()) == 2 * lines


def test_every_node_of_a_multinode_job_is_sampled(alice_2n: SlurmCenter) -> None:
    """Each rank starts the metrics sampler on its own node: the job's metrics name both."""
    import json

    from tests.center.metrics_support import fake_nvml_env
    from tests.slurm.test_slurm_metrics import job_metrics

    trace = alice_2n.center.state_dir.parent / f"trace-2n-{os.getpid()}.json"
    trace.write_text(json.dumps({"gpus": 2, "utilization": {"0": [30], "1": [30]}}))
    trace.chmod(0o644)
    env = [f"--env={k}={v}" for k, v in fake_nvml_env(trace).items()]
    job_id = run_cli("submit", "--nodes", "2", "--gpus", "1", *env, "--", "sleep", "60")
    job = job_id.stdout.strip()
    try:
        nodes = poll(
            lambda: (
                (n := {s["node"] for s in job_metrics(alice_2n, job)["samples"]}) >= {"n1", "n2"}
                and n
            ),
            timeout=60,
        )
        assert nodes == {"n1", "n2"}
    finally:
        run_cli("cancel", job)
        trace.unlink()
