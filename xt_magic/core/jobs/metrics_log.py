"""What ``xt_magic.log(step=..., **metrics)`` and ``xt_magic.log_hparams(...)`` do.

Inside a job the runner (xt_magic/runner/runner.py) registers a sink module under
``sys.modules["_xt_runner_sink"]``; records go to its buffer (flushed to the run's
``metrics.jsonl`` about every second and at exit), so a call costs a dict and a json.dumps.
On a node without xt_magic installed the runner provides a stand-in ``xt_magic`` module with the
same two functions. Outside a job both calls warn once and do nothing.

metrics.jsonl records: ``{"kind": "metrics", "step": 3, "ts": 1.7e9, "values": {"loss": 0.1}}``
and ``{"kind": "hparams", "ts": ..., "values": {...}}`` (docs/architecture.md).
"""
from __future__ import annotations

import sys
import warnings

SINK_MODULE = "_xt_runner_sink"
_warned = False


def _sink():
    sink = sys.modules.get(SINK_MODULE)
    if sink is None:
        global _warned
        if not _warned:
            _warned = True
            warnings.warn("xt_magic.log/log_hparams called outside an xt_magic job: ignored "
                          "(they record metrics only inside %%xt_run cells)", stacklevel=4)
    return sink


def in_job() -> bool:
    """True inside a run started by the xt_magic runner."""
    return SINK_MODULE in sys.modules


def log(step=None, **metrics) -> None:
    """Record ``metrics`` (name -> number) at ``step`` for the current run."""
    sink = _sink()
    if sink is not None:
        sink.log(step, **metrics)


def log_hparams(**hparams) -> None:
    """Record hyperparameters for the current run."""
    sink = _sink()
    if sink is not None:
        sink.log_hparams(**hparams)
