"""The executor conformance suite again, every job in an image: the local executor with the
bubblewrap runtime (ARCHITECTURE.md "Containers": exit codes, signals, time limits and logs
unchanged). The image is the host's own root filesystem, read-only — the suite's scripts use
the host's tools —, so what differs from `test_local.py` is only that each job runs through
`bwrap` in its own mount and pid namespaces; `tests/center/test_containers.py` proves with a
busybox image that jobs really run in the image they name."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.center.conformance.harness import Facts, Harness, running
from tests.center.conformance.suite import ExecutorConformance
from tests.center.containers_support import require_bwrap
from tests.center.jobs_support import JobsCenter, make_settings


class TestLocalExecutorInAnImage(ExecutorConformance):
    executor = "local"

    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
        require_bwrap()
        base: Path = tmp_path_factory.mktemp("local-image-conformance")
        catalogue = base / "images.yaml"
        catalogue.write_text("- {name: host, rootfs: /, description: this host read-only}\n")
        settings = make_settings(
            base / "state", executor="local", gpus=2, gpu_type="H100", images=catalogue
        )
        original = JobsCenter.post

        def post(self: JobsCenter, path: str, user: str = "alice", **kw: Any) -> httpx.Response:
            """Every submission of the suite names the image."""
            if path == "/v1/jobs" and isinstance(kw.get("json"), dict):
                kw["json"] = {"image": "host", **kw["json"]}
            return original(self, path, user, **kw)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(JobsCenter, "post", post)
            with running(settings, Facts(), unix_account=None) as harness:
                yield harness

    def test_jobs_run_through_the_runtime(self, h: Harness) -> None:
        """Each job is in a pid namespace of its own, whose first process is bwrap."""
        job = h.center.submit("cat /proc/1/comm")
        h.wait_done(job["id"])
        assert h.center.stdout(job["id"]) == "bwrap\n"
