"""kaic.jobspec: job files and `kaic submit` flags -> JobSubmit, with file:line:key errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kaic.errors import ExitCode, UsageError
from kaic.jobspec import (
    JobFile,
    SubmitOverrides,
    Transfer,
    build_submit,
    load_job_file,
    parse_array,
)
from kaic.models.jobs import JobSubmit

# The example of ARCHITECTURE.md "Job file", verbatim.
EXAMPLE = """\
name: resnet50
project: ai-2026-0042        # allocation charged
partition: h100              # queue; or resources.gpu_type
resources: {gpus: 8, gpu_type: H100, nodes: 1, cpus_per_gpu: 8, memory: 512G}
time_limit: 4h
image: nvcr.io/nvidia/pytorch:24.10-py3    # optional container
workdir: ~/runs/resnet50     # on center storage
env: {WANDB_MODE: offline}
run: |
  torchrun --nproc_per_node=8 train.py --data ~/data/imagenet
inputs:  [{from: ./data, to: ~/data/imagenet}]      # staged by kaic before submit
outputs: [{from: ~/runs/resnet50/ckpt, to: ./ckpt}] # fetched by kaic after --wait
array: "0-15%4"
depends_on: [4121]
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, name: str = "job.yaml") -> JobFile:
    return load_job_file(write(tmp_path, text, name))


def submit(tmp_path: Path, text: str | None, overrides: SubmitOverrides | None = None) -> JobSubmit:
    job_file = load(tmp_path, text) if text is not None else None
    return build_submit(job_file, overrides or SubmitOverrides())[0]


def usage_error(tmp_path: Path, text: str | None, overrides: SubmitOverrides | None = None) -> str:
    with pytest.raises(UsageError) as info:
        submit(tmp_path, text, overrides)
    assert info.value.exit_code == ExitCode.USAGE
    return info.value.message


# -- the full example ------------------------------------------------------------------------


def test_architecture_example_round_trips(tmp_path: Path) -> None:
    job, inputs, outputs = build_submit(load(tmp_path, EXAMPLE), SubmitOverrides())
    assert job == JobSubmit(
        name="resnet50",
        project="ai-2026-0042",
        partition="h100",
        resources={
            "gpus": 8,
            "gpu_type": "H100",
            "nodes": 1,
            "cpus_per_gpu": 8,
            "memory": "512G",
        },
        time_limit_seconds=4 * 3600,
        image="nvcr.io/nvidia/pytorch:24.10-py3",
        workdir="~/runs/resnet50",
        env={"WANDB_MODE": "offline"},
        run="torchrun --nproc_per_node=8 train.py --data ~/data/imagenet\n",
        array="0-15%4",
        depends_on=["4121"],
    )
    assert inputs == [Transfer(src="./data", dst="~/data/imagenet")]
    assert outputs == [Transfer(src="~/runs/resnet50/ckpt", dst="./ckpt")]
    # and it survives the wire
    assert JobSubmit.model_validate_json(job.model_dump_json()) == job


def test_lines_are_recorded_per_key(tmp_path: Path) -> None:
    job_file = load(tmp_path, EXAMPLE)
    assert job_file.lines["name"] == 1
    assert job_file.lines["resources.memory"] == 4
    assert job_file.lines["run"] == 9
    assert job_file.lines["depends_on"] == 14
    assert job_file.line_of("depends_on[0]") == 14


def test_minimal_file_uses_stem_as_name(tmp_path: Path) -> None:
    job = submit(tmp_path, "run: python train.py\n")
    assert job.name == "job"
    assert job.run == "python train.py"
    assert job.resources.gpus == 0 and job.resources.nodes == 1
    assert job.time_limit_seconds is None and job.depends_on == [] and job.env == {}


def test_block_style_and_nulls(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        "resources:\n  gpus: 2\n  nodes: 4\nimage:\ninputs:\nrun: |\n  echo a\n  echo b\n",
    )
    assert job.resources.gpus == 2 and job.resources.nodes == 4  # several nodes with GPUs: fine
    assert job.image is None
    assert job.run == "echo a\necho b\n"


