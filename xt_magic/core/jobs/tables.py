"""Typed tables (pandas) of jobs, runs and metrics, and the per-run table behind ``job.table()``,
the ``%xt_results`` display and ``%xt_compare``.

Columns are typed by name, once, here: times are UTC datetimes, ``duration`` a timedelta, counts
and steps integers (nullable), names and experiments strings ("" when missing), so a user can sort,
filter and subtract without parsing ISO strings or epochs.
"""
from __future__ import annotations

import re
import time

from ..errors import JobError, MissingDependencyError
from ..protocol import events
from ..protocol.layout import Layout

TIME_COLUMNS = {"submitted", "started", "ended", "ts"}
DURATION_COLUMNS = {"duration"}
INT_COLUMNS = {"runs", "exit_code", "step"}
STRING_COLUMNS = {"name", "experiment", "reason", "problem"}

# a metric named like a loss or an error is better when smaller, whatever maximize-metric says
# (that key speaks for general.primary-metric, as in XT)
_SMALLER_IS_BETTER = re.compile(r"loss|err|mse|mae|nll|perplexity|regret|cost", re.I)


def _pandas(feature: str):
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError("pandas", "analysis", feature) from err
    return pd


def frame(rows: list[dict], columns: list[str]):
    """``rows`` as a DataFrame with typed columns (plain rows when pandas is not installed)."""
    try:
        import pandas as pd
    except ImportError:
        return rows
    df = pd.DataFrame(rows, columns=columns)
    return typed(df)


def typed(df):
    """Type ``df``'s known columns in place (see the module doc) and return it."""
    import pandas as pd
    for col in df.columns:
        if col in TIME_COLUMNS:
            values = df[col]
            if values.dtype.kind in "fi":  # epoch seconds (metrics.jsonl ``ts``)
                df[col] = pd.to_datetime(values, unit="s", utc=True)
            else:
                df[col] = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
        elif col in DURATION_COLUMNS:
            df[col] = pd.to_timedelta(df[col])
        elif col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col], errors="coerce").round().astype("Int64")
        elif col in STRING_COLUMNS:
            df[col] = df[col].fillna("").astype(str)
    return df


def duration(start: str | None, end: str | None, now: float | None = None):
    """``end - start`` as a timedelta (``now`` stands for a missing end), None without a start."""
    from datetime import datetime, timezone
    if not start:
        return None
    try:
        t0 = datetime.fromisoformat(start)
        t1 = (datetime.fromisoformat(end) if end else
              datetime.fromtimestamp(now if now is not None else time.time(), timezone.utc))
    except ValueError:
        return None
    return t1 - t0


def smaller_is_better(metric: str, cfg) -> bool:
    """How a metric ranks: ``general.maximize-metric`` for the primary metric; others by name."""
    if metric == str(cfg.get("general.primary-metric") or ""):
        return cfg.get("general.maximize-metric") is False
    if _SMALLER_IS_BETTER.search(metric):
        return True
    return cfg.get("general.maximize-metric") is False


def _scalar(value) -> bool:
    if isinstance(value, (bool, int, float, str)):
        return not isinstance(value, str) or len(value) <= 80
    try:  # numpy scalars
        import numpy as np
        return isinstance(value, np.generic) and value.ndim == 0
    except ImportError:
        return False


