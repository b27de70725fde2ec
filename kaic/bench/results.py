"""The plain result types shared by every bench layer (stdlib only).

``report`` turns them into the JSON document of BENCH.md; keeping them as dataclasses lets
the runner, the checks and the verdict work without pydantic or rich.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kaic.gpu.inventory import Inventory

Status = Literal["PASS", "WARN", "FAIL", "SKIP", "UNKNOWN"]

#: How bad a status is, for aggregation: a GPU is as bad as its worst check. SKIP is below
#: PASS (a check that did not run says nothing); UNKNOWN sits above PASS because "could not
#: tell" must never read as healthy.
STATUS_RANK: dict[str, int] = {"SKIP": 0, "PASS": 1, "UNKNOWN": 2, "WARN": 3, "FAIL": 4}


def worst(statuses: list[Status]) -> Status:
    """The worst of some statuses; SKIP when there are none."""
    result: Status = "SKIP"
    for status in statuses:
        if STATUS_RANK[status] > STATUS_RANK[result]:
            result = status
    return result


@dataclass
class Check:
    """One line of the verdict: a health rule or a benchmark, as BENCH.md's ``checks`` entry."""

    id: str
    status: Status
    value: float | int | str | None = None
    unit: str | None = None
    expected: float | int | str | None = None
    ratio: float | None = None
    message: str = ""


@dataclass
class GpuResult:
    """Everything the bench found about one GPU."""

    inventory: Inventory
    sku: str | None
    checks: list[Check] = field(default_factory=list)
    status: Status = "SKIP"

    @property
    def index(self) -> int:
        return self.inventory.index

    def check(self, check_id: str) -> Check | None:
        """The check with this id, if it was produced."""
        return next((c for c in self.checks if c.id == check_id), None)


@dataclass
class BenchRun:
    """One whole run: node facts and per-GPU results, before rendering."""

    host: str
    timestamp: str
    driver: str | None
    cuda: str | None
    backend: str
    device: str
    mode: str
    gpus: list[GpuResult]
    status: Status = "SKIP"
    #: why nothing was validated (no driver, no GPU, no such index); None when the run ran
    error: str | None = None