def test_scalars_are_read_as_written(tmp_path: Path) -> None:
    job = submit(
        tmp_path,
        "run: x\nenv: {VERSION: 1.10, DEBUG: yes, N: 8, MODE: 010, EMPTY: ''}\n"
        "time_limit: 4:00:00\nname: 2024\ndepends_on: [4121, '4122']\n",
    )
    assert job.env == {"VERSION": "1.10", "DEBUG": "yes", "N": "8", "MODE": "010", "EMPTY": ""}
    assert job.time_limit_seconds == 4 * 3600  # not YAML 1.1's base-60 integer 14400 minutes
    assert job.name == "2024"
    assert job.depends_on == ["4121", "4122"]


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("4h", 14400), ("240", 14400), ("'1-12:00:00'", 36 * 3600), ("1h30m", 5400), ("90s", 90)],
)
def test_time_limit_forms(tmp_path: Path, value: str, seconds: int) -> None:
    assert submit(tmp_path, f"run: x\ntime_limit: {value}\n").time_limit_seconds == seconds


@pytest.mark.parametrize(
    ("value", "stored"), [("512G", "512G"), ("512gb", "512G"), ("64GiB", "64G"), ("4000", "4000")]
)
def test_memory_is_normalized(tmp_path: Path, value: str, stored: str) -> None:
    job = submit(tmp_path, f"run: x\nresources: {{gpus: 1, memory: {value}}}\n")
    assert job.resources.memory == stored


@pytest.mark.parametrize("value", ["0-15%4", "1,3,5", "0-9", "7", "0-3,8,10-12%2"])
def test_array_forms(tmp_path: Path, value: str) -> None:
    assert submit(tmp_path, f"run: x\narray: '{value}'\n").array == value


def test_yaml_merge_keys(tmp_path: Path) -> None:
    text = "run: x\nresources:\n  <<: {gpus: 4, nodes: 2}\n  nodes: 1\n"
    job = submit(tmp_path, text)
    assert job.resources.gpus == 4 and job.resources.nodes == 1


# -- errors in the file ----------------------------------------------------------------------


