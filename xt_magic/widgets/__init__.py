"""ipywidgets views over core objects; imported only when a widget is used.

- ``config_form.ConfigForm`` (``%xt_config --form``), ``login_panel.LoginPanel`` (``%xt_login
  --form``), ``monitor.JobMonitor`` (``%xt_monitor [JOB]``, and how a Job displays in a notebook).

This module itself imports nothing heavy: ``%load_ext xt_magic`` calls ``register_job_display``.
"""
from __future__ import annotations


def register_job_display(ipython) -> None:
    """In a Jupyter kernel, display a Job as a live JobMonitor (its text and HTML stay in the
    output as fallbacks for viewers without widgets). Terminal IPython is left alone."""
    if type(ipython).__name__ != "ZMQInteractiveShell":
        return
    formatter = ipython.display_formatter.mimebundle_formatter
    formatter.for_type_by_name("xt_magic.core.jobs.job", "Job", job_bundle)


def job_bundle(job, include=None, exclude=None):
    """The mime bundle of a Job: the monitor widget view + the Job's own text/plain and text/html."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return None  # the Job's own repr is used
    from .monitor import JobMonitor
    bundle = dict(JobMonitor(job).widget._repr_mimebundle_() or {})
    bundle["text/plain"] = repr(job)
    html = job._repr_html_()
    if html:
        bundle["text/html"] = html
    return bundle


def register_output_display(ipython) -> None:
    """Runs' cell outputs (``job.show``) display as the shell's own outputs, in any shell."""
    formatter = ipython.display_formatter.ipython_display_formatter
    for name in ("RunOutputs", "JobOutputs"):
        formatter.for_type_by_name("xt_magic.core.jobs.outputs", name, show_outputs)


def show_outputs(obj) -> None:
    from .cell_outputs import show
    show(obj)
