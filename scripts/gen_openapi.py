"""Regenerate docs/openapi.json from the reference center's app (`make openapi`)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path


def generate() -> str:
    """The OpenAPI document of the center API, as committed (sorted keys, trailing newline)."""
    from kaic.center.app import create_app
    from kaic.center.settings import CenterSettings

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(CenterSettings(state_dir=Path(tmp)))
        return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


def main(path: str = "docs/openapi.json") -> None:
    Path(path).write_text(generate())
    print(f"wrote {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
