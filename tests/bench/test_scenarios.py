"""Whole runs over a fake NVML and a fake backend: the health scenarios of BENCH.md."""

from __future__ import annotations

import pytest

from kaic.bench.kernel_log import KernelLog
from kaic.bench.results import BenchRun
from kaic.bench.runner import BenchOptions, run_bench
from kaic.bench.verdict import exit_code
from kaic.errors import ExitCode, NotFound
from kaic.gpu.nvml import NVML_ERROR_LIBRARY_NOT_FOUND
from tests.bench.fakes import FakeBackend, FakeGpu, FakeNvml, environment, h100_node

PERF = ["gemm_bf16", "gemm_fp16", "gemm_tf32", "gemm_fp32", "gemm_fp8", "mem_copy", "h2d", "d2h"]


def run(gpus: list[FakeGpu], mode: str = "quick", **kw: object) -> BenchRun:
    backend = kw.pop("backend", FakeBackend(gpus))
    nvml = FakeNvml(gpus)
    result = run_bench(BenchOptions(mode=mode), environment(nvml, backend, **kw))  # type: ignore[arg-type]
    assert not nvml.initialised, "NVML must be shut down after the run"
    return result


def statuses(result: BenchRun, index: int) -> dict[str, str]:
    return {c.id: c.status for c in result.gpus[index].checks}


def test_eight_healthy_h100_all_pass() -> None:
    result = run(h100_node())
    assert result.status == "PASS"
    assert exit_code(result) == 0
    assert result.driver == "550.54.15" and result.cuda == "12.4"
    for gpu in result.gpus:
        assert gpu.sku == "H100-SXM"
        checks = statuses(result, gpu.index)
        assert set(checks.values()) <= {"PASS", "SKIP"}, checks
        for bench in [*PERF, "allreduce", "ecc", "row_remap", "nvlink", "throttle", "xid"]:
            assert checks[bench] == "PASS", bench
        assert checks["retired_pages"] == "SKIP"  # Hopper: row remapping replaces it
    # a non-critical Xid 13 on GPU 1 is reported, not failed
    assert "Xid 13" in result.gpus[1].check("xid").message  # type: ignore[union-attr]


def test_uncorrected_ecc_fails_that_gpu_only() -> None:
    gpus = h100_node()
    gpus[3].ecc_uncorrected = 2
    result = run(gpus)
    assert result.gpus[3].status == "FAIL"
    assert statuses(result, 3)["ecc"] == "FAIL"
    assert all(g.status == "PASS" for g in result.gpus if g.index != 3)
    assert result.status == "FAIL" and exit_code(result) == 1


def test_pcie_link_at_x8_fails() -> None:
    gpus = h100_node(2)
    gpus[1].pcie_width = 8
    result = run(gpus)
    check = result.gpus[1].check("pcie_width")
    assert check is not None and check.status == "FAIL"
    assert (check.value, check.expected) == ("x8", "x16")


def test_hw_slowdown_during_run_fails() -> None:
    gpus = h100_node(2)
    gpus[0].throttle = 0x8 | 0x4
    result = run(gpus)
    check = result.gpus[0].check("throttle")
    assert check is not None and check.status == "FAIL" and "HW slowdown" in check.message
    assert statuses(result, 1)["throttle"] == "PASS"  # SW power cap alone is normal


def test_sw_thermal_warns_and_strict_turns_it_into_exit_1() -> None:
    gpus = h100_node(2)
    gpus[1].throttle = 0x20
    result = run(gpus)
    assert statuses(result, 1)["throttle"] == "WARN"
    assert result.status == "WARN"
    assert exit_code(result) == 0
    assert exit_code(result, strict=True) == 1


