"""Sampling NVML while the benchmarks run: throttling, PCIe generation, temperature, power.

The NVML seam itself (and the inventory) is ``kaic.gpu``; this is what ``kaic bench`` keeps
watching during a run to judge it (``health.check_throttle`` and friends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from kaic.gpu.nvml import (
    NVML_CLOCK_SM,
    NVML_TEMPERATURE_GPU,
    NvmlApi,
    NvmlUnavailable,
    optional,
    throttle_reasons,
)


@dataclass
class GpuSamples:
    """What NVML showed about one GPU while the benchmarks ran."""

    samples: int = 0
    throttle_bits: int = 0  # OR of every sample's reasons
    throttle_error: str | None = None
    pcie_gen_max_seen: int | None = None
    temperature_max_c: int | None = None
    power_max_w: float | None = None
    sm_clock_min_mhz: int | None = None
    replays_start: int | None = None
    replays_end: int | None = None
    started: float = 0.0
    ended: float = 0.0
    loaded: bool = False  # the benchmarks put load on this GPU (PCIe generation is meaningful)


class RunSampler:
    """Samples NVML on a background thread while benchmarks run (every 200 ms by default).

    One sample is also taken synchronously at start and at stop, so even a run shorter
    than the interval is judged on real readings.
    """

    def __init__(
        self,
        api: NvmlApi,
        handles: dict[int, Any],
        interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.api = api
        self.handles = handles
        self.interval_s = interval_s
        self.clock = clock
        self.samples: dict[int, GpuSamples] = {i: GpuSamples() for i in handles}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        api = self.api
        with self._lock:
            for index, handle in self.handles.items():
                s = self.samples[index]
                s.samples += 1
                try:
                    s.throttle_bits |= throttle_reasons(api, handle)
                except NvmlUnavailable as exc:
                    s.throttle_error = exc.reason
                gen = optional(api, api.nvmlDeviceGetCurrPcieLinkGeneration, handle)
                if gen is not None:
                    s.pcie_gen_max_seen = max(gen, s.pcie_gen_max_seen or 0)
                temp = optional(api, api.nvmlDeviceGetTemperature, handle, NVML_TEMPERATURE_GPU)
                if temp is not None:
                    s.temperature_max_c = max(temp, s.temperature_max_c or temp)
                power = optional(api, api.nvmlDeviceGetPowerUsage, handle)
                if power is not None:
                    s.power_max_w = max(power / 1000, s.power_max_w or 0.0)
                clock = optional(api, api.nvmlDeviceGetClockInfo, handle, NVML_CLOCK_SM)
                if clock is not None:
                    s.sm_clock_min_mhz = min(clock, s.sm_clock_min_mhz or clock)

    def _replays(self) -> dict[int, int | None]:
        return {
            i: optional(self.api, self.api.nvmlDeviceGetPcieReplayCounter, h)
            for i, h in self.handles.items()
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        """Take the first sample and the replay counters, then sample in the background."""
        now = self.clock()
        for index, replays in self._replays().items():
            self.samples[index].replays_start = replays
            self.samples[index].started = now
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="kaic-nvml-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and take the last sample and replay counters."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        now = self.clock()
        for index, replays in self._replays().items():
            self.samples[index].replays_end = replays
            self.samples[index].ended = now

    def mark_loaded(self, index: int) -> None:
        """Record that benchmarks loaded this GPU (so its PCIe generation is judged)."""
        if index in self.samples:
            self.samples[index].loaded = True


@contextmanager
def sampling(sampler: RunSampler) -> Iterator[RunSampler]:
    """Run the sampler for the duration of a ``with`` block."""
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
