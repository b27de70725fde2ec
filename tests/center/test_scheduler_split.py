"""The scheduler's shape: lifecycle (`scheduler`), state ledger (`ledger`) and two queue
policies (`queues/`); the policy is chosen once, from `owns_queue`, and imports point one way:
scheduler -> queues -> ledger."""

from __future__ import annotations

import ast
from pathlib import Path

from kaic.center.executors.base import Executor
from kaic.center.executors.local import LocalExecutor
from kaic.center.jobs.queues.fifo import CenterQueue
from kaic.center.jobs.queues.handover import HandOverQueue
from kaic.center.jobs.scheduler import Scheduler
from kaic.center.settings import CenterSettings
from kaic.center.store import Store
from tests.helpers import REPO

KAIC = REPO / "kaic"
JOBS = KAIC / "center" / "jobs"


def _reads_of(attribute: str, path: Path) -> int:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sum(
        1 for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == attribute
    )


def test_owns_queue_is_read_once_outside_the_executors() -> None:
    reads = {
        str(path.relative_to(REPO)): count
        for path in KAIC.rglob("*.py")
        if "executors" not in path.parts and (count := _reads_of("owns_queue", path))
    }
    assert reads == {"kaic/center/jobs/scheduler.py": 1}


def _kaic_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kaic."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kaic."))
    return found


def test_imports_point_from_lifecycle_to_policies_to_ledger() -> None:
    ledger = _kaic_imports(JOBS / "ledger.py")
    assert not {
        m for m in ledger if m.startswith(("kaic.center.jobs.queues", "kaic.center.jobs.scheduler"))
    }
    for path in (JOBS / "queues").glob("*.py"):
        assert "kaic.center.jobs.scheduler" not in _kaic_imports(path), path


class _Owning(LocalExecutor):
    owns_queue = True


def test_the_policy_follows_the_executor(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        settings = CenterSettings(state_dir=tmp_path)
        executors: list[tuple[Executor, type]] = [
            (LocalExecutor(), CenterQueue),
            (_Owning(), HandOverQueue),
        ]
        for executor, policy in executors:
            assert type(Scheduler(store, settings, executor).queue) is policy
    finally:
        store.close()