def test_mig_enabled_is_reported_and_skips_full_gpu_comparisons() -> None:
    gpus = h100_node(3)
    gpus[2].mig = (1, 1)
    backend = FakeBackend(gpus)
    result = run(gpus, backend=backend)
    checks = statuses(result, 2)
    assert checks["mig"] == "PASS"
    assert "MIG enabled" in (result.gpus[2].check("mig").message)  # type: ignore[union-attr]
    for bench in PERF:
        assert checks[bench] == "SKIP", bench
    assert "allreduce" not in checks
    assert all(args != 2 for kind, args in backend.calls if kind in ("mem_copy", "h2d"))
    assert ("allreduce", (0, 1)) in backend.calls  # the other two still all-reduce
    assert result.gpus[2].status == "PASS"


def test_pending_row_remap_fails() -> None:
    gpus = h100_node(2)
    gpus[0].remapped_rows = (1, 0, 1, 0)
    result = run(gpus)
    check = result.gpus[0].check("row_remap")
    assert check is not None and check.status == "FAIL" and "pending" in check.message


def test_row_remap_failure_and_exhausted_bank_fail() -> None:
    gpus = h100_node(2)
    gpus[0].remapped_rows = (0, 0, 0, 1)
    gpus[1].remapped_rows = (0, 512, 0, 0)
    result = run(gpus)
    assert statuses(result, 0)["row_remap"] == "FAIL"
    assert statuses(result, 1)["row_remap"] == "FAIL"


def test_unreadable_kernel_log_is_unknown_not_pass() -> None:
    result = run(h100_node(2), log=None)
    for gpu in result.gpus:
        check = gpu.check("xid")
        assert check is not None and check.status == "UNKNOWN"
        assert "not readable" in check.message
        assert gpu.status == "UNKNOWN"
    assert exit_code(result) == 0 and exit_code(result, strict=True) == 0


def test_critical_xid_fails_the_gpu_it_names() -> None:
    log = KernelLog(
        ["[123.4] NVRM: Xid (PCI:0000:38:00): 79, pid=0, GPU has fallen off the bus."], "dmesg"
    )
    result = run(h100_node(3), log=log)
    assert statuses(result, 2)["xid"] == "FAIL"  # bus 0x38 is GPU 2 in the fake
    assert statuses(result, 0)["xid"] == "PASS"


def test_nvlink_down_fails() -> None:
    gpus = h100_node(2)
    gpus[1].nvlinks_down = (4,)
    result = run(gpus)
    check = result.gpus[1].check("nvlink")
    assert check is not None and check.status == "FAIL" and check.value == 17


def test_modes_and_power_cap_warn() -> None:
    gpus = h100_node(2)
    gpus[0].persistence = 0
    gpus[0].pids = (999_999,)
    gpus[1].enforced_limit_mw = 500_000
    result = run(gpus)
    assert statuses(result, 0)["persistence"] == "WARN"
    assert statuses(result, 0)["processes"] == "WARN"
    assert statuses(result, 1)["power_cap"] == "WARN"


def test_pcie_gen_below_max_under_load_warns() -> None:
    gpus = h100_node(2)
    gpus[0].pcie_gen = 4
    result = run(gpus)
    assert statuses(result, 0)["pcie_gen"] == "WARN"
    assert statuses(result, 1)["pcie_gen"] == "PASS"


def test_pcie_gen_is_not_judged_without_load() -> None:
    gpus = h100_node(1)
    gpus[0].pcie_gen = 1  # idle link
    result = run(gpus, backend=None)
    assert statuses(result, 0)["pcie_gen"] == "SKIP"
    assert statuses(result, 0)["gemm_bf16"] == "SKIP"
    assert "pip install torch" in (result.gpus[0].check("gemm_bf16").message)  # type: ignore[union-attr]
    assert result.backend.startswith("GPU benchmarks need torch")


def test_pcie_replays_above_dcgm_rate_warn() -> None:
    gpus = h100_node(2)
    gpus[0].replays = [100, 200]  # 100 replays in a (short) run: > 31/min on Gen5
    result = run(gpus)
    assert statuses(result, 0)["pcie_replays"] == "WARN"
    assert statuses(result, 1)["pcie_replays"] == "PASS"