def run_rows(job, results=None) -> tuple[list[dict], list[str]]:
    """One row per run of ``job``: state, times, duration, ``hp.*``, scalar outputs (from
    ``results``, a Results, when given), ``last.M`` and ``best.M`` of each logged metric."""
    from .metrics import RunLog
    ctx = job._ctx()
    store, lay = ctx.store, Layout(job.record.workspace)
    by_run = {r.run: r for r in results} if results is not None else {}
    rows, hp_cols, out_cols, metric_names = [], [], [], []
    hps = job.record.hparams or [{}] * len(job.record.runs)
    now = time.time()
    for run, hp in zip(job.record.runs, hps):
        info = job.info(run)
        log = RunLog(store, lay, run, hp)
        row = {"run": run, "state": info["state"], "started": info.get("started"),
               "ended": info.get("ended"),
               "duration": duration(info.get("started"), info.get("ended"), now)}
        if info["state"] in events.FINAL and not info.get("ended"):
            row["duration"] = None
        for k, v in log.hparams.items():
            row[f"hp.{k}"] = v
            if f"hp.{k}" not in hp_cols:
                hp_cols.append(f"hp.{k}")
        res = by_run.get(run)
        for k, v in (res.variables if res is not None else {}).items():
            if _scalar(v) and not k.startswith("xt_"):
                row[k] = v.item() if hasattr(v, "item") else v
                if k not in out_cols:
                    out_cols.append(k)
        for k, v in log.last().items():
            row[f"last.{k}"] = v
            if k not in metric_names:
                metric_names.append(k)
        for k in metric_names:
            if f"last.{k}" in row:
                row[f"best.{k}"] = log.best(k, not smaller_is_better(k, ctx.cfg))
        why = info.get("reason") or (info.get("error") or {}).get("type")
        row["reason"] = why or ""
        rows.append(row)
    metric_cols = [c for k in metric_names for c in (f"last.{k}", f"best.{k}")]
    columns = (["run", "state", "started", "ended", "duration"] + hp_cols + out_cols
               + metric_cols + ["reason"])
    return rows, columns


def run_table(job, results=None):
    """``run_rows`` as a typed DataFrame."""
    pd = _pandas("job.table()")
    rows, columns = run_rows(job, results)
    df = typed(pd.DataFrame(rows, columns=columns))
    for col in columns:  # metrics and numeric outputs as numbers, not object
        if col.startswith(("last.", "best.", "hp.")) or col not in df.columns:
            converted = pd.to_numeric(df[col], errors="coerce") if col in df.columns else None
            if converted is not None and converted.notna().sum() == df[col].notna().sum():
                df[col] = converted
    return df


class Comparison:
    """What ``%xt_compare`` shows: the job's run table sorted best first by ``metric``
    (``best.METRIC``), the hyperparameter columns and the metrics one can pick instead."""

    def __init__(self, job_id: str, metric: str, table, hp_columns: list[str],
                 metrics: list[str], smaller_is_better: bool):
        self.job_id, self.metric, self.table = job_id, metric, table
        self.hp_columns, self.metrics = hp_columns, metrics
        self.smaller_is_better = smaller_is_better

    @property
    def column(self) -> str:
        return f"best.{self.metric}"

    def _repr_html_(self) -> str:
        return self.table._repr_html_()

    def __repr__(self) -> str:
        return f"Comparison of {self.job_id} by {self.metric}\n{self.table!r}"


def compare(session, job_id: str, metric: str | None = None, results=None) -> Comparison:
    """The data of a hyperparameter comparison: runs sorted best first by ``metric`` (default
    ``general.primary-metric`` when logged, else the first logged metric)."""
    from .control import get_job
    job = get_job(session, job_id).refresh()
    if results is None:
        from .results import results as load
        try:
            results = load(session, job.id)
        except JobError:
            results = None  # an unverifiable output: compare on metrics alone
    df = run_table(job, results)
    logged = [c[5:] for c in df.columns if c.startswith("last.")]
    if not logged:
        raise JobError(f"{job.id} has no logged metrics to compare",
                       hint="log them in the cell: xt.log(step=i, loss=...)")
    primary = str(job._ctx().cfg.get("general.primary-metric") or "")
    metric = metric or (primary if primary in logged else logged[0])
    if metric not in logged:
        raise JobError(f"{job.id} has no metric {metric!r}", hint="metrics: " + ", ".join(logged))
    smaller = smaller_is_better(metric, job._ctx().cfg)
    df = df.sort_values(f"best.{metric}", ascending=smaller, na_position="last",
                        kind="stable").reset_index(drop=True)
    hp_cols = [c for c in df.columns if c.startswith("hp.")]
    return Comparison(job.id, metric, df, hp_cols, logged, smaller)
