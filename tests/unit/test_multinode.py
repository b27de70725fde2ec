"""Multi-node jobs, the parts that need no cluster: Slurm host lists as node names, the batch
script that starts one rank per node (run for real by `tests/slurm/test_multinode.py`), the
rendezvous values of a job on one node, and how `kaic logs` merges the ranks' lines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kaic.center.executors.base import JobPaths, LaunchSpec
from kaic.center.executors.rendezvous import (
    MASTER_PORT_BASE,
    MASTER_PORT_SPAN,
    master_port,
    one_node,
)
from kaic.center.executors.slurm.hostlist import expand_hostlist
from kaic.center.executors.slurm.submit import batch_script
from kaic.errors import UsageError
from kaic.flows.rank_logs import MAX_PENDING, LineWriter, log_sources


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("n[1-2]", ("n1", "n2")),
        ("gpu[01-03,07],login1", ("gpu01", "gpu02", "gpu03", "gpu07", "login1")),
        ("a[1-2]b[3-4]", ("a1b3", "a1b4", "a2b3", "a2b4")),
        ("localhost", ("localhost",)),
        ("", ()),
        (None, ()),
        ("(null)", ()),
        ("n[x-2]", ()),  # unparsable: no names rather than wrong ones
    ],
)
def test_host_lists_expand_to_node_names(text: str | None, names: tuple[str, ...]) -> None:
    assert expand_hostlist(text) == names


def _spec(tmp_path: Path, **kw: object) -> LaunchSpec:
    base: dict[str, object] = dict(
        job_id="42",
        name="train",
        user="alice",
        script="echo hi\n",
        paths=JobPaths(tmp_path / "jobs" / "42"),
        workdir=tmp_path,
        home=tmp_path,
        gpus=4,
        nodes=2,
    )
    base.update(kw)
    return LaunchSpec(**base)  # type: ignore[arg-type]


def test_a_multinode_batch_script_runs_one_rank_per_node(tmp_path: Path) -> None:
    script = batch_script(_spec(tmp_path))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "echo hi" not in script  # the script runs per rank, from its file
    assert "--nodes=2 --ntasks=2 --ntasks-per-node=1 --kill-on-bad-exit=1" in script
    assert f"kaic_out='{tmp_path}/jobs/42'" in script
    assert '--output="$kaic_out/stdout.%t" --error="$kaic_out/stderr.%t"' in script
    assert "KAIC_NNODES=2 KAIC_GPUS_PER_NODE=4" in script
    one = batch_script(_spec(tmp_path, nodes=1))
    assert "srun" not in one and one.endswith("echo hi\n")
    assert "KAIC_NNODES=1 KAIC_NODE_RANK=0 KAIC_GPUS_PER_NODE=4" in one


def test_an_array_of_multinode_tasks_finds_each_tasks_directory(tmp_path: Path) -> None:
    script = batch_script(_spec(tmp_path, array_tasks=(0, 1)))
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert f"kaic_dir='{tmp_path}/jobs/42_'\"${{SLURM_ARRAY_TASK_ID}}\"" in script


def test_a_percent_in_the_state_dir_is_no_slurm_pattern(tmp_path: Path) -> None:
    spec = _spec(tmp_path, paths=JobPaths(tmp_path / "50%" / "42"))
    script = batch_script(spec)
    assert f"kaic_out='{tmp_path}/50%%/42'" in script
    assert f"kaic_dir='{tmp_path}/50%/42'" in script


def test_the_failing_rank_decides_the_exit_code(tmp_path: Path) -> None:
    """The end of the batch script, run with a fake srun that behaves like the real one:
    rank 1 fails with 3, rank 0 is killed (143), srun exits 143."""
    job_dir = tmp_path / "jobs" / "42"
    job_dir.mkdir(parents=True)
    (job_dir / "script.sh").write_text('[ "$KAIC_NODE_RANK" = 1 ] && exit 3; exit 143\n')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    # Runs the ranks one after the other (1, then 0): the first to fail is rank 1.
    srun.write_text(
        "#!/bin/bash\n"
        'while [ "${1#--}" != "$1" ] || [ "$1" = "\\\\" ]; do shift; done\n'
        'for rank in 1 0; do SLURM_PROCID=$rank "$@"; done\n'
        "exit 143\n"
    )
    srun.chmod(0o755)
    script = batch_script(_spec(tmp_path))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n1"}
    done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 3, done.stderr
    assert "kaic: rank 1 exited with code 3; the other ranks were stopped" in done.stderr
    assert (job_dir / "failed_rank").read_text() == "1 3\n"
    # All ranks succeed: no stale failure from an earlier run counts.
    (job_dir / "script.sh").write_text("exit 0\n")
    srun.write_text(srun.read_text().replace("exit 143", "exit 0"))
    assert subprocess.run(["bash", "-c", script], env=env).returncode == 0


def test_one_node_rendezvous(tmp_path: Path) -> None:
    env = one_node(_spec(tmp_path, nodes=1, gpu_ids=(1, 3)), "gpu07")
    assert env == {
        "KAIC_NNODES": "1",
        "KAIC_NODE_RANK": "0",
        "KAIC_NODELIST": "gpu07",
        "KAIC_MASTER_ADDR": "127.0.0.1",
        "KAIC_MASTER_PORT": str(master_port(42)),
        "KAIC_GPUS_PER_NODE": "2",
    }
    ports = {master_port(n) for n in range(1000, 1000 + MASTER_PORT_SPAN)}
    assert len(ports) == MASTER_PORT_SPAN  # consecutive jobs never share one
    assert min(ports) == MASTER_PORT_BASE and max(ports) < 32768  # below ephemeral ports
    task = one_node(_spec(tmp_path, job_id="42_3"), "n")["KAIC_MASTER_PORT"]
    assert task == one_node(_spec(tmp_path, job_id="42_3"), "n")["KAIC_MASTER_PORT"]


def test_line_writer_prefixes_whole_lines() -> None:
    out: list[bytes] = []
    lines = LineWriter(out.append, b"[rank 1] ")
    lines(b"one\ntw")
    lines(b"o\r\nthree\rfour")
    assert out == [b"[rank 1] one\n", b"[rank 1] two\r\n[rank 1] three\r"]
    lines.flush()
    assert out[-1] == b"[rank 1] four"
    lines(b" more\n")  # the rest of a line already shown carries no second prefix
    assert out[-1] == b" more\n"
    out.clear()
    lines(b"x" * MAX_PENDING)  # a line that never ends is not held back for ever
    assert out == [b"[rank 1] " + b"x" * MAX_PENDING]


def test_log_sources(tmp_path: Path) -> None:
    out: list[bytes] = []
    writers = {"stdout": out.append, "stderr": out.append}
    single, _ = log_sources("7", 1, writers, node=None, prefix=True)
    assert [(c.stream, c.node) for c, _ in single] == [("stdout", None), ("stderr", None)]
    merged, finish = log_sources("7", 2, {"stdout": out.append}, node=None, prefix=True)
    assert [c.node for c, _ in merged] == [None, 0, 1]
    merged[2][1](b"partial")
    finish()
    assert out == [b"[rank 1] partial"]
    (one,) = log_sources("7", 2, {"stdout": out.append}, node=1, prefix=False)[0]
    assert one[0].node == 1
    with pytest.raises(UsageError, match="has no rank 2"):
        log_sources("7", 2, writers, node=2, prefix=True)
