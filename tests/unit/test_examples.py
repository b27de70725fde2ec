"""The example job files are valid, and their local inputs exist (README points at them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.flows.job_staging import check_inputs
from kaic.jobspec import SubmitOverrides, build_submit, load_job_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
JOB_FILES = sorted(p for p in EXAMPLES.rglob("*.yaml") if "ci" not in p.relative_to(EXAMPLES).parts)


def test_there_are_examples() -> None:
    assert {p.name for p in JOB_FILES} >= {"hello.yaml", "job.yaml"}


@pytest.mark.parametrize("path", JOB_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_example_job_file_is_valid(path: Path) -> None:
    job_file = load_job_file(path)
    spec, inputs, _outputs = build_submit(job_file, SubmitOverrides())
    assert spec.run
    if path.parent.name == "staged":
        (staged,) = check_inputs(job_file, inputs)  # relative to the job file's directory
        assert Path(staged.local).is_dir()


@pytest.mark.parametrize(
    "path", sorted(EXAMPLES.rglob("*.py")), ids=lambda p: str(p.relative_to(EXAMPLES))
)
def test_example_programs_compile(path: Path) -> None:
    """The examples' programs (torch is not installed here: compiled, not run)."""
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
