"""Our modules' import graph: no cycles, and no first-party import hidden inside a function.

The modules are read with ``ast`` (nothing is imported), from the folders that pyproject's
``package-dir`` maps onto ``userrl.*`` (``envs/`` is ``userrl.envs``, ...).

- **Leaf contracts**: the modules every part shares (:data:`CONTRACTS`) import nothing of ours
  but each other.
- **No cycle** among module-level imports. An import of ``userrl.a.b`` also runs the package
  ``userrl.a``'s ``__init__``, so it counts as an edge to that package too, unless the importer
  is inside the package (its ``__init__`` has run first). Imports under ``if TYPE_CHECKING:``
  do not run and do not count.
- **No first-party import inside a function** (the usual way to hide a cycle), except of the
  modules in :data:`LAZY_OK`: modules that pull in an optional or heavy dependency (torch,
  starlette, ...) when imported, so a command or a backend that needs them loads them
  only when it runs; and only from a module that does not load it anyway. The test checks that
  each of them really is heavy, so the list cannot go stale.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: third-party packages that are optional extras or heavy to import; a first-party module that
#: imports one at module level (directly or through other modules) may be imported lazily
HEAVY = frozenset(
    {
        "torch",
        "transformers",
        "trl",
        "vllm",
        "peft",
        "accelerate",
        "datasets",
        "matplotlib",
        "safetensors",
        "uvicorn",
        "starlette",
        "selenium",
        "tensorboard",
        "wandb",
        "trackio",
    }
)

#: first-party modules that may be imported inside a function, and why (each must be heavy, and
#: the importer must not be: a lazy import has to spare the importer something)
LAZY_OK: dict[str, str] = {
    "userrl.learner.losses": "torch: `userrl train`/`learn` load the GRPO learner only when they run",
    "userrl.learner.grpo_learner": "torch, through the GRPO loss",
    "userrl.learner.loop": "torch, through the learner loop",
    "userrl.learner.distributed": "torch: multi-process training under accelerate",
    "userrl.learner.weight_sync": "torch: the vllm backend's in-place weight updates",
    "userrl.ui": "starlette and uvicorn: only `userrl ui` serves the web view",
}

#: the contracts every part shares: leaf modules that import nothing of ours but each other
CONTRACTS = frozenset(
    {"userrl.envs.actions", "userrl.sim_users.base", "userrl.bus.keys", "userrl.bus.records", "userrl.errors"}
)

#: build-time tools a CLI command may import lazily: no run-time process may load them, which
#: tests/test_runtime_imports.py checks (so they are not held to the "heavy" rule of LAZY_OK)
BUILD_TIME = "userrl.envs.data_tools"


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool


def package_dirs() -> dict[str, Path]:
    """``userrl.*`` package -> its source folder, from pyproject's setuptools settings."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {pkg: ROOT / d for pkg, d in cfg["package-dir"].items()}


@cache
def modules() -> dict[str, Path]:
    """Every first-party module name -> its file (packages are their ``__init__.py``)."""
    out: dict[str, Path] = {}
    dirs = package_dirs()
    for pkg, folder in dirs.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([pkg, *parts])
            # a folder mapped on its own (userrl.bus = bus/) is not also userrl's subfolder
            if any(name == p or name.startswith(p + ".") for p in dirs if p != pkg and p.startswith(pkg + ".")):
                continue
            if "__pycache__" not in path.parts:
                out[name] = path
    return out


