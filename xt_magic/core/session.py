"""The per-process (per-kernel) session: session config values and caches.

One ``Session`` lives for the life of a kernel (or a plain Python process using core/api.py). It
holds the session config layer, the resolved config (recomputed when a layer changes), and caches
of stores, backends and credentials. Nothing here is written to disk.
"""
from __future__ import annotations

import os
import threading
from typing import Any


class Session:
    def __init__(self, cwd: str | None = None):
        self.cwd = cwd  # None: the process's working directory at each resolve (like XT)
        self.values: dict[str, Any] = {}          # session layer: dotted key -> value
        self.auth: Any = None                     # core.auth cache (credential, tokens, secrets)
        self._stores: dict[str, Any] = {}
        self._backends: dict[str, Any] = {}
        self._config = None
        self._config_key = None
        self.lock = threading.RLock()

    # -- config ---------------------------------------------------------------------------
    def config(self, overrides: dict | None = None):
        """The resolved config: defaults < user < local < session < ``overrides`` (one call)."""
        from .config import load_config
        cwd = self.cwd or os.getcwd()
        if overrides:
            return load_config(cwd=cwd, session=self.values, overrides=overrides, strict=False)
        key = (cwd,) + load_config_fingerprint(cwd) + (repr(sorted(self.values.items())),)
        with self.lock:
            if self._config is None or key != self._config_key:
                self._config = load_config(cwd=cwd, session=self.values, strict=False)
                self._config_key = key
                warn_config(self._config)
                from .errors import full_tracebacks
                full_tracebacks(bool(self._config.get("internal.stack-trace")))
            return self._config

    def invalidate(self) -> None:
        with self.lock:
            self._config = None
            self._stores.clear()
            for backend in self._backends.values():
                backend.close()
            self._backends.clear()

    # -- caches -----------------------------------------------------------------------------
    def cached(self, table: str, key: str, make):
        cache = self._stores if table == "store" else self._backends
        with self.lock:
            if key not in cache:
                cache[key] = make()
            return cache[key]


def warn_config(cfg) -> None:
    """Show the config's warnings (repeated keys, unusable entries) once per change of the files:
    commands that do not use a broken entry go on."""
    import warnings
    from .errors import ConfigWarning
    for text in cfg.warnings:
        warnings.warn(text, ConfigWarning, stacklevel=2)


def load_config_fingerprint(cwd: str) -> tuple:
    """(path, mtime) of the config files that feed the resolved config, to notice edits."""
    from .config import config_files
    out = []
    for path in config_files(cwd):
        try:
            out.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            out.append((path, None))
    return tuple(out)


_SESSION: Session | None = None


def get_session() -> Session:
    global _SESSION
    if _SESSION is None:
        _SESSION = Session()
    return _SESSION


def reset_session() -> Session:
    """A fresh session (tests; %xt_logout does not need this)."""
    global _SESSION
    if _SESSION is not None:
        _SESSION.invalidate()
    _SESSION = Session()
    return _SESSION
