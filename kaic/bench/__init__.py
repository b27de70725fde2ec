"""`kaic bench`: validate the GPUs of a node (health through NVML, micro-benchmarks, verdicts).

Layers, each importable without the others' heavy dependencies:

- ``specs``     the one spec table, name→SKU matcher, efficiency and threshold tables
- ``sampler``   NVML sampled during a run (the NVML seam and the inventory are ``kaic.gpu``)
- ``health``    NVML health checks; ``kernel_log`` reads and parses ``NVRM: Xid`` lines
- ``protocol``  what a backend is (``BenchBackend``, its measurements); ``backends`` the
                registry that selects one (torch, cupy, numpy on CPU) and the plans
- ``runner``    orchestrates one run; ``verdict`` turns measurements into PASS/WARN/FAIL
- ``report``    the JSON document of BENCH.md and the human rendering
"""
