"""The one spec table, the NVML-name→SKU matcher, and the tables the verdict judges with.

Peaks are *dense* figures (NVIDIA datasheets print sparse ones twice as large). Each row
cites its datasheet; BENCH.md's spec table is the reviewed copy. Before adding a row
(H100 NVL, H200 NVL, A100 40GB, PCIe variants) check it against the datasheet and cite it.

Efficiencies say what a healthy GPU typically reaches, so ``expected = efficiency x peak``
is honest: judging against the raw datasheet peak would FAIL every healthy GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    """Datasheet figures of one GPU model (dense peaks)."""

    sku: str
    #: full-match regexes over the lower-cased NVML name, e.g. "nvidia h100 80gb hbm3"
    name_patterns: tuple[str, ...]
    tflops: dict[str, float]  # dtype -> dense peak TFLOP/s (bf16, fp16, tf32, fp32, fp8)
    memory_gb: float
    memory_bandwidth_tbs: float
    pcie_gen: int
    nvlink_gbs: float | None  # total bidirectional NVLink bandwidth per GPU
    nvlink_links: int  # links that must be up on a healthy board (0: none expected)
    tdp_w: float
    source: str


SPECS: tuple[GpuSpec, ...] = (
    GpuSpec(
        sku="A100-80GB-SXM",
        name_patterns=(r"(nvidia )?a100-sxm4-80gb",),
        tflops={"bf16": 312, "fp16": 312, "tf32": 156, "fp32": 19.5},
        memory_gb=80,
        memory_bandwidth_tbs=2.039,
        pcie_gen=4,
        nvlink_gbs=600,
        nvlink_links=12,
        tdp_w=400,
        source="NVIDIA A100 Tensor Core GPU datasheet "
        "(nvidia-a100-datasheet-us-nvidia-1758950-r4), https://www.nvidia.com/en-us/data-center/a100/",
    ),
    GpuSpec(
        sku="H100-SXM",
        name_patterns=(r"(nvidia )?h100 80gb hbm3", r"(nvidia )?h100-sxm5-80gb"),
        tflops={"bf16": 989, "fp16": 989, "tf32": 494.5, "fp32": 67, "fp8": 1979},
        memory_gb=80,
        memory_bandwidth_tbs=3.35,
        pcie_gen=5,
        nvlink_gbs=900,
        nvlink_links=18,
        tdp_w=700,
        source="NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column, "
        "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
    ),
    GpuSpec(
        sku="H100-PCIe",
        name_patterns=(r"(nvidia )?h100 pcie",),
        tflops={"bf16": 756, "fp16": 756, "tf32": 378, "fp32": 51, "fp8": 1513},
        memory_gb=80,
        memory_bandwidth_tbs=2.0,
        pcie_gen=5,
        nvlink_gbs=600,  # only with the optional NVLink bridge
        nvlink_links=0,  # the bridge is optional, so no link is required to be up
        tdp_w=350,
        source="NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column, "
        "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
    ),
    GpuSpec(
        sku="H200-SXM",
        name_patterns=(r"(nvidia )?h200", r"(nvidia )?h200 141gb hbm3e"),
        tflops={"bf16": 989, "fp16": 989, "tf32": 494.5, "fp32": 67, "fp8": 1979},
        memory_gb=141,
        memory_bandwidth_tbs=4.8,
        pcie_gen=5,
        nvlink_gbs=900,
        nvlink_links=18,
        tdp_w=700,
        source="NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column, "
        "https://www.nvidia.com/en-us/data-center/h200/",
    ),
    GpuSpec(
        sku="B200",
        name_patterns=(r"(nvidia )?b200",),
        tflops={"bf16": 2250, "fp16": 2250, "tf32": 1125, "fp32": 80, "fp8": 4500},
        memory_gb=180,
        memory_bandwidth_tbs=8.0,
        pcie_gen=5,
        nvlink_gbs=1800,
        nvlink_links=18,
        tdp_w=1000,
        source="NVIDIA HGX B200 / DGX B200 datasheet (per-GPU dense figures), "
        "https://www.nvidia.com/en-us/data-center/hgx/",
    ),
    GpuSpec(
        sku="L40S",
        name_patterns=(r"(nvidia )?l40s",),
        tflops={"bf16": 362, "fp16": 362, "tf32": 183, "fp32": 91.6, "fp8": 733},
        memory_gb=48,
        memory_bandwidth_tbs=0.864,
        pcie_gen=4,
        nvlink_gbs=None,
        nvlink_links=0,
        tdp_w=350,
        source="NVIDIA L40S GPU datasheet, https://www.nvidia.com/en-us/data-center/l40s/",
    ),
)


def match_sku(nvml_name: str) -> GpuSpec | None:
    """The spec row whose patterns fully match this NVML device name, or None (unknown model).

    Full matches on purpose: "NVIDIA H100 NVL" or "NVIDIA A100-SXM4-40GB" must stay unknown
    rather than be judged against a sibling's peaks.
    """
    name = " ".join(nvml_name.strip().lower().split())
    for spec in SPECS:
        if any(re.fullmatch(p, name) for p in spec.name_patterns):
            return spec
    return None


def spec_by_sku(sku: str) -> GpuSpec | None:
    """The spec row with this SKU id."""
    return next((s for s in SPECS if s.sku == sku), None)


@dataclass(frozen=True)
class Efficiency:
    """The share of a peak a healthy GPU typically reaches, and where that figure comes from."""

    value: float
    source: str


_BENCH_MD = "BENCH.md 'What is achievable'"

#: bench -> default efficiency; per-SKU overrides below. Bench ids: gemm_<dtype>, mem_copy,
#: h2d, d2h, allreduce.
DEFAULT_EFFICIENCY: dict[str, Efficiency] = {
    "gemm_bf16": Efficiency(0.80, f"{_BENCH_MD}: H100 SXM 794 of 989 TFLOP/s"),
    "gemm_fp16": Efficiency(0.80, "assumed equal to bf16 (same tensor-core rate)"),
    "gemm_tf32": Efficiency(0.75, "assumed: cuBLAS TF32 runs below the bf16 share; tune"),
    "gemm_fp32": Efficiency(0.75, "assumed: SIMT SGEMM, no measurement in BENCH.md; tune"),
    "gemm_fp8": Efficiency(0.71, f"{_BENCH_MD}: H100 FP8 1403 of 1979 TFLOP/s"),
    "mem_copy": Efficiency(0.90, f"{_BENCH_MD}: H200 D2D copy ~4.3 of 4.8 TB/s (read+write)"),
    "h2d": Efficiency(
        0.80, "assumed: CUDA bandwidthTest pinned ~25 GB/s Gen4 x16, ~50 GB/s Gen5 x16"
    ),
    "d2h": Efficiency(
        0.80, "assumed: CUDA bandwidthTest pinned ~25 GB/s Gen4 x16, ~50 GB/s Gen5 x16"
    ),
    "allreduce": Efficiency(
        0.80, f"{_BENCH_MD}: 8x H100 NCCL ring busbw ~370 of 450 GB/s per direction"
    ),
}

SKU_EFFICIENCY: dict[str, dict[str, Efficiency]] = {
    "A100-80GB-SXM": {
        "gemm_bf16": Efficiency(0.87, f"{_BENCH_MD}: A100 SXM 271 of 312 TFLOP/s"),
        "gemm_fp16": Efficiency(0.87, "assumed equal to A100 bf16"),
    },
    "H200-SXM": {
        "gemm_bf16": Efficiency(0.80, f"{_BENCH_MD}: H200 about as H100; 769-798 TFLOP/s here"),
        "gemm_fp8": Efficiency(0.73, f"{_BENCH_MD}: H200 FP8 1453 of 1979 TFLOP/s"),
    },
    "B200": {
        "gemm_bf16": Efficiency(0.78, f"{_BENCH_MD}: B200 1745 of 2250 TFLOP/s"),
        "gemm_fp16": Efficiency(0.78, "assumed equal to B200 bf16"),
    },
}


def efficiency(sku: str, bench: str) -> Efficiency | None:
    """The typical efficiency of this bench on this SKU (per-SKU override, else the default)."""
    return SKU_EFFICIENCY.get(sku, {}).get(bench) or DEFAULT_EFFICIENCY.get(bench)


def pcie_x16_gbs(gen: int, width: int = 16) -> float | None:
    """Theoretical one-direction PCIe bandwidth in GB/s (after 128b/130b encoding)."""
    per_lane = {3: 0.985, 4: 1.969, 5: 3.938, 6: 7.563}.get(gen)
    return per_lane * width if per_lane else None


@dataclass(frozen=True)
class Thresholds:
    """The verdict thresholds, in one place (BENCH.md 'Verdict per benchmark')."""

    pass_ratio: float = 0.90
    warn_ratio: float = 0.75  # below this FAIL; DCGM's own floors are 0.75 x NVIDIA's values
    node_median_warn: float = 0.90  # WARN a GPU more than 10 % below its node's median
    source: str = "BENCH.md: PASS >= 0.90, WARN 0.75-0.90, FAIL < 0.75; DCGM floors 0.75x"
    #: PCIe replays per minute above which DCGM's pcie plugin flags an x16 link: Gen4 16,
    #: Gen5 31 (DCGM diag defaults); older generations are held to the Gen4 figure
    pcie_replays_per_min_gen4: float = 16.0
    pcie_replays_per_min_gen5: float = 31.0
    #: unc remapped rows at which a bank is considered exhausted (NVIDIA's RMA guidance)
    remap_unc_fail: int = 512
    #: retired pages at which a pre-Ampere board is due for RMA (NVIDIA's guidance)
    retired_pages_fail: int = 63


THRESHOLDS = Thresholds()

#: Throttle (clock event) reason bits from nvml.h, and how a run judges them.
THROTTLE_FAIL_BITS: dict[int, str] = {
    0x8: "HW slowdown",
    0x40: "HW thermal slowdown",
    0x80: "HW power brake slowdown",
}
THROTTLE_WARN_BITS: dict[int, str] = {0x20: "SW thermal slowdown"}
#: 0x4 SW power cap is normal under load; 0x1 idle and 0x2 application clocks are informative.

#: XIDs that mean the GPU needs attention (BENCH.md, after NVIDIA's XID catalogue).
CRITICAL_XIDS: frozenset[int] = frozenset({48, 64, 74, 79, 92, 94, 95, 119, 120, 154})
