"""A job's logged metrics as a table, and plots of them."""
from __future__ import annotations

from ..errors import JobError
from ..protocol import events
from ..protocol.layout import Layout
from .context import _Ctx, _norm_job
from .control import get_job


class RunLog:
    """One run's metrics.jsonl read once: metric records, hyperparameters (the ticket's and those
    the run logged, e.g. XT's ``log_hparams``), tags (XT's ``tag_run``/``tag_job``) and events."""

    def __init__(self, store, lay: Layout, run: str, hp: dict | None = None):
        self.run, self.hparams, self.metrics, self.tags, self.events = run, dict(hp or {}), [], {}, []
        for rec in events.parse(store.read_from(lay.metrics(run), 0)):
            kind, values = rec.get("kind", "metrics"), rec.get("values") or {}
            if kind == "metrics":
                self.metrics.append(rec)
            elif kind == "hparams":
                self.hparams.update(values)
            elif kind == "tags":
                self.tags.update(values)
            elif kind == "event":
                self.events.append(rec)

    def last(self) -> dict:
        out: dict = {}
        for rec in self.metrics:
            out.update(rec.get("values") or {})
        return out

    def best(self, name: str, maximize: bool):
        values = [v for rec in self.metrics for k, v in (rec.get("values") or {}).items()
                  if k == name and isinstance(v, (int, float)) and not isinstance(v, bool)]
        return (max if maximize else min)(values) if values else None


def _metric_rows(store, lay: Layout, run: str, hp: dict) -> list[dict]:
    """metrics.jsonl ``{"kind": "metrics", "step", "ts", "values": {...}}`` -> flat rows."""
    log = RunLog(store, lay, run, hp)
    rows = []
    for rec in log.metrics:
        row = {"run": run, "step": rec.get("step"), "ts": rec.get("ts")}
        row.update({f"hp.{k}": v for k, v in log.hparams.items()})
        row.update(rec.get("values") or {})
        rows.append(row)
    return rows


def metrics(session, job_id: str):
    """Every logged metric record of a job's runs as a pandas DataFrame (run, hp.*, step, ...)."""
    try:
        import pandas as pd
    except ImportError as err:
        from ..errors import MissingDependencyError
        raise MissingDependencyError("pandas", "analysis", "%xt_metrics") from err
    job = get_job(session, job_id)
    store, lay = job._ctx().store, Layout(job.record.workspace)
    rows = []
    for run, hp in zip(job.record.runs, job.record.hparams or [{}] * len(job.record.runs)):
        rows.extend(_metric_rows(store, lay, run, hp))
    from .tables import typed
    return typed(pd.DataFrame(rows, columns=None if rows else ["run", "step", "ts"]))


def plot(session, job_id: str, metric: str, step: str | None = None):
    """A matplotlib Figure of ``metric`` against the step, one line per run."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:
        from ..errors import MissingDependencyError
        raise MissingDependencyError("matplotlib", "analysis", "%xt_plot") from err
    df = metrics(session, job_id)
    step = step or str(_Ctx(session).cfg.get("general.step-name") or "step")
    if df.empty or metric not in df.columns:
        known = ", ".join(c for c in df.columns if c not in ("run", "time", "ts") and
                          not c.startswith("hp.")) or "none logged yet"
        raise JobError(f"{_norm_job(job_id)} has no metric {metric!r}", hint=f"metrics: {known}")
    fig, ax = plt.subplots(figsize=(7, 4))
    for run, part in df[df[metric].notna()].groupby("run", sort=False):
        x = part[step] if step in part.columns and part[step].notna().any() else range(len(part))
        hp = {c[3:]: part[c].iloc[0] for c in part.columns if c.startswith("hp.")}
        label = run + (" " + ", ".join(f"{k}={v}" for k, v in hp.items()) if hp else "")
        ax.plot(list(x), list(part[metric]), marker="." if len(part) < 30 else None, label=label)
    ax.set_xlabel(step)
    ax.set_ylabel(metric)
    ax.set_title(f"{_norm_job(job_id)}: {metric}")
    if df["run"].nunique() <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    plt.close(fig)  # shown once, through the returned Figure, not again as a stray pyplot figure
    return fig