def test_unknown_key_names_file_line_and_suggestion(tmp_path: Path) -> None:
    text = "name: a\nrun: x\ntime_limt: 4h\n"
    assert usage_error(tmp_path, text) == (
        "job.yaml:3: unknown key 'time_limt' (did you mean 'time_limit'?)"
    ).replace("job.yaml", str(tmp_path / "job.yaml"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run: x\ngpus: 8\n", ":2: unknown key 'gpus' (did you mean 'resources.gpus'?)"),
        ("run: x\ntime: 4h\n", ":2: unknown key 'time' (did you mean 'time_limit'?)"),
        ("command: x\n", ":1: unknown key 'command' (did you mean 'run'?)"),
        (
            "run: x\nresources:\n  gpu: 8\n",
            ":3: unknown key 'gpu' in 'resources' (did you mean 'gpus'?)",
        ),
        (
            "run: x\nresources: {gpus: 1, memroy: 5G}\n",
            ":2: unknown key 'memroy' in 'resources' (did you mean 'memory'?)",
        ),
        ("run: x\nzzz: 1\n", ":2: unknown key 'zzz' (known keys: name, project,"),
        (
            "run: x\ninputs:\n  - {from: a, too: b}\n",
            ":3: unknown key 'too' in 'inputs[0]' (did you mean 'to'?)",
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    message = usage_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml") + expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: a\nrun: x\nresources:\n  gpus: eight\n",
            ":4: resources.gpus: must be a whole number >= 0 (got 'eight')",
        ),
        ("run: x\nresources: {gpus: -1}\n", ":2: resources.gpus: must be a whole number >= 0"),
        ("run: x\nresources: {gpus: 1.5}\n", ":2: resources.gpus: must be a whole number >= 0"),
        ("run: x\nresources: {gpus: [1]}\n", ":2: resources.gpus: must be a whole number >= 0"),
        ("run: x\nresources: {nodes: 0}\n", ":2: resources.nodes: must be a whole number >= 1"),
        (
            "run: x\nresources: {gpus: 1, cpus_per_gpu: 0}\n",
            ":2: resources.cpus_per_gpu: must be a whole number >= 1",
        ),
        (
            "run: x\nresources:\n  gpus: 1\n  memory: lots\n",
            ":4: resources.memory: must be a size like 512G",
        ),
        ("run: x\nresources: {memory: 512X}\n", ":2: resources.memory: must be a size like"),
        ("run: x\narray: 0-15%0\n", ":2: array: %0: must run at least 1 task at a time"),
        ("run: x\narray: 15-0\n", ":2: array: range '15-0' starts after it ends"),
        ("run: x\narray: 0-15:2\n", ":2: array: not a valid array spec '0-15:2'"),
        ("run: x\narray: every\n", ":2: array: not a valid array spec"),
        ("run: x\ntime_limit: 4 hours\n", ":2: time_limit: not a valid duration '4 hours'"),
        ("run: x\ntime_limit: 0\n", ":2: time_limit: duration must be positive"),
        ("run: x\ntime_limit: -5m\n", ":2: time_limit: duration must be positive"),
        ("run: x\ntime_limit: yes\n", ":2: time_limit: not a valid duration 'yes'"),
        ("run: x\nenv: [A=1]\n", ":2: env: must be a mapping NAME: value"),
        ("run: x\nenv:\n  A: {b: 1}\n", ":3: env.A: must be a single value or {secret: NAME}"),
        ("run: x\nenv:\n  A:\n", ":3: env.A: has no value"),
        ("run: x\nenv: {1A: x}\n", ":2: env.1A: not a valid variable name"),
        ("run: [a, b]\n", ":1: run: must be a string; use `run: |`"),
        ("run:\n", ":1: run: is empty"),
        ("run: '  '\n", ":1: run: must not be empty"),
        ("run: x\nname: {a: 1}\n", ":2: name: must be a single value (got a mapping)"),
        ("run: x\ninputs: ./data\n", ":2: inputs: must be a list of {from: ..., to: ...}"),
        ("run: x\ninputs: [./data]\n", ":2: inputs[0]: must be a mapping {from: ..., to: ...}"),
        ("run: x\noutputs:\n  - from: a\n", ":3: outputs[0]: missing 'to'"),
        ("run: x\ninputs: [{from: a, to: }]\n", ":2: inputs[0].to: must be a path"),
        ("run: x\ndepends_on: [true]\n", ":2: depends_on[0]: must be a job id (got 'true')"),
        ("run: x\ndepends_on: [[1]]\n", ":2: depends_on[0]: must be a job id (got a list)"),
        ("run: x\nname: a\nname: b\n", ":3: duplicate key 'name' (first at line 2)"),
        (
            "run: x\nresources: {gpus: 2000}\n",
            ":2: resources.gpus: input should be less than or equal to 1024 (got 2000)",
        ),
        (
            "run: x\nresources:\n  cpus_per_gpu: 4\n",
            ":3: resources.cpus_per_gpu: needs resources.gpus > 0",
        ),
        ("run: x\nname: " + "n" * 129 + "\n", ":2: name: must be at most 128 characters"),
    ],
)
def test_bad_values_name_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    message = usage_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml") + expected), message


