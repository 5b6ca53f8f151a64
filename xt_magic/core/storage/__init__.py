"""Stores for jobs, runs and snapshots: file (default) and Azure blob, over one Store ABC."""
from __future__ import annotations

from ..errors import ConfigError
from ..registry import STORE_PROVIDERS as PROVIDERS
from ..registry import providers, resolve


def get_store(session, cfg=None):
    """The store named by ``xt-services.storage`` (an external-services entry of type storage).

    Store classes are built with ``Class.from_config(service_name, service_cfg, session)`` and
    cached per session.
    """
    cfg = cfg or session.config()
    name = cfg.get("xt-services.storage")
    if not name:
        raise ConfigError("no storage service configured", key="xt-services.storage",
                          hint="name an external-services entry of type storage")
    service = cfg.get(f"external-services.{name}")
    if not isinstance(service, dict) or service.get("type") != "storage":
        raise ConfigError(f"{name!r} is not a storage service in external-services",
                          key="xt-services.storage")
    provider = service.get("provider", "store-file")
    kind = PROVIDERS.get(provider)
    cls = providers(cfg, "storage").get(provider) if kind is None else None  # XT's providers section
    if kind is None and cls is None:
        raise ConfigError(f"unknown storage provider {provider!r}",
                          key=f"external-services.{name}.provider",
                          hint="one of: " + ", ".join(sorted(PROVIDERS)) + " or a providers.storage entry")
    kind = kind or provider
    cls = cls or resolve("store", kind)
    key = f"{name}:{kind}:{sorted((k, repr(v)) for k, v in service.items())}"
    return session.cached("store", key, lambda: cls.from_config(name, service, session))
