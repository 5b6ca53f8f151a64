"""JobMonitor: a live view of a job (``%xt_monitor [JOB]``).

Table of runs (state, duration, hparams, latest metrics), a progress bar, the selected run's cell
outputs (prints, displays, figures: live, each checked) and log tail (kept at its end unless the
user scrolls up; the selection follows the running runs until the user picks one), a small live
metrics chart (inline SVG, no plotting library: axis titles, step or time axis, log scale),
cancel buttons for the job and the selected run, and a notification line when the job ends.
While it polls, a heartbeat keeps a hidden "stale" note hidden; when the kernel that runs it is
gone (a restart), nothing renders any more and the note appears (CSS only: no kernel is left to
say so) telling how to reattach. Rows wrap on narrow screens.

Polling is cheap: each tick reads only the bytes appended since the last tick to each live run's
``events.jsonl`` / ``metrics.jsonl`` and the selected run's ``console.txt`` and ``outputs.jsonl``
(``Store.read_from``).
It runs on a daemon thread (the kernel stays free), backs off while nothing changes, asks the backend
to reconcile now and then (a dead process becomes ``failed``), and stops when every run is final.
Everything is in the store, so after a kernel restart ``%xt_monitor JOB`` picks the job up again.
"""
from __future__ import annotations

import html
import json
import math
import threading
import time
from datetime import datetime

from ._common import WidgetView, note, safe

STATE_COLORS = {"created": "#888", "queued": "#a60", "running": "#06c", "completed": "#070",
                "failed": "#b00020", "cancelled": "#666"}
TAIL_CHARS = 6000
MAX_POINTS = 400
STALE_SECONDS = 15  # no heartbeat for this long: the monitor says it is stale

# The log box is a column-reverse flex box: the browser keeps it at the end as text arrives, and
# where the user scrolled to when they scroll up (no JavaScript needed). The stale note is hidden
# and shown by an animation that each heartbeat (a re-render) restarts.
CSS = """<style>
.xt-monitor .xt-log-box{display:flex;flex-direction:column-reverse;overflow-y:auto;
 overflow-x:hidden;height:180px;border:1px solid #ddd;background:#fafafa;flex:1 1 420px;
 min-width:280px}
.xt-monitor .xt-log-box pre{margin:0;padding:4px 6px;white-space:pre-wrap;overflow-wrap:anywhere;
 font-size:12px;line-height:1.3}
.xt-monitor button:disabled,.xt-monitor .jupyter-button:disabled{opacity:.45;filter:grayscale(1);
 cursor:not-allowed}
.xt-monitor .xt-stale{visibility:hidden;max-height:0;overflow:hidden;
 animation:xt-stale-show 0s linear %ds forwards;color:#b00020;font-weight:bold}
@keyframes xt-stale-show{to{visibility:visible;max-height:10em}}
.xt-monitor .xt-chart-box{flex:0 1 440px;min-width:280px}
.xt-monitor .xt-cell-outputs{display:flex;flex-direction:column-reverse}
</style>""" % STALE_SECONDS


class _RunView:
    """What the monitor knows about one run, built up from incremental reads."""

    def __init__(self, run: str, hparams: dict, layout, store):
        from ..core.protocol.events import Tail
        self.run, self.hparams = run, dict(hparams or {})
        self.events = Tail(store, layout.events(run))
        self.metrics = Tail(store, layout.metrics(run))
        self.console = Tail(store, layout.console(run))
        self.event_list: list[dict] = []
        self.info: dict = {"state": "created"}
        self.latest: dict = {}
        self.series: dict[str, list[tuple[float, float, float]]] = {}  # name -> (step, ts, value)
        self.log = ""
        self.outputs = None  # OutputTail, made when the run is first selected
        self.records: list[dict] = []


