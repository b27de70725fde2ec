"""One ``kaic bench`` run: inventory, health checks, benchmarks under NVML sampling, verdict.

Everything the run touches outside Python — NVML, the benchmark backend, the kernel log,
the clock — comes from a ``BenchEnvironment``, so tests inject doubles and the CLI uses
the defaults. The CLI only parses flags, calls ``run_bench`` and renders.
"""

from __future__ import annotations

import os
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any

from kaic.bench import health
from kaic.bench.backends import BenchPlan, plan_for, select_backend
from kaic.bench.kernel_log import KernelLogReader, read_kernel_log
from kaic.bench.protocol import BenchBackend, BenchUnavailable
from kaic.bench.results import BenchRun, Check, GpuResult
from kaic.bench.sampler import RunSampler, sampling
from kaic.bench.specs import match_sku
from kaic.bench.verdict import Outcome, Skipped, finish, perf_checks
from kaic.errors import NotFound, UsageError
from kaic.gpu.inventory import Inventory, inventory
from kaic.gpu.nvml import NvmlApi, NvmlUnavailable, call, close_nvml, driver_versions, open_nvml


def cpu_model_name() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), for the CPU pseudo-GPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class BenchEnvironment:
    """The outside world of a run; tests replace any part."""

    open_nvml: Callable[[], NvmlApi] = open_nvml
    select_backend: Callable[[str], tuple[BenchBackend | None, str]] = select_backend
    read_kernel_log: KernelLogReader = read_kernel_log
    plan: Callable[[str, str], BenchPlan] = plan_for
    sample_interval_s: float = 0.2
    progress: Callable[[str], None] = field(default=lambda _msg: None)
    now: Callable[[], datetime] = _utc_now
    hostname: Callable[[], str] = socket.gethostname
    cpu_name: Callable[[], str] = cpu_model_name


@dataclass(frozen=True)
class BenchOptions:
    """The flags of ``kaic bench`` that shape a local run."""

    mode: str = "quick"  # quick | standard
    device: str = "cuda"  # cuda | cpu
    gpus: tuple[int, ...] = ()  # NVML indices; empty = all


def run_bench(options: BenchOptions, env: BenchEnvironment | None = None) -> BenchRun:
    """Validate this node's GPUs (or its CPU) and return the judged run.

    Raises ``NotFound`` when there is nothing to validate (no driver, no GPU, no such index).
    """
    env = env or BenchEnvironment()
    plan = env.plan(options.mode, options.device)
    if options.device == "cpu":
        return _run_cpu(options, env, plan)
    return _run_cuda(options, env, plan)


def nothing_to_validate(options: BenchOptions, env: BenchEnvironment, reason: str) -> BenchRun:
    """The run to report when ``run_bench`` raised ``NotFound``: no GPU, status SKIP (nothing
    was checked), and why — so ``--json`` still prints a document (the exit code stays 4)."""
    return _run(env, options, driver=None, cuda=None, backend="none", gpus=[], error=reason)


def _run(env: BenchEnvironment, options: BenchOptions, **kw: Any) -> BenchRun:
    return BenchRun(
        host=env.hostname(),
        timestamp=env.now().isoformat().replace("+00:00", "Z"),
        mode=options.mode,
        device=options.device,
        **kw,
    )


def _run_cpu(options: BenchOptions, env: BenchEnvironment, plan: BenchPlan) -> BenchRun:
    if any(i != 0 for i in options.gpus):
        raise UsageError("--device cpu has one device, index 0")
    backend, backend_name = env.select_backend("cpu")
    if backend is None:
        raise NotFound(f"nothing to validate on the CPU: {backend_name}")
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    inv = Inventory(index=0, name=env.cpu_name(), memory_total_mib=pages * page_size / 2**20)
    gpu = GpuResult(inventory=inv, sku=None)
    outcomes = run_benchmarks(backend, plan, {0: (gpu, 0)}, env.progress, sampler=None)
    perf_checks([gpu], outcomes, plan.burn_dtype)
    run = _run(env, options, driver=None, cuda=None, backend=backend_name, gpus=[gpu])
    return finish(run)


def _select(count: int, wanted: tuple[int, ...]) -> list[int]:
    if count == 0:
        raise NotFound("no GPU to validate: NVML reports no GPU on this node")
    missing = [i for i in wanted if not 0 <= i < count]
    if missing:
        raise NotFound(
            f"no GPU with index {', '.join(map(str, missing))} (this node has {count}: "
            f"0-{count - 1})"
        )
    return sorted(set(wanted)) if wanted else list(range(count))


