"""Name -> implementation registries, resolved on first use.

Entries are ``"module:Class"`` strings so that naming a backend imports nothing. Third parties add
entries through the entry-point groups ``xt_magic.backends`` and ``xt_magic.stores``.
"""
from __future__ import annotations

import importlib

from .errors import MissingDependencyError, XTError

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

_GROUPS = {"backend": ("xt_magic.backends", BACKENDS), "store": ("xt_magic.stores", STORES)}
_loaded_entry_points: set[str] = set()


def _load_entry_points(group: str, table: dict) -> None:
    if group in _loaded_entry_points:
        return
    _loaded_entry_points.add(group)
    from importlib.metadata import entry_points
    for ep in entry_points(group=group):
        table.setdefault(ep.name, (ep.value, ""))


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
