"""The executor conformance suite against the local executor (jobs as local processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.center.conformance.harness import Facts, Harness, running
from tests.center.conformance.suite import ExecutorConformance
from tests.center.jobs_support import make_settings


class TestLocalExecutor(ExecutorConformance):
    executor = "local"

    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
        state_dir: Path = tmp_path_factory.mktemp("local-conformance") / "state"
        settings = make_settings(state_dir, executor="local", gpus=2, gpu_type="H100")
        with running(settings, Facts(), unix_account=None) as harness:
            yield harness
