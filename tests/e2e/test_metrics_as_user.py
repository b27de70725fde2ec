"""The metrics sampler of a `--run-as-user` center runs as the job's account, writing into
the job's `metrics/` (the account's, inside the center's own 0700 job directory, handed over
as a descriptor), and the center reads it.

Needs root (to create the account and to switch to it): skipped otherwise, failed when
`CI=true`.
"""

from __future__ import annotations

import json
import pwd

from tests.e2e.test_login import login
from tests.e2e.test_run_as_user import PASSWORD, as_users_center  # noqa: F401 (a fixture)
from tests.helpers import RunningCenter, run_cli
from tests.sshd import STAGING_USER


def test_the_sampler_runs_as_the_jobs_account(
    as_users_center: RunningCenter,  # noqa: F811 (the fixture imported above)
) -> None:
    center = as_users_center
    login(center, "alice", PASSWORD)
    account = pwd.getpwnam(STAGING_USER)
    # the first sample comes after a second (the interval is the default 5 s)
    res = run_cli("submit", "--wait", "--json", "--", "sleep", "2.5")
    job_id = res.json()["id"]  # type: ignore[index]
    assert res.json()["exit_code"] == 0  # type: ignore[index]
    job_dir = center.state_dir / "jobs" / job_id
    files = list((job_dir / "metrics").glob("*.jsonl"))
    assert len(files) == 1
    assert files[0].stat().st_uid == account.pw_uid  # written by the account, not root
    assert (job_dir / "metrics").stat().st_uid == account.pw_uid
    assert job_dir.stat().st_mode & 0o777 == 0o700 and job_dir.stat().st_uid == 0
    lines = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert lines[0]["v"] == 1 and len(lines) >= 2
    # the job's tree (the account's processes under the root wrapper) is measured
    assert all(sample["r"] > 0 for sample in lines[1:])