def test_error_names_the_file_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "run: x\nresources: {gpus: eight}\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as info:
        load_job_file(Path("job.yaml")).check()
    assert (
        info.value.message
        == "job.yaml:2: resources.gpus: must be a whole number >= 0 (got 'eight')"
    )


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("run: x\nresources: {gpus: 8\nname: a\n", None),
        ("name: a\nrun: [a\n", None),
        ("name: a\n  run: x\n", 2),
        ("name: a\nrun: 'x\n", None),
        ("run: x\n---\nrun: y\n", 2),
        ("name: a\n\tbad: tab\n", 2),
    ],
)
def test_yaml_syntax_error_names_line(tmp_path: Path, text: str, line: int | None) -> None:
    message = usage_error(tmp_path, text)
    prefix = str(tmp_path / "job.yaml") + ":"
    assert message.startswith(prefix) and "invalid YAML" in message, message
    got_line = int(message[len(prefix) :].split(":", 1)[0])
    if line is not None:
        assert got_line == line
    assert 1 <= got_line <= text.count("\n") + 1


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "~\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = usage_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml") + ": the job file is empty")


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n- b\n", "a list"), ("just a string\n", "'just a string'")]
)
def test_not_a_mapping(tmp_path: Path, text: str, got: str) -> None:
    message = usage_error(tmp_path, text)
    assert message.startswith(str(tmp_path / "job.yaml") + ":1: a job file must be a mapping")
    assert message.endswith(f"got {got}")


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such job file"):
        load_job_file(tmp_path / "nope.yaml")
    with pytest.raises(UsageError, match="is a directory"):
        load_job_file(tmp_path)
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00run")
    with pytest.raises(UsageError, match="not a UTF-8 text file"):
        load_job_file(tmp_path / "bin.yaml")


def test_file_without_run_and_no_command(tmp_path: Path) -> None:
    message = usage_error(tmp_path, "name: a\nresources: {gpus: 1}\n")
    assert message.startswith(str(tmp_path / "job.yaml") + ": no `run:` script")
    assert "-- COMMAND" in message


# -- flags -----------------------------------------------------------------------------------


def test_every_flag_overrides_the_file(tmp_path: Path) -> None:
    overrides = SubmitOverrides(
        name="other",
        project="p2",
        partition="a100",
        gpus=2,
        gpu_type="A100",
        nodes=3,
        time="30m",
        image="python:3.12",
        env=["WANDB_MODE=online"],
        workdir="~/elsewhere",
        array="1,3,5",
        after=["9", "10"],
        command=["python", "eval.py"],
    )
    job, inputs, outputs = build_submit(load(tmp_path, EXAMPLE), overrides)
    assert job.name == "other"
    assert job.project == "p2"
    assert job.partition == "a100"
    assert job.resources.gpus == 2
    assert job.resources.gpu_type == "A100"
    assert job.resources.nodes == 3
    assert job.resources.cpus_per_gpu == 8 and job.resources.memory == "512G"  # from the file
    assert job.time_limit_seconds == 1800
    assert job.image == "python:3.12"
    assert job.env == {"WANDB_MODE": "online"}
    assert job.workdir == "~/elsewhere"
    assert job.array == "1,3,5"
    assert job.depends_on == ["9", "10"]
    assert job.run == "python eval.py"
    assert inputs and outputs  # the file's transfers stay


def test_flags_not_given_keep_the_file(tmp_path: Path) -> None:
    job = build_submit(load(tmp_path, EXAMPLE), SubmitOverrides(gpus=4))[0]
    assert job.resources.gpus == 4
    assert job.name == "resnet50" and job.depends_on == ["4121"] and job.array == "0-15%4"
    assert job.run.startswith("torchrun")


def test_env_merges_flag_wins_per_key(tmp_path: Path) -> None:
    text = "run: x\nenv: {A: '1', B: '2'}\n"
    job = submit(tmp_path, text, SubmitOverrides(env=["B=20", "C=a=b", "D="]))
    assert job.env == {"A": "1", "B": "20", "C": "a=b", "D": ""}


def test_gpus_zero_flag_overrides_file(tmp_path: Path) -> None:
    job = submit(tmp_path, "run: x\nresources: {gpus: 8}\n", SubmitOverrides(gpus=0))
    assert job.resources.gpus == 0


def test_after_accepts_commas(tmp_path: Path) -> None:
    job = submit(tmp_path, None, SubmitOverrides(after=["1,2", "3"], command=["true"]))
    assert job.depends_on == ["1", "2", "3"]


