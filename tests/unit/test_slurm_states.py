"""The Slurm state mapping over every base state and flag, in the string form (<= 23.02)
and the list-of-flags form (23.11+), and the adapter's decoding of slurmrestd records."""

from __future__ import annotations

import pytest

from kaic.center.executors.slurm.api import SubmitRequest, build_submit, token_user
from kaic.center.executors.slurm.records import (
    decode_exit_code,
    expand_indices,
    gpu_indices,
    parse_gres,
    parse_job,
    parse_node,
    parse_partition,
)
from kaic.center.executors.slurm.states import (
    BASE_STATES,
    FLAGS,
    map_job_state,
    parse_job_state,
    pending_reason,
)
from kaic.models import TERMINAL_STATES, JobState

BASE_EXPECTED = {
    "PENDING": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "SUSPENDED": JobState.SUSPENDED,
    "COMPLETED": JobState.COMPLETED,
    "CANCELLED": JobState.CANCELLED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "NODE_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
    "BOOT_FAIL": JobState.BOOT_FAIL,
    "DEADLINE": JobState.DEADLINE,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
}

#: flag -> (state with base RUNNING in list form, state of the flag alone in string form)
FLAG_EXPECTED: dict[str, tuple[JobState, JobState | None]] = {
    "COMPLETING": (JobState.COMPLETING, JobState.COMPLETING),
    "STAGE_OUT": (JobState.COMPLETING, JobState.COMPLETING),
    "REQUEUED": (JobState.PENDING, JobState.PENDING),
    "REQUEUE_HOLD": (JobState.PENDING, JobState.PENDING),
    "REQUEUE_FED": (JobState.PENDING, JobState.PENDING),
    "SPECIAL_EXIT": (JobState.PENDING, JobState.PENDING),
    "RESV_DEL_HOLD": (JobState.PENDING, JobState.PENDING),
    "STOPPED": (JobState.SUSPENDED, JobState.SUSPENDED),
    "CONFIGURING": (JobState.RUNNING, JobState.RUNNING),
    "POWER_UP_NODE": (JobState.RUNNING, JobState.RUNNING),
    "REVOKED": (JobState.CANCELLED, JobState.CANCELLED),
    "SIGNALING": (JobState.RUNNING, None),
    "RESIZING": (JobState.RUNNING, None),
    "UPDATE_DB": (JobState.RUNNING, None),
    "LAUNCH_FAILED": (JobState.RUNNING, None),
    "RECONFIG_FAIL": (JobState.RUNNING, None),
}


def test_every_slurm_state_and_flag_is_covered() -> None:
    assert set(BASE_EXPECTED) == set(BASE_STATES)
    assert set(FLAG_EXPECTED) == set(FLAGS)
    # kaic's states are Slurm's base states plus COMPLETING
    assert {s for s in JobState} == set(BASE_EXPECTED.values()) | {JobState.COMPLETING}


@pytest.mark.parametrize("name", sorted(BASE_EXPECTED))
def test_base_states_in_both_forms(name: str) -> None:
    expected = BASE_EXPECTED[name]
    for form in (name, [name], name.lower()):
        mapped = map_job_state(form)
        assert mapped.state is expected
        assert mapped.terminal == (expected in TERMINAL_STATES)


@pytest.mark.parametrize("flag", sorted(FLAG_EXPECTED))
def test_flags_in_both_forms(flag: str) -> None:
    with_base, alone = FLAG_EXPECTED[flag]
    assert map_job_state(["RUNNING", flag]).state is with_base
    assert map_job_state([flag, "RUNNING"]).state is with_base  # order does not matter
    assert map_job_state(flag).state is alone
    assert map_job_state([flag]).state is alone


def test_terminal_base_with_completing_is_not_terminal_yet() -> None:
    for base in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
        mapped = map_job_state([base, "COMPLETING"])
        assert mapped.state is JobState.COMPLETING and not mapped.terminal
    # the flag that does not change anything keeps the terminal base
    assert map_job_state(["FAILED", "UPDATE_DB"]).state is JobState.FAILED
    assert map_job_state(["PENDING", "CONFIGURING"]).state is JobState.RUNNING
    assert map_job_state(["FAILED", "CONFIGURING"]).state is JobState.FAILED


def test_reasons_and_unknown_names() -> None:
    assert "held" in (map_job_state(["PENDING", "REQUEUE_HOLD"]).reason or "")
    parsed = parse_job_state(["RUNNING", "SOMETHING_NEW"])
    assert parsed.base == "RUNNING" and "SOMETHING_NEW" in parsed.flags
    assert map_job_state(["RUNNING", "SOMETHING_NEW"]).state is JobState.RUNNING
    assert map_job_state("SOMETHING_NEW").state is None
    with pytest.raises(ValueError):
        parse_job_state(42)
    assert pending_reason("Resources") == "Resources"
    assert pending_reason("None") is None and pending_reason(None) is None


