"""How an error names what the user gave: the Python API's parameter (``max_seconds``,
``hp['lr']``) or the magic's flag (``--max-seconds``, ``--hp lr=...``).

Core code asks ``param("max_seconds")`` and never spells a flag itself; a magic runs its call
inside ``flags()``. A context variable rather than an argument: the names are needed deep in
sweeps, packaging and the job environment, and the style belongs to the caller, not to them.
"""
from __future__ import annotations

import contextlib
import contextvars

_FLAGS = contextvars.ContextVar("xt_magic_flag_names", default=False)


def param(name: str) -> str:
    """``max_seconds`` for the API, ``--max-seconds`` inside ``flags()``."""
    return "--" + name.replace("_", "-") if _FLAGS.get() else name


def assign(name: str, value: str) -> str:
    """``runs=N`` for the API, ``--runs N`` inside ``flags()``."""
    return f"{param(name)} {value}" if _FLAGS.get() else f"{name}={value}"


@contextlib.contextmanager
def flags():
    """Errors raised inside name magic flags."""
    token = _FLAGS.set(True)
    try:
        yield
    finally:
        _FLAGS.reset(token)


def listing(name: str, values: list[str]) -> str:
    """``env_secret=['A', 'B']`` for the API, ``--env-secret A B`` inside ``flags()``."""
    return f"{param(name)} {' '.join(values)}" if _FLAGS.get() else f"{name}={list(values)!r}"


def switch(name: str) -> str:
    """``force=True`` for the API, ``--force`` inside ``flags()``."""
    return param(name) if _FLAGS.get() else f"{name}=True"
