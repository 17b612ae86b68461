"""Report import cycles among vortex_rl modules, read from the source with ``ast`` (nothing is imported).

Every import is an edge: module level, inside functions (lazy imports) and under ``TYPE_CHECKING``, since
each one couples the two modules. ``from pkg import name`` points at ``pkg.name`` when that is a module
and at ``pkg`` (its ``__init__``) otherwise. Cycles are the strongly connected components of the graph
restricted to the packages asked for; lower layers importing higher ones (``kernels`` <- ``sparse`` <-
``rollout``) are reported too.

    python scripts/check_import_cycles.py                      # rollout, sparse, kernels
    python scripts/check_import_cycles.py vortex_rl            # the whole package

Exits 1 when it finds a cycle or an upward import.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_PACKAGES = ("vortex_rl.rollout", "vortex_rl.sparse", "vortex_rl.kernels")
LAYERS = ("vortex_rl.kernels", "vortex_rl.sparse", "vortex_rl.rollout")  # each may import only those before it


def find_modules(root: pathlib.Path) -> dict[str, tuple[pathlib.Path, bool]]:
    """``{dotted name: (path, is_package)}`` of every module under ``root/vortex_rl``."""
    modules = {}
    for path in sorted((root / "vortex_rl").rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(modules: dict[str, tuple[pathlib.Path, bool]]) -> dict[str, set[str]]:
    """``{module: modules it imports}``, vortex_rl modules only."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        targets = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([base] if base else []))
                targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        graph[name] = {t for t in map(known, targets) if t is not None and t != name}
    return graph


def cycles(graph: dict[str, set[str]], scope: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), within ``scope``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v] & scope):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(scope):
        if v not in index:
            visit(v)
    return found


def layer_of(module: str) -> int | None:
    return next((i for i, p in enumerate(LAYERS) if module == p or module.startswith(p + ".")), None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="*", default=DEFAULT_PACKAGES, help="dotted package names")
    args = parser.parse_args(argv)
    modules = find_modules(ROOT)
    graph = import_graph(modules)
    scope = {m for m in modules if any(m == p or m.startswith(p + ".") for p in args.packages)}
    edges = sum(len(graph[m] & scope) for m in scope)
    print(f"{len(scope)} modules, {edges} import edges in {', '.join(args.packages)}")
    found = cycles(graph, scope)
    for component in found:
        print("CYCLE: " + " <-> ".join(component))
        for a in component:
            for b in sorted(graph[a] & set(component)):
                print(f"    {a} -> {b}")
    upward = [(a, b) for a in sorted(scope) for b in sorted(graph[a])
              if None not in (layer_of(a), layer_of(b)) and layer_of(b) > layer_of(a)]
    for a, b in upward:
        print(f"UPWARD: {a} -> {b}")
    if not found and not upward:
        print("no import cycles, no upward imports")
    return 1 if found or upward else 0


if __name__ == "__main__":
    sys.exit(main())
