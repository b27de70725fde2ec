"""`kaic bench`: validate this node's GPUs (health, performance against spec) — PASS/WARN/FAIL.

Only typer and stdlib at import time; the bench layer (and pydantic, rich, torch, pynvml
through it) is imported inside the command.
"""

from __future__ import annotations

import os
from enum import Enum
from typing import Annotated, Any

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JsonOpt
from kaic.errors import UsageError
from kaic.text import visible

#: Key in ``ctx.meta`` under which a test (or an embedding program) may put a
#: ``kaic.bench.runner.BenchEnvironment`` to replace NVML, the backends or the kernel log.
ENVIRONMENT_META_KEY = "kaic.bench.environment"


class Mode(str, Enum):
    quick = "quick"
    standard = "standard"


class Device(str, Enum):
    cuda = "cuda"
    cpu = "cpu"


def register(app: typer.Typer) -> None:
    """Add `kaic bench` to the root app."""
    app.command("bench")(bench)


def bench(
    ctx: typer.Context,
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="quick (~1 min: health, GEMM, memory, PCIe, all-reduce) or standard "
            "(adds a 60 s burn with result checks).",
        ),
    ] = Mode.quick,
    gpu: Annotated[
        list[int] | None,
        typer.Option("--gpu", help="NVML index of a GPU to check (repeatable); default: all."),
    ] = None,
    device: Annotated[
        Device,
        typer.Option("--device", help="cuda: the node's GPUs; cpu: run the benchmarks on the CPU."),
    ] = Device.cuda,
    strict: Annotated[
        bool, typer.Option("--strict", help="Treat WARN as failure (exit 1).")
    ] = False,
    json_out: JsonOpt = False,
    remote: Annotated[
        bool,
        typer.Option("--remote", help="Run the bench as a job on the center instead of here."),
    ] = False,
    partition: Annotated[
        str | None, typer.Option("--partition", help="With --remote: partition to run on.")
    ] = None,
    gpus: Annotated[
        int | None, typer.Option("--gpus", min=1, help="With --remote: number of GPUs.")
    ] = None,
    project: Annotated[
        str | None, typer.Option("--project", help="With --remote: project to charge.")
    ] = None,
) -> None:
    """Validate the GPUs of this node: health through NVML, then benchmarks against spec.

    Each GPU gets PASS / WARN / FAIL with the reason; exit 0 when all pass (WARN allowed
    unless --strict), 1 on any FAIL, 4 when there is no GPU to validate.

    Examples:

      kaic bench

      kaic bench --gpu 0 --gpu 3 --json > bench.json

      kaic bench --mode standard --strict

      kaic bench --device cpu
    """
    app = get_app(ctx)
    if not remote and (partition or gpus or project):
        raise UsageError("--partition, --gpus and --project only apply with --remote")
    if remote:
        run_remote(
            ctx,
            partition=partition,
            gpus=gpus,
            project=project,
            mode=mode.value,
            device=device.value,
            gpu_indices=gpu or [],
            strict=strict,
            json_out=json_out,
        )
        return

    from kaic.bench.report import to_json
    from kaic.bench.runner import BenchEnvironment, BenchOptions, nothing_to_validate, run_bench
    from kaic.errors import NotFound

    env = ctx.meta.get(ENVIRONMENT_META_KEY)
    if not isinstance(env, BenchEnvironment):
        env = BenchEnvironment()
    env.progress = app.info  # progress is not data: stderr
    options = BenchOptions(mode=mode.value, device=device.value, gpus=tuple(gpu or ()))
    try:
        run = run_bench(options, env)
    except NotFound as exc:
        if json_out:  # CI parses stdout: a document with the status (SKIP) and why; exit 4
            app.json(to_json(nothing_to_validate(options, env, exc.message)))
        raise

    _report(ctx, run, to_json(run) if json_out else None, strict=strict)


def run_remote(
    ctx: typer.Context,
    *,
    partition: str | None,
    gpus: int | None,
    project: str | None,
    mode: str,
    device: str,
    gpu_indices: list[int],
    strict: bool,
    json_out: bool,
) -> None:
    """`kaic bench --remote`: run `kaic bench --json` as a job on the center, wait, fetch its
    report, render it as a local run would, and exit as a local run would.

    The job runs `kaic` on the compute node, so kaic must be installed there (the local
    center's jobs find the kaic of the center's own environment).
    """
    import json
    import shlex

    from kaic.bench.report import from_json
    from kaic.client.jobs import JobsAPI
    from kaic.client.logs import LogCursor, read_log
    from kaic.flows.wait import wait_for_jobs
    from kaic.errors import KaicError, NotFound
    from kaic.models import JobSubmit, Resources

    app = get_app(ctx)
    args = ["kaic", "bench", "--mode", mode, "--device", device, "--json"]
    for index in gpu_indices:
        args += ["--gpu", str(index)]
    n_gpus = gpus if gpus is not None else (0 if device == "cpu" else 1)
    spec = JobSubmit(
        name="kaic-bench",
        partition=partition,
        project=project,
        resources=Resources(gpus=n_gpus),
        time_limit_seconds=900 if mode == "standard" else 300,
        run=shlex.join(args),
    )
    api = JobsAPI(app.session().client)
    job = api.submit(spec)
    app.info(
        f"Submitted bench job {visible(job.id)} ({n_gpus} GPU(s), "
        f"partition {visible(job.partition)}); waiting…"
    )
    final = wait_for_jobs(api, [job.id], sleep=app.sleep)[0]
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
    if not run.gpus:
        if json_out:
            app.json(doc)
        raise NotFound(
            f"bench job {job.id} on the center's node: {run.error or 'no GPU to validate'}",
            hint=f"see its output: kaic logs {job.id}",
        )
    _report(ctx, run, doc if json_out else None, strict=strict)


def _report(ctx: typer.Context, run: Any, doc: dict[str, Any] | None, *, strict: bool) -> None:
    """Print the run (as `doc` when given, else as tables) and exit as CLI.md says."""
    from kaic.bench.report import render_human
    from kaic.bench.verdict import exit_code

    app = get_app(ctx)
    if doc is not None:
        app.json(doc)
    else:
        color = app.is_terminal() and "NO_COLOR" not in os.environ
        render_human(run, app.stdout, color=color)
    code = exit_code(run, strict=strict)
    if code:
        raise typer.Exit(code)
