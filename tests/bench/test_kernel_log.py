"""Finding ``NVRM: Xid`` events and reading the kernel log."""

from __future__ import annotations

from pathlib import Path

from kaic.bench import kernel_log
from kaic.bench.kernel_log import parse_xids, pci_key


def test_parse_xid_lines() -> None:
    lines = [
        "[ 1.0] usb 1-1: new device",
        "[ 2.0] NVRM: Xid (PCI:0000:18:00): 79, pid=0, name=, GPU has fallen off the bus.",
        "Jan 02 03:04:05 node kernel: NVRM: Xid (PCI:0001:9a:00): 48, pid=77, DBE",
        "[ 3.0] NVRM: Xid (0000:3b:00): 13, Graphics SM Warp Exception",
    ]
    events = parse_xids(lines)
    assert [(e.pci, e.xid) for e in events] == [
        ((0, 0x18, 0), 79),
        ((1, 0x9A, 0), 48),
        ((0, 0x3B, 0), 13),
    ]


def test_pci_key_of_nvml_bus_ids() -> None:
    assert pci_key("00000000:18:00.0") == (0, 0x18, 0)
    assert pci_key("00000001:9A:00.0") == (1, 0x9A, 0)
    assert pci_key("garbage") is None


def test_unreadable_kmsg_is_none(tmp_path: Path) -> None:
    assert kernel_log._read_kmsg(str(tmp_path / "missing")) is None


def test_missing_tool_is_unreadable() -> None:
    assert kernel_log._run(["kaic-no-such-tool-xyz"]) is None
