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
    with pytest.raises(JobError, match="needs runs=N"):
        run(["lr=$uniform(0,1)"], search="random")
    from xt_magic.core import naming
    with naming.flags(), pytest.raises(JobError, match="needs --runs N"):
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
    (["a b=[1]"], "bad hyperparameter name"),
    (["__x=[1]"], "bad hyperparameter name"),
    (["a=b=[1]"], "bad hyperparameter a=b"),
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


XT_SWEEP = """\
# as XT's own sample sweep files write them
hyperparameter-distributions:
  lr: [.01, .03, .05]
  batch-size: [32, 64]
  weight-decay: $uniform(0, 0.01)
  mid-conv: 64
  optimizer: adam, sgd, rmsprop
  note: keep it simple
  start: 2021-01-01
  resume: null
  quoted: "[1, 2]"
  seed: $randint()
"""


def test_xt_sweep_file_loads_with_hyphens_and_comma_strings(tmp_path):
    f = tmp_path / "sweep.yaml"
    f.write_text(XT_SWEEP)
    search, points = expand(load_hp_config(str(f)), search="grid", seed=3)
    assert search == "grid" and len(points) == 6
    assert {(p["lr"], p["batch-size"]) for p in points} == {
        (lr, bs) for lr in (.01, .03, .05) for bs in (32, 64)}
    first = points[0]
    assert list(first) == ["lr", "batch-size", "weight-decay", "mid-conv", "optimizer", "note",
                           "start", "resume", "quoted", "seed"]  # names as given, in file order
    assert first["optimizer"] == "adam, sgd, rmsprop" and first["note"] == "keep it simple"
    assert first["mid-conv"] == 64 and first["start"] == "2021-01-01" and first["resume"] is None
    assert first["quoted"] == "[1, 2]" and 0 <= first["weight-decay"] <= 0.01
    assert expand(load_hp_config(str(f)), search="grid", seed=3) == (search, points)


def test_every_bad_name_and_value_reported_at_once(tmp_path):
    from xt_magic.core.jobs.sweeps import load_specs
    f = tmp_path / "sweep.yaml"
    f.write_text("hyperparameter-distributions:\n  ok: [1, 2]\n  bad name: 1\n  empty: []\n"
                 "  nested: [[1, 2]]\n  mapping: {a: 1}\n  dist: $nope(1)\n  3: [1]\n")
    with pytest.raises(JobError) as info:
        load_specs({"lr": "$uniform(0", "a b": [1]}, str(f))
    text = str(info.value)
    assert "\n" not in text and text.startswith("8 problems")
    for where in ("sweep.yaml:3", "sweep.yaml:4: empty", "sweep.yaml:5: nested", "sweep.yaml:6: mapping",
                  "sweep.yaml:7: dist", "sweep.yaml:8", "hp['lr']", "hp['a b']"):
        assert where in text, where


def test_randint_without_arguments_draws_like_xt():
    _, points = run(["seed=$randint()"], runs=400)
    values = [p["seed"] for p in points]
    assert all(0 <= v <= 65534 for v in values) and max(values) > 32767


@pytest.mark.parametrize("words, kw, msg", [
    (["lr=$lognormal(800,0)"], {"runs": 1}, "float range"),
    (["lr=$linspace(0,1,1e999)"], {}, "finite"),
    (["lr=$quniform(0,1e308,1e-308)"], {"runs": 2}, "float range"),
    (["lr=$linspace(0,1,2.5)"], {}, "whole number"),
    (["n=$randint(5,1)"], {"runs": 1}, "above high"),
])
def test_overflowing_sweeps_are_one_line(words, kw, msg):
    with pytest.raises(JobError, match=msg) as info:
        run(words, **kw)
    assert "\n" not in str(info.value)


def test_sweep_size_is_bounded_before_any_point_is_made():
    with pytest.raises(JobError, match="30,000,000 runs, over the limit of 100,000") as info:
        run(["lr=$linspace(0,1,30000000)"])
    assert info.value.key == "hyperparameter-search.max-runs-limit"
    grid = [f"h{i}=[{','.join(map(str, range(10)))}]" for i in range(400)]  # 10^400 points
    with pytest.raises(JobError, match="about 10\\^400 runs"):
        run(grid)
    with pytest.raises(JobError, match="over the limit of 10"):
        run(["a=[1,2,3]", "b=[1,2,3]"], repeat=2, limit=10)
    with pytest.raises(JobError, match="over the limit"):
        run(["lr=$uniform(0,1)"], runs=10**9)
    # a bounded --runs over a huge grid takes its first points without making the rest
    _, points = run(["a=[1,2]", "lr=$linspace(0,1,30000001)"], search="grid", runs=3)
    assert points == [{"a": 1, "lr": 0.0}, {"a": 1, "lr": 1 / 30000000}, {"a": 1, "lr": 2 / 30000000}]


def test_sweep_file_with_nested_aliases_is_a_short_error(tmp_path):
    levels = ["a: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 7)]
    f = tmp_path / "bomb.yaml"
    f.write_text("\n".join(levels) + "\nhyperparameter-distributions:\n  x: *l6\n")
    with pytest.raises(JobError, match="bomb.yaml:9: x: bad value") as info:
        load_hp_config(str(f))
    assert "\n" not in str(info.value) and len(str(info.value)) < 1000
