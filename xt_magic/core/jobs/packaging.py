"""Packaging a cell: its source, its inputs (cloudpickle), cloudpickle itself and the runner.

Inputs are the names given with ``--inputs``, or else the cell's free names (read before the cell
binds them) that exist in the notebook namespace. Notebook functions and classes travel by value
(cloudpickle does that for ``__main__``; modules living next to the notebook that the node could
not import are registered by value). Imports the cell needs are its own lines.
"""
from __future__ import annotations

import ast
import builtins
import hashlib
import io
import keyword
import os
import symtable
import sys
import types
import zipfile

from ..errors import JobError
from ..naming import param

# names the kernel defines that are never inputs
_KERNEL_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "display"})
_CACHE: dict[str, bytes] = {}


def check_source(source: str) -> ast.Module:
    """Parse the cell; a syntax error is a one-line JobError with the cell line."""
    try:
        return ast.parse(source, "<cell>", "exec")
    except SyntaxError as err:
        text = (err.text or "").strip()
        hint = "!cmd and %magic lines run only through %%xt_run (with IPython on the node)" \
            if text[:1] in "%!" else None
        raise JobError(f"cell line {err.lineno}: {err.msg}: {text}", hint=hint) from None


def _module_level_positions(tree: ast.Module) -> tuple[dict, dict]:
    """First load and first binding position of each name bound/used at module level."""
    loads: dict[str, tuple] = {}
    stores: dict[str, tuple] = {}

    def note(table, name, node):
        pos = (node.lineno, node.col_offset)
        if name not in table or pos < table[name]:
            table[name] = pos

    class Visitor(ast.NodeVisitor):
        bind_at = None  # in ``x = f(x)`` the value is read before x is bound: bind at the end

        def visit_Name(self, node):
            if isinstance(node.ctx, ast.Load):
                note(loads, node.id, node)
            else:
                note(stores, node.id, self.bind_at or node)

        def visit_Assign(self, node):
            if node.value is not None:
                self.visit(node.value)
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                note(loads, node.target.id, node.target)  # x += 1 reads x first
            self.bind_at = types.SimpleNamespace(lineno=node.end_lineno,
                                                 col_offset=node.end_col_offset)
            for target in getattr(node, "targets", None) or [node.target]:
                self.visit(target)
            self.bind_at = None

        visit_AnnAssign = visit_AugAssign = visit_Assign

        def _def(self, node):  # bind the name; the body is another scope (symtable's)
            outer = list(getattr(node, "decorator_list", [])) + list(getattr(node, "bases", []))
            outer += [k.value for k in getattr(node, "keywords", [])]
            args = getattr(node, "args", None)
            if args is not None:
                outer += list(args.defaults) + [d for d in args.kw_defaults if d is not None]
            for child in outer:
                self.visit(child)
            if hasattr(node, "name"):
                note(stores, node.name, node)

        visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = visit_Lambda = _def

        def _comp(self, node):  # only the first iterable is evaluated in the cell's scope
            self.visit(node.generators[0].iter)

        visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _comp

        def visit_Import(self, node):
            for alias in node.names:
                note(stores, (alias.asname or alias.name).split(".")[0], node)

        visit_ImportFrom = visit_Import

    Visitor().visit(tree)
    return loads, stores


def free_names(source: str) -> list[str]:
    """Names the cell reads from outside itself, in first-use order."""
    tree = check_source(source)
    loads, stores = _module_level_positions(tree)
    nested: set[str] = set()

    def walk(table):
        for child in table.get_children():
            for sym in child.get_symbols():
                if sym.is_referenced() and sym.is_global() and not sym.is_declared_global() \
                        or (sym.is_declared_global() and sym.is_referenced()):
                    nested.add(sym.get_name())
            walk(child)

    walk(symtable.symtable(source, "<cell>", "exec"))
    out = []
    for name in sorted(set(loads) | nested, key=lambda n: loads.get(n, (10**9, 0))):
        bound_at = stores.get(name)
        used_at = loads.get(name)
        if bound_at is not None and (used_at is None or bound_at < used_at):
            continue  # the cell binds it before reading it
        out.append(name)
    return out


def choose_inputs(source: str, namespace: dict, declared: list[str] | None,
                  exclude: set[str] = frozenset()) -> dict:
    """The input variables: declared (each must exist) or the free names found in ``namespace``."""
    if declared:
        missing = [n for n in declared if check_name(n, "input") not in namespace]
        if missing:
            raise JobError(f"{param('inputs')}: {', '.join(missing)} not defined in the "
                           "namespace")
        return {n: namespace[n] for n in declared}
    chosen = {}
    for name in free_names(source):
        if name in exclude or name in _KERNEL_NAMES or name.startswith("_") or name not in namespace:
            continue
        value = namespace[name]
        if value is getattr(builtins, name, object()):
            continue
        chosen[name] = value
    return chosen