def test_not_supported_fields_skip_not_crash() -> None:
    gpus = h100_node(1)
    gpus[0].unsupported = {
        "nvmlDeviceGetEccMode",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetCurrentClocksThrottleReasons",
        "nvmlDeviceGetPcieReplayCounter",
        "nvmlDeviceGetCurrPcieLinkWidth",
        "nvmlDeviceGetPersistenceMode",
    }
    result = run(gpus)
    checks = statuses(result, 0)
    assert checks["ecc"] == "SKIP" and checks["row_remap"] == "SKIP"
    assert checks["pcie_width"] == "SKIP" and checks["pcie_replays"] == "SKIP"
    assert checks["persistence"] == "SKIP"
    assert checks["throttle"] == "UNKNOWN"
    assert result.gpus[0].check("ecc").message == "not supported on this GPU"  # type: ignore[union-attr]


def test_standard_mode_burn_with_mismatch_fails() -> None:
    gpus = h100_node(2)
    backend = FakeBackend(gpus, burn_mismatches={1: 3})
    result = run(gpus, mode="standard", backend=backend)
    assert statuses(result, 0)["burn"] == "PASS"
    burn = result.gpus[1].check("burn")
    assert burn is not None and burn.status == "FAIL" and "3 of 1000" in burn.message


def test_quick_mode_has_no_burn() -> None:
    result = run(h100_node(1))
    assert "burn" not in statuses(result, 0)
    assert "allreduce" not in statuses(result, 0)  # one GPU: nothing to all-reduce


def test_fp8_skipped_on_compute_capability_below_8_9() -> None:
    gpus = [FakeGpu(name="NVIDIA A100-SXM4-80GB", cc=(8, 0), pcie_gen=4, pcie_gen_max=4)]
    gpus[0].nvlinks = 12
    result = run(gpus)
    assert result.gpus[0].sku == "A100-80GB-SXM"
    fp8 = result.gpus[0].check("gemm_fp8")
    assert fp8 is not None and fp8.status == "SKIP" and "8.9" in fp8.message
    assert statuses(result, 0)["nvlink"] == "PASS"


def test_selected_gpus_only() -> None:
    gpus = h100_node(4)
    nvml = FakeNvml(gpus)
    result = run_bench(BenchOptions(gpus=(1, 3)), environment(nvml, FakeBackend(gpus)))
    assert [g.index for g in result.gpus] == [1, 3]


def test_unknown_gpu_index_is_not_found() -> None:
    gpus = h100_node(2)
    with pytest.raises(NotFound, match="index 5"):
        run_bench(BenchOptions(gpus=(5,)), environment(FakeNvml(gpus), FakeBackend(gpus)))


def test_no_driver_is_not_found_in_one_line() -> None:
    nvml = FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(NotFound) as info:
        run_bench(BenchOptions(), environment(nvml, None))
    assert info.value.exit_code == ExitCode.NOT_FOUND
    assert "driver" in info.value.message and "\n" not in info.value.message


def test_zero_gpus_is_not_found() -> None:
    with pytest.raises(NotFound, match="no GPU"):
        run_bench(BenchOptions(), environment(FakeNvml([]), None))


def test_gpu_nvml_cannot_open_fails_without_crashing() -> None:
    gpus = h100_node(2)

    class LostNvml(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
            if index == 1:
                raise self.NVMLError(15)  # NVML_ERROR_GPU_IS_LOST
            return super().nvmlDeviceGetHandleByIndex(index)

    result = run_bench(BenchOptions(), environment(LostNvml(gpus), FakeBackend(gpus)))
    assert result.gpus[1].status == "FAIL" and "GPU is lost" in result.gpus[1].checks[0].message
    assert result.gpus[0].status == "PASS"
