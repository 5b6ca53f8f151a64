"""Name -> implementation registries, resolved on first use.

Entries are ``"module:Class"`` strings so that naming a backend imports nothing. Third parties add
entries through the entry-point groups ``xt_magic.backends`` and ``xt_magic.stores``.
"""
from __future__ import annotations

import importlib
import os
import sys

from .errors import ConfigError, MissingDependencyError, XTError

# kind -> ("module:Class", pip extra that brings its dependencies)
BACKENDS: dict[str, tuple[str, str]] = {
    "local": ("xt_magic.core.compute.local:LocalBackend", ""),
    "pool": ("xt_magic.core.compute.pool:PoolBackend", "ssh"),
    "slurm": ("xt_magic.core.compute.slurm:SlurmBackend", "ssh"),
    "batch": ("xt_magic.core.compute.batch:BatchBackend", "azure"),
}

STORES: dict[str, tuple[str, str]] = {
    "file": ("xt_magic.core.storage.file:FileStore", ""),
    "azure-blob": ("xt_magic.core.storage.azure_blob:AzureBlobStore", "azure"),
}

# XT's storage provider names and ours -> store registry name
STORE_PROVIDERS = {
    "store-file": "file", "file": "file",
    "azure-blob-21": "azure-blob", "azure-blob-210": "azure-blob", "azure-blob": "azure-blob",
}

_GROUPS = {"backend": ("xt_magic.backends", BACKENDS), "store": ("xt_magic.stores", STORES)}
_loaded_entry_points: set[str] = set()


def _load_entry_points(group: str, table: dict) -> None:
    if group in _loaded_entry_points:
        return
    _loaded_entry_points.add(group)
    for name, value in _installed_entry_points()[group]:
        table.setdefault(name, (value, ""))


