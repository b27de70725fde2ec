"""The JSON document of BENCH.md and the human rendering of a run.

pydantic and rich are imported inside the functions: the CLI imports this module only
inside the ``bench`` command.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING, Any

from kaic.bench.results import BenchRun, Check, GpuResult
from kaic.gpu.inventory import Inventory
from kaic.text import visible

if TYPE_CHECKING:
    from pydantic import BaseModel

SCHEMA_VERSION = 1

STATUS_STYLE = {
    "PASS": "green",
    "WARN": "yellow",
    "FAIL": "bold red",
    "SKIP": "dim",
    "UNKNOWN": "magenta",
}


def report_model() -> type[BaseModel]:
    """The pydantic model of the JSON document (built lazily: pydantic is not on start-up)."""
    global _REPORT_MODEL
    if _REPORT_MODEL is not None:
        return _REPORT_MODEL
    from pydantic import BaseModel, ConfigDict

    Scalar = float | int | str | None

    class CheckOut(BaseModel):
        model_config = ConfigDict(extra="forbid")
        id: str
        status: str
        value: Scalar
        unit: str | None
        expected: Scalar
        ratio: float | None
        message: str

    class GpuOut(BaseModel):
        model_config = ConfigDict(extra="forbid")
        index: int
        uuid: str | None
        pci_bus_id: str | None
        name: str
        sku: str | None
        status: str
        checks: list[CheckOut]

    class BenchReport(BaseModel):
        """``kaic bench --json``: schema_version 1."""

        model_config = ConfigDict(extra="forbid")
        schema_version: int
        host: str
        timestamp: str
        driver: str | None
        cuda: str | None
        backend: str
        status: str
        gpus: list[GpuOut]
        error: str | None = None  # why nothing was validated (exit 4); absent in older kaic

    _REPORT_MODEL = BenchReport
    return BenchReport


_REPORT_MODEL: type[BaseModel] | None = None


def _check_dict(c: Check) -> dict[str, Any]:
    return {
        "id": c.id,
        "status": c.status,
        "value": c.value,
        "unit": c.unit,
        "expected": c.expected,
        "ratio": c.ratio,
        "message": c.message,
    }


def _gpu_dict(g: GpuResult) -> dict[str, Any]:
    return {
        "index": g.index,
        "uuid": g.inventory.uuid,
        "pci_bus_id": g.inventory.pci_bus_id,
        "name": g.inventory.name,
        "sku": g.sku,
        "status": g.status,
        "checks": [_check_dict(c) for c in g.checks],
    }


def to_json(run: BenchRun) -> dict[str, Any]:
    """The run as BENCH.md's JSON document, validated by the pydantic model."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "host": run.host,
        "timestamp": run.timestamp,
        "driver": run.driver,
        "cuda": run.cuda,
        "backend": run.backend,
        "status": run.status,
        "gpus": [_gpu_dict(g) for g in run.gpus],
        "error": run.error,
    }
    return report_model().model_validate(doc).model_dump(mode="json")


def _fmt(value: object, unit: str | None = None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}" if unit else text


def _bus(bus_id: str | None) -> str:
    """`18:00.0` for `00000000:18:00.0` (PCI domain 0, as nearly every GPU has); the JSON
    keeps the whole id."""
    if not bus_id:
        return "-"
    domain, _, rest = bus_id.partition(":")
    return rest if rest and set(domain) == {"0"} else bus_id


def _inventory_row(inv: Inventory) -> list[str]:
    def pair(a: float | int | None, b: float | int | None, unit: str, scale: float = 1.0) -> str:
        if a is None and b is None:
            return "-"
        left = "-" if a is None else f"{a / scale:.{1 if scale > 1 else 0}f}"
        right = "-" if b is None else f"{b / scale:.0f}"
        return f"{left}/{right}{unit}"

    pcie = "-"
    if inv.pcie_gen is not None:
        pcie = f"Gen{inv.pcie_gen}x{inv.pcie_width}"
        if (inv.pcie_gen_max, inv.pcie_width_max) != (inv.pcie_gen, inv.pcie_width):
            pcie += " ↓"  # below its maximum: the PCIe checks below say by how much
    known = [inv.ecc_enabled, inv.persistence, inv.mig_enabled]
    modes = ",".join(name for name, on in zip(("ecc", "pm", "mig"), known, strict=True) if on) or (
        "-" if all(v is None for v in known) else "none"
    )

    return [
        str(inv.index),
        inv.name,
        _bus(inv.pci_bus_id),
        pair(inv.memory_used_mib, inv.memory_total_mib, " GiB", 1024.0),
        _fmt(inv.utilization_pct, "%").replace(" ", ""),
        _fmt(inv.temperature_c, "C").replace(" ", ""),
        pair(inv.power_w, inv.power_limit_w, "W"),
        _fmt(inv.sm_clock_mhz),
        pcie,
        modes,
    ]


