"""Slurm job states and flags -> kaic job states, with reasons.

Slurm describes a job by one base state plus flags. Up to Slurm 23.02 (REST v0.0.36–v0.0.39)
`job_state` is one string: the base state, or the most telling flag instead of it
("COMPLETING", "CONFIGURING", "REQUEUED", ...). From 23.11 (v0.0.40+) it is a list: the base
state and every flag. `parse_job_state` accepts both; `map_state` decides on the parsed form,
so the mapping is the same whatever the Slurm version.

kaic's states are Slurm's base states (plus COMPLETING), so base states map one to one; flags
refine them:

- COMPLETING, STAGE_OUT -> COMPLETING (the job ended; epilog, stage-out or clean-up run)
- REQUEUED, REQUEUE_HOLD, REQUEUE_FED, SPECIAL_EXIT, RESV_DEL_HOLD -> PENDING (requeued,
  maybe held)
- STOPPED -> SUSPENDED (stopped with SIGSTOP)
- CONFIGURING, POWER_UP_NODE -> RUNNING (resources allocated, nodes booting)
- REVOKED -> CANCELLED (a sibling cluster of a federation runs it instead)
- SIGNALING, RESIZING, UPDATE_DB, LAUNCH_FAILED, RECONFIG_FAIL -> the base state; given
  alone (the string form) -> unchanged (the last known state is kept)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kaic.models import TERMINAL_STATES, JobState

#: Slurm's base job states (`enum job_states`), each the kaic state of the same name.
BASE_STATES: dict[str, JobState] = {
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

#: Slurm's job state flags (JOB_LAUNCH_FAILED ... JOB_POWER_UP_NODE).
FLAGS: frozenset[str] = frozenset(
    {
        "LAUNCH_FAILED",
        "UPDATE_DB",
        "REQUEUED",
        "REQUEUE_HOLD",
        "SPECIAL_EXIT",
        "RESIZING",
        "CONFIGURING",
        "COMPLETING",
        "STOPPED",
        "RECONFIG_FAIL",
        "POWER_UP_NODE",
        "REVOKED",
        "REQUEUE_FED",
        "RESV_DEL_HOLD",
        "SIGNALING",
        "STAGE_OUT",
    }
)

_COMPLETING = frozenset({"COMPLETING", "STAGE_OUT"})
_BACK_IN_QUEUE = {
    "REQUEUED": "requeued by Slurm",
    "REQUEUE_FED": "requeued by the federation",
    "REQUEUE_HOLD": "requeued and held (JobHeldAdmin); ask an administrator",
    "SPECIAL_EXIT": "requeued and held after a special exit code; ask an administrator",
    "RESV_DEL_HOLD": "held because its reservation was deleted",
}
_BOOTING = frozenset({"CONFIGURING", "POWER_UP_NODE"})

#: Pending reasons shown as they are (the ones users see most); others are kept verbatim too.
NO_REASON = frozenset({"", "None", "none"})


@dataclass(frozen=True)
class SlurmState:
    """A parsed Slurm `job_state`: the base state (None if only a flag was given) and flags."""

    base: str | None
    flags: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Mapped:
    """What a Slurm state means for kaic: the state (None = keep the last known one), whether
    it is terminal, and a reason to show (besides Slurm's own `state_reason`)."""

    state: JobState | None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state is not None and self.state in TERMINAL_STATES


def parse_job_state(value: object) -> SlurmState:
    """Parse `job_state` in either form: "RUNNING" / "COMPLETING" or ["RUNNING", "COMPLETING"].

    Unknown names are kept as flags (a newer Slurm may add some); they never crash polling.
    """
    if isinstance(value, str):
        names: Iterable[object] = [value]
    elif isinstance(value, (list, tuple)):
        names = value
    else:
        raise ValueError(f"unexpected job_state {value!r}")
    base: str | None = None
    flags: set[str] = set()
    for item in names:
        name = str(item).strip().upper()
        if not name:
            continue
        if name in BASE_STATES and base is None:
            base = name
        else:
            flags.add(name)
    return SlurmState(base, frozenset(flags))


def map_state(state: SlurmState) -> Mapped:
    """The kaic state of a parsed Slurm state (see the module's table)."""
    flags = state.flags
    base = BASE_STATES.get(state.base) if state.base else None
    if flags & _COMPLETING:
        return Mapped(JobState.COMPLETING)
    for flag, reason in _BACK_IN_QUEUE.items():
        if flag in flags:
            return Mapped(JobState.PENDING, reason)
    if "REVOKED" in flags:
        return Mapped(JobState.CANCELLED, "revoked: a sibling cluster of the federation runs it")
    if "STOPPED" in flags:
        return Mapped(JobState.SUSPENDED, "stopped (SIGSTOP)")
    if flags & _BOOTING and base in (None, JobState.PENDING, JobState.RUNNING):
        return Mapped(JobState.RUNNING, "nodes are booting")
    return Mapped(base)


def map_job_state(value: object) -> Mapped:
    """`map_state(parse_job_state(value))`."""
    return map_state(parse_job_state(value))


def pending_reason(state_reason: str | None) -> str | None:
    """Slurm's pending reason as kaic shows it ("Resources", "Priority", "Dependency", ...),
    None when Slurm says there is none."""
    if state_reason is None or state_reason.strip() in NO_REASON:
        return None
    return state_reason.strip()