def _run_cuda(options: BenchOptions, env: BenchEnvironment, plan: BenchPlan) -> BenchRun:
    api = env.open_nvml()
    try:
        driver, cuda = driver_versions(api)
        try:
            count = int(call(api, api.nvmlDeviceGetCount))
        except NvmlUnavailable as exc:
            raise NotFound(f"no GPU to validate: {exc.reason}") from exc
        indices = _select(count, options.gpus)
        env.progress(f"bench: checking health of {len(indices)} GPU(s) through NVML")
        handles: dict[int, Any] = {}
        unreachable: dict[int, GpuResult] = {}
        for i in indices:
            try:
                handles[i] = call(api, api.nvmlDeviceGetHandleByIndex, i)
            except NvmlUnavailable as exc:  # e.g. a GPU that fell off the bus: a finding
                bad = GpuResult(Inventory(index=i, name="unreachable GPU"), None)
                bad.checks.append(
                    Check("nvml", "FAIL", message=f"NVML cannot open it: {exc.reason}")
                )
                unreachable[i] = bad
        gpus = {i: GpuResult(inventory(api, i, h), None) for i, h in handles.items()}
        for gpu in gpus.values():
            spec = match_sku(gpu.inventory.name)
            gpu.sku = spec.sku if spec else None
        _static_checks(api, handles, gpus, env)

        backend, backend_name = env.select_backend("cuda")
        located: dict[int, tuple[GpuResult, int]] = {}
        outcomes: dict[int, dict[str, Outcome]] = {}
        for i, gpu in gpus.items():
            skip = _unbenchable(gpu, backend, backend_name, count)
            if skip is not None:
                outcomes[i] = {bench: skip for bench in _bench_ids(plan)}
                continue
            assert backend is not None
            device = backend.locate(gpu.inventory, count)
            if device is None:
                reason = f"{backend_name} cannot see this GPU (CUDA_VISIBLE_DEVICES?)"
                outcomes[i] = {bench: Skipped(reason) for bench in _bench_ids(plan)}
            else:
                located[i] = (gpu, device)

        sampler = RunSampler(api, handles, interval_s=env.sample_interval_s)
        with sampling(sampler):
            if backend is not None and located:
                outcomes.update(run_benchmarks(backend, plan, located, env.progress, sampler))
        for i, gpu in gpus.items():
            gpu.checks.extend(health.run_checks(gpu.inventory, sampler.samples[i]))
        ordered = [gpus.get(i) or unreachable[i] for i in indices]
        perf_checks(ordered, outcomes, plan.burn_dtype)
        run = _run(env, options, driver=driver, cuda=cuda, backend=backend_name, gpus=ordered)
        return finish(run)
    finally:
        close_nvml(api)


def _static_checks(
    api: NvmlApi, handles: dict[int, Any], gpus: dict[int, GpuResult], env: BenchEnvironment
) -> None:
    log = env.read_kernel_log()
    links: dict[int, tuple[list[int], list[int]] | None] = {}
    for i, h in handles.items():
        try:
            links[i] = health.nvlink_states(api, h)
        except NvmlUnavailable:
            links[i] = None
    for i, gpu in gpus.items():
        spec = match_sku(gpu.inventory.name)
        expected: int | None
        if spec is not None:
            expected = spec.nvlink_links
        else:
            # unknown model: as many links as the best peer of the same name has up
            peers = [
                len(state[0])
                for j, state in links.items()
                if state is not None and gpus[j].inventory.name == gpu.inventory.name
            ]
            expected = max(peers) if len(peers) >= 2 else None
        gpu.checks.extend(
            health.static_checks(api, handles[i], gpu.inventory, spec, log, expected, links[i])
        )


def _bench_ids(plan: BenchPlan) -> list[str]:
    ids = [f"gemm_{d}" for d in plan.gemm_dtypes] + ["mem_copy"]
    if plan.host_bytes:
        ids += ["h2d", "d2h"]
    if plan.burn_seconds:
        ids.append("burn")
    return ids


