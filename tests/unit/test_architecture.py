"""The layout of docs/architecture.md, enforced: which part may import which, where the
center API's paths may be written, and how commands render.

Imports are read from the source (AST), every one of them: at module level, inside
functions, and under `if TYPE_CHECKING:` — a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

KAIC = Path(__file__).resolve().parents[2] / "kaic"

#: stdlib-only helpers every part may import; they import only each other
LEAVES = {
    "kaic.errors",
    "kaic.sshkex",
    "kaic.text",
    "kaic.redact",
    "kaic.urls",
    "kaic.durations",
    "kaic.humanize",
}
#: the `kaic` package itself (`kaic.__version__`)
ROOT = "kaic"

#: part -> parts it must not import (see docs/architecture.md, "Direction of imports")
FORBIDDEN: dict[str, set[str]] = {
    "kaic.auth": {"kaic.client", "kaic.flows", "kaic.cli", "kaic.center"},
    "kaic.client": {"kaic.flows", "kaic.cli", "kaic.config", "kaic.center"},
    "kaic.flows": {"kaic.cli", "kaic.center"},
    "kaic.staging": {"kaic.flows", "kaic.cli", "kaic.center"},
    "kaic.bench": {"kaic.flows", "kaic.cli", "kaic.center"},
    "kaic.jobspec": {"kaic.flows", "kaic.cli", "kaic.center"},
    "kaic.config": {"kaic.flows", "kaic.cli", "kaic.center", "kaic.client"},
    "kaic.cli": {"kaic.client", "kaic.auth"},
}

#: the CLI's helpers (not commands): any command may import them
CLI_HELPERS = {
    "context",
    "options",
    "render",
    "progress",
    "jq",
    "interrupt",
    "help_format",
    "json_fields",
    "complete",
    "job_views",
}
#: the CLI module that builds the root app from every command module
CLI_ROOT = "main"


def _module_name(path: Path) -> str:
    parts = path.relative_to(KAIC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> list[tuple[str, Path]]:
    return sorted((_module_name(p), p) for p in KAIC.rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every kaic import in `path`, wherever it stands."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == ROOT:
                for alias in node.names:  # `from kaic import config` imports kaic.config
                    name = f"{ROOT}.{alias.name}"
                    exists = (KAIC / alias.name).is_dir() or (KAIC / f"{alias.name}.py").exists()
                    yield node.lineno, name if exists else ROOT
            elif node.module.startswith(ROOT + "."):
                yield node.lineno, node.module
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: use absolute kaic imports")


def _part(module: str) -> str:
    """`kaic.client.api` -> `kaic.client`; `kaic.config` -> `kaic.config`; `kaic` -> `kaic`."""
    return ".".join(module.split(".")[:2])


def _inside(module: str, part: str) -> bool:
    return module == part or module.startswith(part + ".")


def _imports_where(inside: Callable[[str], bool], refused: Callable[[str], bool]) -> list[str]:
    """`file:line imports X` for each import X that `refused` picks, in each module that
    `inside` picks."""
    return [
        f"{path.relative_to(KAIC.parent)}:{line} imports {imported}"
        for name, path in _modules()
        if inside(name)
        for line, imported in _imports(path)
        if refused(imported)
    ]


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_parts_import_only_downwards(part: str) -> None:
    found = _imports_where(lambda m: _inside(m, part), lambda i: _part(i) in FORBIDDEN[part])
    assert found == [], f"{part} imports what it must not ({FORBIDDEN[part]})"


def test_models_import_nothing_of_kaic_but_models() -> None:
    found = _imports_where(
        lambda m: _inside(m, "kaic.models"), lambda i: not _inside(i, "kaic.models")
    )
    assert found == []


def test_center_imports_only_models_and_itself() -> None:
    """The reference center depends on the shared wire models, `kaic.__version__`, and the
    leaf `kaic.sshkex` (paramiko's transport without its key-exchange stall, shared with
    the staging engine)."""
    found = _imports_where(
        lambda m: _inside(m, "kaic.center"),
        lambda i: i != ROOT and _part(i) not in ("kaic.center", "kaic.models", "kaic.sshkex"),
    )
    assert found == []


def test_leaf_helpers_import_only_each_other() -> None:
    assert _imports_where(lambda m: m in LEAVES, lambda i: i not in LEAVES) == []


def test_no_command_module_imports_another() -> None:
    """`kaic/cli/`: commands import the CLI's helpers, never another command module (what
    two commands share is a flow or a helper); the helpers import no command."""
    commands = {
        path.stem
        for path in (KAIC / "cli").glob("*.py")
        if path.stem not in CLI_HELPERS | {CLI_ROOT, "__init__"}
    }
    assert {"jobs", "data", "auth", "center"} <= commands
    found = []
    for path in (KAIC / "cli").glob("*.py"):
        if path.stem == CLI_ROOT:
            continue
        for line, imported in _imports(path):
            target = imported.removeprefix("kaic.cli.")
            if _inside(imported, "kaic.cli") and target in commands and target != path.stem:
                found.append(f"kaic/cli/{path.name}:{line} imports {imported}")
    assert found == []


def test_no_api_path_outside_client_and_center() -> None:
    """Every `/v1/...` path is written in `kaic/client/` (the API client) or `kaic/center/`
    (the server): a new endpoint call goes into the client area's module."""
    found = [
        f"{path.relative_to(KAIC.parent)}:{number}: {line.strip()}"
        for name, path in _modules()
        if not (_inside(name, "kaic.client") or _inside(name, "kaic.center"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if '"/v1/' in line or "'/v1/" in line
    ]
    assert found == []


def test_commands_never_branch_on_json() -> None:
    """`--json` / `--jq` set the output sink's choice themselves: a command hands its result
    to `AppContext.emit` and never reads its `json_out` parameter."""
    found = []
    for path in (KAIC / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Name) and node.id == "json_out":
                found.append(f"kaic/cli/{path.name}:{node.lineno}")
    assert found == []


def test_every_json_option_comes_with_jq() -> None:
    """CLI.md: every command with --json also takes --jq EXPR."""
    for path in (KAIC / "cli").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                hints = [ast.unparse(a.annotation) for a in node.args.args if a.annotation]
                if "JsonOpt" in hints:
                    assert "JqOpt" in hints, f"kaic/cli/{path.name}: {node.name} has no --jq"


def test_the_rules_see_lazy_and_type_checking_imports() -> None:
    """The scanner itself: an import inside a function or under TYPE_CHECKING counts."""
    imported = {m for _, m in _imports(KAIC / "cli" / "context.py")}
    assert {"kaic.flows.session", "kaic.cli.jq", "kaic.cli.progress"} <= imported
