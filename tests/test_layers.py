"""The house rules, read from the source (``ast``), so a change that breaks one fails here:

- packages depend one way: ``kernels`` <- ``sparse`` <- ``rollout`` <- ``trainers`` <- ``integrations``; ``data``
  uses none of them; the shared leaf modules (``registry``, ``devices``) use nothing of ours; ``integrations``
  (adapters to other frameworks: verl) is the top layer: it may import anything and nothing imports it;
- inside ``trainers``: ``algos`` is pure math (torch, the standard library, ``vortex_rl.registry``); only
  ``trainers/ray`` (and ``integrations``) import Ray, and nothing below ``run`` imports ``run``;
- no import cycles between modules (lazy imports inside functions count);
- no file under ``vortex_rl/`` is over 400 lines.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "vortex_rl"
MAX_LINES = 400
# a package may import the packages listed (its own always): the one-way rule
ALLOWED = {
    "registry": set(), "devices": set(),
    "kernels": {"registry", "devices"},
    "sparse": {"kernels", "registry", "devices"},
    "rollout": {"sparse", "kernels", "registry", "devices"},
    "data": {"registry", "devices"},
    "trainers": {"rollout", "sparse", "kernels", "data", "registry", "devices"},
    "train": {"trainers"}, "generate": {"rollout", "data", "trainers", "sparse"},
    "integrations": {"trainers", "rollout", "sparse", "kernels", "data", "registry", "devices"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (absolute names)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # ``from pkg import module``
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {name: {i for i in imports(path) if i in MODULES and i != name} for name, path in MODULES.items()}


def top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_packages_depend_one_way():
    bad = []
    for name, deps in GRAPH.items():
        here = top(name)
        if here not in ALLOWED:
            continue
        for dep in deps:
            there = top(dep)
            if there and there != here and there not in ALLOWED[here]:
                bad.append(f"{name} imports {dep}")
    assert not bad, "\n".join(bad)


def test_trainer_rooms():
    bad = []
    for name, path in MODULES.items():
        everything = imports(path)
        if name.startswith("vortex_rl.trainers.algos"):
            ours = {i for i in everything if i.startswith("vortex_rl")} - {"vortex_rl.registry", "vortex_rl.registry.Registry"}
            foreign = {i.split(".")[0] for i in everything} - {"torch", "vortex_rl", "__future__"} - set(sys.stdlib_module_names)
            if ours or foreign:
                bad.append(f"{name} (pure math) imports {sorted(ours | foreign)}")
        if any(i == "ray" or i.startswith("ray.") for i in everything) \
                and not name.startswith(("vortex_rl.trainers.ray", "vortex_rl.integrations")):
            bad.append(f"{name} imports ray outside vortex_rl/trainers/ray")
        below_run = ("algos", "step", "local", "distributed", "config", "batch")
        if name.startswith(tuple(f"vortex_rl.trainers.{room}" for room in below_run)):
            upward = [i for i in GRAPH[name] if i.startswith(("vortex_rl.trainers.run", "vortex_rl.trainers.ray"))]
            if upward:
                bad.append(f"{name} imports {upward} (run/ and ray/ assemble the layers below them)")
    assert not bad, "\n".join(bad)


def test_nothing_imports_integrations():
    bad = [f"{name} imports {dep}" for name, deps in GRAPH.items() if top(name) != "integrations"
           for dep in deps if top(dep) == "integrations"]
    assert not bad, "\n".join(bad)


def test_only_integrations_import_verl():
    bad = [name for name, path in MODULES.items() if top(name) != "integrations"
           and any(i == "verl" or i.startswith("verl.") for i in imports(path))]
    assert not bad, f"modules outside vortex_rl/integrations import verl: {bad}"


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(GRAPH[node]):
            if MODULES[dep].name == "__init__.py" and node.startswith(dep + "."):
                continue  # a package's __init__ re-exporting its own modules is not a cycle of concepts
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for name in sorted(GRAPH):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle()
    assert cycle is None, " -> ".join(cycle)


def test_file_size():
    sizes = {path: len(path.read_text().splitlines()) for path in ROOT.rglob("*.py")}
    over = [f"{path.relative_to(ROOT.parent)}: {lines} lines" for path, lines in sorted(sizes.items()) if lines > MAX_LINES]
    assert not over, f"files over {MAX_LINES} lines:\n" + "\n".join(over)
