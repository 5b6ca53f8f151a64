"""What ``xt_magic.log(step=..., **metrics)`` and ``xt_magic.log_hparams(...)`` do.

Inside a job the runner (xt_magic/runner/runner.py) registers a sink module under
``sys.modules["_xt_runner_sink"]``; records go to its buffer (flushed to the run's
``metrics.jsonl`` about every second and at exit), so a call costs a dict and a json.dumps.
On a node without xt_magic installed the runner provides a stand-in ``xt_magic`` module with the
same two functions. Any other process of a run (a script, its subprocesses and workers) records
through the run's spool instead (``_xt_spool``, which the runner puts on the run's PYTHONPATH;
docs/xt-users.md). Outside a job both calls warn once and do nothing.

metrics.jsonl records: ``{"kind": "metrics", "step": 3, "ts": 1.7e9, "values": {"loss": 0.1}}``
and ``{"kind": "hparams", "ts": ..., "values": {...}}`` (docs/architecture.md).
"""
from __future__ import annotations

import sys
import warnings

SINK_MODULE = "_xt_runner_sink"
_warned = False


class _SpoolSink:
    """A run's process other than the runner: records go to the run's spool file."""

    def __init__(self, spool):
        self.spool = spool

    def log(self, step=None, **values):
        self.spool.record("metrics", values, step=step)

    def log_hparams(self, **values):
        self.spool.record("hparams", values)


def _spool():
    """The run's spool module inside a run's process (None elsewhere)."""
    import os
    if not os.environ.get("XT_METRICS_SPOOL"):
        return None
    try:
        import _xt_spool
    except ImportError:
        return None
    return _xt_spool


def _sink():
    sink = sys.modules.get(SINK_MODULE)
    if sink is None:
        spool = _spool()
        if spool is not None:
            return _SpoolSink(spool)
        global _warned
        if not _warned:
            _warned = True
            warnings.warn("xt_magic.log/log_hparams called outside an xt_magic job: ignored "
                          "(they record metrics only inside %%xt_run cells)", stacklevel=4)
    return sink


def in_job() -> bool:
    """True inside a run started by the xt_magic runner (or a process of it)."""
    return SINK_MODULE in sys.modules or _spool() is not None


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


def checkpoint(obj) -> None:
    """Keep ``obj`` as the run's checkpoint (a restarted or resumed run gets it back)."""
    spool = _spool()
    if spool is None:
        _sink()  # the warning
        return
    spool.save_object(obj)


def restore(default=None):
    """The run's last checkpoint (from before a requeue or ``%xt_rerun --resume``), else default."""
    spool = _spool()
    return default if spool is None else spool.load_object(default)
