"""Runs' cell outputs shown as the kernel's own outputs (IPython display protocol, no widgets).

``LiveOutputs`` is the ``on_output`` of ``%%xt_run --wait``: a one-run job's records become this
cell's outputs as they arrive (streams, displays, figures, with their MIME types); a sweep shows
one group per run, headed with its hyperparameters, the first few open and the rest collapsed,
updated in place while the runs go. ``show`` is how ``job.show(...)`` (RunOutputs / JobOutputs
from core/jobs/outputs.py) displays in a shell with xt_magic loaded.
"""
from __future__ import annotations

import sys

from ..core.jobs import outputs as core_outputs


def render(record: dict, show_errors: bool = True) -> None:
    """Publish one nbformat output record in the current cell."""
    from IPython.display import clear_output, publish_display_data
    kind = record.get("output_type")
    if kind == "stream":
        stream = sys.stderr if record.get("name") == "stderr" else sys.stdout
        stream.write(record.get("text", ""))
        stream.flush()
    elif kind in ("display_data", "execute_result"):
        publish_display_data(record.get("data") or {}, record.get("metadata") or {})
    elif kind == "clear_output":
        clear_output(wait=bool(record.get("wait")))
    elif kind == "error" and show_errors:
        sys.stderr.write("\n".join(record.get("traceback") or []) + "\n")


class LiveOutputs:
    """``on_output(job, run, records)`` for Job.wait: renders runs' outputs as they arrive.

    ``raise_errors``: a run's error output is left to the RunFailed the wait raises (the cell's
    red traceback); otherwise it is shown as text."""

    def __init__(self, raise_errors: bool = True):
        self.raise_errors = raise_errors
        self.groups: dict[str, tuple] = {}  # sweep run -> (display handle, records, open)

    def __call__(self, job, run: str, records: list[dict] | None) -> None:
        if len(job.record.runs) == 1:
            for rec in records or ():
                render(rec, show_errors=not self.raise_errors)
            return
        self._group(job, run, records)

    def _group(self, job, run: str, records: list[dict] | None) -> None:
        from IPython.display import HTML, display
        hps = job.record.hparams or [{}] * len(job.record.runs)
        if run not in self.groups:
            if not self.groups and len(job.record.runs) > core_outputs.LIVE_RUNS:
                print(f"outputs of the first {core_outputs.LIVE_RUNS} of "
                      f"{len(job.record.runs)} runs below; job.show('RUN') shows any run's")
            # the job's first runs open, whichever order their outputs arrive in
            self.groups[run] = (None, [], job.record.runs.index(run) < core_outputs.OPEN_RUNS)
        handle, kept, open_ = self.groups[run]
        kept.extend(records or ())
        state = job.state(run) if records is None else "running"
        html = HTML(core_outputs.group_html(run, hps[job.record.runs.index(run)], state, kept,
                                            open_))
        if handle is None:
            self.groups[run] = (display(html, display_id=True), kept, open_)
        else:
            handle.update(html)


def show(obj) -> None:
    """Display a RunOutputs (its records as native outputs) or a JobOutputs (grouped)."""
    from IPython.display import HTML, display
    if isinstance(obj, core_outputs.RunOutputs):
        print(core_outputs.run_header(obj.run, obj.hparams, obj.state))
        for rec in core_outputs.apply_clears(obj.records):
            render(rec)
    else:
        display(HTML(obj._repr_html_()))