#: the inventory's columns: fit 100 columns for an 8-GPU H100 node (the SKU goes in each
#: GPU's heading; `modes` lists ECC, persistence mode and MIG when on; a PCIe link below its
#: maximum is marked ↓)
INVENTORY_HEADERS = (
    "#", "name", "bus id", "memory", "util", "temp", "power/cap", "sm MHz", "pcie", "modes",
)  # fmt: skip


def render_human(run: BenchRun, stream: IO[str], *, color: bool, width: int | None = None) -> None:
    """An nvidia-smi-like table, then per GPU one line per check, then the overall status.

    Names, host and messages come from NVML, the OS and exceptions: every cell is a rich
    `Text` of `visible(...)`, never markup.
    """
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    def cell(value: object, style: str = "") -> Text:
        return Text(visible(value), style=style)

    console = Console(
        file=stream,
        no_color=not color,
        force_terminal=color,
        highlight=False,
        width=width or (None if color else 100),
    )
    console.print(
        cell(
            f"kaic bench  host {run.host}  driver {run.driver or '-'}  CUDA {run.cuda or '-'}  "
            f"backend {run.backend}  mode {run.mode}  {run.timestamp}"
        )
    )
    # plain rows when piped, so `awk` and `grep` work on the output
    table = Table(header_style="bold", pad_edge=False, box=None)
    for h in INVENTORY_HEADERS:
        table.add_column(h, no_wrap=h != "name", overflow="fold")
    for gpu in run.gpus:
        table.add_row(*map(cell, _inventory_row(gpu.inventory)))
    console.print(table)
    for gpu in run.gpus:
        console.print()
        console.print(
            Text.assemble(
                cell(f"{'GPU' if run.device == 'cuda' else 'CPU'} {gpu.index}  "),
                cell(f"{gpu.inventory.name}" + (f" ({gpu.sku})  " if gpu.sku else "  ")),
                (gpu.status, STATUS_STYLE[gpu.status]),
            )
        )
        checks = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
        for h in ("status", "check", "value", "expected", "ratio", "note"):
            checks.add_column(h, no_wrap=h != "note")
        for c in gpu.checks:
            checks.add_row(
                Text(c.status, style=STATUS_STYLE[c.status]),
                cell(c.id),
                cell(_fmt(c.value, c.unit)),
                cell(_fmt(c.expected, c.unit if isinstance(c.expected, (int, float)) else None)),
                cell("-" if c.ratio is None else f"{c.ratio:.2f}"),
                cell(c.message),
            )
        console.print(checks)
    console.print()
    console.print(Text.assemble("overall: ", (run.status, STATUS_STYLE[run.status])))


def from_json(doc: dict[str, Any], *, device: str, mode: str) -> BenchRun:
    """A run rebuilt from its JSON document (`kaic bench --remote` renders what a job printed).

    The JSON carries identity but not the live inventory (memory, clocks...): those cells show
    as not reported.
    """
    report = report_model().model_validate(doc)
    gpus = [
        GpuResult(
            inventory=Inventory(index=g.index, name=g.name, uuid=g.uuid, pci_bus_id=g.pci_bus_id),
            sku=g.sku,
            checks=[Check(**c.model_dump()) for c in g.checks],
            status=g.status,
        )
        for g in report.gpus  # type: ignore[attr-defined]
    ]
    return BenchRun(
        host=report.host,  # type: ignore[attr-defined]
        timestamp=report.timestamp,  # type: ignore[attr-defined]
        driver=report.driver,  # type: ignore[attr-defined]
        cuda=report.cuda,  # type: ignore[attr-defined]
        backend=report.backend,  # type: ignore[attr-defined]
        device=device,
        mode=mode,
        gpus=gpus,
        status=report.status,  # type: ignore[attr-defined]
        error=report.error,  # type: ignore[attr-defined]
    )
