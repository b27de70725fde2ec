"""The metrics flows behind `kaic top`, `kaic stats`, the efficiency line of a finished GPU
job (`kaic show`, `wait`, `submit --wait`) and the idle mark of `kaic jobs`.

The center measures; these only read and describe. `kaic top` costs the center one
`GET /v1/metrics/running` per refresh whatever the number of jobs, and `kaic jobs` asks it
once per call, only when the listing has running GPU jobs — a center without the route (an
older one: 404) simply gets no mark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from kaic.errors import NotFound, Rejected, ServerError, Unreachable
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.models import Job
    from kaic.models.metrics import Efficiency, JobMetrics, RunningMetrics

#: below this average utilisation (percent) a finished job gets a hint
LOW_UTILIZATION_PCT = 50.0
#: above this share of its GPU-hours spent idle a finished job gets a hint
HIGH_IDLE_SHARE = 0.25


# -- numbers as people read them ---------------------------------------------------------


def gib(size: int | None) -> str:
    """Bytes as GiB with one decimal (`61.2`), `-` when unknown."""
    return "-" if size is None else f"{size / 2**30:.1f}"


def gpu_hours(value: float) -> str:
    """GPU-hours: one decimal (`16.0`, `0.4`), two significant digits below 0.1 (`0.004`),
    so a short job does not read as free."""
    return f"{value:.1f}" if value >= 0.1 or value == 0 else f"{value:.2g}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} %"


# -- efficiency of a finished GPU job -----------------------------------------------------


def efficiency_text(eff: Efficiency) -> str:
    """`GPU util 87 % avg · peak mem 61.2 GiB · 16.0 GPU-h charged, 0.4 idle`; a number the
    hardware could not give reads `-` (never 0)."""
    charged = f"{gpu_hours(eff.gpu_hours)} GPU-h charged"
    if eff.gpu_hours_idle is not None:
        charged += f", {gpu_hours(eff.gpu_hours_idle)} idle"
    return (
        f"GPU util {percent(eff.gpu_util_avg)} avg · "
        f"peak mem {gib(eff.gpu_mem_peak_bytes)} GiB · {charged}"
    )


def efficiency_hint(job_id: str, eff: Efficiency, *, point_to_stats: bool = True) -> str | None:
    """One line for a job that used its GPUs poorly (average utilisation under 50 %, or more
    than a quarter of its GPU-hours idle), saying what helps and (unless `kaic stats` is what
    shows it) where to see when; None otherwise."""
    low = eff.gpu_util_avg is not None and eff.gpu_util_avg < LOW_UTILIZATION_PCT
    idle_share = (
        eff.gpu_hours_idle / eff.gpu_hours
        if eff.gpu_hours_idle is not None and eff.gpu_hours > 0
        else 0.0
    )
    # judged on the whole percent shown: GPU-hours come rounded, and "idle 25 %" must not
    # read as more than a quarter
    idle_pct = round(idle_share * 100)
    high_idle = idle_pct > HIGH_IDLE_SHARE * 100
    if not low and not high_idle:
        return None
    why = [f"GPU util {percent(eff.gpu_util_avg)} avg"] if low else []
    if high_idle:
        why.append(f"GPUs idle {idle_pct} % of the time")
    where = f"; `kaic stats {visible(job_id)}` shows when" if point_to_stats else ""
    return (
        f"hint: {', '.join(why)}: try fewer GPUs or a faster input pipeline (more data-loader "
        f"workers){where}"
    )


def describe_efficiency(job: Job) -> list[str]:
    """The efficiency line and (for a poor one) its hint, for stderr after a wait; nothing
    for a job without efficiency (not a GPU job, or not finished)."""
    if job.efficiency is None:
        return []
    lines = [f"efficiency: {efficiency_text(job.efficiency)}"]
    hint = efficiency_hint(job.id, job.efficiency)
    return lines + ([hint] if hint else [])


# -- the idle mark of `kaic jobs` ---------------------------------------------------------


def idle_marks(session: Session, jobs: list[Job]) -> dict[str, float]:
    """Running GPU jobs of `jobs` whose GPUs have all been idle for `IDLE_MARK_SECONDS` or
    more -> for how many seconds. One request, made only when `jobs` has a running GPU job; by the
    center's clock (`at`), so a skewed laptop clock marks nothing wrongly. A center that
    cannot answer (no such route, refused, failing) marks nothing: a mark is a courtesy,
    never a reason for `kaic jobs` to fail."""
    from kaic.models.metrics import IDLE_MARK_SECONDS

    wanted = {j.id for j in jobs if j.state.value == "RUNNING" and j.resources.gpus > 0}
    if not wanted:
        return {}
    try:
        running = session.metrics.running()
    except (NotFound, Rejected, ServerError):
        return {}
    idle = {
        m.job_id: (running.at - m.idle_since).total_seconds()
        for m in running.jobs
        if m.job_id in wanted and m.idle_since is not None
    }
    return {job_id: seconds for job_id, seconds in idle.items() if seconds >= IDLE_MARK_SECONDS}


# -- kaic stats -----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobStats:
    """`kaic stats`: the job and its metrics document."""

    job: Job
    metrics: JobMetrics

    def why_empty(self) -> str | None:
        """Why the job has no samples (None when it has some): it has not started, has just
        started, or ended before the first sample."""
        from datetime import timezone

        from kaic.models import is_terminal

        if self.metrics.samples or self.metrics.summary:
            return None
        job, name = self.job, visible(self.job.id)
        ended = is_terminal(job.state)
        if job.started_at is None:
            verb = "ended" if ended else "is"
            return f"job {name} {verb} {job.state.value} without starting: nothing was sampled"
        ran = ((job.ended_at or datetime.now(timezone.utc)) - job.started_at).total_seconds()
        if not ended:
            return (
                f"no samples yet: job {name} started {ran:.0f} s ago; the first come within "
                f"seconds (run `kaic stats {name}` again)"
            )
        return f"no samples: job {name} ran {ran:.0f} s, too short to be sampled"


def job_stats(session: Session, job_id: str) -> JobStats:
    """`kaic stats`: the job's samples and per-GPU summary, running or finished."""
    return JobStats(session.jobs.get(job_id), session.metrics.job(job_id))