def test_command_without_file(tmp_path: Path) -> None:
    overrides = SubmitOverrides(gpus=1, time="30m", command=["python", "train.py", "--lr", "0.1"])
    job, inputs, outputs = build_submit(None, overrides)
    assert job.run == "python train.py --lr 0.1"
    assert job.name == "python"
    assert job.resources.gpus == 1
    assert job.time_limit_seconds == 1800
    assert inputs == [] and outputs == []


def test_command_is_shell_quoted(tmp_path: Path) -> None:
    job = submit(
        tmp_path, None, SubmitOverrides(command=["/opt/bin/run.sh", "a b", "$HOME", "x;y"])
    )
    assert job.run == "/opt/bin/run.sh 'a b' '$HOME' 'x;y'"
    assert job.name == "run.sh"


def test_command_replaces_file_run_name_from_file(tmp_path: Path) -> None:
    job = submit(tmp_path, "run: old\n", SubmitOverrides(command=["new"]))
    assert job.run == "new"
    assert job.name == "job"  # the file's stem


def test_no_file_no_command() -> None:
    with pytest.raises(UsageError) as info:
        build_submit(None, SubmitOverrides(gpus=1))
    assert info.value.message == "nothing to run: give a job file or `-- COMMAND`"
    assert info.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (SubmitOverrides(env=["NOEQUALS"]), "--env: expected NAME=VALUE (got 'NOEQUALS')"),
        (SubmitOverrides(env=["=x"]), "--env: expected NAME=VALUE (got '=x')"),
        (SubmitOverrides(env=["A B=x"]), "--env: expected NAME=VALUE"),
        (SubmitOverrides(time="soon"), "--time: not a valid duration 'soon'"),
        (SubmitOverrides(time="0"), "--time: duration must be positive"),
        (SubmitOverrides(array="5-1"), "--array: range '5-1' starts after it ends"),
        (SubmitOverrides(array="0-9%0"), "--array: %0: must run at least 1 task"),
        (SubmitOverrides(gpus=-1), "--gpus: must be a whole number >= 0 (got -1)"),
        (SubmitOverrides(gpus=5000), "--gpus: input should be less than or equal to 1024"),
        (SubmitOverrides(nodes=0), "--nodes: must be a whole number >= 1 (got 0)"),
        (SubmitOverrides(name=""), "--name: must not be empty"),
        (SubmitOverrides(name="n" * 200), "--name: must be at most 128 characters"),
        (SubmitOverrides(after=["1,"]), "--after: expected a job id"),
    ],
)
def test_bad_flags_name_the_flag(overrides: SubmitOverrides, expected: str) -> None:
    overrides.command = overrides.command or ["true"]
    with pytest.raises(UsageError) as info:
        build_submit(None, overrides)
    assert info.value.message.startswith(expected), info.value.message


def test_flag_error_wins_over_file_line(tmp_path: Path) -> None:
    # gpus from the flag, cpus_per_gpu from the file: the file's key is the one to fix
    message = usage_error(
        tmp_path, "run: x\nresources:\n  gpus: 1\n  cpus_per_gpu: 4\n", SubmitOverrides(gpus=0)
    )
    assert message.startswith(str(tmp_path / "job.yaml") + ":4: resources.cpus_per_gpu")


def test_parse_array() -> None:
    assert parse_array(" 0-15%4 ") == "0-15%4"
    with pytest.raises(ValueError, match="not a valid array spec"):
        parse_array("1,,2")


def test_yaml_anchors_shared_between_keys(tmp_path: Path) -> None:
    text = (
        "run: x\nenv: &common {A: '1', B: '2'}\n"
        "resources:\n  <<: &res {gpus: 2, nodes: 2}\n  nodes: 1\n"
    )
    job = submit(tmp_path, text)
    assert job.env == {"A": "1", "B": "2"}
    assert job.resources.gpus == 2 and job.resources.nodes == 1


def test_single_shell_line_is_run_as_a_script() -> None:
    from kaic.jobspec import SubmitOverrides, build_submit

    spec, _, _ = build_submit(None, SubmitOverrides(command=["make && ./run --fast"]))
    assert spec.run == "make && ./run --fast"
    spec, _, _ = build_submit(None, SubmitOverrides(command=["python", "train.py", "a b"]))
    assert spec.run == "python train.py 'a b'"


