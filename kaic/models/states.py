"""Job states (Slurm's names) and the one terminal set."""

from __future__ import annotations

from enum import Enum


class JobState(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"


TERMINAL_STATES: frozenset[JobState] = frozenset(
    {
        JobState.COMPLETED,
        JobState.FAILED,
        JobState.CANCELLED,
        JobState.TIMEOUT,
        JobState.NODE_FAIL,
        JobState.PREEMPTED,
        JobState.BOOT_FAIL,
        JobState.DEADLINE,
        JobState.OUT_OF_MEMORY,
    }
)
ACTIVE_STATES: frozenset[JobState] = frozenset(set(JobState) - TERMINAL_STATES)


def is_terminal(state: JobState | str) -> bool:
    return JobState(state) in TERMINAL_STATES


#: Exit codes of the waiting commands for states that carry no exit code of their own.
STATE_EXIT_CODES: dict[JobState, int] = {
    JobState.TIMEOUT: 124,
    JobState.DEADLINE: 124,
    JobState.CANCELLED: 125,
    JobState.NODE_FAIL: 126,
    JobState.PREEMPTED: 126,
    JobState.BOOT_FAIL: 126,
}


def outcome_exit_code(state: JobState | str, exit_code: int | None) -> int:
    """What `submit --wait`, `wait` and `logs -f` exit with for a terminal job (CLI.md)."""
    st = JobState(state)
    if st in STATE_EXIT_CODES:
        return STATE_EXIT_CODES[st]
    if st is JobState.COMPLETED:
        return 0
    if exit_code:  # FAILED, OUT_OF_MEMORY: the job's own code (128+N for signal N)
        return exit_code
    return 1