# -- kaic top -------------------------------------------------------------------------------

#: what a live view shows: the latest snapshot (None before the first) and, when the last
#: refresh failed, why (the view keeps the snapshot it had)
Show = Callable[["RunningMetrics | None", "str | None"], None]
#: wait up to this many seconds for the user; True when they asked to leave
WaitForQuit = Callable[[float], bool]


def snapshot(session: Session) -> RunningMetrics:
    """One `GET /v1/metrics/running`: the caller's running jobs and their latest samples. A
    center without the route (older than job metrics) is said as such, not as "not found"."""
    try:
        return session.metrics.running()
    except NotFound:
        raise NotFound(
            f"the center at {session.center_url} does not serve job metrics (it is older "
            "than `kaic top`)",
            hint="`kaic jobs` and `kaic show JOB` still work; ask the center's operators to "
            "upgrade it",
        ) from None


def watch(
    session: Session,
    show: Show,
    wait_for_quit: WaitForQuit,
    *,
    interval: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """`kaic top`'s live loop: one request per refresh, every `interval` seconds, until the
    user leaves (`wait_for_quit`; Ctrl-C propagates as KeyboardInterrupt). A center that
    stops answering is said in the view, which keeps its last snapshot and tries again at the
    next refresh (the client has already retried)."""
    latest: RunningMetrics | None = None
    while True:
        started = clock()
        trouble = None
        try:
            latest = snapshot(session)
        except (Unreachable, ServerError) as exc:
            trouble = f"{exc.message} — retrying every {interval:g} s"
        show(latest, trouble)
        if wait_for_quit(max(0.0, started + interval - clock())):
            return
