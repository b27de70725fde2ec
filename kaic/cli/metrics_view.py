"""How `kaic top` and `kaic stats` look: per-GPU rows with utilisation bars and idle GPUs
highlighted on a terminal, aligned plain rows when piped, sparklines over a job's life.

Job names and node names are outside strings: every one goes to rich as a `Text` through
`visible`, never as markup. Rich is imported inside the functions (the CLI's start path).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from kaic.flows.metrics import gib, percent
from kaic.text import visible

if TYPE_CHECKING:
    from kaic.models.metrics import (
        GpuSample,
        GpuSummary,
        JobMetrics,
        MetricSample,
        RunningJobMetrics,
        RunningMetrics,
    )

TOP_HEADERS = (
    "JOB",
    "NAME",
    "ELAPSED",
    "NODE",
    "GPU",
    "UTIL",
    "MEM GiB",
    "POWER",
    "CPU",
    "RSS GiB",
)
STATS_HEADERS = ("NODE", "GPU", "MODEL", "UTIL MIN/AVG/MAX", "MEM PEAK/TOTAL GiB", "POWER AVG/MAX")
#: eighths of a cell, for bars and sparklines
_BLOCKS = " ▏▎▍▌▋▊▉█"
_SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 10
SPARK_WIDTH = 40
#: the style of an idle GPU's row (utilisation below IDLE_UTILIZATION_PCT)
IDLE_STYLE = "bold yellow"


def elapsed(start: datetime | None, now: datetime) -> str:
    """`1:02:03` (hours unbounded), `-` for a job with no start."""
    from kaic.humanize import clock

    return "-" if start is None else clock((now - start).total_seconds())


def bar(pct: float | None, width: int = BAR_WIDTH) -> str:
    """A utilisation bar of `width` cells in eighths (`█████▌    `); blank when unknown."""
    if pct is None:
        return " " * width
    eighths = round(max(0.0, min(100.0, pct)) / 100 * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part] if part else "")).ljust(width)


def sparkline(values: Sequence[float | None], width: int = SPARK_WIDTH) -> str:
    """`values` (percent) as at most `width` unicode blocks, each the mean of its share of
    the values (a long job's thousands of samples in one line); unknown values a space."""
    if not values:
        return ""
    cells = min(width, len(values))
    out = []
    for i in range(cells):
        chunk = values[i * len(values) // cells : (i + 1) * len(values) // cells]
        known = [v for v in chunk if v is not None]
        if not known:
            out.append(" ")
            continue
        level = max(0.0, min(100.0, sum(known) / len(known)))
        out.append(_SPARKS[round(level / 100 * (len(_SPARKS) - 1))])
    return "".join(out)


def _watts(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} W"


def _is_idle(gpu: GpuSample) -> bool:
    from kaic.models.metrics import IDLE_UTILIZATION_PCT

    return gpu.utilization_pct is not None and gpu.utilization_pct < IDLE_UTILIZATION_PCT


# -- kaic top -------------------------------------------------------------------------------


def top_rows(doc: RunningMetrics, *, repeat: bool) -> list[tuple[list[str], bool]]:
    """One row per GPU of each running job (one per node for a job without GPUs samples,
    one for a job not sampled yet), each with whether that GPU is idle. `repeat`: the job's
    id, name and elapsed time on every row (piped rows, for `awk`), else on its first."""
    rows: list[tuple[list[str], bool]] = []
    for job in doc.jobs:
        head = [visible(job.job_id), visible(job.name), elapsed(job.started_at, doc.at)]
        for i, cells in enumerate(_job_rows(job)):
            shown = head if i == 0 or repeat else ["", "", ""]
            rows.append(([*shown, *cells[0]], cells[1]))
    return rows


def _job_rows(job: RunningJobMetrics) -> list[tuple[list[str], bool]]:
    if not job.latest:
        return [(["-", "-", "waiting for the first sample", "", "", "", ""], False)]
    rows = []
    for sample in job.latest:
        node_cells = _node_cells(sample)
        for n, gpu in enumerate(sample.gpus or [None]):
            proc = node_cells if n == 0 else ["", ""]
            rows.append(
                ([visible(sample.node), *_gpu_cells(gpu), *proc], gpu is not None and _is_idle(gpu))
            )
    return rows


def _gpu_cells(gpu: GpuSample | None) -> list[str]:
    if gpu is None:
        return ["-", "-", "-", "-"]
    util = percent(gpu.utilization_pct).replace(" ", "")
    mem = f"{gib(gpu.memory_used_bytes)}/{gib(gpu.memory_total_bytes)}"
    return [str(gpu.index), util, mem, _watts(gpu.power_watts)]


def _node_cells(sample: MetricSample) -> list[str]:
    cpu = "-" if sample.cpu_pct is None else f"{sample.cpu_pct:.0f}%"
    return [cpu, gib(sample.rss_bytes)]


def top_summary(doc: RunningMetrics) -> str:
    """`3 running jobs · 5 GPUs, 1 idle · 12:00:01 UTC`."""
    gpus = [g for j in doc.jobs for s in j.latest for g in s.gpus]
    idle = sum(1 for g in gpus if _is_idle(g))
    jobs = len(doc.jobs)
    return (
        f"{jobs} running job{'s' if jobs != 1 else ''} · {len(gpus)} GPU"
        f"{'s' if len(gpus) != 1 else ''}, {idle} idle · {doc.at:%H:%M:%S} UTC"
    )


def top_table(doc: RunningMetrics, rows: list[tuple[list[str], bool]] | None = None) -> Any:
    """The rich table of a terminal: a utilisation bar before the percentage, idle GPUs'
    rows highlighted; `rows` (of `top_rows`) when only some are shown."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for header in TOP_HEADERS:
        table.add_column(Text(header), justify="right" if header in ("POWER", "CPU") else "left")
    for cells, idle in rows if rows is not None else top_rows(doc, repeat=False):
        util = cells[5]
        pct = _pct(util)
        cells = [*cells[:5], f"{bar(pct)} {util:>4}" + (" idle" if idle else ""), *cells[6:]]
        style = IDLE_STYLE if idle else ""
        table.add_row(*(Text(c, style=style) for c in cells))
    return table


def _pct(cell: str) -> float | None:
    try:
        return float(cell.rstrip("%"))
    except ValueError:
        return None


def top_frame(
    doc: RunningMetrics | None, trouble: str | None, interval: float, height: int = 0
) -> Any:
    """One frame of the live view: a title line, the table (or why there is none), and
    what went wrong at the last refresh. With a `height` (the terminal's rows), only the
    rows that fit are drawn and the rest counted: a frame the terminal cannot show costs
    nothing to lay out (400 GPUs' rows took rich a quarter of a second per refresh)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = []
    title = f"kaic top · every {interval:g} s · q to quit"
    if doc is not None:
        title = f"kaic top · {top_summary(doc)} · every {interval:g} s · q to quit"
    parts.append(Text(title, style="bold"))
    if doc is None:
        parts.append(Text("fetching…"))
    elif not doc.jobs:
        parts.append(Text(NO_JOBS))
    else:
        rows = top_rows(doc, repeat=False)
        room = max(1, height - 4) if height else len(rows)  # title, header, more, trouble
        parts.append(top_table(doc, rows[:room]))
        if len(rows) > room:
            parts.append(
                Text(
                    f"… {len(rows) - room} more rows: a taller window shows them, "
                    "`kaic top --once` prints them all",
                    style="dim",
                )
            )
    if trouble:
        parts.append(Text(visible(trouble), style="red"))
    return Group(*parts)


NO_JOBS = "No running jobs. Submit one with `kaic submit --gpus 1 -- COMMAND`."


def console(stream: Any) -> Any:
    from rich.console import Console

    return Console(file=stream, no_color="NO_COLOR" in os.environ)


# -- kaic stats -----------------------------------------------------------------------------


def stats_rows(doc: JobMetrics) -> list[list[str]]:
    """One row per GPU of the job: min/avg/max utilisation, peak/total memory, power, and
    its utilisation over the job's life as a sparkline."""
    rows = []
    for gpu in doc.summary:
        util = "/".join(
            "-" if v is None else f"{v:.0f}"
            for v in (gpu.utilization_min_pct, gpu.utilization_avg_pct, gpu.utilization_max_pct)
        )
        power = f"{_watts(gpu.power_avg_watts)}/{_watts(gpu.power_max_watts)}"
        rows.append(
            [
                visible(gpu.node),
                str(gpu.index),
                visible(gpu.name or "-"),
                f"{util} %",
                f"{gib(gpu.memory_used_peak_bytes)}/{gib(gpu.memory_total_bytes)}",
                power.replace(" W/", "/"),
                sparkline(_utilisation_over_time(doc, gpu)),
            ]
        )
    return rows


def _utilisation_over_time(doc: JobMetrics, gpu: GpuSummary) -> list[float | None]:
    values: list[float | None] = []
    for sample in sorted(doc.samples, key=lambda s: s.at):
        if sample.node != gpu.node:
            continue
        values.extend(g.utilization_pct for g in sample.gpus if g.index == gpu.index)
    return values


def process_line(doc: JobMetrics) -> str:
    """`CPU 153 % avg (of one core) · RSS peak 12.3 GiB`."""
    cpu = "-" if doc.cpu_pct_avg is None else f"{doc.cpu_pct_avg:.0f} % avg (of one core)"
    return f"CPU {cpu} · RSS peak {gib(doc.rss_peak_bytes)} GiB"
