"""The engine's modules import each other without cycles, counting every import (module level, TYPE_CHECKING
blocks and imports inside functions, which would otherwise hide a cycle)."""

import ast
from pathlib import Path

import attnkit.engine

ENGINE = Path(attnkit.engine.__file__).parent
MODULES = {path.stem: path for path in ENGINE.glob("*.py") if path.stem != "__init__"}


def imports_of(path: Path) -> set[str]:
    """The engine modules ``path`` imports (``from .x import ...``, ``from . import x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
            found |= {name for name in names if name in MODULES}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph[node]):
            if target in path:
                found.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, [*path, target])
        done.add(node)

    for node in sorted(graph):
        if node not in done:
            visit(node, [node])
    return found


def test_no_import_cycle_inside_the_engine():
    graph = {name: imports_of(path) for name, path in MODULES.items()}
    assert graph["optim"] == set() and "config" not in graph["terms"] and "run_log" not in graph["rundir"]
    assert cycles(graph) == []


def test_engine_imports_inside_functions_say_why():
    """An engine module imported inside a function (the way to hide a cycle) needs its reason beside it."""
    unexplained = []
    for name, path in sorted(MODULES.items()):
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse(path.read_text())):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, ast.ImportFrom) and node.level == 1:
                        here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                        if "#" not in here and not above.startswith("#"):
                            unexplained.append(f"{name}.py:{node.lineno}: {here.strip()}")
    assert unexplained == []
