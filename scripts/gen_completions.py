"""Regenerate completions/kaic.{bash,zsh,fish} from the CLI (`make completions`)."""

from __future__ import annotations

import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")


def generate(shell: str) -> str:
    """The completion script for SHELL: each calls kaic back with `_KAIC_COMPLETE` (the
    protocol of Typer's completion). Built from Typer's templates by shell name — asking
    `kaic --show-completion SHELL` gave the bash script for every shell when run from a bash
    (it goes by the shell it detects)."""
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="kaic", complete_var="_KAIC_COMPLETE", shell=shell)


def main(out_dir: str = "completions") -> None:
    out = Path(out_dir)
    out.mkdir(exist_ok=True)
    for shell in SHELLS:
        (out / f"kaic.{shell}").write_text(generate(shell))
        print(f"wrote {out / f'kaic.{shell}'}")


if __name__ == "__main__":
    main(*sys.argv[1:])
