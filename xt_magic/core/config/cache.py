"""Files under ``$XT_HOME/cache`` (``paths.cache_dir``): things a new kernel would otherwise
rebuild, each under a name derived from everything it depends on. Removing them costs only time."""
from __future__ import annotations

import os


def cache_path(kind: str, name: str) -> str:
    from ..paths import cache_dir
    return os.path.join(cache_dir(), kind, name)


def cache_write(path: str, text: str) -> None:
    from ...runner.runner import write_atomic
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        write_atomic(path, text, mode=0o600)
    except OSError:
        pass  # a cache only saves time
