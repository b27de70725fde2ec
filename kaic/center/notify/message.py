"""What a job-end notification says: the job, its final state, exit code, elapsed time of
its last attempt, GPU-hours of all its attempts — as the webhook's JSON and a short mail."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

from kaic.center.jobs.rows import JobRow

#: the webhook body's `kind`, so that a receiver can tell it from anything else it gets
KIND = "kaic.job.end"


def payload(row: JobRow) -> dict[str, Any]:
    """The JSON a webhook receives (and the mail is written from)."""
    elapsed = None
    if row.started_at is not None and row.ended_at is not None:
        elapsed = round(max(0.0, (row.ended_at - row.started_at).total_seconds()), 3)
    return {
        "kind": KIND,
        "job_id": row.id,
        "name": row.name,
        "user": row.user,
        "project": row.project,
        "state": row.state.value,
        "exit_code": row.exit_code,
        "reason": row.reason,
        "attempt": row.attempt,
        "elapsed_seconds": elapsed,
        "gpu_hours": round(row.gpu_hours, 6),
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def mail(body: dict[str, Any], sender: str, to: str) -> EmailMessage:
    """The plain-text mail of a job's end."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    # Outside text (the job's name) in a header: no line breaks, bounded.
    name = " ".join(str(body["name"]).split())[:80]
    message["Subject"] = f"kaic job {body['job_id']} ({name}) ended {body['state']}"
    lines = [
        f"Job {body['job_id']} ({name}) ended {body['state']}.",
        "",
        f"exit code:  {'-' if body['exit_code'] is None else body['exit_code']}",
        f"elapsed:    {_duration(body['elapsed_seconds'])}",
        f"GPU-hours:  {body['gpu_hours']:.4f}",
        f"attempt:    {body['attempt']}",
        f"project:    {body['project']}",
    ]
    if body.get("reason"):
        lines.append(f"reason:     {' '.join(str(body['reason']).split())}")
    lines += ["", f"kaic show {body['job_id']}   # its events", ""]
    message.set_content("\n".join(lines))
    return message
