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
from kaic.cli.options import JqOpt, JsonOpt
from kaic.errors import UsageError

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
    jq: JqOpt = None,
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
        _remote(ctx, mode, device, gpu, partition, gpus, project, strict=strict)
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
        # CI parses stdout: under --json a document with the status (SKIP) and why; exit 4
        app.emit(to_json(nothing_to_validate(options, env, exc.message)))
        raise
    _report(ctx, run, to_json(run), strict=strict)


def _remote(
    ctx: typer.Context,
    mode: Mode,
    device: Device,
    gpu: list[int] | None,
    partition: str | None,
    gpus: int | None,
    project: str | None,
    *,
    strict: bool,
) -> None:
    """`kaic bench --remote`: the flow runs the bench as a job on the center; its report is
    rendered, and the command exits, as a local run would."""
    from kaic.flows.bench import bench_job, run_remote

    app = get_app(ctx)
    spec = bench_job(
        mode.value, device.value, gpu or [], partition=partition, gpus=gpus, project=project
    )
    report = run_remote(app.session, app.ui(), spec, mode=mode.value, device=device.value)
    if not report.run.gpus:
        app.emit(report.document)
        raise report.nothing_validated()
    _report(ctx, report.run, report.document, strict=strict)


def _report(ctx: typer.Context, run: Any, doc: dict[str, Any], *, strict: bool) -> None:
    """Show the run (`doc` under --json, else tables) and exit as CLI.md says."""
    from kaic.bench.report import render_human
    from kaic.bench.verdict import exit_code

    app = get_app(ctx)
    color = app.is_terminal() and "NO_COLOR" not in os.environ
    app.emit(doc, lambda: render_human(run, app.stdout, color=color))
    code = exit_code(run, strict=strict)
    if code:
        raise typer.Exit(code)
