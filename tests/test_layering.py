"""The package graph: each package stands above everything it imports.

Read from the code's own imports with `ast` (module level, inside functions and under TYPE_CHECKING alike), so a
lazy import is no way around it. Floors (see the README's layout table):

- ground: `protos` (wire), `robodata` (data layer), `policy_norm` (normalization, image fitting);
- middle: `policy_server` (serving), `robot_client` (runtime); neither imports the other;
- top: `replay` (tools), `calibration`, `training`, `bench`.

Command-line entry modules that drive several floors (`python -m robot_client run|demo`, `python -m policy_server`,
whose `config` and `serve --robot-config` read the robot config) live in the package they drive but stand on the
top floor: they may import tools and both middle packages, and nothing below the top imports them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

FLOORS: dict[str, int] = {
    "protos": 0,
    "robodata": 0,
    "policy_norm": 0,
    "policy_server": 1,
    "robot_client": 1,
    "replay": 2,
    "calibration": 2,
    "training": 2,
    "bench": 2,
}
TOP = max(FLOORS.values())
# Packages on one floor that must not know each other at all (not even one way).
INDEPENDENT = {frozenset({"policy_server", "robot_client"})}
# Entry modules that stand on the top floor wherever they live.
ENTRY_MODULES = {"robot_client.__main__", "robot_client.run_cli", "robot_client.demo",
                 "policy_server.__main__", "policy_server.cli"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    path = root.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path, root: Path, packages: set[str]) -> list[Edge]:
    """Every import of one of `packages` in the file, relative imports resolved."""
    source = module_name(path, root)
    is_package = path.name == "__init__.py"
    edges = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = source.split(".")
                if not is_package:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                targets = [".".join([*base, node.module] if node.module else base)]
            elif node.module:
                targets = [node.module]
            # `from pkg import mod` imports the module pkg.mod, not only pkg.
            targets = [f"{targets[0]}.{alias.name}" if _is_module(root, f"{targets[0]}.{alias.name}") else targets[0]
                       for alias in node.names] if targets else []
        for target in targets:
            if target.split(".")[0] in packages:
                edges.append(Edge(source, target, node.lineno))
    return edges


def floor_of(module: str, floors: dict[str, int], entry_modules: set[str]) -> int:
    if module in entry_modules:
        return max(floors.values())
    return floors[module.split(".")[0]]


def layering_violations(root: Path, floors: dict[str, int] = FLOORS,
                        independent: set[frozenset[str]] = INDEPENDENT,
                        entry_modules: set[str] = ENTRY_MODULES) -> list[str]:
    """Upward imports, imports between independent packages, and package cycles, each as one line."""
    packages = set(floors)
    problems: list[str] = []
    package_edges: dict[str, dict[str, Edge]] = defaultdict(dict)
    for package in sorted(packages):
        for path in sorted((root / package).rglob("*.py")):
            for edge in imports_of(path, root, packages):
                src_pkg, dst_pkg = edge.source.split(".")[0], edge.target.split(".")[0]
                src_floor = floor_of(edge.source, floors, entry_modules)
                dst_floor = floor_of(edge.target, floors, entry_modules)
                where = f"{path.relative_to(root)}:{edge.line}: {edge.source} imports {edge.target}"
                if dst_floor > src_floor:
                    problems.append(f"{where} (floor {src_floor} imports floor {dst_floor})")
                if src_pkg == dst_pkg or edge.source in entry_modules:
                    continue
                if frozenset({src_pkg, dst_pkg}) in independent:
                    problems.append(f"{where} ({src_pkg} and {dst_pkg} must not import each other)")
                package_edges[src_pkg].setdefault(dst_pkg, edge)
    # Package cycles (two packages importing each other, or a longer loop).
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(package_edges.get(node, {})):
            if state.get(nxt) == 1:
                loop = [*stack[stack.index(nxt):], nxt]
                detail = "; ".join(f"{e.source} imports {e.target}"
                                   for e in (package_edges[a][b] for a, b in zip(loop, loop[1:], strict=False)))
                problems.append(f"package cycle {' -> '.join(loop)} ({detail})")
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for package in sorted(package_edges):
        if package not in state:
            visit(package)
    return problems


def test_the_stack_is_layered() -> None:
    assert layering_violations(ROOT) == []


def test_every_package_has_a_floor() -> None:
    code_dirs = {p.parent.name for p in ROOT.glob("*/__init__.py")} | {"bench"}
    assert code_dirs <= set(FLOORS), f"packages without a floor: {sorted(code_dirs - set(FLOORS))}"


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


FLOORS_T = {"low": 0, "mid_a": 1, "mid_b": 1, "top": 2}


def test_an_upward_import_is_caught_even_inside_a_function(tmp_path: Path) -> None:
    _write(tmp_path, {
        "low/__init__.py": "",
        "low/x.py": "def f():\n    from top.tool import g\n    return g\n",
        "top/__init__.py": "",
        "top/tool.py": "from low import x\n",
    })
    problems = layering_violations(tmp_path, FLOORS_T, set(), set())
    assert any("low/x.py:2: low.x imports top.tool (floor 0 imports floor 2)" in p for p in problems), problems
    assert any(p.startswith("package cycle low -> top -> low") for p in problems), problems


def test_independent_packages_and_relative_imports(tmp_path: Path) -> None:
    _write(tmp_path, {
        "mid_a/__init__.py": "",
        "mid_a/sub/__init__.py": "",
        "mid_a/sub/y.py": "from ..z import q\nfrom mid_b import w\n",
        "mid_a/z.py": "q = 1\n",
        "mid_b/__init__.py": "",
        "mid_b/w.py": "",
    })
    problems = layering_violations(tmp_path, FLOORS_T, {frozenset({"mid_a", "mid_b"})}, set())
    assert problems == ["mid_a/sub/y.py:2: mid_a.sub.y imports mid_b.w (mid_a and mid_b must not import each other)"]


def test_entry_modules_stand_on_the_top_floor(tmp_path: Path) -> None:
    _write(tmp_path, {
        "mid_a/__init__.py": "",
        "mid_a/cli.py": "from top import tool\n",
        "mid_a/core.py": "from mid_a import cli\n",
        "top/__init__.py": "",
        "top/tool.py": "import mid_a.core\n",
    })
    problems = layering_violations(tmp_path, FLOORS_T, set(), {"mid_a.cli"})
    assert problems == ["mid_a/core.py:1: mid_a.core imports mid_a.cli (floor 1 imports floor 2)"]
