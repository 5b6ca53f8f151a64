"""The machine-local directories of xt_magic: ``$XT_HOME`` (default ``~/.xt``) and what lives there.

The runner's stdlib helper is the one resolver (it runs on nodes too); the kernel reuses it.
"""
from __future__ import annotations

import os

from ..runner.runner import xt_home as _runner_xt_home


def xt_home() -> str:
    return os.path.expanduser(_runner_xt_home())


def local_root() -> str:
    """The local target's job dirs, slots and runner copies."""
    return os.path.join(xt_home(), "local")


def runs_cache_dir() -> str:
    """Default ``general.run-cache-dir``: extracted output files of runs."""
    return os.path.join(xt_home(), "runs-cache")


def cache_dir() -> str:
    """What the kernel may rebuild at any time (the parsed config schema, configs known valid):
    removing it costs only time."""
    return os.path.join(xt_home(), "cache")


def keys_dir() -> str:
    """The master key behind every job key (0700; never in a store)."""
    return os.path.join(xt_home(), "keys")