def test_exit_codes_both_generations() -> None:
    assert decode_exit_code(7 << 8) == (7, None)
    assert decode_exit_code(0) == (0, None)
    assert decode_exit_code(9) == (137, 9)  # killed by SIGKILL
    assert decode_exit_code(None) == (None, None)
    new_style = {
        "status": ["EXITED"],
        "return_code": {"set": True, "infinite": False, "number": 3},
        "signal": {"id": {"set": False, "infinite": False, "number": 0}, "name": ""},
    }
    assert decode_exit_code(new_style) == (3, None)
    signalled = {
        "status": ["SIGNALED"],
        "return_code": {"set": True, "number": 0},
        "signal": {"id": {"set": True, "number": 15}, "name": "TERM"},
    }
    assert decode_exit_code(signalled) == (143, 15)


def test_indices_gres_and_token() -> None:
    assert expand_indices("0-3%2") == (0, 1, 2, 3)
    assert expand_indices("0,2-6:2") == (0, 2, 4, 6)
    assert gpu_indices(["gpu:2(IDX:0-1)"]) == (0, 1)
    assert gpu_indices(["gpu:h100:1(IDX:3)", "shard:1"]) == (3,)
    assert gpu_indices([]) == ()
    assert parse_gres("gpu:2") == (2, None)
    assert parse_gres("gpu:h100:8(S:0-1),shard:4") == (8, "h100")
    assert parse_gres("") == (0, None)
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJyb290In0.sig"  # {"sun":"root"}
    assert token_user(token) == "root"
    assert token_user("garbage") is None


def test_parse_job_v0038_and_v0040() -> None:
    old = parse_job(
        {
            "job_id": 8,
            "array_job_id": 8,
            "array_task_id": None,
            "array_task_string": "0,2-3%2",
            "job_state": "PENDING",
            "state_reason": "Dependency",
            "exit_code": 0,
            "user_name": "kaicslurm",
            "comment": "kaic job 4",
            "gres_detail": [],
            "start_time": 1700000000,
            "end_time": 0,
        }
    )
    assert (old.start_time, old.end_time) == (1700000000, None)
    assert old.array_job_id == 8 and old.array_task_id is None
    assert old.pending_tasks == (0, 2, 3) and old.state.base == "PENDING"
    assert old.comment == "kaic job 4" and old.state_reason == "Dependency"
    plain = parse_job({"job_id": 4, "array_job_id": 0, "job_state": "FAILED", "exit_code": 10})
    assert plain.array_job_id is None and (plain.exit_code, plain.signal) == (138, 10)
    new = parse_job(
        {
            "job_id": 12,
            "array_job_id": {"set": True, "number": 11},
            "array_task_id": {"set": True, "number": 1},
            "job_state": ["RUNNING", "COMPLETING"],
            "exit_code": {"status": ["EXITED"], "return_code": {"set": True, "number": 0}},
            "gres_detail": ["gpu:1(IDX:1)"],
            "start_time": {"set": True, "number": 1700000000},
            "end_time": {"set": False, "number": 0},
        }
    )
    assert (new.start_time, new.end_time) == (1700000000, None)
    assert (new.array_job_id, new.array_task_id) == (11, 1)
    assert new.state.flags == {"COMPLETING"} and new.gpu_ids == (1,)


def test_nodes_partitions_and_submit_document() -> None:
    node = parse_node(
        {"name": "n1", "state": "mixed", "gres": "gpu:2", "gres_used": "gpu:1(IDX:0)",
         "partitions": ["debug"]}
    )  # fmt: skip
    assert (node.gpus, node.gpus_used, node.partitions) == (2, 1, ("debug",))
    part = parse_partition({"name": "debug", "flags": ["default"], "max_time_limit": -1})
    assert part.default and part.max_time_minutes is None
    assert parse_partition({"name": "h", "max_time_limit": 240}).max_time_minutes == 240
    doc = build_submit(
        SubmitRequest(
            name="n",
            script="#!/bin/bash\ntrue\n",
            workdir="/w",
            stdout="/w/o",
            stderr="/w/e",
            environment={"A": "1"},
            time_limit_minutes=2,
            partition="debug",
            gpus_per_node=1,
            nodes=2,
            array="0-3%2",
            dependency="afterok:5",
            account="proj",
            comment="kaic job 9",
        )
    )
    job = doc["job"]
    assert job["gres"] == "gpu:1" and job["nodes"] == "2" and job["time_limit"] == 2
    assert job["array"] == "0-3%2" and job["dependency"] == "afterok:5"
    assert job["kill_on_invalid_dependency"] is True and job["environment"] == {"A": "1"}
    assert doc["script"].startswith("#!/bin/bash")
