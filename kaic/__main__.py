"""`kaic` (the console script) and `python -m kaic`.

`kaic --version` is answered here, before anything but the interpreter has started: scripts
call it in loops. Everything else goes to the CLI (`kaic.cli.main`).
"""

import sys


def main() -> None:
    """Console-script entry point."""
    if sys.argv[1:] == ["--version"]:
        from kaic import __version__

        print(f"kaic {__version__}")
        return
    from kaic.cli.main import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
