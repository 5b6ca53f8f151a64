"""CompareView (``%xt_compare JOB [METRIC]``): XT's hyperparameter explorer in a notebook.

A parallel-coordinates plot (matplotlib) with one axis per hyperparameter and the metric last,
one line per run coloured by the metric, and the runs table sorted best first; dropdowns pick the
metric and the colour scale. The data comes from ``core/jobs/tables.compare``.
"""
from __future__ import annotations

from ._common import WidgetView, safe

COLOR_SCALES = ["viridis", "plasma", "coolwarm", "RdYlGn", "cividis"]


def parallel_coordinates(comparison, cmap: str = "viridis"):
    """A matplotlib Figure: each hyperparameter (then the metric) is a vertical axis scaled to
    0..1; categorical values are placed evenly in sorted order and labelled."""
    import matplotlib.pyplot as plt
    import pandas as pd
    df = comparison.table
    column = comparison.column
    axes_cols = comparison.hp_columns + [column]
    scaled, ticks = {}, {}
    for col in axes_cols:
        values = df[col]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum() and numeric.notna().any():
            lo, hi = numeric.min(), numeric.max()
            span = (hi - lo) or 1.0
            scaled[col] = (numeric - lo) / span if hi != lo else numeric * 0 + 0.5
            ticks[col] = [(0.0, _fmt(lo)), (1.0, _fmt(hi))] if hi != lo else [(0.5, _fmt(lo))]
        else:
            cats = sorted({str(v) for v in values.dropna()})
            pos = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
            scaled[col] = values.map(lambda v: pos.get(str(v)) if v is not None else None)
            ticks[col] = [(p, c) for c, p in pos.items()]
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(axes_cols) + 2), 4))
    colors = plt.get_cmap(cmap)
    if comparison.smaller_is_better:  # the best run gets the same end of the scale either way
        colors = colors.reversed()
    metric = pd.to_numeric(df[column], errors="coerce")
    lo, hi = metric.min(), metric.max()
    for i in range(len(df)):
        ys = [scaled[c].iloc[i] for c in axes_cols]
        if metric.iloc[i] != metric.iloc[i]:  # NaN: no value for this run yet
            ax.plot(range(len(axes_cols)), ys, color="#bbb", lw=1, ls="--")
            continue
        frac = (metric.iloc[i] - lo) / ((hi - lo) or 1.0)
        ax.plot(range(len(axes_cols)), ys, color=colors(frac), lw=2, alpha=0.85,
                label=df["run"].iloc[i])
    for x, col in enumerate(axes_cols):
        ax.axvline(x, color="#444", lw=1)
        for y, label in ticks[col]:
            ax.annotate(label, (x, y), xytext=(4, 0), textcoords="offset points", fontsize=8,
                        va="center")
    ax.set_xticks(range(len(axes_cols)))
    ax.set_xticklabels([c[3:] if c.startswith("hp.") else c for c in axes_cols])
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes_cols) - 0.6)
    ax.set_ylim(-0.08, 1.08)
    ax.set_title(f"{comparison.job_id}: hyperparameters against {comparison.metric} "
                 f"({'smaller' if comparison.smaller_is_better else 'larger'} is better)")
    if hi == hi:  # some run has a value
        sm = plt.cm.ScalarMappable(cmap=colors, norm=plt.Normalize(lo, hi))
        fig.colorbar(sm, ax=ax, label=column, pad=0.02)
    fig.tight_layout()
    plt.close(fig)  # shown through the widget, not again as a stray pyplot figure
    return fig


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class CompareView(WidgetView):
    """Dropdowns (metric, colour scale) over a plot and the sorted table."""

    def __init__(self, job_id: str, metric: str | None = None):
        import ipywidgets as w
        from ..core import api
        self.job_id = job_id
        self.comparison = api.compare(job_id, metric)
        self.metric = w.Dropdown(options=self.comparison.metrics, value=self.comparison.metric,
                                 description="metric", layout=w.Layout(width="auto"))
        self.cmap = w.Dropdown(options=COLOR_SCALES, value=COLOR_SCALES[0],
                               description="colours", layout=w.Layout(width="auto"))
        self.plot = w.Output()
        self.search_view = w.HTML()  # a search's best so far and trial history (docs/jobs.md)
        self.table = w.Output()
        self.message = w.HTML()
        self.out = w.Output()
        self.metric.observe(self._changed, names="value")
        self.cmap.observe(self._changed, names="value")
        self.widget = w.VBox([w.HBox([self.metric, self.cmap],
                                     layout=w.Layout(flex_flow="row wrap")),
                              self.plot, self.search_view, self.table, self.message, self.out])
        self.widget.add_class("xt-compare")
        self._draw()

    @safe
    def _changed(self, change=None):
        if self.metric.value != self.comparison.metric:
            from ..core import api
            self.comparison = api.compare(self.job_id, self.metric.value)
        self._draw()

    def _search(self) -> str:
        """The search's summary line and trial history (value against run order, best so far,
        stopped runs marked), as the monitor shows it; "" for a job without a search."""
        import html
        from ..core import api
        from .monitor import trial_chart
        job = api.job(self.job_id)
        summary = job.search_summary()
        if not summary:
            return ""
        history = job.search_history()
        rows = history.to_dict("records") if hasattr(history, "to_dict") else list(history)
        return (f"<div class='xt-search'>{html.escape(summary)}<br>"
                f"{trial_chart(rows, ylabel=job._search.get('metric') or '')}</div>")

    def _draw(self):
        from IPython.display import display
        self.search_view.value = self._search()
        fig = parallel_coordinates(self.comparison, self.cmap.value)
        self.plot.clear_output(wait=True)
        with self.plot:
            display(fig)
        self.table.clear_output(wait=True)
        with self.table:
            display(self.comparison.table)