def _parse_time(text):
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def _duration(info: dict) -> str:
    start = _parse_time(info.get("started"))
    if start is None:
        return ""
    end = _parse_time(info.get("ended")) or time.time()
    secs = max(0, int(end - start))
    return f"{secs // 60}:{secs % 60:02d}" if secs < 3600 else f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10 ** e for e in range(int(math.floor(lo)), int(math.ceil(hi)) + 1)
                if lo <= e <= hi] or [10 ** lo, 10 ** hi]
    return [lo, hi]


def _plane(points, width: int, height: int, xlabel: str = "", ylabel: str = "",
           log: bool = False):
    """(point -> svg coordinates, frame + ticks + axis titles) for a chart spanning ``points``
    (y already log10 with ``log``). The ranges sit outside the plot area: never over a curve."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    left, right, top, bottom = 58, 8, 8, 34
    pw, ph = width - left - right, height - top - bottom

    def at(x, y):
        return left + (x - x0) / (x1 - x0) * pw, top + ph - (y - y0) / (y1 - y0) * ph
    parts = [f"<rect x='{left}' y='{top}' width='{pw}' height='{ph}' fill='none' stroke='#ccc'/>"]
    for value in _ticks(y0, y1, log):
        _, y = at(x0, math.log10(value) if log else value)
        parts.append(f"<text class='xt-ytick' x='{left - 4}' y='{y + 3:.1f}' font-size='10' "
                     f"text-anchor='end'>{_fmt(value)}</text><line x1='{left - 2}' x2='{left}' "
                     f"y1='{y:.1f}' y2='{y:.1f}' stroke='#888'/>")
    for value, anchor in ((x0, "start"), (x1, "end")):
        x, _ = at(value, y0)
        parts.append(f"<text x='{x:.1f}' y='{top + ph + 12}' font-size='10' "
                     f"text-anchor='{anchor}'>{_fmt(value)}</text>")
    yt = html.escape(ylabel + (" (log)" if log else ""))
    parts.append(f"<text class='xt-axis-x' x='{left + pw / 2:.1f}' y='{height - 4}' "
                 f"font-size='11' text-anchor='middle'>{html.escape(xlabel)}</text>"
                 f"<text class='xt-axis-y' x='0' y='0' font-size='11' text-anchor='middle' "
                 f"transform='translate(12,{top + ph / 2:.1f}) rotate(-90)'>{yt}</text>")
    return at, "".join(parts)


def svg_chart(series: dict[str, list[tuple[float, float]]], width: int = 420, height: int = 190,
              xlabel: str = "step", ylabel: str = "", log: bool = False) -> str:
    """A small line chart, one polyline per run (no plotting library: cheap to redraw each tick),
    with axis titles; ``log``: log10 y (values <= 0 left out)."""
    series = {run: [(x, math.log10(y) if log else y) for x, y in pts if not (log and y <= 0)]
              for run, pts in series.items()}
    points = [p for pts in series.values() for p in pts]
    if not points:
        return note("no metrics logged yet" if not log else "no positive values for a log scale")
    at, axes = _plane(points, width, height, xlabel, ylabel, log)
    colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
    lines = []
    for i, (run, pts) in enumerate(series.items()):
        coords = " ".join("%.1f,%.1f" % at(x, y) for x, y in pts)
        color = colors[i % len(colors)]
        lines.append(f"<polyline fill='none' stroke='{color}' stroke-width='1.5' points='{coords}'>"
                     f"<title>{html.escape(run)}</title></polyline>")
    legend = " ".join(f"<span style='color:{colors[i % len(colors)]}'>━ {html.escape(run)}</span>"
                      for i, run in enumerate(series))
    return (f"<svg class='xt-chart' width='{width}' height='{height}' "
            f"style='background:#fff;max-width:100%'>{axes}{''.join(lines)}</svg>"
            f"<div style='font-size:85%'>{legend}</div>")


def trial_chart(rows: list[dict], width: int = 420, height: int = 190, ylabel: str = "") -> str:
    """The trial history: each run's value against run order (dots; an x for a run stopped early,
    grey for one that did not complete) and the best so far (a step line)."""
    pts = [(r["order"], r["value"]) for r in rows if r["value"] is not None]
    if not pts:
        return note("no trial has reported its metric yet")
    at, axes = _plane(pts, width, height, "run (in order)", ylabel)
    marks = []
    for r in rows:
        if r["value"] is None:
            continue
        x, y = at(r["order"], r["value"])
        tip = f"<title>{html.escape(r['run'])}: {_fmt(r['value'])}</title>"
        if r["stopped"]:
            marks.append(f"<path class='xt-stopped' d='M{x - 3:.1f},{y - 3:.1f}l6,6m0,-6l-6,6' "
                         f"stroke='#b00020' stroke-width='1.5'>{tip}</path>")
        else:
            color = "#1f77b4" if r["state"] == "completed" else "#aaa"
            marks.append(f"<circle class='xt-trial' cx='{x:.1f}' cy='{y:.1f}' r='2.5' "
                         f"fill='{color}'>{tip}</circle>")
    best = [at(r["order"], r["best"]) for r in rows if r["best"] is not None]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in best)
    return (f"<svg class='xt-trials' width='{width}' height='{height}' "
            f"style='border:1px solid #ddd;background:#fff'>{axes}"
            f"<polyline class='xt-best-line' fill='none' stroke='#070' stroke-width='1.2' "
            f"points='{line}'/>{''.join(marks)}</svg>")


class JobMonitor(WidgetView):
    """Live monitor of one job. ``JobMonitor("job3")``; ``None`` = the workspace's last job."""

    def __init__(self, job=None, session=None, start: bool = True,
                 min_interval: float = 0.3, max_interval: float = 5.0, reconcile_every: float = 5.0):
        import ipywidgets as w
        from ..core.protocol.layout import Layout
        from ..core.session import get_session
        from ..core.storage import get_store
        self.session = session or get_session()
        self.job = self._resolve(job)
        self.id = self.job.id
        cfg = self.session.config()
        self.store = get_store(self.session, cfg)
        self.layout = layout = Layout(self.job.record.workspace)
        hps = self.job.record.hparams or [{}] * len(self.job.record.runs)
        self.runs = {r: _RunView(r, hp, layout, self.store) for r, hp in zip(self.job.record.runs, hps)}
        # a search: best so far and the trial history are shown; a bayesian one grows
        self.search = getattr(self.job, "search", None)
        self.search_open = bool(getattr(self.job, "search_open", False))
        self.step_name = str(cfg.get("general.step-name") or "step")
        self.primary_metric = cfg.get("general.primary-metric")
        self.min_interval, self.max_interval = min_interval, max_interval
        self.reconcile_every = reconcile_every
        self.interval = min_interval
        self.ticks = 0
        self.bytes_read = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_reconcile = 0.0
        self._lock = threading.RLock()  # tick (poll thread) and render/callbacks (kernel thread)

        self.header = w.HTML()
        self.heartbeat = w.HTML()  # the stale note, kept hidden by each re-render while polling
        self.progress = w.IntProgress(min=0, max=max(1, len(self.runs)), value=0,
                                      layout=w.Layout(width="360px", max_width="100%"))
        self.progress_text = w.HTML()
        self.table = w.HTML()
        self.search_view = w.HTML()
        self.run_picker = w.Dropdown(options=list(self.runs), description="run",
                                     layout=w.Layout(width="220px"))
        self.metric_picker = w.Dropdown(options=[], description="metric", layout=w.Layout(width="220px"))
        self.x_axis = w.Dropdown(options=["step", "time"], value="step", description="x axis",
                                 layout=w.Layout(width="170px"))
        self.log_y = w.Checkbox(value=False, description="log scale", indent=False,
                                layout=w.Layout(width="110px"))
        self.cancel_job_button = w.Button(description="Cancel job", icon="stop", button_style="danger")
        self.cancel_run_button = w.Button(description="Cancel run", icon="stop", button_style="warning")
        self.log = w.HTML()
        self.log_text = ""
        log_box = w.Box([self.log])
        log_box.add_class("xt-log-box")
        self.chart = w.HTML()
        self.cell_outputs = w.HTML(layout=w.Layout(max_height="420px", overflow="auto"))
        self.cell_outputs.add_class("xt-cell-outputs")
        chart_box = w.Box([self.chart])
        chart_box.add_class("xt-chart-box")
        self.message = w.HTML()
        self.notification = w.HTML()
        self.out = w.Output(layout=w.Layout(max_height="120px", overflow="auto"))
        self.cancel_job_button.on_click(self.cancel_job)
        self.cancel_run_button.on_click(self.cancel_run)
        self.run_picker.observe(self._on_pick, names="value")
        self.metric_picker.observe(self._on_metric, names="value")
        self.x_axis.observe(self._on_metric, names="value")
        self.log_y.observe(self._on_metric, names="value")
        self._user_picked = False   # the selection follows the running runs until the user picks
        self._auto_picking = False
        self.metric_order: list[str] = []  # in the order first logged
        wrap = w.Layout(flex_flow="row wrap", align_items="center")
        self.widget = w.VBox([
            w.HTML(CSS, layout=w.Layout(display="none")), self.header, self.heartbeat,
            w.HBox([self.progress, self.progress_text, self.cancel_job_button], layout=wrap),
            self.table, self.search_view, self.notification,
            w.HBox([self.run_picker, self.cancel_run_button, self.metric_picker, self.x_axis,
                    self.log_y], layout=wrap),
            self.cell_outputs,
            w.HBox([log_box, chart_box], layout=w.Layout(flex_flow="row wrap",
                                                         align_items="flex-start")),
            self.message, self.out])
        self.widget.add_class("xt-monitor")
        self.render()
        if start:
            self.start()

    def _resolve(self, job):
        from ..core import api
        from ..core.errors import JobError
        if job is not None and not isinstance(job, str):
            return job  # a Job object
        if job is None:
            rows = api.jobs(last=1)
            rows = rows.to_dict("records") if hasattr(rows, "to_dict") else list(rows)
            if not rows:
                raise JobError("no jobs in this workspace yet", hint="submit one with %%xt_run")
            job = rows[-1]["job"]
        return api.job(job)

    # -- polling ----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        from ..core.protocol.events import FINAL
        return not self.search_open and all(v.info["state"] in FINAL for v in self.runs.values())

    def _grow(self) -> bool:
        """Views for the runs a bayesian search made since the last tick."""
        from ..core.jobs import search
        runs, points, over = search.runs_and_points(self.store, self.layout, self.job.record)
        self.search_open = not over
        new = [(r, p) for r, p in zip(runs, points) if r not in self.runs]
        for run, point in new:
            self.runs[run] = _RunView(run, point, self.layout, self.store)
        if new:
            self.run_picker.options = list(self.runs)
        return bool(new) or over

    def tick(self) -> bool:
        """Read what was appended since the last tick; True if anything changed."""
        from ..core.protocol.events import FINAL, fold, parse
        changed = False
        with self._lock:
            self.ticks += 1
            if self.search_open:
                changed = self._grow()
            now = time.monotonic()
            live = [r for r, v in self.runs.items() if v.info["state"] not in FINAL]
            if (live or self.search_open) and now - self._last_reconcile >= self.reconcile_every \
                    and self.ticks > 1:
                self._last_reconcile = now
                self.job.refresh()  # the backend marks runs whose process is gone as failed
            selected = self.runs.get(self.run_picker.value)
            # every file a tick reads, asked at once (one listing on a blob store): only what
            # moved is read
            tails = [v.events for v in self.runs.values() if v.info["state"] not in FINAL]
            tails += [v.metrics for v in self.runs.values()]
            if selected is not None:
                tails.append(selected.console)
                if selected.outputs is not None and not selected.outputs.checked:
                    tails.append(selected.outputs.tail)
            tokens = self.store.change_tokens([t.path for t in tails])
            moved = {id(t) for t in tails if not t.unchanged(tokens.get(t.path))}
            for view in self.runs.values():
                new = view.events.read_bytes() if id(view.events) in moved else b""
                if new:
                    self.bytes_read += len(new)
                    view.event_list.extend(parse(new))
                    view.info = fold(view.event_list)
                    changed = True
                new = view.metrics.read_bytes() if id(view.metrics) in moved else b""
                if new:
                    self.bytes_read += len(new)
                    changed = True
                    for rec in parse(new):
                        if rec.get("kind") == "hparams":  # the ticket's, then the run's own
                            view.hparams.update(rec.get("values") or {})
                            continue
                        if rec.get("kind", "metrics") != "metrics":
                            continue  # events and tags (XT's run API): not charted
                        values = rec.get("values") or {}
                        view.latest.update(values)
                        # general.step-name (e.g. epoch) when the record has it, as %xt_plot
                        x = values.get(self.step_name, rec.get("step"))
                        ts = rec.get("ts") if isinstance(rec.get("ts"), (int, float)) else None
                        for name, value in values.items():
                            if isinstance(value, (int, float)) and not isinstance(value, bool):
                                if name not in self.metric_order and name != self.step_name:
                                    self.metric_order.append(name)
                                pts = view.series.setdefault(name, [])
                                pts.append((x if isinstance(x, (int, float)) else len(pts),
                                            ts if ts is not None else time.time(), value))
                                del pts[:-MAX_POINTS]
            self._follow_running()
            view = self.runs.get(self.run_picker.value)
            if view is not None and self._read_outputs(view, moved if view is selected else None):
                changed = True
            if view is not None and (view is not selected or id(view.console) in moved):
                new = view.console.raw()  # partial lines too: a progress line shows at once
                if new:
                    self.bytes_read += len(new)
                    view.log = (view.log + new.decode("utf-8", "replace"))[-TAIL_CHARS:]
                    changed = True
        if changed:
            self.render()
        return changed

    def _read_outputs(self, view, moved=None) -> bool:
        """The selected run's new, checked cell output records (all checked once it ends).
        ``moved``: the ids of the tails this tick's change tokens say moved (None: read)."""
        from ..core.jobs.outputs import OutputTail, job_key
        from ..core.protocol.events import FINAL
        if view.outputs is None:
            view.outputs = OutputTail(self.store, self.job.record.workspace, self.id, view.run,
                                      job_key(self.job))
            moved = None  # a new tail: no token was asked for it
        elif view.outputs.checked:
            return False
        new = view.outputs.read() if moved is None or id(view.outputs.tail) in moved else []
        view.records.extend(new)
        if view.info["state"] in FINAL:
            view.outputs.check(view.info.get("final"))
        return bool(new)

    def _loop(self) -> None:
        try:
            self._poll()
        finally:
            self._beat(False)  # not polling: nothing can go stale
            self._thread = None

    def _poll(self) -> None:
        from ..core.errors import DamagedObject
        while not self._stop.is_set():
            self._beat(True)
            try:
                changed = self.tick()
            except DamagedObject as err:  # polling again cannot mend it
                self._show_error(err)
                self.notification.value = note(f"monitoring stopped: {err}", "#b00020")
                break
            except Exception as err:  # noqa: BLE001 - show it, keep polling (store may come back)
                self._show_error(err)
                changed = False
            if self.done:
                try:
                    self.tick()  # the last metrics / console lines written with the final event
                except Exception as err:  # noqa: BLE001 - shown; the loop still ends cleanly
                    self._show_error(err)
                self.render()
                break
            self.interval = self.min_interval if changed else min(self.interval * 1.6, self.max_interval)
            self._stop.wait(self.interval)

    @safe
    def _show_error(self, err) -> None:
        raise err

    def start(self) -> None:
        """Start polling on a daemon thread (no-op if already polling)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"xt-monitor-{self.id}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def polling(self) -> bool:
        return self._thread is not None

    # -- rendering --------------------------------------------------------------------------------
    def render(self) -> None:
        with self._lock:
            self._render()

    def _render(self) -> None:
        from collections import Counter
        from ..core.protocol.events import FINAL
        views = list(self.runs.values())
        counts = Counter(v.info["state"] for v in views)
        final = sum(counts[s] for s in FINAL)
        record = self.job.record
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        self.header.value = (f"<b>{html.escape(self.id)}</b> {html.escape(record.name or '')} on "
                             f"<code>{html.escape(record.target)}</code> — {len(views)} run(s): "
                             f"<span class='xt-summary'>{html.escape(summary)}</span>")
        total = max(len(views), int((self.search or {}).get("runs") or 0))
        self.progress.max = max(1, total)
        self.progress.value = final
        self.progress.bar_style = ("success" if counts.get("completed") == len(views) else
                                   "danger" if final == len(views) and counts.get("failed") else
                                   "warning" if final == len(views) else "info")
        self.progress_text.value = f"&nbsp;{final}/{total} done"
        metric_names = sorted({k for v in views for k in v.latest})
        hp_names = sorted({k for v in views for k in v.hparams})
        head = "".join(f"<th>{html.escape(h)}</th>" for h in
                       ["run", "state", "duration"] + hp_names + metric_names)
        body = []
        for v in views[:200]:
            state = v.info["state"]
            why = v.info.get("reason") or (v.info.get("error") or {}).get("type") or ""
            cells = [f"<td>{html.escape(v.run)}</td>",
                     f"<td class='xt-state' style='color:{STATE_COLORS.get(state, '#000')}'>"
                     f"{html.escape(state)}{' (' + html.escape(str(why)) + ')' if why else ''}</td>",
                     f"<td>{_duration(v.info)}</td>"]
            cells += [f"<td>{html.escape(_fmt(v.hparams.get(h, '')))}</td>" for h in hp_names]
            cells += [f"<td>{html.escape(_fmt(v.latest.get(m, '')))}</td>" for m in metric_names]
            body.append(f"<tr data-run='{html.escape(v.run)}'>{''.join(cells)}</tr>")
        more = f"<tr><td>... {len(views) - 200} more runs</td></tr>" if len(views) > 200 else ""
        self.table.value = (f"<style>.xt-runs td,.xt-runs th{{padding:1px 10px 1px 0;text-align:left}}</style>"
                            f"<table class='xt-runs' style='border-collapse:collapse'><tr>{head}</tr>"
                            f"{''.join(body)}{more}</table>")
        charted = [m for m in self.metric_order if m in metric_names]
        if list(self.metric_picker.options) != charted:
            keep = self.metric_picker.value
            self.metric_picker.options = charted
            # general.primary-metric when logged, else the first metric logged
            preferred = [keep, self.primary_metric] + charted
            self.metric_picker.value = next((m for m in preferred if m in charted), None)
        if self.search:
            self.search_view.value = self._search_panel(views)
        metric = self.metric_picker.value
        self.chart.value = self._chart(views, metric)
        view = self.runs.get(self.run_picker.value)
        if view is not None:
            from ..core.jobs.outputs import apply_clears, record_html
            shown = "".join(record_html(r) for r in apply_clears(view.records))
            if self.cell_outputs.value != shown:
                self.cell_outputs.value = shown
        if view is not None and self.log_text != view.log:
            self.log_text = view.log
            self.log.value = f"<pre class='xt-log'>{html.escape(view.log)}</pre>"
        job_over = final == len(views) and not self.search_open
        self.cancel_job_button.disabled = job_over
        self.cancel_run_button.disabled = view is None or view.info["state"] in FINAL
        # a disabled button also loses its colour: it must not look clickable
        self.cancel_job_button.button_style = "" if job_over else "danger"
        self.cancel_run_button.button_style = "" if self.cancel_run_button.disabled else "warning"
        if job_over:
            self.notification.value = (
                f"<b class='xt-done'>● {html.escape(self.id)} finished: {html.escape(summary)}</b>")

    def _search_panel(self, views) -> str:
        from ..core.jobs import search
        spec = self.search
        metric, maximize = spec["metric"], spec.get("maximize", True)
        rows = search.rank([(v.run, v.hparams, v.info, search.objective_value(
            [(x, y) for x, _, y in v.series.get(metric, [])], spec.get("objective", "last"),
            maximize)) for v in views],
            maximize)
        best = rows[-1]["best"] if rows else None
        at = next((r["run"] for r in rows if r["value"] == best and r["state"] == "completed"), "")
        stopped = sum(r["stopped"] for r in rows)
        head = (f"<b>{html.escape(spec.get('type') or 'sweep')} search</b>, "
                f"{'max' if maximize else 'min'} <code>{html.escape(metric)}</code>: "
                f"best so far <span class='xt-best'>{_fmt(best) if best is not None else '-'}"
                f"</span> {html.escape(at)}" + (f", {stopped} stopped early" if stopped else ""))
        return f"<div class='xt-search'>{head}<br>{trial_chart(rows, ylabel=metric)}</div>"

    def _chart(self, views, metric) -> str:
        if metric is None:
            return svg_chart({})
        by_time = self.x_axis.value == "time"
        series = {}
        for v in views:
            pts = v.series.get(metric)
            if not pts:
                continue
            if by_time:  # seconds since the run started (its first record if not known)
                t0 = _parse_time(v.info.get("started")) or pts[0][1]
                series[v.run] = [(ts - t0, y) for _, ts, y in pts]
            else:
                series[v.run] = [(x, y) for x, _, y in pts]
        return svg_chart(series, xlabel="time (s)" if by_time else self.step_name,
                         ylabel=metric, log=self.log_y.value)

    def _follow_running(self) -> None:
        """Until the user picks a run: when the selected run is not running, select a running
        one (so the log shows what is happening now)."""
        if self._user_picked:
            return
        current = self.runs.get(self.run_picker.value)
        if current is not None and current.info["state"] == "running":
            return
        running = [r for r, v in self.runs.items() if v.info["state"] == "running"]
        if running and running[0] != self.run_picker.value:
            self._auto_picking = True
            try:
                self.run_picker.value = running[0]
            finally:
                self._auto_picking = False

    def _beat(self, alive: bool) -> None:
        """While polling: a fresh (hidden) stale note, restarting its CSS timer; else none."""
        if not alive:
            self.heartbeat.value = ""
            return
        self.heartbeat.value = (
            f"<div class='xt-stale' data-beat='{self.ticks}'>⚠ this monitor is stale: no update "
            f"for {STALE_SECONDS} s (the kernel that ran it has stopped or restarted). To "
            f"reattach, run <code>%xt_monitor {html.escape(self.id)}</code> in a new cell.</div>")

    # -- actions ----------------------------------------------------------------------------------
    @safe
    def _on_pick(self, change) -> None:
        if not self._auto_picking:
            self._user_picked = True
        self.render()
        if not self.polling:
            self.tick()  # a finished job: show the picked run's log once

    @safe
    def _on_metric(self, change) -> None:
        self.render()

    @safe
    def cancel_job(self, _=None) -> None:
        """Cancel every live run of the job."""
        from ..core import api
        api.cancel(self.id)
        self.message.value = note(f"cancel requested for {self.id}")
        self.tick()
        self.start()

    @safe
    def cancel_run(self, _=None) -> None:
        """Cancel the run selected in the run dropdown."""
        from ..core import api
        run = self.run_picker.value
        if run:
            api.cancel(run)
            self.message.value = note(f"cancel requested for {run}")
            self.tick()
            self.start()

    def states(self) -> dict:
        return {r: v.info["state"] for r, v in self.runs.items()}

    def __repr__(self) -> str:
        return f"JobMonitor({self.id}: {json.dumps(self.states())})"


__all__ = ["JobMonitor", "svg_chart", "trial_chart"]
