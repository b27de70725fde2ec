"""Reading the kernel log and finding ``NVRM: Xid`` events in it.

The XID history check must say UNKNOWN, never PASS, when the log cannot be read (non-root
users often cannot: ``kernel.dmesg_restrict=1``, no ``systemd-journal`` group), so the
reader returns None for "unreadable" and the caller decides.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelLog:
    """Kernel log lines since boot and where they came from (``dmesg``, ``journalctl``…)."""

    lines: list[str]
    source: str


#: A reader returns the kernel log, or None when no source could be read.
KernelLogReader = Callable[[], "KernelLog | None"]


@dataclass(frozen=True)
class XidEvent:
    """One ``NVRM: Xid`` line: which PCI device and which XID."""

    pci: tuple[int, int, int]  # (domain, bus, device)
    xid: int
    line: str


_XID_RE = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<dom>[0-9a-f]+):(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})"
    r"(?:\.[0-7])?\): (?P<xid>\d+)",
    re.IGNORECASE,
)
_BUS_ID_RE = re.compile(
    r"(?P<dom>[0-9a-f]+):(?P<bus>[0-9a-f]{2}):(?P<dev>[0-9a-f]{2})(?:\.[0-7])?$", re.IGNORECASE
)

_MAX_KMSG_RECORDS = 500_000  # a bound, so a log that is written to endlessly cannot hang us


def pci_key(bus_id: str) -> tuple[int, int, int] | None:
    """(domain, bus, device) of an NVML bus id such as ``00000000:18:00.0``."""
    m = _BUS_ID_RE.search(bus_id.strip())
    if not m:
        return None
    return int(m["dom"], 16), int(m["bus"], 16), int(m["dev"], 16)


def parse_xids(lines: list[str]) -> list[XidEvent]:
    """Every ``NVRM: Xid (PCI:dddd:bb:dd): N, …`` event in these lines."""
    events = []
    for line in lines:
        m = _XID_RE.search(line)
        if m:
            pci = (int(m["dom"], 16), int(m["bus"], 16), int(m["dev"], 16))
            events.append(XidEvent(pci=pci, xid=int(m["xid"]), line=line.strip()))
    return events


def _run(argv: list[str]) -> list[str] | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    # dmesg exits 0 with nothing when restricted on some systems: treat empty as unreadable
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    return proc.stdout.splitlines()


def _read_kmsg(path: str = "/dev/kmsg") -> list[str] | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    lines: list[str] = []
    try:
        for _ in range(_MAX_KMSG_RECORDS):
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                break  # end of the buffer
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    continue  # records overwritten while reading; the next read resumes
                return None
            if not record:
                break
            # "prio,seq,time,flags;message"
            lines.append(record.decode(errors="replace").split(";", 1)[-1].rstrip("\n"))
    finally:
        os.close(fd)
    return lines or None


def read_kernel_log() -> KernelLog | None:
    """The kernel log since boot from the first readable source, or None if none is."""
    for source, argv in (
        ("journalctl -k", ["journalctl", "-k", "-b", "-q", "--no-pager", "-o", "short"]),
        ("dmesg", ["dmesg"]),
    ):
        lines = _run(argv)
        if lines is not None:
            return KernelLog(lines, source)
    kmsg = _read_kmsg()
    return KernelLog(kmsg, "/dev/kmsg") if kmsg is not None else None
