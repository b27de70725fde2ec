"""kaic's own import graph, read from the source (every `import` that runs, also those inside
functions; not those under `if TYPE_CHECKING:`, which only the type checker follows): for
tests of the import rules of ARCHITECTURE.md."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KAIC = ROOT / "kaic"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(package: str = "kaic") -> dict[str, Path]:
    """Module name -> file, for `package` and everything below it."""
    base = ROOT / package.replace(".", "/")
    files = [base.with_suffix(".py")] if base.with_suffix(".py").exists() else []
    files += sorted(base.rglob("*.py")) if base.is_dir() else []
    return {module_name(f): f for f in files}


def imports(path: Path, *, prefix: str = "") -> set[str]:
    """The absolute names `path` imports (those starting with `prefix`); `from a import b`
    gives `a` and `a.b` (b may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # drop `if TYPE_CHECKING:` blocks
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith(prefix)}


def graph(package: str) -> dict[str, set[str]]:
    """Module -> the modules of `package` it imports (packages resolved to their
    `__init__`)."""
    mods = modules(package)
    return {
        name: {dep for dep in imports(path, prefix=package) if dep in mods and dep != name}
        for name, path in mods.items()
    }


def cycles(package: str) -> list[list[str]]:
    """Import cycles among the modules of `package` (each as a path a -> b -> ... -> a),
    counting imports inside functions too: a circle is a circle even when it is lazy."""
    edges = graph(package)
    found: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found
