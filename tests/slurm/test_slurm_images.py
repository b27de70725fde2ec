"""Jobs in an image on the real Slurm, with the bubblewrap runtime: the batch script on the
node runs the job's script through `bwrap` (as the job's account, `kaicslurm`), with its
storage and workdir at their own paths; exit codes, signal deaths, time limits, cancel and
logs are the same as without an image. (The cluster's fake GPU nodes lie under /tmp, which
jobs share with the host anyway: device pass-through is proved on the local center,
`tests/center/test_containers.py`.)"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.center.containers_support import MARKER, MARKER_TEXT, make_rootfs, require_bwrap
from tests.helpers import RunningCenter, poll, start_center
from tests.slurm.cluster import JOB_USER, SlurmCluster
from tests.slurm.conftest import PROJECT, USER

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


class Center:
    def __init__(self, center: RunningCenter, token: str) -> None:
        self.center = center
        self.http = httpx.Client(
            base_url=center.url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        )

    def submit(self, run: str, **spec: Any) -> str:
        response = self.http.post("/v1/jobs", json={"run": run, **spec})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def done(self, job_id: str, timeout: float = 150) -> tuple[str, int | None, str, str]:
        job = poll(
            lambda: (j := self.job(job_id))["state"] in TERMINAL and j,
            timeout=timeout,
            what=f"job {job_id} to end",
        )
        logs = [
            self.http.get(f"/v1/jobs/{job_id}/logs", params={"stream": s}).text
            for s in ("stdout", "stderr")
        ]
        return job["state"], job["exit_code"], logs[0], logs[1]


@pytest.fixture(scope="module")
def image_center(slurm_cluster: SlurmCluster, slurm_base: Path) -> Iterator[Center]:
    from kaic.center.store import Store
    from tests.center.jobs_support import mint_token

    require_bwrap()
    images = Path(tempfile.mkdtemp(prefix="images-", dir=slurm_base))
    images.chmod(0o755)  # the job's account reads the image
    rootfs = make_rootfs(images / "busybox")
    (images / "catalogue.yaml").write_text(f"- {{name: busybox, rootfs: {rootfs}}}\n")
    state = Path(tempfile.mkdtemp(prefix="center-images-", dir=slurm_base))
    center = start_center(
        state,
        "--executor",
        "slurm",
        "--slurmrestd",
        slurm_cluster.url,
        "--slurm-poll-interval",
        "0.5",
        "--images",
        str(images / "catalogue.yaml"),
        "--container-runtime",
        "bubblewrap",
        "--container-device",
        str(slurm_cluster.dir / "gpu*"),
        env={"KAIC_SLURM_JWT": slurm_cluster.token, "SLURM_CONF": slurm_cluster.env["SLURM_CONF"]},
    )
    try:
        center.add_user(USER, "correct horse battery staple", unix_account=JOB_USER)
        center.add_project(PROJECT, 5000, [USER])
        store = Store(state)
        try:
            token = mint_token(store, USER)
        finally:
            store.close()
        client = Center(center, token)
        yield client
        client.http.close()
    finally:
        center.stop(kill_jobs=False)


def test_jobs_in_an_image_on_slurm(image_center: Center, slurm_cluster: SlurmCluster) -> None:
    c = image_center
    gpu0 = slurm_cluster.dir / "gpu0"
    # Everything at once: the time limit (Slurm checks it about every 30 s) sets the pace.
    timed = c.submit("echo started; sleep 300", image="busybox", time_limit_seconds=60)
    seen = c.submit(
        f'cat /{MARKER}; pwd; echo w > from-image.txt; test -c "{gpu0}"',
        image="busybox",
        workdir="~/runs/img",
    )
    pairs = {
        "exit code": "echo out; echo err >&2; exit 3",
        "signal death": "echo before; kill -USR1 $$; echo after",
    }
    submitted = {case: (c.submit(s), c.submit(s, image="busybox")) for case, s in pairs.items()}
    cancelled = c.submit("echo running; sleep 300", image="busybox")
    poll(
        lambda: c.http.get(f"/v1/jobs/{cancelled}/logs").text == "running\n",
        timeout=60,
        what="the job to be running",
    )
    assert c.http.post(f"/v1/jobs/{cancelled}/cancel").status_code == 200

    state, code, out, err = c.done(seen)
    assert (state, code) == ("COMPLETED", 0), err
    lines = out.splitlines()
    assert lines[0] == MARKER_TEXT.strip()
    assert lines[1].endswith("/storage/alice/runs/img")
    assert (Path(lines[1]) / "from-image.txt").read_text() == "w\n"
    for case, (plain, boxed) in submitted.items():
        assert c.done(plain) == c.done(boxed), case
    assert c.done(submitted["exit code"][1]) == ("FAILED", 3, "out\n", "err\n")
    assert c.done(submitted["signal death"][1])[:3] == ("FAILED", 128 + 10, "before\n")
    assert c.done(cancelled)[0] == "CANCELLED"
    state, _, out, _ = c.done(timed, timeout=240)
    assert (state, out) == ("TIMEOUT", "started\n")
