"""Start-up cost of the CLI: `kaic --version`, `kaic --help` and `kaic jobs` (against a local
center), beside `python -c "import typer"`, for this tree and a baseline.

Every command runs as the console script runs it: `python -c "from MODULE import FUNC;
FUNC()"` with the `[project.scripts] kaic` entry of each tree's pyproject.toml, the tree's
`kaic/` first on the path, from an empty directory. The baseline (`--baseline REV`, default
the commit before the fast start) is exported with `git archive`; both trees use this
virtual environment. One local center (this tree's) is started once and serves every
`kaic jobs`. Each round runs every command once, interleaved (the machine is noisy); the
figures are medians, and the load (`os.getloadavg()`) is printed before each round.

Targets: `kaic --version` <= 1.3x typer, `kaic --help` <= 2x typer, `kaic jobs` <= 0.35 s.

Usage: python benchmarks/bench_start.py [ROUNDS] [--baseline REV | --baseline none]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
#: the commit before `kaic --version` skipped the CLI and commands were loaded one by one
DEFAULT_BASELINE = "cc7689e"
WHAT = ("--version", "--help", "jobs")


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def entry(tree: Path) -> str:
    """`python -c` code that runs the tree's console script as installed."""
    with open(tree / "pyproject.toml", "rb") as handle:
        module, func = tomllib.load(handle)["project"]["scripts"]["kaic"].split(":")
    return f"import sys; sys.argv[0] = 'kaic'; from {module} import {func}; sys.exit({func}())"


def export(rev: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "kaic", "pyproject.toml"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(
        cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rounds", nargs="?", type=int, default=20)
    parser.add_argument("--baseline", default=DEFAULT_BASELINE)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kaic-start-") as tmpdir:
        tmp = Path(tmpdir)
        empty = tmp / "cwd"
        empty.mkdir()
        trees = {"new": REPO}
        if args.baseline != "none":
            (tmp / "baseline").mkdir()
            trees = {"baseline": export(args.baseline, tmp / "baseline"), **trees}
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("KAIC_")}
        base_env.update(
            KAIC_CONFIG_DIR=str(tmp / "config"),
            KAIC_STATE_DIR=str(tmp / "state"),
            KAIC_LOCAL_GPUS="0",
        )
        envs = {name: {**base_env, "PYTHONPATH": str(tree)} for name, tree in trees.items()}
        for tree in trees.values():  # its bytecode, as `pip install` writes it
            compiling = [sys.executable, "-m", "compileall", "-q", str(tree / "kaic")]
            subprocess.run(compiling, check=True)
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            "typer": ([sys.executable, "-c", "import typer"], base_env)
        }
        for name, tree in trees.items():
            code = entry(tree)
            for what, argv in (("--version", ["--version"]), ("--help", ["--help"])):
                commands[f"{name} {what}"] = ([sys.executable, "-c", code, *argv], envs[name])
            commands[f"{name} jobs"] = ([sys.executable, "-c", code, "jobs"], envs[name])
        # The local center, started once by this tree's CLI; the first `kaic jobs` waits for it.
        new_cli = commands["new jobs"][0][:-1]
        subprocess.run([*new_cli, "center", "start"], env=envs["new"], cwd=empty, check=True)
        try:
            for cmd, env in commands.values():  # warm the page cache
                timed(cmd, env, empty)
            times: dict[str, list[float]] = {name: [] for name in commands}
            for round_no in range(args.rounds):
                if round_no % 5 == 0:
                    print(f"round {round_no + 1}/{args.rounds}: {load()}", flush=True)
                for name, (cmd, env) in commands.items():
                    times[name].append(timed(cmd, env, empty))
        finally:
            subprocess.run([*new_cli, "center", "stop"], env=envs["new"], cwd=empty)
        medians = {name: statistics.median(values) for name, values in times.items()}
        typer_t = medians["typer"]
        print(f"\nmedians of {args.rounds} interleaved rounds; {load()}")
        print(f'python -c "import typer"        {typer_t * 1000:7.1f} ms')
        for name in trees:
            version, help_t, jobs = (medians[f"{name} {w}"] for w in WHAT)
            print(
                f"{name:8s} kaic --version  {version * 1000:7.1f} ms  {version / typer_t:5.2f}x"
                f"   (target <= 1.30x)"
            )
            print(
                f"{name:8s} kaic --help     {help_t * 1000:7.1f} ms  {help_t / typer_t:5.2f}x"
                f"   (target <= 2.00x)"
            )
            print(f"{name:8s} kaic jobs       {jobs * 1000:7.1f} ms            (target <= 350 ms)")
        print(json.dumps({k: round(v * 1000, 1) for k, v in medians.items()}))


if __name__ == "__main__":
    main()
