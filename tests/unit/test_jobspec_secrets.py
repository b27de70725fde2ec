"""Secrets in job files and on `kaic submit`: references only, every way of writing them,
and every mistake named by file line or flag."""

from __future__ import annotations

from pathlib import Path

import pytest

from kaic.errors import UsageError
from kaic.flows.secrets import check_name, stdin_value
from kaic.jobspec import SubmitOverrides
from tests.unit.test_jobspec import submit, usage_error


def test_env_secret_entries_and_the_secrets_key_become_references(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        "env:\n"
        "  WANDB_MODE: offline\n"
        "  WANDB_API_KEY: {secret: wandb}\n"
        "secrets: {HF_TOKEN: hf}\n"
        "run: python train.py\n",
    )
    assert job.env == {"WANDB_MODE": "offline"}
    assert job.secrets == {"WANDB_API_KEY": "wandb", "HF_TOKEN": "hf"}
    # What goes over the wire names secrets, never holds values
    assert job.model_dump(mode="json")["secrets"] == {"WANDB_API_KEY": "wandb", "HF_TOKEN": "hf"}


def test_secret_flags(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        None,
        SubmitOverrides(secret=["WANDB_API_KEY=wandb", "hf_token"], command=["true"]),
    )
    assert job.secrets == {"WANDB_API_KEY": "wandb", "HF_TOKEN": "hf_token"}


def test_a_flag_replaces_what_the_file_said_of_its_variable(tmp_path: Path) -> None:
    text = "env: {A: plain, B: {secret: b}}\nrun: x\n"
    flagged = submit(tmp_path, text, SubmitOverrides(secret=["A=a"], env=["B=now-plain"]))
    assert flagged.env == {"B": "now-plain"}
    assert flagged.secrets == {"A": "a"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("env:\n  A: {secret: -x}\nrun: x\n", ":2: env.A.secret: '-x' is not a secret name"),
        ("env:\n  A: {secret: }\nrun: x\n", ":2: env.A.secret: names no secret"),
        ("env:\n  A: {secrets: a}\nrun: x\n", ":2: env.A: must be a single value or {secret"),
        ("env:\n  A: {secret: a, b: 1}\nrun: x\n", ":2: env.A: must be a single value or"),
        ("secrets: [a]\nrun: x\n", ":1: secrets: must be a mapping VAR: NAME"),
        ("secrets: {1A: a}\nrun: x\n", ":1: secrets.1A: not a valid variable name"),
        (
            "env: {A: {secret: a}}\nsecrets: {A: b}\nrun: x\n",
            ":1: env.A: is also under secrets (line 2); keep one",
        ),
        (
            "env: {A: plain}\nsecrets:\n  A: b\nrun: x\n",
            ":3: secrets.A: is also set in env (line 1); keep one",
        ),
    ],
)
def test_mistakes_name_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    message = usage_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml") + expected), message


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        ("A=-x", "--secret: '-x' is not a secret name"),
        ("hf-token", "--secret: 'HF-TOKEN' is not a valid variable name"),
        ("1A=a", "--secret: '1A' is not a valid variable name"),
    ],
)
def test_bad_secret_flags(tmp_path: Path, flag: str, expected: str) -> None:
    message = usage_error(tmp_path, None, SubmitOverrides(secret=[flag], command=["true"]))
    assert message.startswith(expected), message


def test_secret_names_are_checked_before_any_prompt() -> None:
    check_name("wandb.prod_2-eu")
    for bad in ("", "-x", ".x", "a b", "x" * 65, "a/b"):
        with pytest.raises(UsageError, match=r"NAME: .*not a valid secret name"):
            check_name(bad)


@pytest.mark.parametrize(
    ("piped", "value"),
    [
        ("v\n", "v"),
        ("v\r\n", "v"),
        ("v", "v"),
        ("line1\nline2\n", "line1\nline2"),
        ("v\n\n", "v\n"),
    ],
)
def test_stdin_value_loses_one_final_newline(piped: str, value: str) -> None:
    assert stdin_value(piped) == value