# -- the limits of kaic.models.limits, refused before anything is sent ------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('run: x\nname: "a\\x1b[2Jb"\n', ":2: name: must not contain control characters"),
        ('run: x\nname: "a\\0b"\n', ":2: name: must not contain control characters"),
        ('run: x\nproject: "p\\nq"\n', ":2: project: must not contain control"),
        ('run: x\nworkdir: "~/a\\x85b"\n', ":2: workdir: must not contain control"),
        ('run: x\nimage: "i\\x7f"\n', ":2: image: must not contain control"),
        ('run: x\nresources:\n  gpu_type: "H\\t100"\n', ":3: resources.gpu_type: must"),
        ('run: x\nenv:\n  A: ok\n  B: "a\\0b"\n', ":4: env.B: must not contain NUL"),
        ('run: "echo \\0"\n', ":1: run: must not contain NUL"),
        ("run: x\nname: " + "n" * 129 + "\n", ":2: name: must be at most 128 characters"),
        ("run: x\narray: 0-10000\n", ":2: array: array '0-10000' has more than 10000"),
        ("run: x\ntime_limit: 400d\n", ":2: time_limit: input should be less than"),
    ],
)
def test_hostile_values_name_file_line_and_limit(tmp_path: Path, text: str, expected: str) -> None:
    assert usage_error(tmp_path, text).startswith(f"{tmp_path / 'job.yaml'}{expected}")


def test_an_oversized_script_names_the_limit(tmp_path: Path) -> None:
    text = "run: |\n" + ("  " + "x" * 1023 + "\n") * 1100
    assert usage_error(tmp_path, text).startswith(
        f"{tmp_path / 'job.yaml'}:1: run: must be at most 1048576 characters, got 1126400"
    )


def test_control_characters_in_flags_name_the_flag() -> None:
    with pytest.raises(UsageError) as info:
        build_submit(None, SubmitOverrides(name="a\x1bb", command=["true"]))
    assert info.value.message.startswith("--name: must not contain control characters")


@pytest.mark.parametrize("opening", ["[", "{a: ", "- "])
def test_deeply_nested_yaml_is_a_usage_error_naming_the_file(tmp_path: Path, opening: str) -> None:
    closing = {"[": "]", "{a: ": "}", "- ": ""}[opening]
    depth = 5000
    if opening == "- ":
        body = "\n  " + "- " * depth + "1"  # compact nested block sequences
    else:
        body = opening * depth + "1" + closing * depth
    path = write(tmp_path, "run: x\nenv: " + body + "\n", "deep.yaml")
    with pytest.raises(UsageError) as info:
        load_job_file(path)
    assert info.value.exit_code == ExitCode.USAGE
    assert info.value.message.startswith(f"{path}: nested too deeply")


def test_deeply_nested_yaml_exits_2(tmp_path: Path) -> None:
    from tests.helpers import run_cli

    path = write(tmp_path, "run: x\nenv: " + "[" * 20000 + "]" * 20000 + "\n", "deep.yaml")
    res = run_cli("submit", "--dry-run", str(path), expect=2)
    assert f"{path}: nested too deeply" in res.stderr
    assert "Traceback" not in res.stderr and "RecursionError" not in res.stderr


# -- one source: the keys and flags are the model's ------------------------------------------


