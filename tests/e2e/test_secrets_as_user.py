"""Secrets in a `--run-as-user` center: the value reaches only the job's account. Root's
processes for the job (the wrapper, setpriv) never hold it in their environment or argv — the
job's variables are handed over on a descriptor after the privilege drop — and the job's
directory holds nothing of it. Needs root, like `test_run_as_user.py` (its fixture)."""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from tests.e2e.test_login import login
from tests.e2e.test_run_as_user import PASSWORD, as_users_center  # noqa: F401 (fixture)
from tests.helpers import RunningCenter, poll, run_cli
from tests.sshd import STAGING_USER

VALUE = "hf_AS-USER-SECRET-4e1a9d"


def _processes_holding(value: bytes) -> dict[int, tuple[int, bool]]:
    """pid -> (its uid, whether its argv holds `value`) of every process whose environment
    or argv holds `value`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        proc = Path("/proc") / entry
        try:
            environ = (proc / "environ").read_bytes()
            argv = (proc / "cmdline").read_bytes()
            uid = proc.stat().st_uid
        except OSError:
            continue  # gone meanwhile
        if value in environ or value in argv:
            found[int(entry)] = (uid, value in argv)
    return found


def test_only_the_jobs_account_holds_the_value(
    as_users_center: RunningCenter,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    center = as_users_center
    login(center, "alice", PASSWORD)
    run_cli("secret", "set", "hf", "--stdin", input=VALUE)
    account = pwd.getpwnam(STAGING_USER)
    release = Path(account.pw_dir) / "kaic-secret-release"
    release.unlink(missing_ok=True)
    job = tmp_path / "job.yaml"
    job.write_text(
        "env: {HF_TOKEN: {secret: hf}}\n"
        "run: |\n"
        '  echo "token=$HF_TOKEN"\n'
        "  for i in $(seq 1 600); do [ -e ~/kaic-secret-release ] && break; sleep 0.05; done\n"
    )
    job_id = run_cli("submit", str(job)).stdout.strip()
    try:
        poll(lambda: "token=" in run_cli("logs", job_id).stdout, what="the job's line")
        holders = _processes_holding(VALUE.encode())
        assert holders, "the job's own processes hold the value"
        for pid, (uid, in_argv) in holders.items():
            assert uid == account.pw_uid, f"process {pid} of uid {uid} holds the value"
            assert not in_argv, f"process {pid} has the value in its argv"
    finally:
        release.touch()
    done = run_cli("wait", job_id, "--json").json()
    assert done[0]["state"] == "COMPLETED"  # type: ignore[index]
    assert run_cli("logs", job_id).stdout == f"token={VALUE}\n"
    job_dir = center.state_dir / "jobs" / job_id
    for path in job_dir.iterdir():
        if path.name not in ("stdout", "stderr") and path.is_file():
            assert VALUE.encode() not in path.read_bytes(), path
    release.unlink(missing_ok=True)
