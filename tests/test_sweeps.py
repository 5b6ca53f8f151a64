"""Sweeps: --hp specs and XT hp-config files expand to reproducible runs; bad specs are one line."""
from __future__ import annotations

import pytest

from xt_magic.core.errors import JobError
from xt_magic.core.jobs.sweeps import expand, load_hp_config, parse_hp_args


def run(words, **kw):
    return expand(parse_hp_args(words), **kw)


def test_grid_is_cartesian_product():
    search, points = run(["lr=[0.01,0.1]", "layers=[2,4]", "act=[relu,'tanh']"])
    assert search == "grid"
    assert len(points) == 8
    assert points[0] == {"lr": 0.01, "layers": 2, "act": "relu"}
    assert {p["act"] for p in points} == {"relu", "tanh"}


def test_single_value_and_repeat():
    search, points = run(["lr=0.5", "b=[true,null]"], repeat=3)
    assert points == [{"lr": 0.5, "b": True}] * 3 + [{"lr": 0.5, "b": None}] * 3


def test_linspace_in_grid():
    _, points = run(["x=$linspace(0,1,5)"])
    assert [p["x"] for p in points] == [0, 0.25, 0.5, 0.75, 1.0]


def test_random_is_seeded_and_in_range():
    words = ["lr=$loguniform(1e-4,1e-1)", "n=$randint(2,5)", "u=$uniform(0,1)",
             "q=$quniform(0,10,2)", "c=$choice(a,b,3)", "g=$normal(0,1)", "qn=$qnormal(10,3,2)"]
    search, a = run(words, runs=50, seed=7)
    _, b = run(words, runs=50, seed=7)
    _, c = run(words, runs=50, seed=8)
    assert search == "random" and a == b and a != c and len(a) == 50
    for p in a:
        assert 1e-4 <= p["lr"] <= 1e-1 and 2 <= p["n"] <= 5 and 0 <= p["u"] <= 1
        assert p["q"] in (0, 2, 4, 6, 8, 10) and p["c"] in ("a", "b", 3) and p["qn"] % 2 == 0


def test_distribution_without_runs_needs_runs():
    with pytest.raises(JobError, match="--runs"):
        run(["lr=$uniform(0,1)"], search="random")


def test_no_hp_gives_one_run():
    assert expand({}) == (None, [{}])
    assert expand({}, runs=3)[1] == [{}, {}, {}]


def test_hp_config_file(tmp_path):
    f = tmp_path / "hp.yaml"
    f.write_text("hyperparameter-distributions:\n  lr: [0.01, 0.1]\n  drop: $uniform(0, 0.5)\n"
                 "  opt: $choice(sgd, adam)\n")
    specs = load_hp_config(str(f))
    search, points = expand(specs, search="grid", seed=1)
    assert search == "grid" and len(points) == 4  # lr x opt, drop sampled per point
    assert all(0 <= p["drop"] <= 0.5 for p in points)
    assert expand(specs, search="grid", seed=1) == (search, points)


@pytest.mark.parametrize("words, msg", [
    (["lr"], "expected NAME=VALUES"),
    (["1lr=[1]"], "bad hyperparameter name"),
    (["class=[1]"], "bad hyperparameter name"),
    (["__x=[1]"], "bad hyperparameter name"),
    (["a-b=[1]"], "bad hyperparameter name"),
    (["lr=[0.1"], "closing"),
    (["lr=[]"], "empty list"),
    (["lr=$foo(1)"], "unknown distribution"),
    (["lr=$uniform(1)"], "takes 2 arguments"),
    (["lr=$uniform(a,b)"], "must be numbers"),
    (["lr=$loguniform(0,1)"], "> 0"),
    (["lr=[1,__import__('os')]"], "not a number"),
    (["lr=[1,2]", "lr=[3]"], "given twice"),
    (["lr=[1;rm -rf]"], "not a number"),
])
def test_bad_specs_are_one_line(words, msg):
    with pytest.raises(JobError, match=msg) as info:
        run(words)
    assert "\n" not in str(info.value)


def test_bad_hp_config(tmp_path):
    f = tmp_path / "hp.yaml"
    f.write_text("something-else: 1\n")
    with pytest.raises(JobError, match="hyperparameter-distributions"):
        load_hp_config(str(f))
    with pytest.raises(JobError, match="cannot read"):
        load_hp_config(str(tmp_path / "missing.yaml"))
