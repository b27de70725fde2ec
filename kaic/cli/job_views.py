"""What the job commands (`kaic/cli/jobs.py`, `kaic/cli/submit.py`) show alike: a job as JSON,
its state's colour, its elapsed time, and where a job's log streams go."""

from typing import TYPE_CHECKING, Any

from kaic.cli.context import AppContext

if TYPE_CHECKING:
    from kaic.flows.jobs import LogWriters
    from kaic.models import Job

STATE_COLOURS = {
    "PENDING": "yellow",
    "RUNNING": "cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
    "TIMEOUT": "red",
    "OUT_OF_MEMORY": "red",
    "NODE_FAIL": "red",
    "PREEMPTED": "magenta",
    "BOOT_FAIL": "red",
    "DEADLINE": "red",
    "SUSPENDED": "yellow",
}


def job_json(job: "Job") -> dict[str, Any]:
    return job.model_dump(mode="json")


def log_writers(app: AppContext, stream: str = "both", *, to_stderr: bool = False) -> "LogWriters":
    """Job stdout to stdout (to stderr when stdout carries the JSON result), stderr to stderr."""
    from kaic.cli.render import binary_writer

    writers = {
        "stdout": binary_writer(app.stderr if to_stderr else app.stdout),
        "stderr": binary_writer(app.stderr),
    }
    return writers if stream == "both" else {stream: writers[stream]}


def elapsed(job: "Job") -> str:
    """`1:02:03` since the job started (to its end, or now); `-` before it starts."""
    from datetime import datetime, timezone

    from kaic.humanize import clock

    if job.started_at is None:
        return "-"
    return clock(((job.ended_at or datetime.now(timezone.utc)) - job.started_at).total_seconds())
