"""The core packages import only downward (docs/architecture.md "Layers"): every module's imports,
read with ast (lazy imports inside functions included), checked against the layer order."""
from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "xt_magic")

#: higher imports lower, never the reverse; modules of one package may import each other
LAYERS = [
    ("xt_magic.magics", "xt_magic.widgets"),
    ("xt_magic.core.api",),
    ("xt_magic.core.jobs",),
    ("xt_magic.core.compute",),
    ("xt_magic.core.storage",),
    ("xt_magic.core.protocol",),
    # the floor: anything may use these; they use nothing above
    ("xt_magic.core.config", "xt_magic.core.auth", "xt_magic.core.errors", "xt_magic.core.naming",
     "xt_magic.core.paths",
     "xt_magic.core.registry", "xt_magic.core.session", "xt_magic.runner"),
]


def _unit(module: str) -> str | None:
    for group in LAYERS:
        for unit in group:
            if module == unit or module.startswith(unit + "."):
                return unit
    return None


def _rank(unit: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if unit in group)


def _modules():
    for base, _dirs, files in os.walk(PKG):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(base, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                yield (rel[: -len(".__init__")] if rel.endswith(".__init__") else rel), path


def _imports(module: str, path: str):
    """(line, imported module) of every import of an xt_magic module, relative ones resolved."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    tree = ast.parse(open(path).read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("xt_magic"):
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if not target.startswith("xt_magic"):
                continue
            for alias in node.names:  # "from .core import api" names a submodule
                yield node.lineno, target if _unit(target) else f"{target}.{alias.name}"


def edges():
    out = []
    for module, path in _modules():
        for line, target in _imports(module, path):
            out.append((module, path, line, target))
    return out


def test_core_packages_import_only_downward():
    bad = []
    for module, path, line, target in edges():
        src, dst = _unit(module), _unit(target)
        if src is None or dst is None or src == dst:
            continue
        if _rank(dst) < _rank(src):
            bad.append(f"{os.path.relpath(path, ROOT)}:{line}: {module} imports {target} "
                       f"({src} is below {dst})")
    assert not bad, "\n".join(bad)


def test_no_sideways_imports_between_backends():
    pairs = {(m, t) for m, _p, _l, t in edges()}
    assert not any(m.startswith("xt_magic.core.compute.slurm") and
                   t.startswith("xt_magic.core.compute.pool") for m, t in pairs)
    assert not any(m.startswith("xt_magic.core.compute") and t.startswith("xt_magic.core.jobs")
                   for m, t in pairs)


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The graph is really read: a protocol module importing jobs would be reported."""
    fake = tmp_path / "xt_magic" / "core" / "protocol"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from ..jobs import submit\n")
    found = list(_imports("xt_magic.core.protocol.bad", str(fake / "bad.py")))
    assert found == [(2, "xt_magic.core.jobs")]
    assert _rank(_unit(found[0][1])) < _rank(_unit("xt_magic.core.protocol.bad"))
