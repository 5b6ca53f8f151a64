"""xt_magic: XT (Experiment Tools) in Jupyter and in scripts.

``%load_ext xt_magic`` registers the magics. ``import xt_magic as xt`` is the Python API
(docs/api.md): ``xt.submit(fn, ...)``, ``xt.run_cell(...)``, ``xt.preview(...)``, ``xt.jobs()``,
``xt.job(id)``, ``xt.submit_notebook(path, ...)``, ``xt.show(id)``, ``xt.config(...)``,
``xt.login()``, ``xt.logout()``; ``xt.log(step=...,
**metrics)`` and ``xt.log_hparams(...)`` record metrics from inside a job. Importing this package
loads no azure, ssh, widget, pandas or matplotlib module, nor the API's modules: each name loads
on first use (module ``__getattr__``).
"""
from __future__ import annotations

__version__ = "0.1.0"

#: the Python API, each name resolved from core/api.py on first access
_API = ("submit", "run_cell", "preview", "submit_script", "run_command", "job", "jobs", "runs",
        "status", "logs", "cancel", "cancel_all", "rerun", "tag", "results", "metrics", "plot",
        "table", "compare", "config", "login", "logout", "whoami", "submit_notebook", "show",
        "save_notebooks")
__all__ = ["log", "log_hparams", "checkpoint", "restore", *_API, "load_ipython_extension",
           "unload_ipython_extension"]


def __getattr__(name):
    if name in _API:
        from .core import api
        value = getattr(api, name)
        globals()[name] = value  # later lookups skip this hook
        return value
    raise AttributeError(f"module 'xt_magic' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))


def log(step=None, **metrics):
    """Record metrics for the current run (buffered). Outside a job: a warning, nothing else."""
    from .core.jobs import metrics_log
    metrics_log.log(step=step, **metrics)


def log_hparams(**hparams):
    """Record hyperparameters for the current run. Outside a job: a warning, nothing else."""
    from .core.jobs import metrics_log
    metrics_log.log_hparams(**hparams)


def checkpoint(obj):
    """Keep ``obj`` (pickled) as the current run's checkpoint; a requeued run, or one started by
    ``%xt_rerun --resume``, gets it back from ``restore()``."""
    from .core.jobs import metrics_log
    metrics_log.checkpoint(obj)


def restore(default=None):
    """The current run's last checkpoint, or ``default`` when there is none."""
    from .core.jobs import metrics_log
    return metrics_log.restore(default)


def load_ipython_extension(ipython):
    from .core.jobs import notify
    from .magics import XTMagics, job_end_announcer
    ipython.register_magics(XTMagics)
    notify.set_announcer(job_end_announcer(ipython))
    from .widgets import register_job_display, register_output_display  # light: ipywidgets
    register_job_display(ipython)                                # loads when a Job is shown
    register_output_display(ipython)


def unload_ipython_extension(ipython):
    from .core.jobs import notify
    from .magics import XTMagics
    notify.set_announcer(None)
    mm = ipython.magics_manager
    for kind in ("line", "cell"):
        table = mm.magics[kind]
        for name in list(table):
            owner = getattr(table[name], "__self__", None)
            if isinstance(owner, XTMagics):
                del table[name]
    mm.registry.pop("XTMagics", None)
