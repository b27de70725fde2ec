"""Regenerate completions/kaic.{bash,zsh,fish} from the CLI (`make completions`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")


def generate(shell: str) -> str:
    """The completion script kaic itself prints for SHELL."""
    return subprocess.run(
        [sys.executable, "-m", "kaic", "--show-completion", shell],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def main(out_dir: str = "completions") -> None:
    out = Path(out_dir)
    out.mkdir(exist_ok=True)
    for shell in SHELLS:
        (out / f"kaic.{shell}").write_text(generate(shell))
        print(f"wrote {out / f'kaic.{shell}'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
