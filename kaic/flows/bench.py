"""`kaic bench --remote`: run `kaic bench --json` as a job on the center, wait for it, and
read its report back, so that the command renders it and exits as a local run would.

The job runs `kaic` on the compute node, so kaic must be installed there (the local
center's jobs find the kaic of the center's own environment).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kaic.errors import KaicError, NotFound
from kaic.flows.ui import Ui
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.bench.results import BenchRun
    from kaic.flows.session import Session
    from kaic.models import JobSubmit

#: the flag behind each field of the bench job (what a refused value is reported as)
_FLAGS = {
    "partition": "--partition",
    "project": "--project",
    "resources": "--gpus",
    "gpus": "--gpus",
}


@dataclass
class RemoteReport:
    """The job's report: as the bench layer reads it, and as the JSON the job printed."""

    job_id: str
    run: BenchRun
    document: dict[str, Any]

    def nothing_validated(self) -> NotFound:
        """The error (exit 4) for a report that validated no GPU."""
        return NotFound(
            f"bench job {self.job_id} on the center's node: "
            f"{self.run.error or 'no GPU to validate'}",
            hint=f"see its output: kaic logs {self.job_id}",
        )


def bench_job(mode: str, device: str, gpu_indices: Sequence[int], **where: Any) -> JobSubmit:
    """The job that runs the bench: `kaic bench --json` with the same mode, device and GPU
    indices, on `where` (`partition`, `project`, `gpus`: the flags of `--remote`); a flag the
    center would refuse is a usage error naming it."""
    from kaic.flows.inputs import user_input
    from kaic.models import JobSubmit, Resources

    args = ["kaic", "bench", "--mode", mode, "--device", device, "--json"]
    for index in gpu_indices:
        args += ["--gpu", str(index)]
    gpus = where.get("gpus")
    with user_input(_FLAGS):
        return JobSubmit(
            name="kaic-bench",
            partition=where.get("partition"),
            project=where.get("project"),
            resources=Resources(gpus=gpus if gpus is not None else int(device != "cpu")),
            time_limit_seconds=900 if mode == "standard" else 300,
            run=shlex.join(args),
        )


def run_remote(
    session: Callable[[], Session], ui: Ui, spec: JobSubmit, *, mode: str, device: str
) -> RemoteReport:
    """Submit the bench job (`bench_job`), wait for it, and read its report from its stdout.
    NotFound (exit 4) when the node had no GPU to validate; KaicError when the job left no
    report."""
    from kaic.bench.report import from_json
    from kaic.client.logs import LogCursor, read_log
    from kaic.flows.wait import wait_for_jobs

    opened = session()
    api = opened.jobs
    job = api.submit(spec)
    ui.info(
        f"Submitted bench job {visible(job.id)} ({spec.resources.gpus} GPU(s), "
        f"partition {visible(job.partition)}); waiting…"
    )
    final = wait_for_jobs(api, [job.id], sleep=ui.sleep)[0]
    out = bytearray()
    read_log(api.client, LogCursor(job.id, "stdout"), out.extend, follow=False)
    try:
        doc = json.loads(out.decode())
        run = from_json(doc, device=device, mode=mode)
    except ValueError:
        if final.exit_code == 4:  # the remote kaic found nothing to validate: say its why
            err = bytearray()
            read_log(api.client, LogCursor(job.id, "stderr"), err.extend, follow=False)
            why = next(
                (ln for ln in err.decode(errors="replace").splitlines() if ln.startswith("error:")),
                "error: no GPU to validate",
            )
            raise NotFound(
                f"bench job {job.id} on the center's node: {why.removeprefix('error: ')}",
                hint=f"see its output: kaic logs {job.id}",
            ) from None
        raise KaicError(
            f"bench job {job.id} ended {final.state.value} (exit code {final.exit_code}) "
            "without a report",
            hint=f"see its output: kaic logs {job.id}",
        ) from None
    return RemoteReport(job.id, run, doc)