def test_keys_and_flags_are_derived_from_the_model() -> None:
    """Every field of JobSubmit but the wire-only `kind` (`kaic alloc` sets it) is a job-file
    key (`time_limit` for `time_limit_seconds`); the flags come from the fields' JobKey; only
    staging's keys are the file's own."""
    from kaic.jobspec import keys
    from kaic.models.jobs import Resources

    wire = {("time_limit" if n == "time_limit_seconds" else n) for n in JobSubmit.model_fields}
    assert "kind" in wire and "kind" not in keys.TOP_KEYS
    wire.discard("kind")
    assert set(keys.TOP_KEYS) == wire | {"inputs", "outputs"}
    assert keys.TOP_KEYS.index("inputs") == keys.TOP_KEYS.index("run") + 1
    assert tuple(f.key for f in keys.GROUPS["resources"].fields) == tuple(Resources.model_fields)
    assert keys.FLAGS["resources.gpu_type"] == "--gpu-type" and keys.FLAGS["run"] == "-- COMMAND"
    options = "name project partition gpus gpu_type nodes time image workdir env command array"
    options += " after retry notify secret"
    assert sorted(keys.OPTIONS) == sorted(options.split())


def test_every_flag_of_the_model_is_an_option_of_kaic_submit() -> None:
    from kaic.jobspec import keys
    from tests.helpers import run_cli

    shown = run_cli("submit", "--help", env={"COLUMNS": "200"}).stdout
    for flag in keys.FLAGS.values():
        if flag != "-- COMMAND":
            assert flag in shown, flag


def test_unknown_flags_are_refused() -> None:
    with pytest.raises(TypeError, match="not a flag of kaic submit: gpu"):
        SubmitOverrides(gpu=2)


def test_the_array_grammar_is_the_models() -> None:
    """One parser both sides of the wire: the job file, --array, the model's pattern and
    validator, and the center's tasks."""
    from kaic.models.arrays import ARRAY_PATTERN
    from kaic.models.arrays import parse_array as parse_tasks

    schema = JobSubmit.model_json_schema()["properties"]["array"]
    assert schema["anyOf"][0]["pattern"] == ARRAY_PATTERN
    assert parse_tasks("0-3,8%2") == ([0, 1, 2, 3, 8], 2)
    for bad, message in [
        ("5-1", "range '5-1' starts after it ends"),
        ("0-9%0", "%0: must run at least 1 task"),
        ("0-10000", "has more than 10000 tasks"),
        ("x", "not a valid array spec 'x'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_array(bad)
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_tasks(bad)


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """Unknown keys, bad values inside groups, env entries and transfers, and what only the
    model can judge (a count above its limit) — all in one message, in the file's order."""
    text = (
        "name: a\n"  # 1
        "bogus: 1\n"  # 2
        "resources:\n"  # 3
        "  gpus: eight\n"  # 4
        "  nodes: 5000\n"  # 5 (the model's limit: 1024)
        "  memroy: 5G\n"  # 6
        "time_limit: banana\n"  # 7
        "env:\n"  # 8
        "  1BAD: x\n"  # 9
        "  GOOD: y\n"  # 10
        "inputs:\n"  # 11
        "  - {from: a}\n"  # 12
        "run: echo hi\n"  # 13
    )
    lines = usage_error(tmp_path, text).splitlines()
    where = str(tmp_path / "job.yaml")
    assert [line.split(": ", 1)[0] for line in lines] == [
        f"{where}:{n}" for n in (2, 4, 6, 7, 9, 12, 5)
    ]
    assert "unknown key 'bogus'" in lines[0]
    assert "resources.gpus: must be a whole number" in lines[1]
    assert "did you mean 'memory'?" in lines[2]
    assert lines[3].startswith(f"{where}:7: time_limit:")
    assert "env.1BAD: not a valid variable name" in lines[4]
    assert "inputs[0]: missing 'to'" in lines[5]
    assert "resources.nodes: input should be less than or equal to 1024" in lines[6]


def test_a_key_reported_by_the_file_is_not_reported_again_by_the_model(tmp_path: Path) -> None:
    message = usage_error(tmp_path, "name: a\nrun: [x]\nbogus: 2\n")
    lines = message.splitlines()
    assert len(lines) == 2, lines
    assert "run: must be a string" in lines[0] and "unknown key 'bogus'" in lines[1]
    assert "no `run:` script" not in message and "required" not in message.lower()


def test_a_file_without_problems_checks_clean(tmp_path: Path) -> None:
    job = load(tmp_path, "name: a\nrun: x\n")
    assert job.check() is job and job.problems == []
