"""Start-up cost of the CLI: `kaic --version` against `python -c "import typer"`.

Both are measured side by side, interleaved, in one run (the machine is noisy); the ratio of
medians is the figure. Target: <= 1.3x.

Usage: python benchmarks/bench_start.py [ROUNDS]
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time


def _time(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(rounds: int = 40) -> None:
    kaic = shutil.which("kaic") or ""
    kaic_cmd = [kaic, "--version"] if kaic else [sys.executable, "-m", "kaic", "--version"]
    typer_cmd = [sys.executable, "-c", "import typer"]
    for cmd in (kaic_cmd, typer_cmd):  # warm the page cache and .pyc files
        _time(cmd)
    # A command that builds the whole command tree, for an honest picture beyond --version.
    tree_cmd = [*kaic_cmd[:-1], "help", "exit-codes"]
    kaic_t, typer_t, tree_t = [], [], []
    for _ in range(rounds):
        kaic_t.append(_time(kaic_cmd))
        typer_t.append(_time(typer_cmd))
        tree_t.append(_time(tree_cmd))
    k, t, h = (statistics.median(x) for x in (kaic_t, typer_t, tree_t))
    print(f"kaic --version            median {k * 1000:7.1f} ms  (n={rounds})")
    print(f'python -c "import typer"  median {t * 1000:7.1f} ms  (n={rounds})')
    print(f"kaic help exit-codes      median {h * 1000:7.1f} ms  (whole command tree)")
    print(f"ratio --version / typer   {k / t:.2f}x  (target <= 1.30x)")
    print(f"ratio help / typer        {h / t:.2f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
