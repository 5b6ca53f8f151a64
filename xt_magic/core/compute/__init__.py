"""Compute targets: one Backend per kind (local, pool, slurm, batch, and plug-ins from the registry)."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import backend_classes


def box_addresses(cfg, target: dict) -> list[str]:
    """The addresses of a pool target's boxes (a box name resolved through ``boxes``)."""
    addresses = []
    boxes = target.get("boxes") or ["localhost"]
    for box in boxes if isinstance(boxes, list) else []:  # a wrong type is the schema's to report
        entry = cfg.get(f"boxes.{box}") if cfg is not None and box != "localhost" else None
        addresses.append(entry.get("address", box) if isinstance(entry, dict) else box)
    return addresses


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


def backend_kind(cfg, target_name: str, target: dict) -> str:
    """The registry kind of the backend that runs a compute-targets entry."""
    return backend_class(cfg, target_name, target).kind


def get_backend(session, target_name: str | None = None, cfg=None):
    """The Backend for a compute target (default: ``xt-services.target``), cached per session."""
    cfg = cfg or session.config()
    target_name = target_name or cfg.get("xt-services.target") or "local"
    target = cfg.get(f"compute-targets.{target_name}")
    if not isinstance(target, dict):
        names = ", ".join(sorted(cfg.get("compute-targets") or {}))
        raise ConfigError(f"no compute target {target_name!r}", key="compute-targets",
                          hint=f"known targets: {names}")
    if hasattr(cfg, "check_used"):  # a broken entry stops only the commands that use it
        cfg.check_used(cfg.target_entries(target_name))
    cls = backend_class(cfg, target_name, target)
    kind = cls.kind
    from .. import storage
    store = storage.get_store(session, cfg)
    key = f"{target_name}:{kind}:{id(store)}:{sorted((k, repr(v)) for k, v in target.items())}"
    return session.cached("backend", key, lambda: cls(target_name, target, config=cfg,
                                                       store=store, session=session))
