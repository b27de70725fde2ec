"""`kaic help jobfile` is generated from the job model and cannot drift from it."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kaic.cli.main import app
from kaic.jobspec import SubmitOverrides, build_submit, load_job_file
from kaic.jobspec import reference as ref
from kaic.jobspec.keys import LEAVES, TOP_KEYS
from kaic.models.limits import MAX_DEPENDENCIES, MAX_ENV_VARS


def test_every_key_of_the_model_is_documented_and_no_note_is_stale() -> None:
    keys = ref.documented_keys()
    assert set(keys) == set(TOP_KEYS) | set(LEAVES) | {"resources"}
    assert set(ref._NOTES) == set(keys)


def test_the_examples_together_are_a_job_file_kaic_submit_accepts(tmp_path: Path) -> None:
    path = tmp_path / "reference.yaml"
    path.write_text(ref.example_job_file(), encoding="utf-8")
    job_file = load_job_file(path).check()
    submit, inputs, outputs = build_submit(job_file, SubmitOverrides())
    # every key is set by its example (none left at its default)
    assert set(job_file.values) == set(LEAVES)
    assert submit.resources.gpus == 8 and submit.time_limit_seconds == 4 * 3600
    assert inputs and outputs


def test_help_jobfile_prints_every_key_with_the_models_limits() -> None:
    res = CliRunner().invoke(app, ["help", "jobfile"])
    assert res.exit_code == 0, res.output
    for key in ref.documented_keys():
        assert f"{key}  (" in res.output
    assert f"at most {MAX_ENV_VARS}" in res.output  # the model's description
    assert f"at most {MAX_DEPENDENCIES} jobs" in res.output  # the model's constraint
    assert "flag: --gpu-type" in res.output  # the model's JobKey
    assert "default: 1" in res.output  # resources.nodes' default
