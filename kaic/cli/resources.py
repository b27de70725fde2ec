"""`kaic resources` (partitions), `kaic usage` (GPU-hour allocations) and `kaic images` (the
center's image catalogue)."""

import typer

from kaic.cli.context import get_app
from kaic.cli.options import JqOpt, JsonOpt


def register(app: typer.Typer) -> None:
    app.command("resources")(resources)
    app.command("usage")(usage)
    app.command("images")(images)


def resources(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Show partitions: GPU type, total and free GPUs, max time, queue depth.

    Example: kaic resources --json
    """
    app = get_app(ctx)
    parts = app.session().jobs.partitions()
    from kaic.cli.render import table

    rows = [
        (
            p.name + ("*" if p.default else ""),
            p.gpu_type or "-",
            str(p.gpus_total),
            str(p.gpus_free),
            "unlimited" if p.max_time is None else _hours(p.max_time),
            str(p.pending_jobs),
        )
        for p in parts
    ]
    headers = ("PARTITION", "GPU_TYPE", "GPUS", "FREE", "MAX_TIME", "PENDING")
    app.emit([p.model_dump(mode="json") for p in parts], table(app, headers, rows))


def _hours(seconds: int) -> str:
    from kaic.durations import format_duration

    return format_duration(seconds)


def usage(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Show your projects' GPU-hour allocations: granted, used, remaining.

    Example: kaic usage --json
    """
    app = get_app(ctx)
    projects = app.session().jobs.projects()
    from kaic.cli.render import table

    rows = [
        (
            p.name,
            f"{p.gpu_hours_granted:.1f}",
            f"{p.gpu_hours_used:.2f}",
            f"{p.gpu_hours_remaining:.2f}",
        )
        for p in projects
    ]
    human = table(
        app,
        ("PROJECT", "GRANTED", "USED", "REMAINING"),
        rows,
        empty="You are not a member of any project.",
    )
    app.emit([p.model_dump(mode="json") for p in projects], human)


def images(ctx: typer.Context, json_out: JsonOpt = False, jq: JqOpt = None) -> None:
    """Show the container images the center offers: name, tag, size, contents.

    A job runs in one with `image: NAME` (or NAME:TAG) in its job file, or `--image NAME`;
    an image on your center storage is named by its path (`--image ~/images/NAME`).

    Example: kaic images --json
    """
    app = get_app(ctx)
    offered = app.session().images.all()
    from kaic.cli.render import table

    rows = [
        (
            i.name,
            i.tag or "-",
            i.format,
            "-" if i.size_bytes is None else _size(i.size_bytes),
            i.description or "",
        )
        for i in offered
    ]
    human = table(
        app,
        ("IMAGE", "TAG", "FORMAT", "SIZE", "CONTAINS"),
        rows,
        empty="The center offers no images; a job may still name one on your storage by path.",
    )
    app.emit([i.model_dump(mode="json") for i in offered], human)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
