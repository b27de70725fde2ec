"""`kaic top` (your running jobs, live) and `kaic stats` (one job's GPUs over its life).

Thin commands: parse, call the metrics flows (`kaic.flows.metrics`), render through the
output sink or, for the live view, rich's `Live` (`kaic.cli.metrics_view` draws both).
"""

from typing import TYPE_CHECKING, Annotated

import typer

from kaic.cli.context import AppContext, get_app
from kaic.cli.options import JqOpt, JsonOpt

if TYPE_CHECKING:
    from kaic.flows.metrics import JobStats
    from kaic.models.metrics import RunningMetrics


def register(app: typer.Typer) -> None:
    app.command("top")(top)
    app.command("stats")(stats)


def top(
    ctx: typer.Context,
    once: Annotated[
        bool, typer.Option("--once", help="Show one snapshot and exit (for scripts).")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            metavar="SECONDS",
            help="Seconds between refreshes (0.5 at least).",
            min=0.5,
        ),
    ] = 2.0,
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Show your running jobs live: GPU utilisation, memory, power, CPU and RSS.

    Idle GPUs (utilisation under 5 %) are highlighted. Leave with q or Ctrl-C. With --once,
    --json, or when stdout is not a terminal: one snapshot. The center is asked once per
    refresh for all your jobs.

    Examples:

      kaic top

      kaic top --jq '.jobs[] | .job_id'          # the ids of your running jobs
    """
    from kaic.flows.metrics import snapshot

    app = get_app(ctx)
    if once or app.output.json or not app.is_terminal():
        doc = snapshot(app.session())
        app.emit(doc.model_dump(mode="json"), lambda: _top_once(app, doc))
        return
    _top_live(app, interval)


def _top_once(app: AppContext, doc: "RunningMetrics") -> None:
    from kaic.cli import metrics_view as view

    if not doc.jobs:
        app.info(view.NO_JOBS)
        return
    if app.is_terminal():
        view.console(app.stdout).print(view.top_table(doc))
        return
    from kaic.cli.render import print_table

    rows = [cells for cells, _idle in view.top_rows(doc, repeat=True)]
    print_table(app, view.TOP_HEADERS, rows)  # piped: aligned plain rows


def _top_live(app: AppContext, interval: float) -> None:
    """The live view until q or Ctrl-C (both leave with exit 0), the terminal restored on
    every way out: keys are read in cbreak mode (`Terminal.keys`), rich's `Live` gives the
    cursor back."""
    import contextlib
    import sys

    from rich.live import Live

    from kaic.cli import metrics_view as view
    from kaic.flows.metrics import watch
    from kaic.flows.terminal import Terminal, Terminated

    session = app.session()
    terminal = Terminal.of(sys.stdin)
    try:
        with contextlib.ExitStack() as stack:
            read = stack.enter_context(terminal.keys()) if terminal is not None else None
            live = stack.enter_context(
                Live(
                    view.top_frame(None, None, interval),
                    console=view.console(app.stdout),
                    auto_refresh=False,
                    redirect_stdout=False,
                    redirect_stderr=False,
                )
            )

            def show(doc: "RunningMetrics | None", trouble: str | None) -> None:
                frame = view.top_frame(doc, trouble, interval, live.console.size.height)
                live.update(frame, refresh=True)

            def wait_for_quit(seconds: float) -> bool:
                if read is None:  # keys come from elsewhere: Ctrl-C is the way out
                    app.sleep(seconds)
                    return False
                pressed = read(seconds)
                if pressed == b"":  # the terminal is gone: nobody is watching
                    return True
                return pressed is not None and pressed[:1] in (b"q", b"Q")

            watch(session, show, wait_for_quit, interval=interval)
    except KeyboardInterrupt:
        return  # Ctrl-C is how one leaves a live view: not an error
    except Terminated as ended:
        app.info(ended.message)
        raise typer.Exit(128 + ended.signum) from None


def stats(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="JOB", help="Job id.")],
    json_out: JsonOpt = False,
    jq: JqOpt = None,
) -> None:
    """Show one job's GPUs over its life: utilisation, memory, power, sparkline; CPU, RSS.

    Works on running and finished jobs. --json gives every sample and the per-GPU summary
    (the center's metrics document).

    Examples:

      kaic stats 42

      kaic stats 42 --jq '.summary[] | .utilization_avg_pct'
    """
    from kaic.flows.metrics import job_stats

    app = get_app(ctx)
    found = job_stats(app.session(), job_id)
    app.emit(found.metrics.model_dump(mode="json"), lambda: _stats_human(app, found))


def _stats_human(app: AppContext, found: "JobStats") -> None:
    from datetime import datetime, timezone

    from kaic.cli import metrics_view as view
    from kaic.cli.render import print_table
    from kaic.flows.metrics import efficiency_hint, efficiency_text
    from kaic.text import visible

    job, doc = found.job, found.metrics
    now = job.ended_at or datetime.now(timezone.utc)
    app.out(
        f"job {visible(job.id)} · {visible(job.name)} · {job.state.value} · "
        f"elapsed {view.elapsed(job.started_at, now)}"
    )
    empty = found.why_empty()
    if empty is not None:
        app.info(empty)
    rows = view.stats_rows(doc)
    if rows:
        print_table(app, (*view.STATS_HEADERS, "UTIL OVER TIME"), rows)
    if doc.cpu_pct_avg is not None or doc.rss_peak_bytes is not None:
        app.out(view.process_line(doc))
    if doc.efficiency is not None:
        app.out(f"efficiency: {efficiency_text(doc.efficiency)}")
        hint = efficiency_hint(job.id, doc.efficiency, point_to_stats=False)
        if hint:
            app.info(hint)
    for note in doc.notes:
        app.info(f"note: {visible(note)}")
