"""Typed tables on the real local target: %xt_jobs, %xt_metrics, job.table() / %xt_results and
%xt_compare over a 6-run sweep."""
from __future__ import annotations

import pandas as pd
import pytest

import xt_magic as xt
from xt_magic.core import api
from xt_magic.core.errors import JobError

SWEEP = ("import xt_magic\n"
         "loss = 1.0\n"
         "for step in range(3):\n"
         "    loss = loss * (1 - lr) + 0.01 * layers\n"
         "    xt_magic.log(step=step, loss=loss, acc=1 - loss)\n"
         "score = round(1 - loss, 6)\n"
         "name = f'net{layers}'\n")


@pytest.fixture
def sweep():
    """6 runs: lr x layers, each logging loss/acc for 3 steps, outputs score (float) and name."""
    job = api.run_cell(SWEEP, {"__name__": "__main__"}, hp={"lr": [0.1, 0.3, 0.5],
                                                            "layers": [1, 2]},
                       outputs=["score", "name"], name="sweep6", tags={"team": "a"},
                       experiment="exp1")
    return job.wait(timeout=120, progress=False)


def test_jobs_and_metrics_frames_are_typed(sweep):
    unnamed = api.run_cell("v = 1\n", {}, outputs=["v"]).wait(timeout=60, progress=False)
    df = api.jobs()
    assert list(df["job"]) == [sweep.id, unnamed.id]
    assert str(df["submitted"].dtype).startswith("datetime64") and \
        str(df["ended"].dtype).startswith("datetime64")
    assert df["duration"].dtype.kind == "m" and (df["duration"] > pd.Timedelta(0)).all()
    assert (df["ended"] >= df["submitted"]).all()
    assert str(df["runs"].dtype) == "Int64" and list(df["runs"]) == [6, 1]
    assert list(df["name"]) == ["sweep6", ""]  # never NaN
    assert list(df["experiment"])[0] == "exp1" and df["tags"][0] == {"team": "a"}
    m = api.metrics(sweep.id)
    assert str(m["ts"].dtype).startswith("datetime64") and str(m["step"].dtype) == "Int64"
    assert len(m) == 18 and m["ts"].min().year >= 2024


def test_job_table_one_row_per_run(sweep, ip):
    t = sweep.table()
    assert list(t["run"]) == sweep.runs and (t["state"] == "completed").all()
    assert t["duration"].dtype.kind == "m" and str(t["started"].dtype).startswith("datetime64")
    assert t["hp.lr"].dtype.kind == "f" and t["hp.layers"].dtype.kind == "i"
    assert t["score"].dtype.kind == "f" and set(t["name"]) == {"net1", "net2"}
    # last and best of each metric: loss falls (best = min, by name), acc rises (best = max)
    for _, row in t.iterrows():
        assert row["best.loss"] == pytest.approx(row["last.loss"])
        assert row["best.acc"] == pytest.approx(row["last.acc"])
        assert row["score"] == pytest.approx(row["last.acc"], abs=1e-5)
    assert t.equals(xt.table(sweep.id))
    # %xt_results displays that table
    res = ip.run_line_magic("xt_results", sweep.id)
    html = res._repr_html_()
    assert "best.loss" in html and "hp.lr" in html and "net2" in html
    assert html.count("<table") == 1 and "class=\"xt-run-table\"" in html


def test_best_follows_maximize_metric(sweep):
    xt.config("general.primary-metric", "acc")
    xt.config("general.maximize-metric", "false")  # for the primary metric: smaller acc is best
    t = sweep.table()
    first = api.metrics(sweep.id).groupby("run")["acc"].min()
    assert list(t["best.acc"]) == pytest.approx([first[r] for r in t["run"]])


def test_compare_sorts_best_first_and_plots(sweep, ip):
    cmp = api.compare(sweep.id)  # primary metric test-acc is not logged: the first logged (loss)
    assert cmp.metric == "loss" and cmp.smaller_is_better
    assert list(cmp.table["best.loss"]) == sorted(cmp.table["best.loss"])
    assert cmp.hp_columns == ["hp.lr", "hp.layers"] and len(cmp.table) == 6
    xt.config("general.primary-metric", "acc")
    cmp = api.compare(sweep.id)
    assert cmp.metric == "acc" and list(cmp.table["best.acc"]) == sorted(
        cmp.table["best.acc"], reverse=True)
    best = cmp.table.iloc[0]
    assert best["hp.lr"] == 0.5 and best["hp.layers"] == 1
    view = ip.run_line_magic("xt_compare", f"{sweep.id} loss")
    assert view.metric.options == ("loss", "acc") and view.metric.value == "loss"
    from xt_magic.widgets.compare import parallel_coordinates
    fig = parallel_coordinates(view.comparison, "plasma")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["lr", "layers", "best.loss"]
    assert len([ln for ln in ax.get_lines() if ln.get_label().startswith("run")]) == 6
    view.metric.value = "acc"  # the picker re-ranks
    assert view.comparison.metric == "acc" and view.comparison.table.iloc[0]["hp.lr"] == 0.5
    with pytest.raises(JobError, match="no metric 'nope'"):
        api.compare(sweep.id, "nope")