def _installed_entry_points() -> dict[str, list]:
    """group -> [(name, value)] of our groups' installed entry points, in discovery order.

    importlib.metadata costs a new process ~10-25 ms (its import, then reading every installed
    distribution), so the answer is kept in the cache dir, one file per sys.path, and used while
    the distributions on sys.path are the same ones (``_distributions``)."""
    import hashlib
    import json

    from .config.cache import cache_path, cache_write
    seen = _distributions()
    name = hashlib.sha256(json.dumps(sys.path).encode()).hexdigest() + ".json"
    path = cache_path("entry-points", name)
    try:
        with open(path, encoding="utf-8") as fh:
            cached = json.load(fh)
        if cached["distributions"] == seen:
            return cached["groups"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    from importlib.metadata import entry_points
    groups = {g: [[ep.name, ep.value] for ep in entry_points(group=g)] for g, _ in _GROUPS.values()}
    cache_write(path, json.dumps({"distributions": seen, "groups": groups}))
    return groups


def _distributions() -> list:
    """[path entry, [[metadata dir, mtime_ns], ...] or None] for every sys.path entry: what
    importlib.metadata reads entry points from. Installing, upgrading or removing a package adds,
    recreates or removes its .dist-info/.egg-info dir, so this changes; the cwd's own files (a
    notebook saved) do not change it. ~1 ms for a few hundred installed packages."""
    out = []
    for entry in sys.path:
        try:
            with os.scandir(entry or ".") as it:
                found = sorted([d.name, d.stat(follow_symlinks=False).st_mtime_ns] for d in it
                               if d.name.endswith((".dist-info", ".egg-info")))
        except OSError:  # a zip, or gone
            try:
                found = [["", os.stat(entry).st_mtime_ns]]
            except OSError:
                found = None
        out.append([entry, found])
    return out


def _import(path: str):
    """``"module:Class"`` or XT's ``"module.Class"`` -> the object."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)


def backend_classes(config=None, plugins: bool = True) -> dict[str, type]:
    """kind -> Backend class: the built-in ones, then entry points (``plugins``), then the config's
    ``providers.compute`` entries that name an xt_magic Backend. A plug-in that fails to import is
    left out (``problems()`` says why); reading these classes imports no SDK."""
    if plugins:
        _load_entry_points("xt_magic.backends", BACKENDS)
    out: dict[str, type] = {}
    for name in list(BACKENDS) if plugins else list(_BUILTIN_BACKENDS):
        try:
            cls = resolve("backend", name)
        except Exception as err:  # noqa: BLE001 - a broken plug-in must not break the others
            _PROBLEMS[f"backend {name!r}"] = f"{type(err).__name__}: {err}"
            continue
        out[getattr(cls, "kind", "") or name] = cls
    for name, cls in providers(config, "compute").items():
        if cls is not None:
            out[name] = _named(cls, name)
    return out


_NAMED: dict = {}


def _named(cls: type, name: str) -> type:
    """``cls`` serving the kind, service and service type ``name`` (as XT's providers entries named
    a compute kind), one class per (cls, name) so caches keyed by class keep working."""
    if cls.kind == name:
        return cls
    key = (cls, name)
    if key not in _NAMED:
        _NAMED[key] = type(cls.__name__, (cls,), {
            "kind": name, "services": (name,), "service_types": (name,),
            "__module__": cls.__module__, "__doc__": cls.__doc__})
    return _NAMED[key]


_BUILTIN_BACKENDS = tuple(BACKENDS)
_PROBLEMS: dict[str, str] = {}
XT_OWN = "xtlib."  # XT's own plug-in classes: accepted in `providers`, not used by xt_magic


def providers(config, group: str) -> dict[str, type | None]:
    """The config's ``providers.GROUP`` entries (XT: name -> "module.Class"): the class when it is
    an xt_magic Backend (group compute) or Store (group storage), None for XT's own ``xtlib.*``
    classes. Raises XTError naming the key for a class path that does not import or is not one."""
    table = config.get(f"providers.{group}") if config is not None else None
    out: dict[str, type | None] = {}
    for name, path in (table or {}).items() if isinstance(table, dict) else ():
        if not isinstance(path, str) or path.startswith(XT_OWN):
            out[name] = None
            continue
        out[name] = provider_class(group, name, path)
    return out


def provider_class(group: str, name: str, path: str) -> type:
    # the base class by name: the registry sits below compute and storage and imports neither
    base_module, base_name = (("xt_magic.core.compute.base", "Backend") if group == "compute"
                              else ("xt_magic.core.storage.base", "Store"))
    key = f"providers.{group}.{name}"
    try:
        cls = _import(path)
    except (ImportError, AttributeError, ValueError) as err:
        raise XTError(f"cannot import {path!r}: {err}", key=key,
                      hint="give module.Class of an installed package") from None
    if not (isinstance(cls, type) and any(c.__module__ == base_module and c.__name__ == base_name
                                          for c in cls.__mro__)):
        raise XTError(f"{path!r} is not an xt_magic {base_name} subclass", key=key)
    return cls


def problems() -> dict[str, str]:
    """Plug-ins that failed to load: name -> why."""
    return dict(_PROBLEMS)


def resolve(kind: str, name: str):
    """Return the class registered as ``name`` for ``kind`` ("backend" or "store")."""
    group, table = _GROUPS[kind]
    if name not in table:
        _load_entry_points(group, table)
    if name not in table:
        known = ", ".join(sorted(table))
        raise XTError(f"unknown {kind} {name!r}", hint=f"known: {known}")
    target, extra = table[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and not err.name.startswith("xt_magic"):
            raise MissingDependencyError(err.name, extra or "all", f"the {name} {kind}") from err
        raise
    return getattr(module, attr)


# ---- which backend runs a compute target --------------------------------------------------------
def box_addresses(cfg, target: dict) -> list[str]:
    """The addresses of a pool target's boxes (a box name resolved through ``boxes``)."""
    addresses = []
    boxes = target.get("boxes") or ["localhost"]
    for box in boxes if isinstance(boxes, list) else []:  # a wrong type is the schema's to report
        entry = cfg.get(f"boxes.{box}") if cfg is not None and box != "localhost" else None
        addresses.append(entry.get("address", box) if isinstance(entry, dict) else box)
    return addresses


def all_localhost(cfg, target: dict) -> bool:
    """Whether every box of a pool target is this machine (XT's ``local`` target): the local
    backend runs it, else the SSH pool."""
    return all(a == "localhost" for a in box_addresses(cfg, target))


def backend_class(cfg, target_name: str, target: dict, classes: dict | None = None) -> type:
    """The Backend class that runs a compute-targets entry, from the registry.

    ``service`` is either a name a backend serves directly (``pool``, ``slurm``; XT's ``pool`` with
    only localhost boxes is the local backend) or an external-services entry whose ``type`` a
    backend serves (``batch``). Raises ConfigError naming the key when no backend runs it.
    """
    classes = backend_classes(cfg) if classes is None else classes
    key = f"compute-targets.{target_name}.service"
    service = target.get("service")
    direct = [cls for cls in classes.values() if service in cls.services]
    if direct:
        for cls in direct:
            if cls.accepts(cfg, target):
                return cls
        return direct[0]
    entry = cfg.get(f"external-services.{service}") if isinstance(service, str) and service else None
    if not isinstance(entry, dict):
        names = sorted({s for cls in classes.values() for s in cls.services})
        raise ConfigError(f"target {target_name!r}: service {service!r} is not defined in external-services",
                          key=key, hint=f"use {', '.join(names)} or an external-services entry "
                                        f"of type {' or '.join(served_types(classes))}")
    kind = entry.get("type")
    for cls in classes.values():
        if kind in cls.service_types and cls.accepts(cfg, target):
            return cls
    raise ConfigError(f"target {target_name!r}: service {service!r} is of type {kind}, which no "
                      "installed backend runs", key=key,
                      hint=f"compute services: {', '.join(served_types(classes))}; a backend package "
                           "adds more (entry point xt_magic.backends)")


def served_types(classes: dict) -> list[str]:
    return sorted({t for cls in classes.values() for t in cls.service_types})
