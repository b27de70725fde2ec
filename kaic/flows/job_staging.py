"""A job file's `inputs` (pushed before submit) and `outputs` (pulled after `--wait`).

Local paths in a job file are relative to the job file's directory (so `kaic submit
ci/train.yaml` works from anywhere); remote paths are as in `kaic data` (`~/x` or relative =
from your home on center storage). Each entry is one `kaic data push/pull FROM TO` with the
default options: sync semantics, resumable, sha256-verified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kaic.errors import Interrupted, KaicError
from kaic.flows.ui import Ui
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.flows.session import Session
    from kaic.jobspec import JobFile, Transfer
    from kaic.staging.transfer import SyncResult


@dataclass(frozen=True)
class Staged:
    """One input or output: the paths as written, the local path resolved, and the result."""

    src: str
    dst: str
    local: str
    result: SyncResult | None = None
    error: KaicError | None = None

    def summary(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"from": self.src, "to": self.dst}
        if self.result is not None:
            doc.update(self.result.summary())
        if self.error is not None:
            doc["error"] = self.error.message
        return doc


def local_path(job_file: JobFile | None, path: str) -> str:
    """`path` from a job file, made absolute: `~` expanded, relative = from the file's dir."""
    expanded = os.path.expanduser(path)
    if os.path.isabs(expanded) or job_file is None:
        return os.path.abspath(expanded)
    return os.path.abspath(os.path.join(job_file.path.parent, expanded))


def check_inputs(job_file: JobFile | None, inputs: list[Transfer]) -> list[Staged]:
    """The inputs with local paths resolved; a missing one is a usage error naming its line."""
    checked = []
    for index, item in enumerate(inputs):
        local = local_path(job_file, item.src)
        if not os.path.lexists(local):
            from kaic.jobspec import file_error

            raise file_error(
                job_file,
                f"inputs[{index}].from",
                f"{item.src} does not exist ({local})",
                hint="fix the path (relative paths start at the job file's directory)",
            )
        checked.append(Staged(src=item.src, dst=item.dst, local=local))
    return checked


def plan_outputs(job_file: JobFile | None, outputs: list[Transfer]) -> list[Staged]:
    """The outputs with local destinations resolved."""
    return [
        Staged(src=item.src, dst=item.dst, local=local_path(job_file, item.dst)) for item in outputs
    ]


def _sync(session: Session, ui: Ui, push: bool, items: list[Staged]) -> list[Staged]:
    from kaic.flows.data import describe_result, failures_error, run_sync
    from kaic.flows.ssh_target import resolve_target
    from kaic.staging.transfer import SyncOptions

    # once: staging info and certificate for every entry
    target = resolve_target(lambda: session)
    done: list[Staged] = []
    for item in items:
        what = "input" if push else "output"
        ui.info(f"Staging {what} {visible(item.src)} -> {visible(item.dst)}")
        sources, dest = ([item.local], item.dst) if push else ([item.src], item.local)
        try:
            result = run_sync(target, push, sources, dest, SyncOptions(), ui, show_progress=True)
        except Interrupted as exc:
            # Ctrl-C stops the whole command, not just this entry; the outputs of a job that
            # ended are fetched by a pull, not by submitting the job again
            if not push:
                pull = f"kaic data pull {visible(remote_display(item.src))} {visible(item.dst)}"
                exc.hint = f"the job has ended; `{pull}` fetches the rest (and resumes)"
            else:
                exc.hint = "nothing was submitted; run the same command again to resume staging"
            raise
        except KaicError as exc:
            done.append(Staged(item.src, item.dst, item.local, error=exc))
            if push:
                break  # the job must not start without its data
            continue
        ui.info("  " + describe_result(result))
        error = failures_error(result, ui.warn, f"{what} {item.src}")
        done.append(Staged(item.src, item.dst, item.local, result=result, error=error))
        if error is not None and push:
            break
    return done


def stage_inputs(session: Session, ui: Ui, inputs: list[Staged]) -> list[Staged]:
    """Push every input; raises (nothing is submitted) when one cannot be staged."""
    if not inputs:
        return []
    try:
        done = _sync(session, ui, True, inputs)
    except KaicError:  # no staging endpoint, no certificate, unreachable
        ui.warn("the inputs were not staged; the job was not submitted")
        raise
    for item in done:
        if item.error is not None:
            ui.warn(f"input {item.src} was not staged; the job was not submitted")
            raise item.error
    return done


def fetch_outputs(session: Session, ui: Ui, outputs: list[Staged]) -> list[Staged]:
    """Pull every output; failures are reported and returned, not raised (the caller decides
    the exit code: the job's own outcome comes first)."""
    if not outputs:
        return []
    try:
        done = _sync(session, ui, False, outputs)
    except Interrupted:
        raise
    except KaicError as exc:  # no staging endpoint, no certificate, unreachable
        done = [Staged(item.src, item.dst, item.local, error=exc) for item in outputs]
    for item in done:
        if item.error is not None:
            ui.warn(f"output {item.src} not fetched: {item.error.message}")
    return done


def first_error(items: list[Staged]) -> KaicError | None:
    return next((item.error for item in items if item.error is not None), None)


def remote_display(path: str) -> str:
    """How a remote path of a job file is shown in a `kaic data pull` hint."""
    return path if path.startswith(("/", "~")) else str(Path("~") / path)
