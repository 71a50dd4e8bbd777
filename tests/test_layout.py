"""The layout's rules, checked: `ingest` holds what the edge and the worker share, `ingest.edge` the
edge; the worker imports nothing from the edge; nothing imports in a circle; modules stay small."""

from __future__ import annotations

import ast
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("ingest", "worker")
MAX_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imported(path: Path, name: str) -> Iterator[str]:
    """Every module `path` imports (at any depth: lazy imports count too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1]])
                base = f"{base}.{node.module}" if node.module else base
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {target for target in _imported(path, name) if target in modules and target != name}
        for name, path in modules.items()
    }


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def test_ingest_never_imports_worker() -> None:
    for name, targets in _import_graph().items():
        if _is_within(name, "ingest"):
            assert not [t for t in targets if _is_within(t, "worker")], name


def test_the_worker_imports_nothing_from_the_edge() -> None:
    for name, targets in _import_graph().items():
        if _is_within(name, "worker"):
            assert not [t for t in targets if _is_within(t, "ingest.edge")], name


def test_shared_modules_import_nothing_from_the_edge() -> None:
    """What the worker may import lives outside `ingest.edge` and never reaches into it, save the
    command line, which starts the edge."""
    for name, targets in _import_graph().items():
        if _is_within(name, "ingest") and not _is_within(name, "ingest.edge"):
            if name in ("ingest.cli", "ingest.supervisor"):
                continue
            assert not [t for t in targets if _is_within(t, "ingest.edge")], name


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    path: list[str] = []
    seen: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in seen:
            return None
        seen.add(node)
        path.append(node)
        for target in sorted(graph.get(node, ())):
            # A package's __init__ is imported by its modules' import machinery, not by them.
            if _is_within(node, target):
                continue
            if found := visit(target):
                return found
        path.pop()
        return None

    return visit(start)


def test_no_module_imports_in_a_circle() -> None:
    graph = _import_graph()
    for name in graph:
        cycle = _cycle_from(graph, name)
        assert cycle is None, " → ".join(cycle or [])


def test_a_worker_process_never_loads_the_web_stack() -> None:
    code = "import sys, worker.main, worker.consumer; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"


def test_shared_modules_import_no_aiohttp() -> None:
    shared = [
        name
        for name in _modules()
        if _is_within(name, "ingest")
        and not _is_within(name, "ingest.edge")
        and name not in ("ingest.__main__", "ingest.cli", "ingest.supervisor")
    ]
    code = f"import sys; import {', '.join(shared)}; print('aiohttp' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.strip() == "False"


def test_no_module_is_over_500_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def _function_lengths() -> list[int]:
    lengths = []
    for path in _modules().values():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lengths.append((node.end_lineno or node.lineno) - node.lineno + 1)
    return lengths


def test_functions_stay_small() -> None:
    """The anchors' norm: the typical function is under 12 lines, nine in ten under 40."""
    lengths = _function_lengths()
    assert statistics.median(lengths) < 12
    assert statistics.quantiles(lengths, n=10)[-1] < 40