def _unbenchable(
    gpu: GpuResult, backend: BenchBackend | None, backend_name: str, count: int
) -> Skipped | None:
    if gpu.inventory.mig_enabled:
        return Skipped("MIG enabled: full-GPU benchmarks and comparisons skipped")
    lost = next((c for c in gpu.checks if c.status == "FAIL" and "lost" in c.message), None)
    if lost is not None:
        return Skipped("GPU is lost", status="FAIL")
    if backend is None:
        return Skipped(f"no benchmark backend: {backend_name}")
    return None


def _measure(fn: Callable[[], Outcome]) -> Outcome:
    """Run one benchmark; what cannot run is SKIP, what breaks on the GPU is FAIL."""
    try:
        return fn()
    except BenchUnavailable as exc:
        return Skipped(str(exc))
    except Exception as exc:  # a CUDA error mid-benchmark is a finding, not a crash
        return Skipped(f"benchmark failed: {type(exc).__name__}: {exc}", status="FAIL")


def _bench_one(
    backend: BenchBackend,
    plan: BenchPlan,
    gpu: GpuResult,
    dev: int,
    label: str,
    progress: Callable[[str], None],
) -> dict[str, Outcome]:
    """The single-device benchmarks of the plan on one device."""
    out: dict[str, Outcome] = {}
    n, iters, warm = plan.gemm_n, plan.iterations, plan.warmup
    supported = backend.gemm_dtypes(dev, gpu.inventory.compute_capability)
    for dtype in plan.gemm_dtypes:
        if dtype not in supported:
            why = "compute capability >= 8.9" if dtype == "fp8" else "another backend"
            out[f"gemm_{dtype}"] = Skipped(f"{dtype} GEMM needs {why} ({backend.name})")
            continue
        progress(f"bench: {label}: GEMM {dtype} {n}^3")
        out[f"gemm_{dtype}"] = _measure(partial(backend.gemm, dev, dtype, n, iters, warm))
    progress(f"bench: {label}: memory copy {plan.copy_bytes / 2**30:g} GiB")
    out["mem_copy"] = _measure(partial(backend.memory_copy, dev, plan.copy_bytes, iters, warm))
    if plan.host_bytes:
        progress(f"bench: {label}: host<->device {plan.host_bytes / 2**30:g} GiB pinned")
        out["h2d"] = _measure(partial(backend.host_to_device, dev, plan.host_bytes, iters, warm))
        out["d2h"] = _measure(partial(backend.device_to_host, dev, plan.host_bytes, iters, warm))
    return out


def run_benchmarks(
    backend: BenchBackend,
    plan: BenchPlan,
    located: dict[int, tuple[GpuResult, int]],
    progress: Callable[[str], None],
    sampler: RunSampler | None,
) -> dict[int, dict[str, Outcome]]:
    """Run the plan's benchmarks: each GPU alone in turn, then all-reduce and burn together."""
    outcomes: dict[int, dict[str, Outcome]] = {}
    for index, (gpu, dev) in located.items():
        label = f"GPU {index}" if backend.device_kind == "cuda" else "CPU"
        outcomes[index] = _bench_one(backend, plan, gpu, dev, label, progress)
        if sampler is not None:
            sampler.mark_loaded(index)

    iters, warm = plan.iterations, plan.warmup
    devices = {index: dev for index, (_, dev) in located.items()}
    if plan.allreduce_bytes and len(devices) >= 2:
        progress(f"bench: all-reduce across {len(devices)} GPUs")
        result = _measure(
            lambda: backend.all_reduce(list(devices.values()), plan.allreduce_bytes, iters, warm)
        )
        for index in devices:
            outcomes[index]["allreduce"] = result
    if plan.burn_seconds:
        progress(f"bench: burn {plan.burn_seconds:g} s on {len(devices)} device(s)")
        failed: Skipped | None = None
        try:
            burns = backend.burn(
                list(devices.values()), plan.burn_seconds, plan.burn_n, plan.burn_dtype
            )
        except BenchUnavailable as exc:
            burns, failed = {}, Skipped(str(exc))
        except Exception as exc:  # a GPU that breaks under sustained load is a finding
            burns, failed = {}, Skipped(f"burn failed: {type(exc).__name__}: {exc}", "FAIL")
        for index, dev in devices.items():
            outcomes[index]["burn"] = (
                burns.get(dev)
                or failed
                or Skipped("burn produced no result for this device", status="FAIL")
            )
    return outcomes