def undefined_names(source: str, namespace: dict, exclude: set[str] = frozenset()) -> list[str]:
    """Free names of the cell defined nowhere: not in ``namespace``, not builtins, not in
    ``exclude`` (the hyperparameters). The run would stop at the first with a NameError."""
    return [n for n in free_names(source) if n not in namespace and n not in exclude
            and n not in _KERNEL_NAMES and not hasattr(builtins, n) and not n.startswith("__")]


def _register_local_modules(values: dict, keep_by_ref: str | None) -> list:
    """Register by value the notebook-side modules (files under cwd, not installed) the inputs
    come from, so the node needs only the stdlib and the setup's packages."""
    import cloudpickle
    cwd = os.path.abspath(keep_by_ref or os.getcwd())
    registered = []
    for value in values.values():
        mod_name = getattr(value, "__module__", None) if not isinstance(value, types.ModuleType) \
            else None
        mod = sys.modules.get(mod_name or "")
        path = getattr(mod, "__file__", None) or ""
        if mod is None or mod_name == "__main__" or "site-packages" in path \
                or not os.path.abspath(path).startswith(cwd + os.sep):
            continue
        try:
            cloudpickle.register_pickle_by_value(mod)
            registered.append(mod)
        except ValueError:
            pass
    return registered


def pickle_inputs(values: dict, cwd: str | None = None) -> bytes:
    """cloudpickle of ``{name: value}``; an unpicklable value -> JobError naming it and why."""
    import cloudpickle
    registered = _register_local_modules(values, cwd)
    try:
        try:
            return cloudpickle.dumps(values)
        except Exception:  # find which variable, and why
            for name, value in values.items():
                try:
                    cloudpickle.dumps(value)
                except Exception as err:
                    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
                    raise JobError(f"input variable {name!r} ({type(value).__name__}) cannot be "
                                   f"sent to the job: {reason}",
                                   hint="create it inside the cell, or leave it out of "
                                        + param("inputs")
                                   ) from None
            raise
    finally:
        for mod in registered:
            cloudpickle.unregister_pickle_by_value(mod)


def cloudpickle_zip() -> bytes:
    """cloudpickle's own package source, zipped, so a node can unpickle with only the stdlib."""
    if "cloudpickle" not in _CACHE:
        import cloudpickle
        folder = os.path.dirname(cloudpickle.__file__)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in sorted(os.listdir(folder)):
                if name.endswith(".py"):
                    info = zipfile.ZipInfo(f"cloudpickle/{name}", (1980, 1, 1, 0, 0, 0))
                    info.compress_type = zipfile.ZIP_DEFLATED
                    with open(os.path.join(folder, name), "rb") as fh:
                        zf.writestr(info, fh.read())
        _CACHE["cloudpickle"] = buf.getvalue()
        _CACHE["cloudpickle_version"] = str(getattr(cloudpickle, "__version__", ""))
    return _CACHE["cloudpickle"]


def cloudpickle_version() -> str:
    """The version of the cloudpickle in ``cloudpickle_zip()``: a node whose own cloudpickle is
    the same version (a warm local template has it imported already) need not import the zip."""
    cloudpickle_zip()
    return _CACHE["cloudpickle_version"]


def check_name(name: str, what: str = "hyperparameter") -> str:
    """A name that becomes a variable in the cell: an identifier, not a keyword or dunder."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name) \
            or name.startswith("__"):
        raise JobError(f"bad {what} name {name!r}: must be a Python identifier")
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def resolve_setup(name: str | None, setup: dict | None) -> dict | None:
    """The ticket's setup: ``pkg==*`` pinned to the locally installed version, plus a hash."""
    if not setup:
        return None
    import json

    def pin(spec: str, kind: str) -> str:
        spec = str(spec).strip()
        if spec.endswith("==*"):
            from importlib import metadata  # ~7 ms: only for a pin (a default setup has none)
            pkg = spec[:-3].strip()
            try:
                return f"{pkg}=={metadata.version(pkg)}"
            except metadata.PackageNotFoundError:
                raise JobError(f"setup {name!r}: {spec} means the locally installed version, but "
                               f"{pkg} is not installed here", key=f"setups.{name}.{kind}") from None
        return spec

    out = {"name": name, "activate": setup.get("activate") or None,
           "pip-packages": [pin(p, "pip-packages") for p in setup.get("pip-packages") or []],
           "conda-packages": [str(p) for p in setup.get("conda-packages") or []],
           "python": setup.get("python") or None}
    out["hash"] = sha256(json.dumps(out, sort_keys=True).encode())
    return out
