"""Compute targets: one Backend per kind (local, pool, slurm, batch, and plug-ins from the registry)."""
from __future__ import annotations

from ..errors import ConfigError
# which backend runs a target is config + registry knowledge (validation needs it too)
from ..registry import backend_class, box_addresses, served_types  # noqa: F401 - re-exported


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
