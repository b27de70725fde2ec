"""The executor conformance suite against the Slurm executor, over the real single-node
Slurm of `conftest.py` (jobs run as the unix account `kaicslurm`). It runs after the other
Slurm tests, against a center started before them (`conftest.slurm_harness`)."""

from __future__ import annotations

import pytest

from tests.center.conformance.harness import Harness
from tests.center.conformance.suite import ExecutorConformance


class TestSlurmExecutor(ExecutorConformance):
    executor = "slurm"

    @pytest.fixture(scope="class")
    @classmethod
    def harness(cls, slurm_harness: Harness) -> Harness:
        return slurm_harness