def _resolve(name: str) -> str | None:
    """The first-party module that ``import name`` loads last (``a.b.C`` -> ``a.b``)."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imported_names(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        pkg = module if is_package else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            pkg = pkg.rpartition(".")[0]
        base = f"{pkg}.{base}" if base else pkg
    # ``from a import b``: b may be a submodule (then that is what loads) or a name in a
    return [f"{base}.{a.name}" for a in node.names] or [base]


def _walk(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _is_type_checking(child):  # its body never runs
            for orelse in child.orelse:
                yield from _walk(orelse, in_function)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, in_function
        yield from _walk(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))


@cache
def _parsed(module: str) -> ast.Module:
    return ast.parse(modules()[module].read_text(), filename=str(modules()[module]))


@cache
def imports() -> tuple[Import, ...]:
    out = []
    for module, path in modules().items():
        is_package = path.name == "__init__.py"
        for node, in_function in _walk(_parsed(module)):
            for name in _imported_names(module, is_package, node):
                if name.split(".")[0] != "userrl":
                    continue
                target = _resolve(name)
                if target and target != module:
                    out.append(Import(module, target, node.lineno, in_function))
    return tuple(out)


@cache
def graph() -> dict[str, frozenset[str]]:
    """Module -> the first-party modules its module-level imports run (packages included)."""
    edges: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in imports():
        if imp.in_function:
            continue
        parts = imp.target.split(".")
        for i in range(1, len(parts) + 1):
            pkg = ".".join(parts[:i])
            if pkg in edges and pkg != imp.importer and not imp.importer.startswith(pkg + "."):
                edges[imp.importer].add(pkg)
    return {m: frozenset(v) for m, v in edges.items()}


def cycles(g: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle (as a path) per strongly connected component of ``g`` (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                found.append(_cycle_path(g, set(scc)))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _cycle_path(g: dict[str, frozenset[str]], scc: set[str]) -> list[str]:
    """A readable cycle through ``scc``: breadth-first from its first module back to itself."""
    start = min(scc)
    prev: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(g[v] & scc):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return [*reversed(path), start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return sorted(scc)


def _third_party_top(module: str) -> set[str]:
    """Top-level names of the third-party packages ``module`` imports at module level."""
    out = set()
    for node, in_function in _walk(_parsed(module)):
        if in_function or (isinstance(node, ast.ImportFrom) and node.level):
            continue
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        out |= {n.split(".")[0] for n in names if n.split(".")[0] != "userrl"}
    return out


@cache
def heavy_reason(module: str) -> str | None:
    """Why importing ``module`` loads a heavy dependency (a chain of modules), or None."""
    seen: set[str] = set()
    queue: list[tuple[str, list[str]]] = [(module, [module])]
    while queue:
        m, path = queue.pop(0)
        if m in seen:
            continue
        seen.add(m)
        hit = sorted(_third_party_top(m) & HEAVY)
        if hit:
            return " -> ".join([*path, hit[0]])
        queue += [(w, [*path, w]) for w in sorted(graph()[m])]
    return None


# -- the tests ---------------------------------------------------------------------------------
def test_the_scan_sees_our_packages() -> None:
    mods = modules()
    for name in (
        "userrl.cli",
        "userrl.envs.base",
        "userrl.envs.gyms.telepathy",
        "userrl.bus.transport",
        "userrl.sim_users.base",
        "userrl.agents.worker",
        "userrl.learner.losses",
        "userrl.ui",
    ):
        assert name in mods, name
    assert not any(m.startswith("userrl.userrl") for m in mods)
    assert len(mods) > 100


def test_the_scan_finds_cycles_and_lazy_imports() -> None:
    """The detectors themselves: a known cycle, imports in and out of functions, heaviness."""
    g = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a", "d"}), "d": frozenset()}
    assert cycles(g) == [["a", "b", "c", "a"]]
    assert cycles({**g, "c": frozenset({"d"})}) == []
    tree = ast.parse(
        "import os\nfrom userrl import x\nif TYPE_CHECKING:\n    import userrl.y\n"
        "class K:\n    import userrl.k\n    def f(self):\n        from userrl.z import w\n"
    )
    got = [(ast.unparse(n), f) for n, f in _walk(tree)]
    assert got == [
        ("import os", False),
        ("from userrl import x", False),
        ("import userrl.k", False),
        ("from userrl.z import w", True),
    ]
    # an import of a submodule runs its package's __init__ too, unless the importer is inside it
    assert {"userrl.envs", "userrl.envs.registry"} <= graph()["userrl.config"]
    assert "userrl.envs" not in graph()["userrl.envs.worker"]
    assert heavy_reason("userrl.learner.losses") == "userrl.learner.losses -> torch"
    assert heavy_reason("userrl.errors") is None


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, "import cycles among our modules:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_shared_contracts_are_leaves() -> None:
    """Actions and their parsing, the user query and spec types, the routing keys and the
    error classes: anything may import them, so they import nothing of ours but each other."""
    imported = {(i.importer, i.target) for i in imports() if i.importer in CONTRACTS}
    assert all(m in modules() for m in CONTRACTS)
    assert {(a, b) for a, b in imported if b not in CONTRACTS} == set()


def test_no_first_party_import_inside_a_function() -> None:
    bad = [
        f"{modules()[i.importer].relative_to(ROOT)}:{i.line}: {i.target}"
        for i in imports()
        if i.in_function
        and not i.target.startswith(BUILD_TIME + ".")
        and (i.target not in LAZY_OK or heavy_reason(i.importer) is not None)
    ]
    assert not bad, (
        "first-party imports inside functions (import at the top; if that makes a "
        "cycle, move the shared part to a leaf module):\n" + "\n".join(sorted(set(bad)))
    )


def test_lazily_imported_modules_are_heavy() -> None:
    light = [m for m in LAZY_OK if m not in modules() or heavy_reason(m) is None]
    assert not light, f"LAZY_OK lists modules that are gone or import nothing heavy: {light}"
