"""Compute targets: one Backend per kind (local, pool, slurm, batch)."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import resolve


def backend_kind(cfg, target_name: str, target: dict) -> str:
    """Which backend runs a compute-targets entry.

    ``service: pool`` whose boxes are all ``localhost`` is the local backend (XT's default
    ``local`` target); other pools are SSH pools. ``service: slurm`` is Slurm. Otherwise the
    service names an external-services entry whose ``type`` is the kind (``batch``).
    """
    service = target.get("service")
    if service == "pool":
        boxes = target.get("boxes") or ["localhost"]
        addresses = []
        for box in boxes:
            entry = cfg.get(f"boxes.{box}") if box != "localhost" else None
            addresses.append((entry or {}).get("address", box) if isinstance(entry, dict) else box)
        return "local" if all(a == "localhost" for a in addresses) else "pool"
    if service in ("slurm", "local"):
        return service
    entry = cfg.get(f"external-services.{service}") if service else None
    if isinstance(entry, dict) and entry.get("type") in ("batch", "slurm"):
        return entry["type"]
    raise ConfigError(f"target {target_name!r}: service {service!r} is not pool, slurm or a "
                      "batch service in external-services", key=f"compute-targets.{target_name}.service")


def get_backend(session, target_name: str | None = None, cfg=None):
    """The Backend for a compute target (default: ``xt-services.target``), cached per session."""
    cfg = cfg or session.config()
    target_name = target_name or cfg.get("xt-services.target") or "local"
    target = cfg.get(f"compute-targets.{target_name}")
    if not isinstance(target, dict):
        names = ", ".join(sorted(cfg.get("compute-targets") or {}))
        raise ConfigError(f"no compute target {target_name!r}", key="compute-targets",
                          hint=f"known targets: {names}")
    kind = backend_kind(cfg, target_name, target)
    cls = resolve("backend", kind)
    from .. import storage
    store = storage.get_store(session, cfg)
    key = f"{target_name}:{kind}:{id(store)}:{sorted((k, repr(v)) for k, v in target.items())}"
    return session.cached("backend", key, lambda: cls(target_name, target, config=cfg,
                                                       store=store, session=session))
