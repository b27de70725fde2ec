"""A job file's `inputs` are pushed before submit and its `outputs` pulled after `--wait`.

The staging tests use a real OpenSSH sshd trusting the center's user CA (see
test_ssh_login.py): skipped without root and openssh-server, failed when `CI=true`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from kaic.center.admin import add_project
from tests.e2e.test_login import login
from tests.e2e.test_ssh_login import PASSWORD, staging  # noqa: F401  (a fixture)
from tests.helpers import RunningCenter, run_cli, start_center
from tests.sshd import RunningSshd

JOB = """\
name: staged
time_limit: 5m
inputs:
  - {from: data, to: ~/e2e-in}
outputs:
  - {from: ~/e2e-out, to: results}
run: |
  set -e
  mkdir -p ~/e2e-out
  sha256sum ~/e2e-in/big.bin | cut -d' ' -f1 > ~/e2e-out/sum.txt
  cp ~/e2e-in/sub/note.txt ~/e2e-out/note.txt
  exit ${EXIT:-0}
"""


def _project(tmp_path: Path, body: str = JOB) -> Path:
    """A job file in its own directory with a `data` tree beside it."""
    proj = tmp_path / "proj"
    (proj / "data" / "sub").mkdir(parents=True)
    (proj / "data" / "big.bin").write_bytes(bytes(range(256)) * 4096 + b"tail")
    (proj / "data" / "sub" / "note.txt").write_text("héllo\n")
    (proj / "data" / "empty").write_bytes(b"")
    job = proj / "job.yaml"
    job.write_text(body)
    return job


def _jobs(**kw: object) -> list[dict]:  # type: ignore[type-arg]
    return run_cli("jobs", "--all", "--json", **kw).json()  # type: ignore[return-value,arg-type]


def test_inputs_staged_and_outputs_fetched(
    staging: tuple[RunningCenter, RunningSshd],  # noqa: F811
    tmp_path: Path,
) -> None:
    center, _sshd = staging
    add_project(center.state_dir, "p1", gpu_hours=100, members=["alice"])
    login(center, "alice", PASSWORD)
    job = _project(tmp_path)
    data = job.parent / "data"

    # From another directory: the job file's relative paths start at its own directory.
    res = run_cli("submit", str(job), "--wait", "--json", cwd=tmp_path)
    doc = res.json()
    assert doc["state"] == "COMPLETED", res.explain()  # type: ignore[index]
    (staged_in,) = doc["inputs"]  # type: ignore[index]
    assert staged_in["from"] == "data" and staged_in["to"] == "~/e2e-in"
    assert staged_in["files_transferred"] == 3 and staged_in["verified"] is True
    (fetched,) = doc["outputs"]  # type: ignore[index]
    assert fetched["files_transferred"] == 2 and "error" not in fetched
    results = job.parent / "results"
    want = hashlib.sha256((data / "big.bin").read_bytes()).hexdigest()
    assert (results / "sum.txt").read_text().strip() == want
    assert (results / "note.txt").read_text() == "héllo\n"
    assert "Staging input data -> ~/e2e-in" in res.stderr

    # Unchanged inputs are not sent again; a failing job still gets its outputs fetched and
    # the job's own exit code wins.
    (results / "note.txt").unlink()
    res = run_cli("submit", str(job), "--env", "EXIT=3", "--wait", "--json", cwd=tmp_path, expect=3)
    doc = res.json()
    assert doc["state"] == "FAILED" and doc["exit_code"] == 3  # type: ignore[index]
    assert doc["inputs"][0]["files_transferred"] == 0  # type: ignore[index]
    assert doc["inputs"][0]["files_skipped"] == 3  # type: ignore[index]
    assert doc["outputs"][0]["files_transferred"] == 2  # rewritten by the job  # type: ignore[index]
    assert (results / "note.txt").read_text() == "héllo\n"


def test_missing_output_fails_a_completed_job(
    staging: tuple[RunningCenter, RunningSshd],  # noqa: F811
    tmp_path: Path,
) -> None:
    center, _sshd = staging
    add_project(center.state_dir, "p1", gpu_hours=100, members=["alice"])
    login(center, "alice", PASSWORD)
    job = tmp_path / "job.yaml"
    job.write_text("run: 'true'\noutputs: [{from: ~/never-written, to: out}]\n")
    res = run_cli("submit", str(job), "--wait", "--json", expect=4)
    doc = res.json()
    assert doc["state"] == "COMPLETED"  # type: ignore[index]
    assert "no such file" in doc["outputs"][0]["error"]  # type: ignore[index]
    assert "output ~/never-written not fetched" in res.stderr
    assert not (tmp_path / "out").exists()


def test_missing_input_submits_nothing(
    alice: tuple[RunningCenter, str, str], tmp_path: Path
) -> None:
    center, user, password = alice
    login(center, user, password)
    job = tmp_path / "job.yaml"
    job.write_text("run: 'true'\ninputs:\n  - {from: ./nope, to: ~/x}\n")
    res = run_cli("submit", str(job), expect=2)
    assert f"{job}:3: inputs[0].from: ./nope does not exist" in res.stderr, res.explain()
    assert "job file's directory" in res.stderr
    assert _jobs() == []


def test_center_without_staging_submits_nothing(tmp_path: Path) -> None:
    # `kaic center serve` offers staging by default: this center is started without it.
    center = start_center(tmp_path / "center-state", "--no-staging")
    try:
        _submit_to_a_center_without_staging(center, tmp_path)
    finally:
        center.stop()


def _submit_to_a_center_without_staging(center: RunningCenter, tmp_path: Path) -> None:
    user, password = "alice", "correct horse battery staple"
    center.add_user(user, password)
    center.add_project("ai-2026-0042", 5000, [user])
    login(center, user, password)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a").write_text("a")
    job = tmp_path / "job.yaml"
    job.write_text("run: 'true'\ninputs: [{from: data, to: in}]\n")
    res = run_cli("submit", str(job), expect=4)
    assert "no staging endpoint" in res.stderr, res.explain()
    assert "ask your center's operators" in res.stderr and "--no-staging" in res.stderr
    assert "inputs were not staged; the job was not submitted" in res.stderr
    assert _jobs() == []


def test_dry_run_and_no_wait_say_what_happens_to_transfers(
    alice: tuple[RunningCenter, str, str], tmp_path: Path
) -> None:
    center, user, password = alice
    login(center, user, password)
    (tmp_path / "data").mkdir()
    job = tmp_path / "job.yaml"
    job.write_text(
        "run: 'true'\ninputs: [{from: data, to: in}]\noutputs: [{from: res, to: ./res}]\n"
    )
    res = run_cli("submit", str(job), "--dry-run")
    assert "input data -> in (not staged: dry run)" in res.stderr
    assert _jobs() == []

    plain = tmp_path / "plain.yaml"
    plain.write_text("run: 'true'\noutputs: [{from: res, to: ./res}]\n")
    res = run_cli("submit", str(plain))
    job_id = res.stdout.strip()
    assert job_id and "\n" not in job_id
    assert "fetched only with --wait or --follow; later: kaic data pull ~/res ./res" in (res.stderr)


def test_job_file_staging_on_the_embedded_local_center(tmp_path: Path) -> None:
    """Zero configuration: the local center's own SFTP endpoint carries inputs and outputs,
    and the job sees them in its home."""
    job = _project(tmp_path)
    res = run_cli("submit", str(job), "--wait", "--json", cwd=tmp_path, timeout=120)
    doc = res.json()
    assert doc["state"] == "COMPLETED", res.explain()  # type: ignore[index]
    assert doc["inputs"][0]["files_transferred"] == 3  # type: ignore[index]
    assert doc["inputs"][0]["verified"] is True  # type: ignore[index]
    results = job.parent / "results"
    want = hashlib.sha256((job.parent / "data" / "big.bin").read_bytes()).hexdigest()
    assert (results / "sum.txt").read_text().strip() == want
    assert (results / "note.txt").read_text() == "héllo\n"
