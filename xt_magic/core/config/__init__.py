"""Layered XT config: defaults < user < local ./xt_config.yaml < session < one call.

``load_config(cwd)`` returns a :class:`ResolvedConfig` (merged, substituted, validated, every value
with its layer/file/line). ruamel.yaml and jsonschema are imported on first load, never at import.
"""
from __future__ import annotations

from .resolved import Origin, ResolvedConfig, VaultRef, split_key

__all__ = ["load_config", "config_files", "ResolvedConfig", "VaultRef", "Origin", "split_key"]


def load_config(cwd: str | None = None, session: dict | None = None,
                overrides: dict | None = None, validate: bool = True,
                strict: bool = True) -> ResolvedConfig:
    """Resolve the config for ``cwd``: defaults < user < ./xt_config.yaml < ``session`` < ``overrides``.

    ``session`` and ``overrides`` map dotted keys (``"compute-targets.local.setup"``) to values.
    Raises ConfigError listing every problem when a file or the merged result is invalid. With
    ``strict=False`` (what commands use) a problem inside a named entry (a target, service, setup,
    box, ...) other than the store's and vault's services is a warning (``cfg.warnings``) and is
    raised only by ``cfg.check_used`` when a command uses that entry.
    """
    from .loader import load
    return load(cwd, session, overrides, validate=validate, strict=strict)


def config_files(cwd: str | None = None) -> list[str]:
    """The config files that feed the resolved config, lowest layer first (existing or not)."""
    from .loader import files
    return [path for _layer, path in files(cwd)]
