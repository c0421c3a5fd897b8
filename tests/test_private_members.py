"""No subclass reaches into its base class's privates.

A class that subclasses one of ours must extend it through public hooks: it may not define a
``_name`` its first-party base (or any first-party ancestor) defines (method, class attribute
or ``self._name = ...``), nor use one (``self._name``, ``super()._name``). What a role needs
from :class:`~userrl.bus.worker.Worker` is a public hook there, so the base can change its
internals without breaking a role that copied them.

The check reads the source with :mod:`ast` (no imports), over every package that
``pyproject.toml``'s ``package-dir`` maps into ``userrl.*``.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def first_party_modules() -> dict[str, Path]:
    """``userrl.x.y`` -> source file, for every module of the packages pyproject maps."""
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    out: dict[str, Path] = {}
    for package, folder in setup["package-dir"].items():
        root = REPO / folder
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            # a subfolder mapped on its own (userrl.bus under userrl/?) wins over its parent's walk
            out.setdefault(name, path)
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass
class ClassInfo:
    qualname: str
    bases: list[str]  #: resolved dotted names (first-party ones start with ``userrl.``)
    defines: dict[str, int] = field(default_factory=dict)  #: private name -> line
    uses: dict[str, int] = field(default_factory=dict)  #: private name used on self/super() -> line


def _imports(tree: ast.Module, module: str) -> dict[str, str]:
    """Local name -> dotted name, for the module's top-level imports."""
    names: dict[str, str] = {}
    package = module.rsplit(".", 1)[0]
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for a in node.names:
                names[a.asname or a.name] = f"{base}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.asname and a.name or a.name.split(".")[0]
    return names


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else None
    if isinstance(node, ast.Subscript):  # Generic[T]
        return _dotted(node.value)
    return None


def _is_self_or_super(node: ast.expr) -> bool:
    if isinstance(node, ast.Name) and node.id in ("self", "cls"):
        return True
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _class_info(cls: ast.ClassDef, module: str, imports: dict[str, str], local: set[str]) -> ClassInfo:
    bases = []
    for b in cls.bases:
        name = _dotted(b)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        if head in imports:
            name = imports[head] + (f".{rest}" if rest else "")
        elif head in local:
            name = f"{module}.{name}"
        bases.append(name)
    info = ClassInfo(f"{module}.{cls.name}", bases)
    for stmt in cls.body:
        targets: list[ast.expr] = []
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and _private(stmt.name):
            info.defines.setdefault(stmt.name, stmt.lineno)
        elif isinstance(stmt, ast.Assign):
            targets = stmt.targets
        elif isinstance(stmt, (ast.AnnAssign, ast.AugAssign)):
            targets = [stmt.target]
        for t in targets:
            if isinstance(t, ast.Name) and _private(t.id):
                info.defines.setdefault(t.id, stmt.lineno)
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and _private(node.attr) and _is_self_or_super(node.value):
            if isinstance(node.ctx, ast.Store) and not isinstance(node.value, ast.Call):
                info.defines.setdefault(node.attr, node.lineno)
            else:
                info.uses.setdefault(node.attr, node.lineno)
    return info


def all_classes() -> dict[str, ClassInfo]:
    out: dict[str, ClassInfo] = {}
    for module, path in first_party_modules().items():
        tree = ast.parse(path.read_text(), str(path))
        imports = _imports(tree, module)
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                info = _class_info(node, module, imports, local)
                out[info.qualname] = info
    return out


def ancestors(name: str, classes: dict[str, ClassInfo]) -> list[ClassInfo]:
    """The first-party ancestors of class ``name`` (nearest first, each once)."""
    seen: list[ClassInfo] = []
    todo = list(classes[name].bases)
    while todo:
        b = todo.pop(0)
        if b in classes and classes[b] not in seen:
            seen.append(classes[b])
            todo += classes[b].bases
    return seen


def violations(classes: dict[str, ClassInfo]) -> list[str]:
    out = []
    for name, info in sorted(classes.items()):
        owned: dict[str, str] = {}
        for base in reversed(ancestors(name, classes)):
            for member in base.defines:
                owned[member] = base.qualname
        for member, line in sorted(info.defines.items()):
            if member in owned:
                out.append(f"{name} (line {line}) overrides {owned[member]}.{member}")
        for member, line in sorted(info.uses.items()):
            if member in owned and member not in info.defines:
                out.append(f"{name} (line {line}) uses {owned[member]}.{member}")
    return out


def test_the_scan_sees_the_roles() -> None:
    """The check is not vacuous: it finds every role and its first-party base."""
    classes = all_classes()
    for role in (
        "userrl.agents.worker.PolicyWorker",
        "userrl.envs.worker.EnvWorker",
        "userrl.sim_users.worker.UserWorker",
        "userrl.learner.reward.worker.RewardWorker",
    ):
        assert role in classes, sorted(classes)[:20]
        assert "userrl.bus.worker.Worker" in [a.qualname for a in ancestors(role, classes)], role
    assert "_in_flight" in classes["userrl.bus.worker.Worker"].defines


def test_detects_an_override_and_a_use(tmp_path: Path) -> None:
    src = (
        "class Base:\n    def __init__(self):\n        self._state = 1\n    def _step(self):\n        pass\n"
        "class Child(Base):\n    def _step(self):\n        return super()._step()\n"
        "    def public(self):\n        return self._state\n"
        "class Fine(Base):\n    def _own(self):\n        return self._own\n"
    )
    tree = ast.parse(src)
    local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    classes = {f"m.{n.name}": _class_info(n, "m", {}, local) for n in tree.body if isinstance(n, ast.ClassDef)}
    assert violations(classes) == ["m.Child (line 7) overrides m.Base._step", "m.Child (line 10) uses m.Base._state"]


def test_no_subclass_overrides_or_uses_a_private_of_a_first_party_base() -> None:
    classes = all_classes()
    bad = violations(classes)
    assert not bad, "subclasses must use public hooks of their base:\n" + "\n".join(bad)
