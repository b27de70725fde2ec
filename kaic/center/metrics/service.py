"""Job metrics behind the routes: a job's samples and summary, the caller's running jobs'
latest samples, and each GPU job's efficiency, computed once when it ends (a ledger
listener) and kept with the job (`jobs.efficiency`, migration 6)."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

from kaic.center.jobs.paths import job_paths
from kaic.center.jobs.rows import JobRow
from kaic.center.jobs.store import JobStore
from kaic.center.metrics.files import read_job_files
from kaic.center.metrics.latest import LatestSamples
from kaic.center.metrics.summary import add_up, utc, wire_sample
from kaic.models.metrics import JobMetrics, RunningJobMetrics, RunningMetrics

logger = logging.getLogger("kaic.center.metrics")


class MetricsService:
    """Reads the samplers' files of one center's jobs (`state_dir/jobs/<id>/metrics/`)."""

    def __init__(self, jobs: JobStore, state_dir: Path) -> None:
        self.jobs = jobs
        self.state_dir = state_dir
        self.latest = LatestSamples()

    def job_dir(self, job_id: str) -> Path:
        return job_paths(self.state_dir, job_id).dir

    def job_metrics(self, row: JobRow, since: datetime | None) -> JobMetrics:
        """A job's (or array task's) samples after `since` and its summary over all of them."""
        files = read_job_files(self.job_dir(row.id))
        totals = add_up(files)
        cutoff = since.timestamp() if since is not None else None
        samples = sorted(
            (
                (point.at, wire_sample(point, node_file.header))
                for node_file in files
                for point in node_file.points
                if cutoff is None or point.at > cutoff
            ),
            key=lambda pair: pair[0],
        )
        newest = samples[-1][0] if samples else None
        notes = [note for node_file in files for note in node_file.header.notes]
        if not files and row.started_at is not None:
            notes.append("no samples were recorded for this job")
        return JobMetrics(
            job_id=row.id,
            samples=[sample for _, sample in samples],
            summary=totals.summary(),
            cpu_pct_avg=totals.cpu.value(),
            rss_peak_bytes=totals.rss_peak,
            efficiency=row.efficiency,
            notes=list(dict.fromkeys(notes)),
            next_since=utc(newest) if newest is not None else since,
        )

    def running(self, user_id: int) -> RunningMetrics:
        """The latest sample per node of each of the user's running jobs and tasks."""
        out = []
        for row in self.jobs.running_for_user(user_id):
            nodes = self.latest.nodes(row.id, self.job_dir(row.id))
            # every GPU of the job idle: every node's (that has GPUs), since the last went idle
            idle = [node.idle_since for node in nodes if node.latest and node.latest.gpus]
            out.append(
                RunningJobMetrics(
                    job_id=row.id,
                    name=row.name,
                    started_at=row.started_at,
                    gpus=row.gpus,
                    latest=[
                        wire_sample(node.latest, node.header)
                        for node in nodes
                        if node.latest is not None
                    ],
                    idle_since=(
                        utc(max(i for i in idle if i is not None))
                        if idle and all(i is not None for i in idle)
                        else None
                    ),
                )
            )
        return RunningMetrics(jobs=out, at=self.jobs.now())

    def job_ended(self, job_id: str) -> None:
        """A ledger listener (inside the transaction writing the end): keep a GPU job's
        efficiency with it, and stop following its files."""
        self.latest.forget(job_id)
        row = self.jobs.get(job_id)
        if row is None or row.kind == "array" or row.gpus <= 0 or row.started_at is None:
            return
        try:
            efficiency = add_up(read_job_files(self.job_dir(row.id))).efficiency(row.gpu_hours)
        except (OSError, ValueError):
            logger.exception("job %s: could not read its samples", job_id)
            return
        self.jobs.update(job_id, efficiency=efficiency.model_dump_json())
