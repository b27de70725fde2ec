"""Shell-completion callbacks (Typer's `autocompletion=`): each hands the word being
completed, and the `--profile` given so far, to `kaic.flows.complete`.

Imports nothing at module level beyond typer, so commands can name these callbacks without
slowing their start; the flows load only when TAB is pressed.
"""

from __future__ import annotations

import typer


def _profile(ctx: typer.Context) -> str | None:
    value = ctx.find_root().params.get("profile")
    return value if isinstance(value, str) else None


def job_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    from kaic.flows import complete

    return complete.job_ids(_profile(ctx), incomplete)


def partitions(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    from kaic.flows import complete

    return complete.partitions(_profile(ctx), incomplete)


def states(incomplete: str) -> list[str]:
    from kaic.flows import complete

    return complete.states(incomplete)


def profiles(incomplete: str) -> list[str]:
    from kaic.flows import complete

    return complete.profiles(incomplete)


def remote_paths(ctx: typer.Context, incomplete: str) -> list[str]:
    from kaic.flows import complete

    return complete.remote_paths(_profile(ctx), incomplete)
